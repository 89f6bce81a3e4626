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

}  // namespace
}  // namespace cocostorage::agent
