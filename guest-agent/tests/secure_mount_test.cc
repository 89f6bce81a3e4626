// The SecureMount transport: exactly what kata-agent sends, through the
// adapter and the admission layer; and what must be refused.
#include "cdh/secure_mount.h"

#include <gtest/gtest.h>

#include "cocostorage/testing/status_matchers.h"
#include "kata_agent_request.h"
#include "request/admission.h"

namespace cocostorage::agent {
namespace {

using ::cocostorage::testing::StatusIs;

using ::cocostorage::agent::testing::KataAgentRequest;

StatusOr<ValidatedActivate> Map(const api::SecureMountRequest& r, bool allow_none = false) {
  COCO_ASSIGN_OR_RETURN(ActivationRequest a, ActivationFromSecureMount(r, std::chrono::seconds(50)));
  return Admit(a, AdmissionConfig{"/run/kata-containers/sandbox/storage", std::chrono::seconds(10), allow_none});
}

TEST(SecureMountTest, TheRequestKataAgentSends) {
  auto v = Map(KataAgentRequest());
  ASSERT_OK(v);
  const VolumeSpec& s = v->spec;
  EXPECT_EQ(s.id, "sm-MDIvMDA");
  EXPECT_EQ(s.device, (DeviceId{DeviceIdKind::kDevNumber, "254:16"}));
  EXPECT_TRUE(s.key.ephemeral());
  EXPECT_EQ(s.integrity, IntegrityMode::kHmacSha256);
  EXPECT_EQ(s.init_mode, InitMode::kZeroGuard);
  EXPECT_FALSE(s.block_mode);
  EXPECT_EQ(s.fs_type, "ext4");
  EXPECT_EQ(s.mkfs_options, (std::vector<std::string>{"-O", "^has_journal", "-m", "0", "-i", "163840", "-I", "128"}));
  EXPECT_EQ(s.target_path, "/run/kata-containers/sandbox/storage/MDIvMDA=");
  EXPECT_EQ(v->device_timeout.count(), 50000);
}

// The /dev/trusted_store caller: image layers at /run/kata-containers/image/.
TEST(SecureMountTest, TheTrustedStoreCaller) {
  auto r = KataAgentRequest();
  r.set_mount_point("/run/kata-containers/image/");
  (*r.mutable_options())["mkfsOpts"] = "-E lazy_journal_init";
  auto v = Map(r);
  ASSERT_OK(v);
  EXPECT_EQ(v->spec.target_path, "/run/kata-containers/image");
  EXPECT_EQ(v->spec.id, "sm-image");
}

TEST(SecureMountTest, AnIntegrityDowngradeNeedsTheAgentsConsent) {
  auto r = KataAgentRequest();
  (*r.mutable_options())["dataIntegrity"] = "false";
  EXPECT_THAT(Map(r), StatusIs(absl::StatusCode::kPermissionDenied));
  auto v = Map(r, /*allow_none=*/true);
  ASSERT_OK(v);
  EXPECT_EQ(v->spec.integrity, IntegrityMode::kNone);
}

TEST(SecureMountTest, UnknownShapesAreRefusedNeverGuessed) {
  struct Case {
    const char* what;
    void (*mutate)(api::SecureMountRequest&);
    absl::StatusCode code;
  } cases[] = {
      {"volume type", [](api::SecureMountRequest& r) { r.set_volume_type("aliyun-oss"); },
       absl::StatusCode::kInvalidArgument},
      {"flags", [](api::SecureMountRequest& r) { r.add_flags("rw"); }, absl::StatusCode::kInvalidArgument},
      {"unknown option", [](api::SecureMountRequest& r) { (*r.mutable_options())["key"] = "kbs:///a/b/c"; },
       absl::StatusCode::kInvalidArgument},
      {"encrypted source", [](api::SecureMountRequest& r) { (*r.mutable_options())["sourceType"] = "encrypted"; },
       absl::StatusCode::kInvalidArgument},
      {"device target", [](api::SecureMountRequest& r) { (*r.mutable_options())["targetType"] = "device"; },
       absl::StatusCode::kInvalidArgument},
      {"fs", [](api::SecureMountRequest& r) { (*r.mutable_options())["filesystemType"] = "btrfs"; },
       absl::StatusCode::kInvalidArgument},
      {"luks1", [](api::SecureMountRequest& r) { (*r.mutable_options())["encryptionType"] = "luks1"; },
       absl::StatusCode::kInvalidArgument},
      {"integrity word", [](api::SecureMountRequest& r) { (*r.mutable_options())["dataIntegrity"] = "yes"; },
       absl::StatusCode::kInvalidArgument},
      {"no device", [](api::SecureMountRequest& r) { r.mutable_options()->erase("deviceId"); },
       absl::StatusCode::kInvalidArgument},
      {"bad device", [](api::SecureMountRequest& r) { (*r.mutable_options())["deviceId"] = "/dev/vda"; },
       absl::StatusCode::kInvalidArgument},
      {"hostile mkfs", [](api::SecureMountRequest& r) { (*r.mutable_options())["mkfsOpts"] = "-d /etc"; },
       absl::StatusCode::kInvalidArgument},
      {"checksums off", [](api::SecureMountRequest& r) { (*r.mutable_options())["mkfsOpts"] = "-O ^metadata_csum"; },
       absl::StatusCode::kInvalidArgument},
      {"outside the root", [](api::SecureMountRequest& r) { r.set_mount_point("/etc/cron.d"); },
       absl::StatusCode::kPermissionDenied},
      {"nested", [](api::SecureMountRequest& r) { r.set_mount_point("/run/kata-containers/sandbox/storage/a/b"); },
       absl::StatusCode::kPermissionDenied},
  };
  for (const auto& c : cases) {
    auto r = KataAgentRequest();
    c.mutate(r);
    EXPECT_THAT(Map(r), StatusIs(c.code)) << c.what;
  }
}

}  // namespace
}  // namespace cocostorage::agent
