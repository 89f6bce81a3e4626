#include "core/volume_spec.h"

#include <gtest/gtest.h>

namespace cocostorage::agent {
namespace {

VolumeSpec Sample() {
  VolumeSpec s;
  s.id = "vol-1";
  s.device = {DeviceIdKind::kPciPath, "02/00"};
  s.key_source = "ephemeral";
  s.fs_type = "xfs";
  s.mkfs_options = {"-m", "reflink=1"};
  s.mount_options = {"noatime"};
  s.fs_group = 1000;
  s.target_path = "/run/kata-containers/sandbox/storage/AbC=";
  return s;
}

TEST(VolumeSpecTest, JsonRoundTrip) {
  VolumeSpec s = Sample();
  auto back = VolumeSpec::FromJson(s.ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->SameVolumeAs(s));
  EXPECT_EQ(back->fs_group, 1000);
}

TEST(VolumeSpecTest, DiffNamesFields) {
  VolumeSpec a = Sample(), b = Sample();
  b.fs_type = "ext4";
  b.target_path = "/elsewhere";
  EXPECT_EQ(a.DiffAgainst(b), "fs type, target path");
  EXPECT_FALSE(a.SameVolumeAs(b));
}

TEST(VolumeSpecTest, MalformedJsonIsDataLoss) {
  EXPECT_EQ(VolumeSpec::FromJson(nlohmann::json{{"id", 3}}).status().code(), absl::StatusCode::kDataLoss);
}

TEST(VolumeSpecTest, SuitesHaveTheRightKeySizes) {
  EXPECT_EQ(SuiteFor(IntegrityMode::kHmacSha256).key_bytes, 96u);
  EXPECT_EQ(SuiteFor(IntegrityMode::kHmacSha256).integrity, "hmac(sha256)");
  EXPECT_EQ(SuiteFor(IntegrityMode::kNone).integrity, "");
  EXPECT_EQ(SuiteFor(IntegrityMode::kAegis128).integrity, "aead");
}

TEST(VolumeSpecTest, NamesAreDerivedFromId) {
  auto n = VolumeNames::For("v1", "/run/cocostorage", true);
  EXPECT_EQ(n.crypt, "coco-v1-crypt");
  EXPECT_EQ(n.top, "coco-v1");
  EXPECT_EQ(n.header_file, "/run/cocostorage/headers/v1.luks2");
  EXPECT_EQ(VolumeNames::For("v1", "/s", false).top, "coco-v1-crypt");
}

}  // namespace
}  // namespace cocostorage::agent
