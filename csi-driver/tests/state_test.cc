#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "cocostorage/common/fs_util.h"
#include "driver.h"
#include "plugin_harness.h"
#include "volume_state.h"

namespace cocostorage::csi {
namespace {

using testing::TempDir;

VolumeRecord SampleRecord() {
  VolumeRecord r;
  r.id = "cv-abc";
  r.name = "pvc-1";
  r.capacity_bytes = 64 << 20;
  r.params.key_source = KeySource::kKbs;
  r.params.kbs_resource_uri = "kbs:///r/t/g";
  r.params.fs_type = "xfs";
  r.params.integrity = "none";
  r.mode = VolumeMode::kFilesystem;
  r.backend = "sparse-file";
  r.device = "/b/cv-abc.img";
  r.staged = StageRecord{"/k/staging", VolumeMode::kFilesystem, 1};
  PublishRecord p;
  p.readonly = true;
  p.fs_group = "2000";
  p.mount_flags = {"noatime"};
  p.create_filesystem = true;
  r.targets["/k/target"] = p;
  return r;
}

void ExpectSame(const VolumeRecord& a, const VolumeRecord& b) {
  EXPECT_EQ(RecordToJson(a), RecordToJson(b));
  EXPECT_EQ(a.params, b.params);
  EXPECT_EQ(a.staged, b.staged);
  ASSERT_EQ(a.targets.size(), b.targets.size());
  EXPECT_TRUE(a.targets.begin()->second.SameRequest(b.targets.begin()->second));
  EXPECT_EQ(a.targets.begin()->second.create_filesystem, b.targets.begin()->second.create_filesystem);
}

TEST(StateTest, JsonRoundTrip) {
  VolumeRecord r = SampleRecord();
  auto back = RecordFromJson(RecordToJson(r));
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSame(r, *back);
}

TEST(StateTest, CorruptRecordsAreDataLoss) {
  EXPECT_EQ(RecordFromJson("{").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(RecordFromJson("[]").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(RecordFromJson(R"({"version":1})").status().code(), absl::StatusCode::kDataLoss);
  std::string wrong_version = RecordToJson(SampleRecord());
  wrong_version.replace(wrong_version.find("\"version\": 1"), 12, "\"version\": 9");
  EXPECT_EQ(RecordFromJson(wrong_version).status().code(), absl::StatusCode::kDataLoss);
}

// Found with fuzz/csi_records: a float where an integer belongs (version,
// capacityBytes, accessMode 1e300) was cast with undefined behaviour; it is
// DATA_LOSS.
TEST(StateTest, FloatsWhereIntegersBelongAreDataLoss) {
  auto with = [](const std::string& from, const std::string& to) {
    std::string text = RecordToJson(SampleRecord());
    const size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) text.replace(at, from.size(), to);
    return RecordFromJson(text).status().code();
  };
  EXPECT_EQ(with("\"version\": 1", "\"version\": 1e300"), absl::StatusCode::kDataLoss);
  EXPECT_EQ(with("\"version\": 1", "\"version\": 1.0"), absl::StatusCode::kDataLoss);
  EXPECT_EQ(with("\"capacityBytes\": 67108864", "\"capacityBytes\": -1e300"), absl::StatusCode::kDataLoss);
  EXPECT_EQ(with("\"accessMode\": 1", "\"accessMode\": 1e300"), absl::StatusCode::kDataLoss);
  EXPECT_EQ(with("\"accessMode\": 0", "\"accessMode\": 4294967296"), absl::StatusCode::kDataLoss);
}

// "everPublished" no longer decides anything (createFilesystem depends on the
// mode alone). Records written before still load, with either value, and so
// do records without the key; it is still written, as the value older plugin
// versions need, and a non-boolean is still corrupt.
TEST(StateTest, LegacyEverPublishedIsOptionalAndStillWritten) {
  const std::string current = RecordToJson(SampleRecord());
  EXPECT_NE(current.find("\"everPublished\": true"), std::string::npos) << current;
  auto with = [&](const std::string& to) {
    std::string text = current;
    text.replace(text.find("\"everPublished\": true"), 21, to);
    return RecordFromJson(text);
  };
  for (const char* legacy : {"\"everPublished\": false", "\"everPublished\": true", "\"everPublishedX\": 0"}) {
    auto r = with(legacy);
    ASSERT_TRUE(r.ok()) << legacy << ": " << r.status();
    ExpectSame(SampleRecord(), *r);
  }
  EXPECT_EQ(with("\"everPublished\": \"yes\"").status().code(), absl::StatusCode::kDataLoss);
  // An old version's record of a KBS volume published before, verbatim.
  constexpr char kOld[] =
      R"({"version":1,"id":"cv-abc","name":"pvc-1","capacityBytes":67108864,)"
      R"("params":{"keySource":"kbs","kbsResourceUri":"kbs:///r/t/g","fsType":"xfs","integrity":"none"},)"
      R"("mode":"filesystem","backend":"sparse-file","device":"/b/cv-abc.img","inlineEphemeral":false,)"
      R"("everPublished":true,"targets":{"/k/target":{"mode":"filesystem","accessMode":0,"readonly":false,)"
      R"("fsGroup":"","mountFlags":[],"createFilesystem":false}}})";
  auto old = RecordFromJson(kOld);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->params.kbs_resource_uri, "kbs:///r/t/g");
  EXPECT_FALSE(old->targets.at("/k/target").create_filesystem);  // as recorded; a retried publish updates it
}

TEST(StateTest, StoreSaveLoadListRemove) {
  TempDir tmp;
  StateStore store(tmp.path() + "/state");
  ASSERT_TRUE(store.Init().ok());
  struct stat st {};
  ASSERT_EQ(stat((tmp.path() + "/state").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  auto none = store.Load("cv-abc");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(store.Save(SampleRecord()).ok());
  ASSERT_EQ(stat((tmp.path() + "/state/cv-abc.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  auto got = store.Load("cv-abc");
  ASSERT_TRUE(got.ok() && got->has_value());
  ExpectSame(SampleRecord(), **got);
  // A torn temp file from a crash and a corrupt record do not break List.
  ASSERT_TRUE(AtomicWriteFile(tmp.path() + "/state/cv-bad.json", "{not json").ok());
  auto list = store.List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ(list->front().id, "cv-abc");
  ASSERT_TRUE(store.Remove("cv-abc").ok());
  ASSERT_TRUE(store.Remove("cv-abc").ok());  // idempotent
  EXPECT_FALSE(store.Load("cv-abc")->has_value());
}

TEST(StateTest, InitRemovesStaleTempFiles) {
  TempDir tmp;
  std::string dir = tmp.path() + "/state";
  ASSERT_TRUE(MakeDirs(dir).ok());
  ASSERT_TRUE(AtomicWriteFile(dir + "/cv-x.json.tmp.1234", "partial").ok());
  StateStore store(dir);
  ASSERT_TRUE(store.Init().ok());
  EXPECT_NE(access((dir + "/cv-x.json.tmp.1234").c_str(), F_OK), 0);
}

TEST(StateTest, RecordIdMustMatchFileName) {
  TempDir tmp;
  StateStore store(tmp.path());
  ASSERT_TRUE(store.Init().ok());
  ASSERT_TRUE(AtomicWriteFile(tmp.path() + "/cv-other.json", RecordToJson(SampleRecord())).ok());
  EXPECT_EQ(store.Load("cv-other").status().code(), absl::StatusCode::kDataLoss);
}

TEST(SparseFileBackendTest, CreateIsSparseIdempotentAndDeletes) {
  TempDir tmp;
  auto b = NewSparseFileBackend(tmp.path() + "/b");
  auto info = b->Create("cv-1", 256 << 20);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->device, tmp.path() + "/b/cv-1.img");
  EXPECT_EQ(info->size_bytes, 256 << 20);
  EXPECT_LT(info->allocated_bytes, 1 << 20);  // nothing written
  struct stat st {};
  ASSERT_EQ(stat(info->device.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  auto again = b->Create("cv-1", 256 << 20);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->size_bytes, 256 << 20);
  auto grown = b->Expand("cv-1", 512 << 20);
  ASSERT_TRUE(grown.ok());
  EXPECT_EQ(grown->size_bytes, 512 << 20);
  auto shrink = b->Expand("cv-1", 1 << 20);  // never shrinks
  ASSERT_TRUE(shrink.ok());
  EXPECT_EQ(shrink->size_bytes, 512 << 20);
  auto ids = b->List();
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, std::vector<std::string>{"cv-1"});
  ASSERT_TRUE(b->Create("cv-2", 1 << 20).ok());
  ASSERT_TRUE(b->Quarantine("cv-2").ok());
  ASSERT_TRUE(b->Quarantine("cv-2").ok());  // idempotent
  EXPECT_EQ(*b->List(), std::vector<std::string>{"cv-1"});
  ASSERT_TRUE(b->Delete("cv-1").ok());
  ASSERT_TRUE(b->Delete("cv-1").ok());
  EXPECT_EQ(b->Stat("cv-1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(b->Check().ok());
  EXPECT_GT(*b->FreeBytes(), 0);
}

TEST(SparseFileBackendTest, RefusesSymlink) {
  TempDir tmp;
  std::string root = tmp.path() + "/b";
  ASSERT_TRUE(MakeDirs(root).ok());
  ASSERT_EQ(symlink("/etc/passwd", (root + "/cv-1.img").c_str()), 0);
  auto b = NewSparseFileBackend(root);
  EXPECT_FALSE(b->Create("cv-1", 1 << 20).ok());
}

TEST(CapacityLedgerTest, AccountsAndLimits) {
  CapacityLedger l;
  l.SetTotal(100, 2);
  EXPECT_EQ(l.Available(), 100);
  EXPECT_TRUE(l.Reserve("a", 60).ok());
  EXPECT_EQ(l.Available(), 40);
  EXPECT_EQ(l.Reserve("b", 41).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(l.Reserve("b", 101).code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(l.Reserve("b", 40).ok());
  EXPECT_EQ(l.Available(), 0);
  EXPECT_TRUE(l.Reserve("a", 60).ok());  // re-reserving the same amount is fine
  l.Release("a");
  EXPECT_TRUE(l.Reserve("c", 10).ok());
  EXPECT_EQ(l.Reserve("d", 1).code(), absl::StatusCode::kResourceExhausted);  // volume count limit
  l.Release("zzz");                                                           // unknown: no-op
  EXPECT_EQ(l.Count(), 2u);
  l.Restore("e", 1000);  // start-up: committed volumes count even beyond the limits
  EXPECT_EQ(l.Count(), 3u);
  EXPECT_EQ(l.Available(), 0);
}

}  // namespace
}  // namespace cocostorage::csi
