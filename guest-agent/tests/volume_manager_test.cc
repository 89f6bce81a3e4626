// VolumeManager logic against fakes: idempotency, conflicts, cleanup on
// failure, recovery. The real kernel path is proven in tests/vm.
#include "service/volume_manager.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <set>

#include "cocostorage/common/fs_util.h"

namespace cocostorage::agent {
namespace {

class FakeDm : public DmClient {
 public:
  Status Create(const std::string& name, const std::vector<DmTarget>&, bool) override {
    if (devs.count(name)) return absl::AlreadyExistsError(name);
    devs[name] = DmInfo{253, next_minor++, 0};
    return OkStatus();
  }
  Status Remove(const std::string& name) override {
    devs.erase(name);
    return OkStatus();
  }
  Status Message(const std::string&, const std::string&) override { return OkStatus(); }
  StatusOr<std::optional<DmInfo>> Info(const std::string& name) override {
    auto it = devs.find(name);
    if (it == devs.end()) return std::optional<DmInfo>();
    return std::optional<DmInfo>(it->second);
  }
  StatusOr<std::vector<std::string>> ListNames() override {
    std::vector<std::string> out;
    for (auto& [n, _] : devs) out.push_back(n);
    return out;
  }
  std::map<std::string, DmInfo> devs;
  unsigned next_minor = 0;
};

class FakeCrypt : public CryptEngine {
 public:
  explicit FakeCrypt(FakeDm* dm) : dm_(dm) {}
  Status FormatAndActivate(const CryptFormatRequest& req, const SecureBuffer& key) override {
    if (fail_format) return absl::InternalError("format failed");
    last_key_size = key.size();
    return dm_->Create(req.name, {}, false);
  }
  Status Wipe(const std::string&) override {
    ++wipes;
    return OkStatus();
  }
  Status Deactivate(const std::string& name) override { return dm_->Remove(name); }
  StatusOr<CryptStatus> Query(const std::string& name, const std::string&) override {
    CryptStatus s;
    s.active = dm_->devs.count(name) != 0;
    if (s.active) {
      s.cipher = "aes-xts-plain64";
      s.integrity = "hmac(sha256)";
      s.sector_size = 4096;
    }
    return s;
  }
  bool fail_format = false;
  int wipes = 0;
  size_t last_key_size = 0;

 private:
  FakeDm* dm_;
};

class FakeFs : public Filesystem {
 public:
  Status Mkfs(const std::vector<std::string>& argv) override {
    mkfs_calls.push_back(argv);
    return fail_mkfs ? absl::InternalError("mkfs.ext4 exited 1") : OkStatus();
  }
  Status Mount(const std::string& device, const std::string& target, const std::string& fs_type, unsigned long,
               const std::string& data) override {
    mounts.push_back({device_numbers[device], target, fs_type, device});
    last_mount_data = data;
    return OkStatus();
  }
  Status Unmount(const std::string& target) override {
    std::erase_if(mounts, [&](const MountEntry& m) { return m.mount_point == target; });
    return OkStatus();
  }
  StatusOr<std::vector<MountEntry>> Mounts() override { return mounts; }
  StatusOr<FsUsage> Usage(const std::string&) override { return FsUsage{1000, 10, 990}; }
  Status ApplyFsGroup(const std::string&, int64_t gid) override {
    applied_gid = gid;
    return OkStatus();
  }
  Status MakeBlockNode(const std::string&, unsigned, unsigned, std::optional<int64_t>) override { return OkStatus(); }
  Status RemoveNode(const std::string&) override { return OkStatus(); }
  StatusOr<uint64_t> BlockDeviceSize(const std::string&) override { return uint64_t{1} << 30; }

  std::vector<std::vector<std::string>> mkfs_calls;
  std::vector<MountEntry> mounts;
  std::map<std::string, std::string> device_numbers;
  std::string last_mount_data;
  std::optional<int64_t> applied_gid;
  bool fail_mkfs = false;
};

class FakeResolver : public DeviceResolver {
 public:
  StatusOr<BlockDevice> WaitFor(const DeviceId& id, std::chrono::milliseconds) override {
    auto it = devices.find(id.value);
    if (it == devices.end()) return absl::DeadlineExceededError("no device " + id.value);
    return it->second;
  }
  std::map<std::string, BlockDevice> devices;
};

class VolumeManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/coco-mgr-XXXXXX";
    root_ = mkdtemp(tmpl);
    config_.storage_root = root_ + "/storage";
    config_.state_dir = root_ + "/state";
    config_.sysfs_root = root_ + "/sys";
    state_ = std::make_unique<StateStore>(config_.state_dir);
    resolver_.devices["02/00"] = BlockDevice{"vdb", "/dev/vdb", 254, 16, 1ull << 30, "s1"};
    resolver_.devices["03/00"] = BlockDevice{"vdc", "/dev/vdc", 254, 32, 1ull << 30, "s2"};
    resolver_.devices["04/00"] = BlockDevice{"vdd", "/dev/vdd", 254, 48, 8ull << 20, "s3"};
    // Mount() records dev numbers of /dev/dm-N paths.
    for (unsigned i = 0; i < 16; ++i) fs_.device_numbers["/dev/dm-" + std::to_string(i)] = "253:" + std::to_string(i);
    manager_ = std::make_unique<VolumeManager>(config_, Deps{&resolver_, &crypt_, &dm_, &fs_, state_.get(), nullptr});
    ASSERT_TRUE(manager_->Recover().ok());
  }

  VolumeSpec Spec(const std::string& id, const std::string& pci, const std::string& fs = "ext4") {
    VolumeSpec s;
    s.id = id;
    s.device = {DeviceIdKind::kPciPath, pci};
    s.key_source = "ephemeral";
    s.fs_type = fs;
    // Full wipe keeps the real loop-device guard out of a host unit test.
    s.init_mode = InitMode::kFullWipe;
    s.fs_group = 3000;
    s.target_path = config_.storage_root + "/" + id;
    return s;
  }

  std::string root_;
  AgentConfig config_;
  FakeDm dm_;
  FakeCrypt crypt_{&dm_};
  FakeFs fs_;
  FakeResolver resolver_;
  std::unique_ptr<StateStore> state_;
  std::unique_ptr<VolumeManager> manager_;
};

TEST_F(VolumeManagerTest, ActivateFormatsMountsAndReportsHealthy) {
  auto info = manager_->Activate(Spec("v1", "02/00"), std::chrono::milliseconds(10));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->healthy) << info->problem;
  EXPECT_EQ(crypt_.last_key_size, 96u);
  EXPECT_EQ(crypt_.wipes, 1);
  ASSERT_EQ(fs_.mkfs_calls.size(), 1u);
  EXPECT_EQ(fs_.mkfs_calls[0].back(), "/dev/dm-0");
  EXPECT_EQ(fs_.applied_gid, 3000);
  EXPECT_EQ(info->record.phase, Phase::kActive);
  EXPECT_EQ(info->capacity_bytes, 1000u);
  EXPECT_EQ(fs_.last_mount_data, "");  // full wipe: no guard, ext4 initialises itables as usual
}

TEST_F(VolumeManagerTest, RepeatedActivateIsIdempotentAndConflictsAreRefused) {
  ASSERT_TRUE(manager_->Activate(Spec("v1", "02/00"), std::chrono::milliseconds(10)).ok());
  auto again = manager_->Activate(Spec("v1", "02/00"), std::chrono::milliseconds(10));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(fs_.mkfs_calls.size(), 1u);  // nothing redone

  auto different = manager_->Activate(Spec("v1", "02/00", "xfs"), std::chrono::milliseconds(10));
  EXPECT_EQ(different.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(std::string(different.status().message()).find("fs type"), std::string::npos);

  auto same_device = manager_->Activate(Spec("v2", "02/00"), std::chrono::milliseconds(10));
  EXPECT_EQ(same_device.status().code(), absl::StatusCode::kFailedPrecondition);

  auto overlapping = Spec("v3", "03/00");
  overlapping.target_path = config_.storage_root + "/v1/nested";
  EXPECT_EQ(manager_->Activate(overlapping, std::chrono::milliseconds(10)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(VolumeManagerTest, TooSmallDeviceAndMissingDevice) {
  EXPECT_EQ(manager_->Activate(Spec("small", "04/00"), std::chrono::milliseconds(10)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(manager_->Activate(Spec("gone", "09/00"), std::chrono::milliseconds(10)).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(state_->LoadAll()->empty());
}

TEST_F(VolumeManagerTest, FailureMidwayUndoesEverything) {
  fs_.fail_mkfs = true;
  auto info = manager_->Activate(Spec("v1", "02/00"), std::chrono::milliseconds(10));
  EXPECT_EQ(info.status().code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(dm_.devs.empty());
  EXPECT_TRUE(state_->LoadAll()->empty());
  EXPECT_EQ(ReadFileToString(config_.state_dir + "/headers/v1.luks2").status().code(), absl::StatusCode::kNotFound);
  fs_.fail_mkfs = false;
  EXPECT_TRUE(manager_->Activate(Spec("v1", "02/00"), std::chrono::milliseconds(10)).ok());
}

TEST_F(VolumeManagerTest, DeactivateTearsDownAndIsIdempotent) {
  ASSERT_TRUE(manager_->Activate(Spec("v1", "02/00"), std::chrono::milliseconds(10)).ok());
  auto was = manager_->Deactivate("v1");
  ASSERT_TRUE(was.ok());
  EXPECT_TRUE(*was);
  EXPECT_TRUE(dm_.devs.empty());
  EXPECT_TRUE(fs_.mounts.empty());
  auto again = manager_->Deactivate("v1");
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
  EXPECT_EQ(manager_->Get("v1").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(VolumeManagerTest, ReportsDegradedWhenMountDisappears) {
  ASSERT_TRUE(manager_->Activate(Spec("v1", "02/00"), std::chrono::milliseconds(10)).ok());
  fs_.mounts.clear();
  auto info = manager_->Get("v1");
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->healthy);
  EXPECT_NE(info->problem.find("not mounted"), std::string::npos);
}

TEST_F(VolumeManagerTest, RecoveryUndoesInterruptedActivation) {
  // What a crash right after the crypt mapping was created leaves behind.
  VolumeRecord rec;
  rec.spec = Spec("v1", "02/00");
  rec.phase = Phase::kActivating;
  ASSERT_TRUE(state_->Save(rec).ok());
  ASSERT_TRUE(dm_.Create("coco-v1-crypt", {}, false).ok());
  VolumeManager restarted(config_, Deps{&resolver_, &crypt_, &dm_, &fs_, state_.get(), nullptr});
  ASSERT_TRUE(restarted.Recover().ok());
  EXPECT_TRUE(dm_.devs.empty());
  EXPECT_TRUE(state_->LoadAll()->empty());
  EXPECT_TRUE(restarted.Activate(Spec("v1", "02/00"), std::chrono::milliseconds(10)).ok());
}

TEST_F(VolumeManagerTest, RecoveryKeepsActiveVolumes) {
  ASSERT_TRUE(manager_->Activate(Spec("v1", "02/00"), std::chrono::milliseconds(10)).ok());
  VolumeManager restarted(config_, Deps{&resolver_, &crypt_, &dm_, &fs_, state_.get(), nullptr});
  ASSERT_TRUE(restarted.Recover().ok());
  auto list = restarted.List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_TRUE((*list)[0].healthy) << (*list)[0].problem;
}

}  // namespace
}  // namespace cocostorage::agent
