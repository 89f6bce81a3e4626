// The Kata direct-volume mapping: mountInfo.json -> Storage -> our agent's
// ActivateVolumeRequest, with good and hostile inputs.
#include "kata_mapping.h"

#include <gtest/gtest.h>

namespace cocostorage::e2e {
namespace {

namespace pb = cocostorage::storage::v1;

// What cocostorage-csi writes for the example pod (docs/csi.md).
constexpr char kPluginJson[] = R"({"volume-type":"blk",
  "device":"/var/lib/cocostorage/volumes/cv-0123456789abcdef0123456789abcdef01234567.img",
  "fstype":"ext4",
  "metadata":{"encryptionKey":"ephemeral","createFilesystem":"true","fsGroup":"2000",
              "cocostorage.dev/integrity":"hmac-sha256","cocostorage.dev/volumeMode":"filesystem",
              "cocostorage.dev/volumeId":"cv-0123456789abcdef0123456789abcdef01234567",
              "cocostorage.dev/mkfsOptions":"-m 0","fsGroupChangePolicy":"OnRootMismatch"},
  "options":["noatime"]})";

KataMountInfo Parsed(const std::string& json = kPluginJson) {
  auto m = ParseMountInfo(json);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *m : KataMountInfo{};
}

TEST(KataMapping, Base64UrlMatchesGoUrlEncodingWithPadding) {
  EXPECT_EQ(Base64UrlEncode(""), "");
  EXPECT_EQ(Base64UrlEncode("f"), "Zg==");
  EXPECT_EQ(Base64UrlEncode("fo"), "Zm8=");
  EXPECT_EQ(Base64UrlEncode("foo"), "Zm9v");
  EXPECT_EQ(Base64UrlEncode("02/00"), "MDIvMDA=");
  EXPECT_EQ(Base64UrlEncode("\xfb\xff"), "-_8=");  // URL alphabet, not + and /
  EXPECT_EQ(DirectVolumeDirName("/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/pv/mount"),
            "L3Zhci9saWIva3ViZWxldC9wb2RzL3Uvdm9sdW1lcy9rdWJlcm5ldGVzLmlvfmNzaS9wdi9tb3VudA==");
}

TEST(KataMapping, ParsesThePluginsDescriptor) {
  KataMountInfo m = Parsed();
  EXPECT_EQ(m.volume_type, "blk");
  EXPECT_EQ(m.fs_type, "ext4");
  EXPECT_EQ(m.metadata.at("encryptionKey"), "ephemeral");
  EXPECT_EQ(m.options, std::vector<std::string>{"noatime"});
}

TEST(KataMapping, ParseErrorsNameTheField) {
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

TEST(KataMapping, BuildsStorageLikeTheKataRuntime) {
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
                                   "cocostorage.dev/mkfsOptions=-m 0",
                                   "cocostorage.dev/volumeId=cv-0123456789abcdef0123456789abcdef01234567",
                                   "cocostorage.dev/volumeMode=filesystem"};
  EXPECT_EQ(s->driver_options, want);  // fsGroupChangePolicy is not passed on
}

TEST(KataMapping, BuildRefusesOtherVolumeTypesAndBadPciPaths) {
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

TEST(KataMapping, ActivateRequestForTheExamplePod) {
  auto s = BuildKataStorage(Parsed(), "03/00");
  ASSERT_TRUE(s.ok());
  auto r = ToActivateRequest(*s, std::chrono::seconds(20));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->volume_id(), "cv-0123456789abcdef0123456789abcdef01234567");
  EXPECT_EQ(r->device().pci_path(), "03/00");
  EXPECT_TRUE(r->key().has_ephemeral());
  EXPECT_EQ(r->integrity(), pb::INTEGRITY_HMAC_SHA256);
  EXPECT_EQ(r->mode(), pb::VOLUME_MODE_FILESYSTEM);
  EXPECT_EQ(r->filesystem().fs_type(), "ext4");
  EXPECT_EQ(std::vector<std::string>(r->filesystem().mkfs_options().begin(), r->filesystem().mkfs_options().end()),
            (std::vector<std::string>{"-m", "0"}));
  EXPECT_EQ(std::vector<std::string>(r->filesystem().mount_options().begin(), r->filesystem().mount_options().end()),
            std::vector<std::string>{"noatime"});
  ASSERT_TRUE(r->filesystem().has_fs_group());
  EXPECT_EQ(r->filesystem().fs_group(), 2000);
  EXPECT_EQ(r->target_path(), "/run/kata-containers/sandbox/storage/MDMvMDA=");
  EXPECT_EQ(r->device_timeout_ms(), 20000u);
  EXPECT_EQ(r->init_mode(), pb::INIT_MODE_ZERO_GUARD);
  EXPECT_FALSE(r->read_only());
}

TEST(KataMapping, IntegrityModesAndReadOnly) {
  for (auto [name, want] : {std::pair{"none", pb::INTEGRITY_NONE}, std::pair{"aegis128", pb::INTEGRITY_AEGIS128},
                            std::pair{"aes-gcm", pb::INTEGRITY_AES_GCM}}) {
    KataMountInfo m = Parsed();
    m.metadata["cocostorage.dev/integrity"] = name;
    m.options = {"ro", "noatime"};
    auto r = ToActivateRequest(*BuildKataStorage(m, "02/00"));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->integrity(), want);
    EXPECT_TRUE(r->read_only());
    EXPECT_EQ(r->filesystem().mount_options_size(), 1);
  }
  KataMountInfo m = Parsed();
  m.metadata["cocostorage.dev/integrity"] = "crc32";
  EXPECT_FALSE(ToActivateRequest(*BuildKataStorage(m, "02/00")).ok());
  m.metadata.erase("cocostorage.dev/integrity");  // absent: the default (hmac-sha256)
  auto r = ToActivateRequest(*BuildKataStorage(m, "02/00"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->integrity(), pb::INTEGRITY_HMAC_SHA256);
}

TEST(KataMapping, BlockModeTargetsTheMountPointItself) {
  KataMountInfo m = Parsed();
  m.metadata["cocostorage.dev/volumeMode"] = "block";
  m.metadata["createFilesystem"] = "false";
  m.metadata.erase("cocostorage.dev/mkfsOptions");
  m.options.clear();
  auto r = ToActivateRequest(*BuildKataStorage(m, "02/00"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->mode(), pb::VOLUME_MODE_BLOCK);
  EXPECT_EQ(r->target_path(), "/run/kata-containers/sandbox/storage/MDIvMDA=");
  EXPECT_TRUE(r->filesystem().fs_type().empty());
  EXPECT_EQ(r->filesystem().fs_group(), 2000);
  // Block mode with filesystem settings is a confused (or hostile) descriptor.
  KataMountInfo bad = m;
  bad.metadata["createFilesystem"] = "true";
  EXPECT_FALSE(ToActivateRequest(*BuildKataStorage(bad, "02/00")).ok());
  bad = m;
  bad.options = {"noatime"};
  EXPECT_FALSE(ToActivateRequest(*BuildKataStorage(bad, "02/00")).ok());
  bad = m;
  bad.metadata["cocostorage.dev/mkfsOptions"] = "-m 0";
  EXPECT_FALSE(ToActivateRequest(*BuildKataStorage(bad, "02/00")).ok());
}

TEST(KataMapping, KbsKeyAndMissingOrBadKeys) {
  KataMountInfo m = Parsed();
  m.metadata["encryptionKey"] = "kbs:///default/key/vol1";
  m.metadata["createFilesystem"] = "false";
  auto r = ToActivateRequest(*BuildKataStorage(m, "02/00"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->key().kbs_resource_uri(), "kbs:///default/key/vol1");
  for (const char* bad : {"", "plaintext", "kbs://host/x", "kbs:///"}) {
    m.metadata["encryptionKey"] = bad;
    auto s = ToActivateRequest(*BuildKataStorage(m, "02/00"));
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  // An ephemeral key without create_filesystem: refuse rather than guess.
  m = Parsed();
  m.metadata["createFilesystem"] = "false";
  EXPECT_FALSE(ToActivateRequest(*BuildKataStorage(m, "02/00")).ok());
}

TEST(KataMapping, GuestSideRefusesWhatThePolicyRefuses) {
  KataStorage s = *BuildKataStorage(Parsed(), "02/00");
  KataStorage bad = s;
  bad.source = "02/00/01";
  EXPECT_EQ(ToActivateRequest(bad).status().code(), absl::StatusCode::kPermissionDenied);
  bad = s;
  bad.mount_point = "/run/kata-containers/sandbox/storage/../../../etc";
  EXPECT_EQ(ToActivateRequest(bad).status().code(), absl::StatusCode::kPermissionDenied);
  bad = s;
  bad.mount_point = "/run/kata-containers/sandbox/storage/MDMvMDA=";  // another device's mount point
  EXPECT_EQ(ToActivateRequest(bad).status().code(), absl::StatusCode::kPermissionDenied);
  bad = s;
  bad.driver = "virtio-blk";
  EXPECT_EQ(ToActivateRequest(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = s;
  bad.driver_options.push_back("dm-verity");
  EXPECT_FALSE(ToActivateRequest(bad).ok());
  bad = s;
  bad.driver_options.push_back("encryption_key=ephemeral");  // duplicate
  EXPECT_FALSE(ToActivateRequest(bad).ok());
  bad = s;
  bad.fs_type = "";
  EXPECT_FALSE(ToActivateRequest(bad).ok());
}

TEST(KataMapping, VolumeIdsAreSanitizedToTheAgentsRules) {
  EXPECT_EQ(SanitizeVolumeId("cv-abc"), "cv-abc");
  EXPECT_EQ(SanitizeVolumeId("pvc/a b"), "pvc-a-b");
  EXPECT_EQ(SanitizeVolumeId("-x"), "v-x");
  EXPECT_EQ(SanitizeVolumeId(""), "v");
  std::string long_a(100, 'a'), long_b = std::string(99, 'a') + "b";
  std::string a = SanitizeVolumeId(long_a), b = SanitizeVolumeId(long_b);
  EXPECT_EQ(a.size(), 64u);
  EXPECT_NE(a, b);
  KataMountInfo m = Parsed();
  m.metadata["cocostorage.dev/volumeId"] = "../../evil id";
  auto r = ToActivateRequest(*BuildKataStorage(m, "02/00"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->volume_id(), "v..-..-evil-id");
  m.metadata.erase("cocostorage.dev/volumeId");
  r = ToActivateRequest(*BuildKataStorage(m, "0a/1f"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->volume_id(), "kata-0a-1f");
}

}  // namespace
}  // namespace cocostorage::e2e
