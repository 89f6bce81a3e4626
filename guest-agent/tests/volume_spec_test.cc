#include "core/volume_spec.h"

#include <gtest/gtest.h>

#include <map>

namespace cocostorage::agent {
namespace {

VolumeSpec Sample() {
  VolumeSpec s;
  s.id = "vol-1";
  s.device = {DeviceIdKind::kPciPath, "02/00"};
  s.key = KeySource::Ephemeral();
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
  EXPECT_EQ(n.crypt, "coco-v1:crypt");
  EXPECT_EQ(n.top, "coco-v1");
  EXPECT_EQ(n.header_file, "/run/cocostorage/headers/v1.luks2");
  EXPECT_EQ(VolumeNames::For("v1", "/s", false).top, "coco-v1:crypt");
}

// Recovery decides ownership by name: v1 must never claim v10's mappings.
TEST(VolumeSpecTest, MappingOwnershipIsNotAPlainPrefix) {
  EXPECT_TRUE(MappingBelongsTo("v1", "coco-v1"));
  EXPECT_TRUE(MappingBelongsTo("v1", "coco-v1:crypt"));
  EXPECT_TRUE(MappingBelongsTo("v1", "coco-v1:crypt_dif"));
  EXPECT_TRUE(MappingBelongsTo("v1", "coco-v1:pool"));
  EXPECT_FALSE(MappingBelongsTo("v1", "coco-v10"));
  EXPECT_FALSE(MappingBelongsTo("v1", "coco-v10:crypt"));
  EXPECT_FALSE(MappingBelongsTo("v1", "coco-v"));
  EXPECT_FALSE(MappingBelongsTo("v1", "coco-v1-crypt"));  // volume "v1-crypt"'s top device
  EXPECT_FALSE(MappingBelongsTo("v1", "other-v1"));
}

// Activating id "X-crypt" used to remove volume X's crypt mapping (its key is
// then gone for good): no id may produce another id's name for any layer.
TEST(VolumeSpecTest, DerivedNamesAreInjective) {
  const std::vector<std::string> ids = {"x", "x-crypt", "x-pool", "x-crypt_dif", "x.crypt", "x_crypt", "x-"};
  std::map<std::string, std::string> owner;
  for (const auto& id : ids) {
    for (bool guard : {true, false}) {
      VolumeNames n = VolumeNames::For(id, "/s", guard);
      for (const auto& name : {n.crypt, n.crypt + "_dif", n.pool, n.top, n.header_file, n.guard_meta_file}) {
        auto [it, inserted] = owner.emplace(name, id);
        EXPECT_TRUE(inserted || it->second == id) << name << " is derived from both " << it->second << " and " << id;
      }
      for (const auto& other : ids) {
        if (other == id) continue;
        EXPECT_FALSE(MappingBelongsTo(other, n.crypt)) << other << " would claim " << n.crypt;
        EXPECT_FALSE(MappingBelongsTo(other, n.top)) << other << " would claim " << n.top;
      }
    }
  }
}

TEST(VolumeSpecTest, KbsKeySurvivesTheRecordAndABadOneIsDataLoss) {
  VolumeSpec s = Sample();
  s.key = *KeySource::Kbs("kbs:///repo/key/vol");
  auto back = VolumeSpec::FromJson(s.ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->key, s.key);
  auto j = s.ToJson();
  j["key_source"] = "kbs://evil/../x";
  EXPECT_EQ(VolumeSpec::FromJson(j).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace cocostorage::agent
