// The Kata Storage transport: what kata-agent hands over for a direct block
// volume, through the adapter and the admission layer, with good and hostile
// inputs. (The host-side runtime that builds the Storage from mountInfo.json
// is test scaffolding: testing/e2e/kata_runtime, tested in tests/e2e.)
#include <gtest/gtest.h>

#include "cocostorage/testing/status_matchers.h"
#include "kata/storage_mapping.h"
#include "request/admission.h"

namespace cocostorage::agent {
namespace {

using ::cocostorage::testing::StatusIs;

// What the Kata runtime sends for the example pod's volume at PCI path 03/00.
KataStorage Example() {
  KataStorage s;
  s.driver = "blk";
  s.source = "03/00";
  s.fs_type = "ext4";
  s.options = {"noatime"};
  s.mount_point = "/run/kata-containers/sandbox/storage/MDMvMDA=";
  s.driver_options = {"encryption_key=ephemeral",
                      "create_filesystem",
                      "fsGroup=2000",
                      "cocostorage.dev/integrity=hmac-sha256",
                      "cocostorage.dev/mkfsOptions=-m 0",
                      "cocostorage.dev/volumeId=cv-0123456789abcdef0123456789abcdef01234567",
                      "cocostorage.dev/volumeMode=filesystem"};
  return s;
}

StatusOr<ValidatedActivate> Map(const KataStorage& s, bool allow_integrity_none = false) {
  COCO_ASSIGN_OR_RETURN(ActivationRequest a, ActivationFromKataStorage(s, std::chrono::seconds(20)));
  return Admit(a, AdmissionConfig{kKataSandboxStorageDir, std::chrono::seconds(10), allow_integrity_none});
}

TEST(KataStorageMapping, TheExamplePod) {
  auto v = Map(Example());
  ASSERT_OK(v);
  const VolumeSpec& s = v->spec;
  EXPECT_EQ(s.id, "cv-0123456789abcdef0123456789abcdef01234567");
  EXPECT_EQ(s.device, (DeviceId{DeviceIdKind::kPciPath, "03/00"}));
  EXPECT_TRUE(s.key.ephemeral());
  EXPECT_EQ(s.integrity, IntegrityMode::kHmacSha256);
  EXPECT_FALSE(s.block_mode);
  EXPECT_EQ(s.fs_type, "ext4");
  EXPECT_EQ(s.mkfs_options, (std::vector<std::string>{"-m", "0"}));
  EXPECT_EQ(s.mount_options, std::vector<std::string>{"noatime"});
  EXPECT_EQ(s.fs_group, 2000);
  EXPECT_EQ(s.target_path, "/run/kata-containers/sandbox/storage/MDMvMDA=");
  EXPECT_EQ(s.init_mode, InitMode::kZeroGuard);
  EXPECT_FALSE(s.read_only);
  EXPECT_EQ(v->device_timeout.count(), 20000);
}

TEST(KataStorageMapping, IntegrityModesAndReadOnly) {
  for (auto [name, want] : {std::pair{"none", IntegrityMode::kNone}, std::pair{"aegis128", IntegrityMode::kAegis128},
                            std::pair{"aes-gcm", IntegrityMode::kAesGcm}}) {
    KataStorage st = Example();
    st.driver_options[3] = std::string("cocostorage.dev/integrity=") + name;
    st.options = {"ro", "noatime"};
    auto v = Map(st, /*allow_integrity_none=*/true);
    ASSERT_OK(v);
    EXPECT_EQ(v->spec.integrity, want);
    EXPECT_TRUE(v->spec.read_only);
    EXPECT_EQ(v->spec.mount_options.size(), 1u);
  }
  // A downgrade the host asks for is refused unless the agent allows it.
  KataStorage st = Example();
  st.driver_options[3] = "cocostorage.dev/integrity=none";
  EXPECT_THAT(Map(st), StatusIs(absl::StatusCode::kPermissionDenied));
  st.driver_options[3] = "cocostorage.dev/integrity=crc32";
  EXPECT_THAT(Map(st), StatusIs(absl::StatusCode::kInvalidArgument));
  st.driver_options.erase(st.driver_options.begin() + 3);  // absent: the default
  auto v = Map(st);
  ASSERT_OK(v);
  EXPECT_EQ(v->spec.integrity, IntegrityMode::kHmacSha256);
}

TEST(KataStorageMapping, BlockModeTargetsTheMountPointItself) {
  KataStorage st = Example();
  st.driver_options = {"encryption_key=ephemeral", "fsGroup=2000", "cocostorage.dev/volumeMode=block"};
  st.options.clear();
  auto v = Map(st);
  ASSERT_OK(v);
  EXPECT_TRUE(v->spec.block_mode);
  EXPECT_EQ(v->spec.target_path, "/run/kata-containers/sandbox/storage/MDMvMDA=");
  EXPECT_TRUE(v->spec.fs_type.empty());
  EXPECT_EQ(v->spec.fs_group, 2000);
  KataStorage bad = st;
  bad.driver_options.push_back("create_filesystem");
  EXPECT_THAT(Map(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = st;
  bad.options = {"noatime"};
  EXPECT_THAT(Map(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = st;
  bad.driver_options.push_back("cocostorage.dev/mkfsOptions=-m 0");
  EXPECT_THAT(Map(bad), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(KataStorageMapping, KbsKeyAndMissingOrBadKeys) {
  KataStorage st = Example();
  st.driver_options[0] = "encryption_key=kbs:///default/key/vol1";
  st.driver_options.erase(st.driver_options.begin() + 1);  // no create_filesystem
  auto v = Map(st);
  ASSERT_OK(v);
  EXPECT_EQ(v->spec.key.kbs_uri(), "kbs:///default/key/vol1");
  for (const char* bad : {"encryption_key=", "encryption_key=plaintext", "encryption_key=kbs://host/x",
                          "encryption_key=kbs:///", "encryption_key=kbs:///a/b"}) {
    st.driver_options[0] = bad;
    EXPECT_THAT(Map(st), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
  // An ephemeral key without create_filesystem: refuse rather than guess.
  st = Example();
  st.driver_options.erase(st.driver_options.begin() + 1);
  EXPECT_THAT(Map(st), StatusIs(absl::StatusCode::kInvalidArgument));
}

// The Kata policy's rules, enforced by the guest's admission layer.
TEST(KataStorageMapping, GuestSideRefusesWhatThePolicyRefuses) {
  KataStorage bad = Example();
  bad.source = "03/00/01";
  EXPECT_THAT(Map(bad), StatusIs(absl::StatusCode::kPermissionDenied));
  bad = Example();
  bad.mount_point = "/run/kata-containers/sandbox/storage/../../../etc";
  EXPECT_THAT(Map(bad), StatusIs(absl::StatusCode::kPermissionDenied));
  bad = Example();
  bad.mount_point = "/run/kata-containers/sandbox/storage/MDIvMDA=";  // another device's mount point
  EXPECT_THAT(Map(bad), StatusIs(absl::StatusCode::kPermissionDenied));
  bad = Example();
  bad.driver = "virtio-blk";
  EXPECT_THAT(Map(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = Example();
  bad.driver_options.push_back("dm-verity");
  EXPECT_THAT(Map(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = Example();
  bad.driver_options.push_back("encryption_key=ephemeral");  // duplicate
  EXPECT_THAT(Map(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = Example();
  bad.fs_type = "";
  EXPECT_THAT(Map(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = Example();
  bad.driver_options[2] = "fsGroup=4294967295";  // above what the guest accepts
  EXPECT_THAT(Map(bad), StatusIs(absl::StatusCode::kInvalidArgument));
  bad = Example();
  for (int i = 0; i < 100; ++i) bad.driver_options.push_back("cocostorage.dev/x" + std::to_string(i) + "=1");
  EXPECT_THAT(Map(bad), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(KataStorageMapping, VolumeIdsAreSanitizedToTheAgentsRules) {
  EXPECT_EQ(SanitizeVolumeId("cv-abc"), "cv-abc");
  EXPECT_EQ(SanitizeVolumeId("pvc/a b"), "pvc-a-b");
  EXPECT_EQ(SanitizeVolumeId("-x"), "v-x");
  EXPECT_EQ(SanitizeVolumeId(""), "v");
  std::string long_a(100, 'a'), long_b = std::string(99, 'a') + "b";
  std::string a = SanitizeVolumeId(long_a), b = SanitizeVolumeId(long_b);
  EXPECT_EQ(a.size(), 64u);
  EXPECT_NE(a, b);
  KataStorage st = Example();
  st.driver_options[5] = "cocostorage.dev/volumeId=../../evil id";
  auto v = Map(st);
  ASSERT_OK(v);
  EXPECT_EQ(v->spec.id, "v..-..-evil-id");
  st.driver_options.erase(st.driver_options.begin() + 5);
  st.source = "0a/1f";
  st.mount_point = "/run/kata-containers/sandbox/storage/MGEvMWY=";
  v = Map(st);
  ASSERT_OK(v);
  EXPECT_EQ(v->spec.id, "kata-0a-1f");
}

}  // namespace
}  // namespace cocostorage::agent
