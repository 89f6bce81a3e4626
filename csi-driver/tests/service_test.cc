// In-process tests of the CSI services over a fault-injecting backend: error
// paths leave no half-made volume behind (ledger, record, bytes), and the
// services work unchanged over a backend other than sparse files.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <set>

#include "controller_service.h"
#include "csi_util.h"
#include "driver.h"
#include "node_service.h"
#include "plugin_harness.h"

namespace cocostorage::csi {
namespace {

using testing::TempDir;
namespace pb = ::csi::v1;

// In-memory backend; each operation can be made to fail.
class FakeBackend final : public VolumeBackend {
 public:
  std::string Name() const override { return "fake"; }
  StatusOr<BackingInfo> Create(const std::string& id, int64_t size) override {
    ++create_calls;
    if (!fail_create.ok()) return fail_create;
    auto& v = volumes[id];
    v = std::max(v, size);
    if (after_create) after_create();
    return BackingInfo{"/dev/fake/" + id, v, 0};
  }
  Status Delete(const std::string& id) override {
    if (!fail_delete.ok()) return fail_delete;
    volumes.erase(id);
    return OkStatus();
  }
  Status Quarantine(const std::string& id) override {
    volumes.erase(id);
    quarantined.push_back(id);
    return OkStatus();
  }
  StatusOr<BackingInfo> Expand(const std::string& id, int64_t size) override {
    if (!volumes.count(id)) return absl::NotFoundError(id);
    volumes[id] = std::max(volumes[id], size);
    return BackingInfo{"/dev/fake/" + id, volumes[id], 0};
  }
  StatusOr<BackingInfo> Stat(const std::string& id) const override {
    auto it = volumes.find(id);
    if (it == volumes.end()) return absl::NotFoundError(id);
    return BackingInfo{"/dev/fake/" + id, it->second, written.count(id) ? it->second : 0};
  }
  StatusOr<std::vector<std::string>> List() const override {
    std::vector<std::string> ids;
    for (const auto& [id, unused] : volumes) ids.push_back(id);
    return ids;
  }
  StatusOr<int64_t> FreeBytes() const override { return int64_t{10} << 30; }
  Status Check() const override { return OkStatus(); }

  std::map<std::string, int64_t> volumes;
  std::set<std::string> written;  // volumes with bytes allocated
  std::vector<std::string> quarantined;
  Status fail_create, fail_delete;
  int create_calls = 0;
  std::function<void()> after_create;  // runs once the bytes exist
};

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { Reset(); }
  void Reset() {
    DriverConfig c;
    c.node_id = "n1";
    c.backing_root = tmp_.path() + "/backing";
    c.state_dir = tmp_.path() + "/state";
    c.kata_root = tmp_.path() + "/kata";
    c.kubelet_root = tmp_.path() + "/kubelet";
    mkdir(c.kubelet_root.c_str(), 0750);
    c.capacity_bytes = int64_t{4} << 30;
    auto backend = std::make_unique<FakeBackend>();
    if (fake_) backend->volumes = fake_->volumes;  // the "disk" survives a restart
    if (fake_) backend->written = fake_->written;
    fake_ = backend.get();
    driver_ = std::make_unique<Driver>(c, std::move(backend));
    ASSERT_TRUE(driver_->Init().ok());
    controller_ = std::make_unique<ControllerService>(driver_->ForController());
    node_ = std::make_unique<NodeService>(driver_->ForNode());
  }
  grpc::Status Create(const std::string& name, int64_t bytes, pb::CreateVolumeResponse* resp) {
    auto req = testing::CreateReq(name, bytes);
    return controller_->CreateVolume(nullptr, &req, resp);
  }
  grpc::Status Delete(const std::string& id) {
    pb::DeleteVolumeRequest req;
    req.set_volume_id(id);
    pb::DeleteVolumeResponse resp;
    return controller_->DeleteVolume(nullptr, &req, &resp);
  }

  TempDir tmp_;
  FakeBackend* fake_ = nullptr;
  std::unique_ptr<Driver> driver_;
  std::unique_ptr<ControllerService> controller_;
  std::unique_ptr<NodeService> node_;
};

TEST_F(ServiceTest, BackendFailureOnCreateLeavesNothing) {
  fake_->fail_create = absl::ResourceExhaustedError("volume group full");
  pb::CreateVolumeResponse resp;
  auto s = Create("v", 1 << 30, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(driver_->ledger.Available(), int64_t{4} << 30);
  EXPECT_FALSE(driver_->store.Load(VolumeIdForName("v"))->has_value());
  fake_->fail_create = OkStatus();
  ASSERT_TRUE(Create("v", 1 << 30, &resp).ok());
  EXPECT_EQ(resp.volume().capacity_bytes(), 1 << 30);
  EXPECT_EQ(driver_->ledger.Available(), int64_t{3} << 30);
}

TEST_F(ServiceTest, RecordWriteFailureRollsBackTheBytes) {
  // The state dir turns into a file once the backing bytes exist: the lookup
  // of an existing record has passed, and the record write (the commit
  // point) is what fails. Works as root, unlike a read-only directory.
  const std::string state = tmp_.path() + "/state";
  fake_->after_create = [&] {
    ASSERT_EQ(rename(state.c_str(), (state + ".moved").c_str()), 0);
    std::ofstream(state) << "not a directory";
  };
  pb::CreateVolumeResponse resp;
  auto s = Create("v", 1 << 30, &resp);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(fake_->create_calls, 1);                         // it got as far as the bytes
  EXPECT_TRUE(fake_->volumes.empty());                       // and rolled them back
  EXPECT_EQ(driver_->ledger.Available(), int64_t{4} << 30);  // ledger released
  fake_->after_create = nullptr;
  ASSERT_EQ(unlink(state.c_str()), 0);
  ASSERT_EQ(rename((state + ".moved").c_str(), state.c_str()), 0);
  EXPECT_FALSE(driver_->store.Load(VolumeIdForName("v"))->has_value());  // nothing committed
  ASSERT_TRUE(Create("v", 1 << 30, &resp).ok());                         // and the retry works
}

TEST_F(ServiceTest, CorruptRecordKeepsItsBytesAndIsLeftForTheOperator) {
  pb::CreateVolumeResponse resp;
  ASSERT_TRUE(Create("v", 1 << 30, &resp).ok());
  const std::string id = resp.volume().volume_id();
  { std::ofstream(tmp_.path() + "/state/" + id + ".json") << "{ torn"; }
  fake_->volumes["cv-orphan"] = 1 << 20;  // a real orphan, for contrast
  fake_->written.insert("cv-orphan");
  fake_->volumes["cv-never-written"] = 1 << 20;  // an orphan that holds no byte
  Reset();
  EXPECT_EQ(fake_->quarantined, std::vector<std::string>{"cv-orphan"});
  EXPECT_EQ(fake_->volumes.count("cv-never-written"), 0u);   // removed: nothing to keep
  EXPECT_EQ(fake_->volumes.count(id), 1u);                   // bytes kept
  EXPECT_EQ(driver_->ledger.Available(), int64_t{3} << 30);  // and still counted
  pb::NodeStageVolumeRequest stage;
  stage.set_volume_id(id);
  stage.set_staging_target_path(tmp_.path() + "/kubelet/staging");
  *stage.mutable_volume_capability() = testing::MountCap();
  pb::NodeStageVolumeResponse sresp;
  EXPECT_EQ(node_->NodeStageVolume(nullptr, &stage, &sresp).error_code(), grpc::StatusCode::DATA_LOSS);
  Reset();  // and again at the next start: never quarantined
  EXPECT_TRUE(fake_->quarantined.empty());
  EXPECT_EQ(fake_->volumes.count(id), 1u);
}

TEST_F(ServiceTest, DeleteFailureKeepsTheVolumeUntilRetried) {
  pb::CreateVolumeResponse resp;
  ASSERT_TRUE(Create("v", 1 << 30, &resp).ok());
  const std::string id = resp.volume().volume_id();
  fake_->fail_delete = absl::UnavailableError("device busy");
  EXPECT_EQ(Delete(id).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(driver_->store.Load(id)->has_value());
  EXPECT_EQ(driver_->ledger.Available(), int64_t{3} << 30);
  fake_->fail_delete = OkStatus();
  EXPECT_TRUE(Delete(id).ok());
  EXPECT_FALSE(driver_->store.Load(id)->has_value());
  EXPECT_EQ(driver_->ledger.Available(), int64_t{4} << 30);
}

TEST_F(ServiceTest, RestartReloadsLedgerAndQuarantinesUnclaimedVolumes) {
  pb::CreateVolumeResponse resp;
  ASSERT_TRUE(Create("v", 1 << 30, &resp).ok());
  fake_->volumes["cv-unclaimed"] = 1 << 20;
  fake_->written.insert("cv-unclaimed");  // bytes: set aside, not removed
  Reset();
  EXPECT_EQ(driver_->ledger.Available(), int64_t{3} << 30);
  EXPECT_EQ(fake_->quarantined, std::vector<std::string>{"cv-unclaimed"});
  EXPECT_EQ(fake_->volumes.count(resp.volume().volume_id()), 1u);
  // The device path handed to Kata comes from the backend, whatever it is.
  auto r = driver_->store.Load(resp.volume().volume_id());
  ASSERT_TRUE(r.ok() && r->has_value());
  EXPECT_EQ((*r)->device, "/dev/fake/" + resp.volume().volume_id());
  EXPECT_EQ((*r)->backend, "fake");
}

TEST_F(ServiceTest, ShrunkTotalKeepsCommittedVolumes) {
  pb::CreateVolumeResponse a, b;
  ASSERT_TRUE(Create("a", int64_t{2} << 30, &a).ok());
  ASSERT_TRUE(Create("b", int64_t{2} << 30, &b).ok());
  // Restart with a smaller total: both volumes still count; nothing new fits.
  DriverConfig c = driver_->config;
  c.capacity_bytes = int64_t{3} << 30;
  auto backend = std::make_unique<FakeBackend>();
  backend->volumes = fake_->volumes;
  fake_ = backend.get();
  driver_ = std::make_unique<Driver>(c, std::move(backend));
  ASSERT_TRUE(driver_->Init().ok());
  controller_ = std::make_unique<ControllerService>(driver_->ForController());
  EXPECT_EQ(driver_->ledger.Available(), 0);
  pb::CreateVolumeResponse again;
  EXPECT_TRUE(Create("a", int64_t{2} << 30, &again).ok());  // idempotent re-create still answers
  EXPECT_EQ(Create("c", 1 << 20, &again).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(Delete(b.volume().volume_id()).ok());
  EXPECT_EQ(driver_->ledger.Available(), int64_t{1} << 30);
}

TEST_F(ServiceTest, StatsReportMissingBackingAsAbnormal) {
  pb::CreateVolumeResponse resp;
  ASSERT_TRUE(Create("v", 1 << 30, &resp).ok());
  const std::string id = resp.volume().volume_id();
  pb::NodeStageVolumeRequest stage;
  stage.set_volume_id(id);
  const std::string staging = tmp_.path() + "/kubelet/staging";
  ASSERT_EQ(mkdir(staging.c_str(), 0750), 0);
  stage.set_staging_target_path(staging);
  *stage.mutable_volume_capability() = testing::MountCap();
  pb::NodeStageVolumeResponse sresp;
  ASSERT_TRUE(node_->NodeStageVolume(nullptr, &stage, &sresp).ok());
  fake_->volumes.clear();  // the bytes vanished behind our back
  pb::NodeGetVolumeStatsRequest req;
  req.set_volume_id(id);
  req.set_volume_path(staging);
  pb::NodeGetVolumeStatsResponse stats;
  ASSERT_TRUE(node_->NodeGetVolumeStats(nullptr, &req, &stats).ok());
  EXPECT_TRUE(stats.volume_condition().abnormal());
  EXPECT_FALSE(stats.volume_condition().message().empty());
}

}  // namespace
}  // namespace cocostorage::csi

namespace cocostorage::csi {
namespace {

TEST(CapabilityTest, ParsesWhatWeServeAndRefusesTheRest) {
  namespace pb = ::csi::v1;
  using AM = pb::VolumeCapability::AccessMode;
  auto mount = testing::MountCap(AM::SINGLE_NODE_SINGLE_WRITER, "xfs");
  mount.mutable_mount()->add_mount_flags("noatime");
  mount.mutable_mount()->set_volume_mount_group("1000");
  auto c = ParseCapability(mount);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->mode, VolumeMode::kFilesystem);
  EXPECT_EQ(c->access_mode, AM::SINGLE_NODE_SINGLE_WRITER);
  EXPECT_EQ(c->fs_type, "xfs");
  EXPECT_EQ(c->mount_flags, std::vector<std::string>{"noatime"});
  EXPECT_EQ(c->mount_group, "1000");
  auto block = ParseCapability(testing::BlockCap(AM::SINGLE_NODE_READER_ONLY));
  ASSERT_TRUE(block.ok());
  EXPECT_EQ(block->mode, VolumeMode::kBlock);
  EXPECT_EQ(ParseCapability(testing::MountCap(AM::UNKNOWN)).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseCapability(testing::MountCap(static_cast<AM::Mode>(99))).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Well-formed modes parse; whether they are served is RequireSingleNode's.
  for (auto mode : {AM::SINGLE_NODE_WRITER, AM::SINGLE_NODE_READER_ONLY, AM::SINGLE_NODE_SINGLE_WRITER,
                    AM::SINGLE_NODE_MULTI_WRITER}) {
    auto p = ParseCapability(testing::MountCap(mode));
    ASSERT_TRUE(p.ok()) << AM::Mode_Name(mode);
    EXPECT_TRUE(RequireSingleNode(*p, absl::StatusCode::kFailedPrecondition).ok()) << AM::Mode_Name(mode);
  }
  for (auto mode : {AM::MULTI_NODE_READER_ONLY, AM::MULTI_NODE_SINGLE_WRITER, AM::MULTI_NODE_MULTI_WRITER}) {
    auto p = ParseCapability(testing::BlockCap(mode));
    ASSERT_TRUE(p.ok()) << AM::Mode_Name(mode);
    EXPECT_EQ(RequireSingleNode(*p, absl::StatusCode::kFailedPrecondition).code(),
              absl::StatusCode::kFailedPrecondition)
        << AM::Mode_Name(mode);
    EXPECT_EQ(RequireSingleNode(*p, absl::StatusCode::kInvalidArgument).code(), absl::StatusCode::kInvalidArgument);
  }
  pb::VolumeCapability none;
  none.mutable_access_mode()->set_mode(AM::SINGLE_NODE_WRITER);
  EXPECT_EQ(ParseCapability(none).status().code(), absl::StatusCode::kInvalidArgument);
  auto bad_flag = testing::MountCap();
  bad_flag.mutable_mount()->add_mount_flags("a b");
  EXPECT_EQ(ParseCapability(bad_flag).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseCapability(testing::MountCap(AM::SINGLE_NODE_WRITER, "ntfs")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cocostorage::csi
