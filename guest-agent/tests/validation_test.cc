#include <gtest/gtest.h>

#include "service/request_validation.h"

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
  r.set_target_path("relative/path");
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument);
  r = Good();
  r.clear_key();
  EXPECT_EQ(Code(r), absl::StatusCode::kInvalidArgument);
  r = Good();
  r.mutable_key()->set_kbs_resource_uri("kbs:///default/key/1");
  EXPECT_EQ(Code(r), absl::StatusCode::kUnimplemented);
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

}  // namespace
}  // namespace cocostorage::agent
