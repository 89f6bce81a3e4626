// The Kata Storage transport: what kata-agent hands over for a direct block
// volume, through the adapter and the admission layer, with good and hostile
// inputs. (The host-side runtime that builds the Storage from mountInfo.json
// is test scaffolding: testing/e2e/kata_runtime, tested in tests/e2e.)
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <string_view>

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

// A persistent volume as the CSI plugin presents it (csi-driver/src/mount_info.h):
// like an ephemeral one, the only pair kata-agent hands to the CDH slot, plus
// the kind and KBS URI hints.
KataStorage Persistent() {
  KataStorage s = Example();
  s.driver_options = {"encryption_key=ephemeral",
                      "create_filesystem",
                      "fsGroup=2000",
                      "cocostorage.dev/integrity=hmac-sha256",
                      "cocostorage.dev/kbsResourceUri=kbs:///default/volume-keys/data-db-0",
                      "cocostorage.dev/kind=persistent",
                      "cocostorage.dev/volumeId=cv-0123456789abcdef0123456789abcdef01234567",
                      "cocostorage.dev/volumeMode=filesystem"};
  return s;
}

void Replace(KataStorage* s, std::string_view key, const std::string& option) {
  for (auto& o : s->driver_options) {
    if (o.substr(0, key.size() + 1) == std::string(key) + "=") {
      o = option;
      return;
    }
  }
  ADD_FAILURE() << "no driver option " << key;
}

void Drop(KataStorage* s, std::string_view prefix) {
  std::erase_if(s->driver_options, [&](const std::string& o) { return o.substr(0, prefix.size()) == prefix; });
}

TEST(KataStorageMapping, PersistentHintsNameTheKbsKey) {
  auto v = Map(Persistent());
  ASSERT_OK(v);
  EXPECT_FALSE(v->spec.key.ephemeral());
  EXPECT_EQ(v->spec.key.kbs_uri(), "kbs:///default/volume-keys/data-db-0");
  EXPECT_EQ(v->spec.id, "cv-0123456789abcdef0123456789abcdef01234567");
  EXPECT_EQ(v->spec.fs_type, "ext4");
  // create_filesystem is a hint: the device's header decides create or open.
  KataStorage st = Persistent();
  Drop(&st, "create_filesystem");
  v = Map(st);
  ASSERT_OK(v);
  EXPECT_EQ(v->spec.key.kbs_uri(), "kbs:///default/volume-keys/data-db-0");
  // Block mode: no create_filesystem, no mount options.
  st = Persistent();
  Drop(&st, "create_filesystem");
  Replace(&st, "cocostorage.dev/volumeMode", "cocostorage.dev/volumeMode=block");
  st.options.clear();
  v = Map(st);
  ASSERT_OK(v);
  EXPECT_TRUE(v->spec.block_mode);
  EXPECT_EQ(v->spec.key.kbs_uri(), "kbs:///default/volume-keys/data-db-0");
  // kind=ephemeral said out loud is what its absence means.
  st = Example();
  st.driver_options.push_back("cocostorage.dev/kind=ephemeral");
  v = Map(st);
  ASSERT_OK(v);
  EXPECT_TRUE(v->spec.key.ephemeral());
}

TEST(KataStorageMapping, PersistentHintRules) {
  using ::testing::HasSubstr;
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  // kind=persistent needs the URI.
  KataStorage st = Persistent();
  Drop(&st, "cocostorage.dev/kbsResourceUri");
  EXPECT_THAT(Map(st), StatusIs(kInvalid, HasSubstr("requires the driver option cocostorage.dev/kbsResourceUri")));
  // A URI for a volume that is not persistent: ephemeral or kind absent.
  st = Persistent();
  Replace(&st, "cocostorage.dev/kind", "cocostorage.dev/kind=ephemeral");
  EXPECT_THAT(Map(st), StatusIs(kInvalid, HasSubstr("cocostorage.dev/kbsResourceUri")));
  st = Persistent();
  Drop(&st, "cocostorage.dev/kind");
  EXPECT_THAT(Map(st), StatusIs(kInvalid, HasSubstr("cocostorage.dev/kbsResourceUri")));
  // Malformed values.
  for (const char* kind : {"", "Persistent", "persistent ", "kbs"}) {
    st = Persistent();
    Replace(&st, "cocostorage.dev/kind", std::string("cocostorage.dev/kind=") + kind);
    EXPECT_THAT(Map(st), StatusIs(kInvalid, HasSubstr("cocostorage.dev/kind"))) << kind;
  }
  for (const char* uri : {"", "ephemeral", "kbs://host/a/b/c", "kbs:///a/b", "kbs:///a/../c"}) {
    st = Persistent();
    Replace(&st, "cocostorage.dev/kbsResourceUri", std::string("cocostorage.dev/kbsResourceUri=") + uri);
    EXPECT_THAT(Map(st), StatusIs(kInvalid, HasSubstr("cocostorage.dev/kbsResourceUri"))) << uri;
  }
  // Twice is refused like any other option.
  st = Persistent();
  st.driver_options.push_back("cocostorage.dev/kind=ephemeral");
  EXPECT_THAT(Map(st), StatusIs(kInvalid, HasSubstr("given twice")));
}

// The older spelling, encryption_key=<KBS URI>, keeps working, and must agree
// with the hints when they are given.
TEST(KataStorageMapping, OlderKbsSpellingAgreesWithTheHints) {
  KataStorage st = Persistent();
  Replace(&st, "encryption_key", "encryption_key=kbs:///default/volume-keys/data-db-0");
  auto v = Map(st);
  ASSERT_OK(v);
  EXPECT_EQ(v->spec.key.kbs_uri(), "kbs:///default/volume-keys/data-db-0");
  Replace(&st, "encryption_key", "encryption_key=kbs:///default/volume-keys/data-db-1");
  EXPECT_THAT(Map(st), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("disagree")));
  // kind=ephemeral contradicts a KBS key.
  st = Example();
  st.driver_options[0] = "encryption_key=kbs:///default/key/vol1";
  st.driver_options.push_back("cocostorage.dev/kind=ephemeral");
  EXPECT_THAT(Map(st), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("cocostorage.dev/kind")));
  // kind=persistent with the old spelling still needs the URI hint.
  st = Example();
  st.driver_options[0] = "encryption_key=kbs:///default/key/vol1";
  st.driver_options.push_back("cocostorage.dev/kind=persistent");
  EXPECT_THAT(Map(st),
              StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("cocostorage.dev/kbsResourceUri")));
}

TEST(KataStorageMapping, UnknownCocostorageKeysAreRefused) {
  for (const char* bad : {"cocostorage.dev/x=1", "cocostorage.dev/=1", "cocostorage.dev/Kind=persistent",
                          "cocostorage.dev/kbsResourceURI=kbs:///a/b/c", "cocostorage.dev/volumeid=v"}) {
    KataStorage st = Example();
    st.driver_options.push_back(bad);
    EXPECT_THAT(Map(st), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::HasSubstr("unknown driver option")))
        << bad;
  }
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
