// The Kata runtime stand-in: mountInfo.json -> Storage, with good and hostile
// inputs (the guest side of the mapping is tested in guest-agent/tests).
#include "kata_runtime.h"

#include <gtest/gtest.h>

namespace cocostorage::e2e {
namespace {

// What cocostorage-csi writes for the example pod (docs/csi.md).
constexpr char kPluginJson[] = R"({"volume-type":"blk",
  "device":"/var/lib/cocostorage/volumes/cv-0123456789abcdef0123456789abcdef01234567.img",
  "fstype":"ext4",
  "metadata":{"encryptionKey":"ephemeral","createFilesystem":"true","fsGroup":"2000",
              "cocostorage.dev/kind":"ephemeral",
              "cocostorage.dev/integrity":"hmac-sha256","cocostorage.dev/volumeMode":"filesystem",
              "cocostorage.dev/volumeId":"cv-0123456789abcdef0123456789abcdef01234567",
              "cocostorage.dev/mkfsOptions":"-m 0","fsGroupChangePolicy":"OnRootMismatch"},
  "options":["noatime"]})";

KataMountInfo Parsed(const std::string& json = kPluginJson) {
  auto m = ParseMountInfo(json);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : KataMountInfo{};
}

TEST(KataRuntime, DirectVolumeDirIsBase64UrlWithPadding) {
  EXPECT_EQ(DirectVolumeDirName("/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/pv/mount"),
            "L3Zhci9saWIva3ViZWxldC9wb2RzL3Uvdm9sdW1lcy9rdWJlcm5ldGVzLmlvfmNzaS9wdi9tb3VudA==");
}

TEST(KataRuntime, ParsesThePluginsDescriptor) {
  KataMountInfo m = Parsed();
  EXPECT_EQ(m.volume_type, "blk");
  EXPECT_EQ(m.fs_type, "ext4");
  EXPECT_EQ(m.metadata.at("encryptionKey"), "ephemeral");
  EXPECT_EQ(m.options, std::vector<std::string>{"noatime"});
}

TEST(KataRuntime, ParseErrorsNameTheField) {
  struct Case {
    const char* json;
    const char* want;
  } cases[] = {
      {"", "not valid JSON"},
      {"{", "not valid JSON"},
      {"[]", "not a JSON object"},
      {R"({"device":"/d","fstype":"ext4","metadata":{},"options":[]})", "\"volume-type\" is missing"},
      {R"({"volume-type":1,"device":"/d","fstype":"ext4","metadata":{},"options":[]})",
       "\"volume-type\" is not a string"},
      {R"({"volume-type":"blk","fstype":"ext4","metadata":{},"options":[]})", "\"device\" is missing"},
      {R"({"volume-type":"blk","device":"","fstype":"ext4","metadata":{},"options":[]})", "\"device\" is empty"},
      {R"({"volume-type":"blk","device":"/d","metadata":{},"options":[]})", "\"fstype\" is missing"},
      {R"({"volume-type":"blk","device":"/d","fstype":"ext4","options":[]})", "\"metadata\" is missing"},
      {R"({"volume-type":"blk","device":"/d","fstype":"ext4","metadata":[],"options":[]})",
       "\"metadata\" is not an object"},
      {R"({"volume-type":"blk","device":"/d","fstype":"ext4","metadata":{"fsGroup":2000},"options":[]})",
       "metadata \"fsGroup\" is not a string"},
      {R"({"volume-type":"blk","device":"/d","fstype":"ext4","metadata":{}})", "\"options\" is missing"},
      {R"({"volume-type":"blk","device":"/d","fstype":"ext4","metadata":{},"options":"ro"})",
       "\"options\" is not an array"},
      {R"({"volume-type":"blk","device":"/d","fstype":"ext4","metadata":{},"options":[1]})", "not a string"},
  };
  for (const auto& c : cases) {
    auto m = ParseMountInfo(c.json);
    ASSERT_FALSE(m.ok()) << c.json;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << c.json;
    EXPECT_NE(m.status().message().find(c.want), std::string::npos) << c.json << " -> " << m.status();
  }
}

TEST(KataRuntime, BuildsStorageLikeTheKataRuntime) {
  auto s = BuildKataStorage(Parsed(), "02/00");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->driver, "blk");
  EXPECT_EQ(s->source, "02/00");
  EXPECT_EQ(s->fs_type, "ext4");
  EXPECT_EQ(s->mount_point, "/run/kata-containers/sandbox/storage/MDIvMDA=");
  EXPECT_EQ(s->options, std::vector<std::string>{"noatime"});
  std::vector<std::string> want = {"encryption_key=ephemeral",
                                   "create_filesystem",
                                   "fsGroup=2000",
                                   "cocostorage.dev/integrity=hmac-sha256",
                                   "cocostorage.dev/kind=ephemeral",
                                   "cocostorage.dev/mkfsOptions=-m 0",
                                   "cocostorage.dev/volumeId=cv-0123456789abcdef0123456789abcdef01234567",
                                   "cocostorage.dev/volumeMode=filesystem"};
  EXPECT_EQ(s->driver_options, want);  // fsGroupChangePolicy is not passed on
}

TEST(KataRuntime, BuildRefusesOtherVolumeTypesAndBadPciPaths) {
  KataMountInfo m = Parsed();
  m.volume_type = "mountedfs";
  EXPECT_EQ(BuildKataStorage(m, "02/00").status().code(), absl::StatusCode::kInvalidArgument);
  m = Parsed();
  for (const char* bad : {"", "2/0", "02/0", "0A/00", "02/00/00", "../x", "02:00", "02/00 "}) {
    EXPECT_FALSE(BuildKataStorage(m, bad).ok()) << bad;
  }
  EXPECT_TRUE(BuildKataStorage(m, "1f").ok());
  m.metadata["createFilesystem"] = "yes";
  EXPECT_FALSE(BuildKataStorage(m, "02/00").ok());
  m = Parsed();
  m.metadata["fsGroup"] = "-1";
  EXPECT_FALSE(BuildKataStorage(m, "02/00").ok());
}

}  // namespace
}  // namespace cocostorage::e2e
