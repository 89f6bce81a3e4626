#include "state/state_store.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "cocostorage/common/fs_util.h"

namespace cocostorage::agent {
namespace {

std::string TempDir() {
  char tmpl[] = "/tmp/coco-state-XXXXXX";
  return mkdtemp(tmpl);
}

VolumeRecord Rec(const std::string& id) {
  VolumeRecord r;
  r.spec.id = id;
  r.spec.device = {DeviceIdKind::kSerial, "s-" + id};
  r.spec.key = KeySource::Ephemeral();
  r.spec.block_mode = true;
  r.spec.target_path = "/run/x/" + id;
  r.phase = Phase::kActive;
  r.device_name = "vdb";
  r.device_size_bytes = 1 << 30;
  return r;
}

TEST(StateStoreTest, SaveLoadDeleteRoundTrip) {
  StateStore st(TempDir());
  ASSERT_TRUE(st.Init().ok());
  ASSERT_TRUE(st.Save(Rec("a")).ok());
  ASSERT_TRUE(st.Save(Rec("b")).ok());
  auto a = st.Load("a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->phase, Phase::kActive);
  EXPECT_EQ(a->device_size_bytes, 1u << 30);
  EXPECT_EQ(st.LoadAll()->size(), 2u);
  ASSERT_TRUE(st.Delete("a").ok());
  EXPECT_EQ(st.Load("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(st.Delete("a").ok());
}

TEST(StateStoreTest, CorruptRecordIsReportedAndSkipped) {
  std::string dir = TempDir();
  StateStore st(dir);
  ASSERT_TRUE(st.Init().ok());
  ASSERT_TRUE(st.Save(Rec("good")).ok());
  ASSERT_TRUE(AtomicWriteFile(dir + "/volumes/bad.json", "{not json").ok());
  EXPECT_EQ(st.Load("bad").status().code(), absl::StatusCode::kDataLoss);
  auto all = st.LoadAll();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].spec.id, "good");
}

// Found with fuzz/state_record: a member of the wrong type threw out of
// Load (a string member) or cast a float to an integer with undefined
// behaviour (device_kind 1e300). Both are DATA_LOSS now.
TEST(StateStoreTest, MistypedMembersAreDataLossNotACrash) {
  nlohmann::json good;
  good["spec"] = Rec("v").spec.ToJson();
  good["phase"] = "active";
  good["device_size_bytes"] = 4096;
  auto ok = VolumeRecordFromJson(good.dump());
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->phase, Phase::kActive);
  EXPECT_EQ(ok->device_size_bytes, 4096u);
  auto with = [&](const char* key, nlohmann::json v) {
    nlohmann::json j = good;
    j[key] = std::move(v);
    return VolumeRecordFromJson(j.dump()).status().code();
  };
  EXPECT_EQ(with("phase", 3), absl::StatusCode::kDataLoss);
  EXPECT_EQ(with("device_name", nlohmann::json::array()), absl::StatusCode::kDataLoss);
  EXPECT_EQ(with("device_size_bytes", 1e300), absl::StatusCode::kDataLoss);
  EXPECT_EQ(with("device_size_bytes", -1), absl::StatusCode::kDataLoss);
  EXPECT_EQ(with("provisioning_duration_ms", "12"), absl::StatusCode::kDataLoss);
  nlohmann::json spec = good;
  spec["spec"]["device_kind"] = 1e300;
  EXPECT_EQ(VolumeRecordFromJson(spec.dump()).status().code(), absl::StatusCode::kDataLoss);
  spec["spec"]["device_kind"] = 3;
  EXPECT_EQ(VolumeRecordFromJson(spec.dump()).status().code(), absl::StatusCode::kDataLoss);
  spec["spec"]["device_kind"] = 1;
  spec["spec"]["fs_group"] = -1e300;
  EXPECT_EQ(VolumeRecordFromJson(spec.dump()).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace cocostorage::agent
