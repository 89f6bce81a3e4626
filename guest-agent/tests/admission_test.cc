// The admission layer through the gRPC transport adapter: what the host may
// ask for over our API, and the codes for everything else.
#include "request/admission.h"

#include <gtest/gtest.h>

#include "service/grpc_service.h"

namespace cocostorage::agent {
namespace {

namespace pb = cocostorage::storage::v1;
const std::string kRoot = "/run/kata-containers/sandbox/storage";

pb::ActivateVolumeRequest Good() {
  pb::ActivateVolumeRequest r;
  r.set_volume_id("pvc-123");
  r.mutable_device()->set_pci_path("02/00");
  r.mutable_key()->mutable_ephemeral();
  r.mutable_filesystem()->set_fs_type("ext4");
  r.mutable_filesystem()->set_fs_group(2000);
  r.set_target_path(kRoot + "/MDIvMDA=");
  return r;
}

StatusOr<ValidatedActivate> ValidateActivate(const pb::ActivateVolumeRequest& r, const std::string& root,
                                             std::chrono::milliseconds timeout) {
  COCO_ASSIGN_OR_RETURN(ActivationRequest a, ActivationFromProto(r));
  return Admit(a, AdmissionConfig{root, timeout});
}

absl::StatusCode Code(const pb::ActivateVolumeRequest& r) {
  return ValidateActivate(r, kRoot, std::chrono::milliseconds(1000)).status().code();
}

TEST(ValidationTest, GoodRequestGetsDefaults) {
  auto v = ValidateActivate(Good(), kRoot, std::chrono::milliseconds(1234));
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->spec.integrity, IntegrityMode::kHmacSha256);
  EXPECT_EQ(v->spec.init_mode, InitMode::kZeroGuard);
  EXPECT_FALSE(v->spec.block_mode);
  EXPECT_EQ(v->spec.fs_group, 2000);
  EXPECT_EQ(v->device_timeout.count(), 1234);
}

TEST(ValidationTest, BadInputsGetTheRightCodes) {
  auto r = Good();
  r.set_volume_id("../etc");
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument);
  r = Good();
  r.clear_device();
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument);
  r = Good();
  r.mutable_filesystem()->set_fs_type("btrfs");
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument);
  r = Good();
  r.set_target_path("/etc/passwd");
  EXPECT_EQ(Code(r), absl::StatusCode::kPermissionDenied);
  r = Good();
  r.set_target_path(kRoot + "/../../../etc");
  EXPECT_EQ(Code(r), absl::StatusCode::kPermissionDenied);
  r = Good();
  r.set_target_path(kRoot);
  EXPECT_EQ(Code(r), absl::StatusCode::kPermissionDenied);
  r = Good();
  r.set_target_path(kRoot + "/a/b");  // only directly below the root
  EXPECT_EQ(Code(r), absl::StatusCode::kPermissionDenied);
  r = Good();
  r.set_target_path("relative/path");
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument);
  r = Good();
  r.clear_key();
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument);
  r = Good();
  r.mutable_key()->set_kbs_resource_uri("kbs://host/default/key");
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument);
  r = Good();
  r.mutable_key()->set_kbs_resource_uri("kbs:///default/key/../x");
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument);
  r = Good();
  r.set_integrity(static_cast<pb::Integrity>(99));
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument);
  r = Good();
  r.mutable_filesystem()->add_mkfs_options("-d");
  r.mutable_filesystem()->add_mkfs_options("/etc");
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument);
  r = Good();
  r.set_device_timeout_ms(3600000);
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument);
  r = Good();
  r.mutable_filesystem()->set_fs_group(-5);
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument);
}

TEST(ValidationTest, BlockModeTakesNoFilesystem) {
  auto r = Good();
  r.set_mode(pb::VOLUME_MODE_BLOCK);
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument);
  r.mutable_filesystem()->clear_fs_type();
  auto v = ValidateActivate(r, kRoot, std::chrono::milliseconds(1));
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_TRUE(v->spec.block_mode);
  EXPECT_EQ(v->spec.fs_group, 2000);
}

TEST(ValidationTest, IntegrityNoneNeedsTheAgentsConsent) {
  auto r = Good();
  r.set_integrity(pb::INTEGRITY_NONE);
  EXPECT_EQ(Code(r), absl::StatusCode::kPermissionDenied);
  auto a = ActivationFromProto(r);
  ASSERT_TRUE(a.ok());
  AdmissionConfig allow{kRoot, std::chrono::milliseconds(1), /*allow_integrity_none=*/true};
  auto v = Admit(*a, allow);
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_EQ(v->spec.integrity, IntegrityMode::kNone);
}

TEST(ValidationTest, KbsKeyIsTypedAndChecked) {
  auto r = Good();
  r.mutable_key()->set_kbs_resource_uri("kbs:///default/key/vol-1.v2");
  auto v = ValidateActivate(r, kRoot, std::chrono::milliseconds(1));
  ASSERT_TRUE(v.ok()) << v.status();
  EXPECT_FALSE(v->spec.key.ephemeral());
  EXPECT_EQ(v->spec.key.kbs_uri(), "kbs:///default/key/vol-1.v2");
  for (const char* bad :
       {"kbs:///a/b", "kbs:///a/b/c/d", "kbs:///a//c", "kbs:///.a/b/c", "kbs:///a/b/c d", "https://kbs/a/b/c"}) {
    EXPECT_FALSE(KeySource::Kbs(bad).ok()) << bad;
  }
}

// A hostile host sent 120,000 mkfs options and multi-kilobyte values.
TEST(ValidationTest, RepeatedAndLongFieldsAreBounded) {
  auto r = Good();
  for (int i = 0; i < 40; ++i) r.mutable_filesystem()->add_mount_options("noatime");
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument);
  r = Good();
  for (int i = 0; i < 120000; ++i) r.mutable_filesystem()->add_mkfs_options("-m");
  auto v = ValidateActivate(r, kRoot, std::chrono::milliseconds(1));
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(v.status().message().size(), 300u);
  r = Good();
  r.mutable_filesystem()->add_mkfs_options("-L");
  r.mutable_filesystem()->add_mkfs_options(std::string(10000, 'a'));
  v = ValidateActivate(r, kRoot, std::chrono::milliseconds(1));
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(v.status().message().size(), 300u);
  r = Good();
  r.set_target_path(kRoot + "/" + std::string(5000, 'x'));
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument);
  r = Good();
  r.set_volume_id(std::string(100000, 'v'));
  v = ValidateActivate(r, kRoot, std::chrono::milliseconds(1));
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(v.status().message().size(), 300u);  // the echo is capped
}

// Long ext4 feature lists used to overflow the stack in std::regex.
TEST(ValidationTest, LongFeatureListIsRefusedNotACrash) {
  auto r = Good();
  std::string features = "has_journal";
  while (features.size() < 200000) features += ",^has_journal";
  r.mutable_filesystem()->add_mkfs_options("-O");
  r.mutable_filesystem()->add_mkfs_options(features);
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cocostorage::agent
