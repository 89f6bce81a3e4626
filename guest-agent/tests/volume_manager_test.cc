// VolumeManager logic against fakes: idempotency, conflicts, cleanup on
// failure, recovery. The real kernel path is proven in tests/vm.
#include "service/volume_manager.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <set>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/testing/status_matchers.h"
#include "pv_test_util.h"

namespace cocostorage::agent {
namespace {

using ::cocostorage::testing::StatusIs;

class FakeDm : public DmClient {
 public:
  Status Create(const std::string& name, const std::vector<DmTarget>& table, bool) override {
    if (before_create) before_create(name);
    if (fail_create == name) return absl::InternalError("creating " + name + " failed");
    if (devs.count(name)) return absl::AlreadyExistsError(name);
    devs[name] = DmInfo{253, next_minor++, 0};
    tables[name] = table;
    return OkStatus();
  }
  Status Remove(const std::string& name) override {
    devs.erase(name);
    return OkStatus();
  }
  Status Message(const std::string& name, const std::string& msg) override {
    messages.push_back(name + ": " + msg);
    return OkStatus();
  }
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
  StatusOr<std::vector<DmTarget>> TargetStatus(const std::string& name) override {
    auto it = status.find(name);
    if (it != status.end()) return it->second;
    if (devs.count(name) == 0) return absl::NotFoundError(name + " is missing");
    return std::vector<DmTarget>{};
  }
  StatusOr<std::vector<DmTarget>> Table(const std::string& name) override {
    if (devs.count(name) == 0) return absl::NotFoundError(name + " is missing");
    return tables[name];
  }
  std::map<std::string, DmInfo> devs;
  std::map<std::string, std::vector<DmTarget>> status;  // what `dmsetup status` would say
  std::map<std::string, std::vector<DmTarget>> tables;
  std::vector<std::string> messages;
  std::string fail_create;
  std::function<void(const std::string&)> before_create;
  unsigned next_minor = 0;
};

class FakeLoops : public LoopDevices {
 public:
  StatusOr<LoopAttachment> Attach(const std::string& file) override {
    if (fail) return absl::UnavailableError("no free loop device");
    attached.push_back(file);
    LoopAttachment a;
    a.major = 7;
    a.minor = static_cast<unsigned>(attached.size() - 1);
    a.path = "/dev/loop" + std::to_string(a.minor);
    return a;
  }
  std::vector<std::string> attached;
  bool fail = false;
};

class FakeFiles : public ScratchFiles {
 public:
  Status CreateSparse(const std::string& path, uint64_t bytes) override {
    if (before_create) before_create(path);
    files[path] = bytes;
    return OkStatus();
  }
  Status Write(const std::string& path, std::span<const uint8_t> bytes) override {
    files[path] = bytes.size();
    contents[path].assign(bytes.begin(), bytes.end());
    return OkStatus();
  }
  StatusOr<std::vector<uint8_t>> Read(const std::string& path) override {
    auto it = contents.find(path);
    if (it == contents.end()) return absl::NotFoundError(path);
    return it->second;
  }
  Status Remove(const std::string& path) override {
    files.erase(path);
    contents.erase(path);
    return OkStatus();
  }
  Status MakeDir(const std::string&) override { return OkStatus(); }
  std::map<std::string, uint64_t> files;
  std::map<std::string, std::vector<uint8_t>> contents;
  std::function<void(const std::string&)> before_create;
};

class FakeKeys : public KeyProvider {
 public:
  StatusOr<SecureBuffer> GetKey(const KeySource& source, size_t bytes) override {
    ++calls;
    if (fail) return absl::UnavailableError("key service unreachable");
    last_bytes = bytes;
    if (source.ephemeral()) return SecureBuffer::Random(bytes);
    ++kbs_calls;
    // The same resource always releases the same bytes (a KBS does).
    COCO_ASSIGN_OR_RETURN(SecureBuffer key, SecureBuffer::Allocate(bytes));
    const size_t seed = std::hash<std::string>{}(source.kbs_uri());
    for (size_t i = 0; i < bytes; ++i) key.data()[i] = static_cast<uint8_t>((seed >> (8 * (i % 8))) + i);
    return key;
  }
  size_t last_bytes = 0;
  int calls = 0;
  int kbs_calls = 0;
  bool fail = false;
};

class FakeCrypt : public CryptEngine {
 public:
  explicit FakeCrypt(FakeDm* dm) : dm_(dm) {}
  Status FormatAndActivate(const CryptFormatRequest& req, const SecureBuffer& key) override {
    if (fail_format) return absl::InternalError("format failed");
    last_key_size = key.size();
    return dm_->Create(req.name, {}, false);
  }
  // Writes the header libcryptsetup would (random keyslots area included)
  // and an integrity layer at the data offset in journal mode.
  Status FormatPersistent(const CryptPersistentFormat& req, const SecureBuffer&) override {
    ++persistent_formats;
    pv::LuksExpectations want;
    COCO_ASSIGN_OR_RETURN(want.uuid, pv::ParseUuidText(req.uuid));
    want.integrity = req.suite.integrity.empty() ? IntegrityMode::kNone : IntegrityMode::kHmacSha256;
    std::vector<uint8_t> image = pv::testing::LuksImageBuilder::For(want).Build();
    for (size_t i = 2 * pv::kLuksMetadataBytes; i < image.size(); ++i) image[i] = static_cast<uint8_t>(i * 7 + 1);
    COCO_RETURN_IF_ERROR(files->Write(req.header_file, image));
    return Activate(req.data_device, req.name, req.data_offset_bytes, !req.suite.integrity.empty());
  }
  Status OpenPersistent(const std::string& data_device, const std::string& header_file, const std::string& name,
                        const SecureBuffer&) override {
    ++persistent_opens;
    COCO_ASSIGN_OR_RETURN(opened_header, files->Read(header_file));
    return Activate(data_device, name, pv::kPrefixBytes, true);
  }
  Status Activate(const std::string& data_device, const std::string& name, uint64_t offset, bool integrity) {
    if (integrity) {
      COCO_RETURN_IF_ERROR(dm_->Create(name + "_dif", {}, false));
      dm_->tables[name + "_dif"] = {
          {0, 1, "integrity", Cat(data_device, " ", offset / 512, " 32 ", integrity_mode, " 0")}};
    }
    return dm_->Create(name, {}, false);
  }
  FakeFiles* files = nullptr;
  int persistent_formats = 0;
  int persistent_opens = 0;
  std::string integrity_mode = "J";
  std::vector<uint8_t> opened_header;
  Status Wipe(const std::string&) override {
    ++wipes;
    return OkStatus();
  }
  Status Deactivate(const std::string& name) override {
    COCO_RETURN_IF_ERROR(dm_->Remove(name));
    return dm_->Remove(name + "_dif");
  }
  StatusOr<CryptStatus> Query(const std::string& name, const std::string&) override {
    CryptStatus s;
    s.active = dm_->devs.count(name) != 0;
    if (s.active) {
      s.cipher = "aes-xts-plain64";
      s.integrity = "hmac(sha256)";
      s.sector_size = 4096;
      s.size_bytes = crypt_bytes;
      s.integrity_journal = true;
    }
    return s;
  }
  uint64_t crypt_bytes = 1000ull << 20;
  bool fail_format = false;
  int wipes = 0;
  size_t last_key_size = 0;

 private:
  FakeDm* dm_;
};

// A disk's bytes in 4 KiB pages; absent pages read as zeros.
class FakeDiskIo : public RawDiskIo {
 public:
  StatusOr<std::vector<uint8_t>> Read(const std::string& dev, uint64_t offset, uint64_t len) override {
    ++reads_at[offset];
    std::vector<uint8_t> out(len, 0);
    auto& pages = disks[dev];
    for (uint64_t at = 0; at < len; at += 4096) {
      auto it = pages.find(offset + at);
      if (it != pages.end()) std::copy(it->second.begin(), it->second.end(), out.begin() + static_cast<long>(at));
    }
    return out;
  }
  Status Write(const std::string& dev, uint64_t offset, std::span<const uint8_t> bytes) override {
    ++writes;
    for (uint64_t at = 0; at < bytes.size(); at += 4096) {
      disks[dev][offset + at].assign(bytes.begin() + static_cast<long>(at),
                                     bytes.begin() + static_cast<long>(at + 4096));
    }
    return OkStatus();
  }
  Status Zero(const std::string& dev, uint64_t offset, uint64_t len) override {
    zeroed[dev] += len;
    for (uint64_t at = 0; at < len; at += 4096) disks[dev].erase(offset + at);
    return OkStatus();
  }
  void Poke(const std::string& dev, uint64_t offset, uint8_t value) {
    auto& page = disks[dev][offset / 4096 * 4096];
    page.resize(4096, 0);
    page[offset % 4096] = value;
  }
  std::map<std::string, std::map<uint64_t, std::vector<uint8_t>>> disks;
  std::map<std::string, uint64_t> zeroed;
  std::map<uint64_t, int> reads_at;  // reads by offset, any device
  int writes = 0;
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
  StatusOr<bool> IsBlockNode(const std::string&, unsigned, unsigned) override { return true; }
  StatusOr<uint64_t> BlockDeviceSize(const std::string& path) override {
    if (gone.count(path) != 0) return absl::NotFoundError(Cat(path, ": No such device"));
    return uint64_t{1} << 30;
  }
  std::set<std::string> gone;  // block devices the host unplugged
  Status MakeDirs(const std::string&, unsigned) override { return OkStatus(); }
  Status MakeDir(const std::string&, unsigned) override { return OkStatus(); }
  void RemoveEmptyDir(const std::string&) override {}

  std::vector<std::vector<std::string>> mkfs_calls;
  std::vector<MountEntry> mounts;
  std::map<std::string, std::string> device_numbers;
  std::string last_mount_data;
  std::optional<int64_t> applied_gid;
  bool fail_mkfs = false;
};

class FakeResolver : public DeviceResolver {
 public:
  StatusOr<BlockDevice> WaitFor(const DeviceId& id, std::chrono::milliseconds, const CancelFn& cancelled) override {
    if (cancelled && cancelled()) return absl::CancelledError("cancelled");
    auto it = devices.find(id.value);
    if (it == devices.end()) return absl::DeadlineExceededError("no device " + id.value);
    return it->second;
  }
  StatusOr<uint64_t> SectorsWritten(const BlockDevice&) override { return sectors_written; }
  StatusOr<bool> HasHolders(const BlockDevice&) override { return false; }
  StatusOr<std::string> ProbeSignature(const BlockDevice&) override { return signature; }
  std::string signature;
  std::map<std::string, BlockDevice> devices;
  uint64_t sectors_written = 0;
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
    manager_ = std::make_unique<VolumeManager>(config_, MakeDeps());
    ASSERT_TRUE(manager_->Recover().ok());
  }

  Deps MakeDeps() {
    crypt_.files = &files_;
    Deps d{&resolver_, &crypt_, &dm_, &loops_, &fs_, &files_, state_.get(), &keys_, nullptr, claim_check_};
    d.io = &disk_;
    return d;
  }

  // A full-wipe spec (no guard); GuardedSpec() is the default path.
  VolumeSpec Spec(const std::string& id, const std::string& pci, const std::string& fs = "ext4") {
    VolumeSpec s = GuardedSpec(id, pci, fs);
    s.init_mode = InitMode::kFullWipe;
    return s;
  }

  VolumeSpec GuardedSpec(const std::string& id, const std::string& pci, const std::string& fs = "ext4") {
    VolumeSpec s;
    s.id = id;
    s.device = {DeviceIdKind::kPciPath, pci};
    s.key = KeySource::Ephemeral();
    s.fs_type = fs;
    s.init_mode = InitMode::kZeroGuard;
    s.fs_group = 3000;
    s.target_path = config_.storage_root + "/" + id;
    return s;
  }

  std::string root_;
  AgentConfig config_;
  FakeDm dm_;
  FakeCrypt crypt_{&dm_};
  FakeFs fs_;
  FakeLoops loops_;
  FakeFiles files_;
  FakeDiskIo disk_;
  FakeKeys keys_;
  FakeResolver resolver_;
  std::unique_ptr<StateStore> state_;
  std::unique_ptr<VolumeManager> manager_;
  std::function<Status(const VolumeSpec&, uint64_t, const std::vector<VolumeSpec>&)> claim_check_;
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
  EXPECT_TRUE(files_.files.empty());
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

// The host unplugged the disk under a mounted volume: every mapping is still
// there, but the volume is DEGRADED, not ACTIVE.
TEST_F(VolumeManagerTest, ReportsDegradedWhenDeviceIsGone) {
  auto active = manager_->Activate(Spec("v1", "02/00"), std::chrono::milliseconds(10));
  ASSERT_TRUE(active.ok()) << active.status();
  fs_.gone.insert(active->record.device_path);
  auto info = manager_->Get("v1");
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->healthy);
  EXPECT_NE(info->problem.find("is gone"), std::string::npos) << info->problem;
  auto list = manager_->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_FALSE((*list)[0].healthy);
}

// kata-agent only unmounts: the agent closes the rest of a SecureMount
// volume then, and leaves every other volume (and a still-mounted one) alone.
TEST_F(VolumeManagerTest, ReapUnmountedTearsDownOnlyMarkedVolumesWhoseMountIsGone) {
  VolumeSpec sm = Spec("sm-a", "02/00");
  sm.teardown_on_unmount = true;
  ASSERT_TRUE(manager_->Activate(sm, std::chrono::milliseconds(10)).ok());
  ASSERT_TRUE(manager_->Activate(Spec("api", "03/00"), std::chrono::milliseconds(10)).ok());
  EXPECT_EQ(manager_->ReapUnmounted(), 0u);  // both still mounted
  fs_.mounts.clear();                        // kata-agent unmounted sm-a; someone unmounted api by hand
  EXPECT_EQ(manager_->ReapUnmounted(), 1u);
  EXPECT_EQ(manager_->Get("sm-a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(files_.files.count(VolumeNames::For("sm-a", config_.state_dir, false).header_file) == 0);
  auto api = manager_->Get("api");
  ASSERT_TRUE(api.ok()) << api.status();
  EXPECT_FALSE(api->healthy);  // reported, not torn down
  EXPECT_EQ(manager_->ReapUnmounted(), 0u);
}

TEST_F(VolumeManagerTest, AClaimDeniedByThePolicyLeavesNothing) {
  claim_check_ = [](const VolumeSpec& spec, uint64_t bytes, const std::vector<VolumeSpec>& others) -> Status {
    EXPECT_EQ(bytes, 1ull << 30);
    if (!others.empty()) return absl::PermissionDeniedError(Cat("one is enough, not ", spec.id));
    return OkStatus();
  };
  manager_ = std::make_unique<VolumeManager>(config_, MakeDeps());
  ASSERT_TRUE(manager_->Activate(Spec("v1", "02/00"), std::chrono::milliseconds(10)).ok());
  const size_t mkfs_before = fs_.mkfs_calls.size();
  auto second = manager_->Activate(Spec("v2", "03/00"), std::chrono::milliseconds(10));
  EXPECT_EQ(second.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(fs_.mkfs_calls.size(), mkfs_before);
  EXPECT_EQ(state_->LoadAll()->size(), 1u);
}

TEST_F(VolumeManagerTest, RecoveryUndoesInterruptedActivation) {
  // What a crash right after the crypt mapping was created leaves behind.
  VolumeRecord rec;
  rec.spec = Spec("v1", "02/00");
  rec.phase = Phase::kActivating;
  ASSERT_TRUE(state_->Save(rec).ok());
  ASSERT_TRUE(dm_.Create("coco-v1:crypt", {}, false).ok());
  VolumeManager restarted(config_, MakeDeps());
  ASSERT_TRUE(restarted.Recover().ok());
  EXPECT_TRUE(dm_.devs.empty());
  EXPECT_TRUE(state_->LoadAll()->empty());
  EXPECT_TRUE(restarted.Activate(Spec("v1", "02/00"), std::chrono::milliseconds(10)).ok());
}

TEST_F(VolumeManagerTest, RecoveryKeepsActiveVolumes) {
  ASSERT_TRUE(manager_->Activate(Spec("v1", "02/00"), std::chrono::milliseconds(10)).ok());
  VolumeManager restarted(config_, MakeDeps());
  ASSERT_TRUE(restarted.Recover().ok());
  auto list = restarted.List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_TRUE((*list)[0].healthy) << (*list)[0].problem;
}

// ---- the default path: the zero guard over the encrypted device ----

TEST_F(VolumeManagerTest, DefaultPathBuildsTheGuardWithBlockZeroing) {
  auto info = manager_->Activate(GuardedSpec("v1", "02/00"), std::chrono::milliseconds(10));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE(info->healthy) << info->problem;
  EXPECT_EQ(crypt_.wipes, 0);  // no wipe: the guard makes it unnecessary
  // crypt (dm-0), then the pool over the crypt mapping with metadata on the
  // loop device, then the thin volume over the pool.
  ASSERT_EQ(dm_.tables.count("coco-v1:pool"), 1u);
  ASSERT_EQ(dm_.tables.count("coco-v1"), 1u);
  const auto& pool = dm_.tables["coco-v1:pool"];
  ASSERT_EQ(pool.size(), 1u);
  EXPECT_EQ(pool[0].type, "thin-pool");
  // Block zeroing must stay on: a partly written block would otherwise expose
  // never-written (unreadable) sectors of the integrity device.
  EXPECT_EQ(pool[0].params.find("skip_block_zeroing"), std::string::npos) << pool[0].params;
  auto layout = ComputeGuardLayout(uint64_t{1} << 30);
  ASSERT_TRUE(layout.ok());
  EXPECT_EQ(pool[0].params, "7:0 253:0 " + std::to_string(layout->block_sectors) + " 0 1 error_if_no_space");
  EXPECT_EQ(pool[0].length, layout->volume_sectors);
  const auto& thin = dm_.tables["coco-v1"];
  ASSERT_EQ(thin.size(), 1u);
  EXPECT_EQ(thin[0].type, "thin");
  EXPECT_EQ(thin[0].params, "253:1 0");
  EXPECT_EQ(dm_.messages, std::vector<std::string>{"coco-v1:pool: create_thin 0"});
  // Metadata in guest memory, on a loop device.
  EXPECT_EQ(loops_.attached, std::vector<std::string>{config_.state_dir + "/guard/v1.tmeta"});
  EXPECT_EQ(files_.files.at(config_.state_dir + "/guard/v1.tmeta"), layout->meta_bytes);
  EXPECT_EQ(files_.files.count(config_.state_dir + "/headers/v1.luks2"), 1u);
  // mkfs on the thin volume, lazily (unwritten blocks read as zeros), and
  // ext4 mounted without the itable-zeroing thread.
  ASSERT_EQ(fs_.mkfs_calls.size(), 1u);
  EXPECT_EQ(fs_.mkfs_calls[0].back(), "/dev/dm-2");
  EXPECT_NE(Join(fs_.mkfs_calls[0], " ").find("lazy_itable_init=1,lazy_journal_init=1"), std::string::npos);
  EXPECT_EQ(fs_.last_mount_data, "noinit_itable");
  EXPECT_EQ(info->mapped_device, "/dev/mapper/coco-v1");
}

TEST_F(VolumeManagerTest, DefaultPathTeardownRemovesGuardCryptAndFiles) {
  ASSERT_TRUE(manager_->Activate(GuardedSpec("v1", "02/00"), std::chrono::milliseconds(10)).ok());
  ASSERT_TRUE(manager_->Deactivate("v1").ok());
  EXPECT_TRUE(dm_.devs.empty());
  EXPECT_TRUE(files_.files.empty());
  EXPECT_TRUE(fs_.mounts.empty());
}

class GuardFailureTest : public VolumeManagerTest, public ::testing::WithParamInterface<const char*> {};

// Whatever step of the guard fails, nothing of the volume stays behind.
TEST_P(GuardFailureTest, FailureWhileBuildingTheGuardUndoesEverything) {
  const std::string step = GetParam();
  if (step == "loop") {
    loops_.fail = true;
  } else {
    dm_.fail_create = step;
  }
  auto info = manager_->Activate(GuardedSpec("v1", "02/00"), std::chrono::milliseconds(10));
  EXPECT_FALSE(info.ok());
  EXPECT_TRUE(dm_.devs.empty()) << dm_.devs.begin()->first;
  EXPECT_TRUE(files_.files.empty()) << files_.files.begin()->first;
  EXPECT_TRUE(fs_.mounts.empty());
  EXPECT_TRUE(state_->LoadAll()->empty());
  // And the retry starts clean.
  loops_.fail = false;
  dm_.fail_create.clear();
  EXPECT_OK(manager_->Activate(GuardedSpec("v1", "02/00"), std::chrono::milliseconds(10)));
}

INSTANTIATE_TEST_SUITE_P(Steps, GuardFailureTest, ::testing::Values("loop", "coco-v1:pool", "coco-v1"));

// Crash discipline: the record is on disk before the first file or kernel
// object exists, so a restarted agent always knows what to undo.
TEST_F(VolumeManagerTest, RecordIsWrittenBeforeAnyFileOrKernelObject) {
  int checked = 0;
  auto record_exists = [&](const std::string& what) {
    auto rec = state_->Load("v1");
    EXPECT_TRUE(rec.ok()) << "no record when creating " << what;
    if (rec.ok()) {
      EXPECT_EQ(rec->phase, Phase::kActivating) << what;
    }
    ++checked;
  };
  files_.before_create = record_exists;
  dm_.before_create = record_exists;
  ASSERT_OK(manager_->Activate(GuardedSpec("v1", "02/00"), std::chrono::milliseconds(10)));
  EXPECT_GE(checked, 5);  // header, crypt, guard metadata, pool, thin
}

// Persistent (KBS-keyed) volumes: the device's own header decides between
// create and open; the real kernel path is PersistentVmTest (tests/kbs).
VolumeSpec PersistentSpec(VolumeSpec s, const std::string& uri = "kbs:///default/key/v1") {
  s.key = *KeySource::Kbs(uri);
  return s;
}

// SecureMount with persistent candidates: the routing and the plan judge the
// same bytes (one read of the header slots, one blank proof), so a host that
// rewrites the device between two reads cannot make them disagree.
TEST_F(VolumeManagerTest, RoutedSecureMountReadsTheDeviceOnce) {
  std::vector<policy::DeviceFacts::Kind> seen;
  Deps deps = MakeDeps();
  deps.route = [&](const VolumeSpec& spec, const policy::DeviceFacts& facts,
                   const std::vector<VolumeSpec>&) -> StatusOr<std::optional<VolumeSpec>> {
    seen.push_back(facts.kind);
    VolumeSpec pv = PersistentSpec(spec);
    pv.persistent_id = "pv1";
    pv.create_if_blank = true;
    return std::optional<VolumeSpec>(pv);
  };
  manager_ = std::make_unique<VolumeManager>(config_, std::move(deps));
  ASSERT_OK(manager_->Recover());
  VolumeSpec req = GuardedSpec("sm-1", "02/00");
  req.persistent_candidates = {"pv1"};
  ASSERT_OK(manager_->Activate(req, std::chrono::milliseconds(10)));
  EXPECT_EQ(crypt_.persistent_formats, 1);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], policy::DeviceFacts::Kind::kBlank);
  EXPECT_EQ(disk_.reads_at[0], 2) << "header slots, then the 16 MiB prefix of the blank proof: each once";
  EXPECT_EQ(disk_.reads_at[pv::kPrefixBytes], 1);

  // Reopened: the routing sees our header; the plan authenticates those bytes.
  ASSERT_OK(manager_->Deactivate("sm-1"));
  disk_.reads_at.clear();
  ASSERT_OK(manager_->Activate(req, std::chrono::milliseconds(10)));
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1], policy::DeviceFacts::Kind::kOurs);
  EXPECT_EQ(crypt_.persistent_formats, 1);
  EXPECT_EQ(disk_.reads_at[0], 1);
}

TEST_F(VolumeManagerTest, PersistentVolumeIsCreatedOnceThenOpened) {
  const VolumeSpec s = PersistentSpec(GuardedSpec("v1", "02/00"));
  ASSERT_OK(manager_->Activate(s, std::chrono::milliseconds(10)));
  EXPECT_EQ(keys_.last_bytes, pv::kRootKeyBytes);  // the HKDF root, not the suite key
  EXPECT_EQ(crypt_.persistent_formats, 1);
  ASSERT_EQ(fs_.mkfs_calls.size(), 1u);
  // On the disk: a READY superblock (generation 2, slot B) and the header
  // image with its keyslots area zeroed; of the guard metadata only dm-thin's
  // superblock block is zeroed (flat creation: not the whole metadata area).
  auto prefix = disk_.Read("/dev/vdb", 0, 8192);
  ASSERT_OK(prefix);
  pv::PrefixView view = pv::ParsePrefix(*prefix);
  ASSERT_EQ(view.kind, pv::PrefixView::Kind::kOurs);
  EXPECT_EQ(view.slots[0].sb.state, pv::State::kFormatting);
  EXPECT_EQ(view.slots[1].sb.state, pv::State::kReady);
  EXPECT_EQ(view.slots[1].sb.generation, 2u);
  EXPECT_EQ(view.slots[1].sb.volume_id, "v1");
  EXPECT_EQ(view.slots[1].sb.provided_bytes, crypt_.crypt_bytes);
  EXPECT_GT(view.slots[1].sb.guard_meta_bytes, 0u);
  auto image = disk_.Read("/dev/vdb", pv::kLuksImageOffset, view.slots[1].sb.luks_image_length);
  ASSERT_OK(image);
  EXPECT_EQ(pv::Sha256Of(*image), view.slots[1].sb.luks_image_sha256);
  EXPECT_TRUE(std::all_of(image->begin() + 2 * pv::kLuksMetadataBytes, image->end(), [](uint8_t b) { return b == 0; }));
  EXPECT_EQ(disk_.zeroed["/dev/dm-0"] + disk_.zeroed["/dev/dm-1"], 4096u);
  EXPECT_THAT(dm_.messages, ::testing::Contains(::testing::HasSubstr("create_thin 0")));

  ASSERT_OK(manager_->Deactivate("v1"));
  EXPECT_TRUE(dm_.devs.empty());
  EXPECT_TRUE(files_.files.empty());
  const int writes = disk_.writes;
  dm_.messages.clear();
  ASSERT_OK(manager_->Activate(s, std::chrono::milliseconds(10)));
  EXPECT_EQ(crypt_.persistent_formats, 1);  // opened, not formatted
  EXPECT_EQ(crypt_.persistent_opens, 1);
  EXPECT_EQ(crypt_.opened_header, *image);  // libcryptsetup got the validated copy
  EXPECT_EQ(fs_.mkfs_calls.size(), 1u);
  EXPECT_EQ(disk_.writes, writes);  // opening writes nothing to the disk itself
  EXPECT_THAT(dm_.messages, ::testing::Not(::testing::Contains(::testing::HasSubstr("create_thin"))));
  EXPECT_EQ(state_->Load("v1")->phase, Phase::kActive);
}

TEST_F(VolumeManagerTest, PersistentRefusalsLeaveTheDiskAsItWas) {
  ASSERT_OK(manager_->Activate(PersistentSpec(GuardedSpec("v1", "02/00")), std::chrono::milliseconds(10)));
  ASSERT_OK(manager_->Deactivate("v1"));
  const auto disk = disk_.disks;
  struct Case {
    VolumeSpec spec;
    absl::StatusCode code;
    const char* reason;
  } cases[] = {
      {PersistentSpec(GuardedSpec("v2", "02/00")), absl::StatusCode::kFailedPrecondition, "foreign_volume"},
      {PersistentSpec(GuardedSpec("v1", "02/00"), "kbs:///default/key/other"), absl::StatusCode::kFailedPrecondition,
       "wrong_key"},
      {PersistentSpec(Spec("v1", "02/00")), absl::StatusCode::kFailedPrecondition, "zero guard"},
  };
  for (const auto& c : cases) {
    EXPECT_THAT(manager_->Activate(c.spec, std::chrono::milliseconds(10)),
                StatusIs(c.code, ::testing::HasSubstr(c.reason)));
    EXPECT_TRUE(dm_.devs.empty()) << c.reason;
    EXPECT_TRUE(files_.files.empty()) << c.reason;
    EXPECT_TRUE(state_->LoadAll()->empty()) << c.reason;
    EXPECT_TRUE(disk_.disks == disk) << c.reason;
  }
  // The kernel's geometry is checked, not the header's word for it.
  crypt_.integrity_mode = "D";
  EXPECT_THAT(manager_->Activate(PersistentSpec(GuardedSpec("v1", "02/00")), std::chrono::milliseconds(10)),
              StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("integrity_geometry")));
  EXPECT_TRUE(dm_.devs.empty());
  crypt_.integrity_mode = "J";
  // A changed byte of the LUKS2 image: its digest is in the MAC'd superblock.
  disk_.Poke("/dev/vdb", pv::kLuksImageOffset + 5000, 'x');
  EXPECT_THAT(manager_->Activate(PersistentSpec(GuardedSpec("v1", "02/00")), std::chrono::milliseconds(10)),
              StatusIs(absl::StatusCode::kDataLoss, ::testing::HasSubstr("header_corrupt")));
  EXPECT_TRUE(dm_.devs.empty());
}

TEST_F(VolumeManagerTest, PersistentVolumeIsCreatedOnlyOnAProvablyBlankDevice) {
  auto expect_not_blank = [&](const char* why) {
    EXPECT_THAT(manager_->Activate(PersistentSpec(GuardedSpec("v1", "02/00")), std::chrono::milliseconds(10)),
                StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::HasSubstr("not_blank")))
        << why;
    EXPECT_EQ(disk_.writes, 0) << why;
    EXPECT_TRUE(dm_.devs.empty()) << why;
    EXPECT_TRUE(state_->LoadAll()->empty()) << why;
  };
  // No flag makes a device with a signature (ours included) blank.
  config_.allow_format_non_blank = true;
  manager_ = std::make_unique<VolumeManager>(config_, MakeDeps());
  ASSERT_OK(manager_->Recover());
  for (const char* what : {"DM_integrity", "crypto_LUKS", "ext4"}) {
    resolver_.signature = what;
    expect_not_blank(what);
  }
  resolver_.signature.clear();
  disk_.Poke("/dev/vdb", 12345, 1);  // inside the prefix
  expect_not_blank("prefix");
  disk_.disks.clear();
  disk_.Poke("/dev/vdb", (1ull << 30) - 100, 1);  // the end of the data area
  expect_not_blank("tail");
  disk_.disks.clear();
  disk_.Poke("/dev/vdb", 10, 1);  // a superblock slot that is not ours
  expect_not_blank("slot");
  disk_.disks.clear();
  // Blank, but the policy says create = never.
  VolumeSpec never = PersistentSpec(GuardedSpec("v1", "02/00"));
  never.create_if_blank = false;
  EXPECT_THAT(manager_->Activate(never, std::chrono::milliseconds(10)),
              StatusIs(absl::StatusCode::kPermissionDenied, ::testing::HasSubstr("create = never")));
  EXPECT_EQ(disk_.writes, 0);
}

// blank_check = "full": data the structural proof does not look at (the
// middle of the device) is found, and the device stays untouched; a blank
// device is read end to end once, and a caller that leaves stops the scan.
TEST_F(VolumeManagerTest, FullBlankCheckReadsTheWholeDevice) {
  constexpr uint64_t MiB = 1ull << 20;
  // 128 MiB: the scan is the test's cost (8 MiB reads under ASan).
  resolver_.devices["05/00"] = BlockDevice{"vde", "/dev/vde", 254, 64, 128 * MiB, "s5"};
  VolumeSpec s = PersistentSpec(GuardedSpec("v1", "05/00"));
  s.full_blank_check = true;
  disk_.Poke("/dev/vde", 96 * MiB + 7, 1);
  EXPECT_THAT(manager_->Activate(s, std::chrono::milliseconds(10)),
              StatusIs(absl::StatusCode::kFailedPrecondition, ::testing::HasSubstr("has data at byte 100663303")));
  EXPECT_EQ(disk_.writes, 0);
  EXPECT_TRUE(dm_.devs.empty());
  EXPECT_TRUE(state_->LoadAll()->empty());

  // The structural proof alone would have created the volume over that byte:
  // it is what blank_check = "full" is for.
  int reads = 0;
  for (const auto& [offset, n] : disk_.reads_at) reads += offset >= pv::kPrefixBytes ? n : 0;
  EXPECT_GE(reads, static_cast<int>((96 * MiB - pv::kPrefixBytes) / (8 * MiB)));

  int polls = 0;
  auto leaves = [&]() { return ++polls > 3; };
  disk_.disks.clear();
  EXPECT_THAT(manager_->Activate(s, std::chrono::milliseconds(10), leaves),
              StatusIs(absl::StatusCode::kCancelled, ::testing::HasSubstr("full blank check")));
  EXPECT_EQ(disk_.writes, 0);

  disk_.reads_at.clear();
  ASSERT_OK(manager_->Activate(s, std::chrono::milliseconds(10)));
  EXPECT_EQ(crypt_.persistent_formats, 1);
  EXPECT_EQ(disk_.reads_at[96 * MiB], 1);  // every 8 MiB of the data area, once
  EXPECT_EQ(disk_.reads_at[0], 2);         // the header slots and the prefix, once each
}

// A creation that failed half way leaves a FORMATTING superblock: the retry
// recognises the volume and creates it again, unless the policy forbids it.
TEST_F(VolumeManagerTest, InterruptedPersistentCreationIsRedoneOnlyIfAllowed) {
  const VolumeSpec s = PersistentSpec(GuardedSpec("v1", "02/00"));
  fs_.fail_mkfs = true;
  EXPECT_FALSE(manager_->Activate(s, std::chrono::milliseconds(10)).ok());
  EXPECT_TRUE(dm_.devs.empty());
  fs_.fail_mkfs = false;
  VolumeSpec never = s;
  never.create_if_blank = false;
  EXPECT_THAT(manager_->Activate(never, std::chrono::milliseconds(10)),
              StatusIs(absl::StatusCode::kPermissionDenied, ::testing::HasSubstr("never completely created")));
  ASSERT_OK(manager_->Activate(s, std::chrono::milliseconds(10)));
  EXPECT_EQ(crypt_.persistent_formats, 2);
  auto prefix = disk_.Read("/dev/vdb", 0, 8192);
  ASSERT_OK(prefix);
  pv::PrefixView view = pv::ParsePrefix(*prefix);
  ASSERT_EQ(view.kind, pv::PrefixView::Kind::kOurs);
  // Generations 1 (failed FORMATTING) -> 2 (FORMATTING again) -> 3 (READY).
  EXPECT_EQ(view.slots[0].sb.generation, 3u);
  EXPECT_EQ(view.slots[0].sb.state, pv::State::kReady);
}

TEST_F(VolumeManagerTest, KeyProviderFailureLeavesTheDeviceUntouched) {
  keys_.fail = true;
  EXPECT_THAT(manager_->Activate(GuardedSpec("v1", "02/00"), std::chrono::milliseconds(10)),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(keys_.calls, 1);
  EXPECT_TRUE(dm_.devs.empty());
  EXPECT_TRUE(files_.files.empty());
  EXPECT_TRUE(state_->LoadAll()->empty());
}

// One disk, two names: the conflict is on the resolved disk, not the name.
TEST_F(VolumeManagerTest, SameDiskByAnotherNameIsAConflict) {
  resolver_.devices["s1"] = resolver_.devices["02/00"];
  ASSERT_OK(manager_->Activate(Spec("v1", "02/00"), std::chrono::milliseconds(10)));
  VolumeSpec by_serial = Spec("v2", "s1");
  by_serial.device = {DeviceIdKind::kSerial, "s1"};
  EXPECT_THAT(manager_->Activate(by_serial, std::chrono::milliseconds(10)),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(VolumeManagerTest, LockMapDoesNotGrowWithUnknownIds) {
  for (int i = 0; i < 500; ++i) {
    EXPECT_THAT(manager_->Get("nope-" + std::to_string(i)), StatusIs(absl::StatusCode::kNotFound));
  }
  ASSERT_OK(manager_->Activate(Spec("v1", "02/00"), std::chrono::milliseconds(10)));
  ASSERT_OK(manager_->List());
  EXPECT_EQ(manager_->LockedVolumeCount(), 0u);
}

// A failed activation undoes what it created, never what it found.
TEST_F(VolumeManagerTest, FailureDoesNotRemoveMappingsItDidNotCreate) {
  ASSERT_OK(dm_.Create("coco-v1:crypt", {}, false));  // e.g. left by a lost state dir, still in use
  EXPECT_THAT(manager_->Activate(GuardedSpec("v1", "02/00"), std::chrono::milliseconds(10)),
              StatusIs(absl::StatusCode::kAlreadyExists));
  EXPECT_EQ(dm_.devs.count("coco-v1:crypt"), 1u);
  EXPECT_TRUE(state_->LoadAll()->empty());
  EXPECT_TRUE(files_.files.empty());
}

TEST_F(VolumeManagerTest, TargetThatIsAlreadyAMountPointIsRefusedAndLeftAlone) {
  const std::string target = config_.storage_root + "/v1";
  fs_.mounts.push_back({"8:1", target, "ext4", "/dev/sda1"});
  EXPECT_THAT(manager_->Activate(GuardedSpec("v1", "02/00"), std::chrono::milliseconds(10)),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_EQ(fs_.mounts.size(), 1u);
  EXPECT_EQ(fs_.mounts[0].source, "/dev/sda1");
  EXPECT_TRUE(dm_.devs.empty());
  EXPECT_TRUE(state_->LoadAll()->empty());
}

TEST_F(VolumeManagerTest, DeactivateNeverUnmountsSomeoneElsesMount) {
  ASSERT_OK(manager_->Activate(GuardedSpec("v1", "02/00"), std::chrono::milliseconds(10)));
  const std::string target = config_.storage_root + "/v1";
  fs_.mounts.push_back({"8:1", target, "ext4", "/dev/sda1"});  // mounted over ours
  EXPECT_THAT(manager_->Deactivate("v1"), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(fs_.mounts.size(), 2u);
  fs_.mounts.pop_back();
  EXPECT_OK(manager_->Deactivate("v1"));
  EXPECT_TRUE(fs_.mounts.empty());
  EXPECT_TRUE(dm_.devs.empty());
}

TEST_F(VolumeManagerTest, ACancelledCallDoesNoWork) {
  EXPECT_THAT(manager_->Activate(Spec("v1", "02/00"), std::chrono::milliseconds(10), [] { return true; }),
              StatusIs(absl::StatusCode::kCancelled));
  EXPECT_TRUE(dm_.devs.empty());
  EXPECT_EQ(keys_.calls, 0);
  EXPECT_TRUE(state_->LoadAll()->empty());
}

// A disk that visibly holds something is not formatted unless configured.
TEST_F(VolumeManagerTest, NonBlankDiskIsNotFormattedByDefault) {
  for (const char* what : {"ext4", "crypto_LUKS", "gpt", "ambiguous"}) {
    resolver_.signature = what;
    EXPECT_THAT(manager_->Activate(GuardedSpec("v1", "02/00"), std::chrono::milliseconds(10)),
                StatusIs(absl::StatusCode::kFailedPrecondition))
        << what;
    EXPECT_TRUE(dm_.devs.empty());
    EXPECT_TRUE(fs_.mkfs_calls.empty());
    EXPECT_TRUE(state_->LoadAll()->empty());
  }
  // What a previous ephemeral activation leaves is blank for our purpose.
  resolver_.signature = "DM_integrity";
  EXPECT_OK(manager_->Activate(GuardedSpec("v1", "02/00"), std::chrono::milliseconds(10)));
  ASSERT_OK(manager_->Deactivate("v1"));
  // Configured: formatted, with a warning.
  resolver_.signature = "ext4";
  config_.allow_format_non_blank = true;
  VolumeManager permissive(config_, MakeDeps());
  ASSERT_OK(permissive.Recover());
  EXPECT_OK(permissive.Activate(GuardedSpec("v1", "02/00"), std::chrono::milliseconds(10)));
}

// Health after I/O errors: every mapping still exists, but the kernel says
// the pool gave up, or the file system shut itself down. DEGRADED, with why.
TEST(TargetStatusProblemTest, JudgesThinPoolThinAndIntegrityStatus) {
  EXPECT_EQ(
      TargetStatusProblem({0, 8, "thin-pool", "1 11/1024 20/2000 - rw discard_passdown error_if_no_space - 1024"}), "");
  EXPECT_NE(TargetStatusProblem({0, 8, "thin-pool", "Fail"}).find("failed"), std::string::npos);
  EXPECT_NE(TargetStatusProblem({0, 8, "thin-pool", "1 11/1024 20/2000 - ro discard_passdown error_if_no_space - 1024"})
                .find("read-only"),
            std::string::npos);
  EXPECT_NE(TargetStatusProblem({0, 8, "thin-pool",
                                 "1 11/1024 2000/2000 - out_of_data_space discard_passdown error_if_no_space - 1024"})
                .find("out of data space"),
            std::string::npos);
  EXPECT_NE(TargetStatusProblem(
                {0, 8, "thin-pool", "1 11/1024 20/2000 - rw discard_passdown error_if_no_space needs_check 1024"})
                .find("needs_check"),
            std::string::npos);
  EXPECT_NE(TargetStatusProblem({0, 8, "thin-pool", "garbage"}).find("unreadable"), std::string::npos);
  EXPECT_NE(TargetStatusProblem({0, 8, "thin", "Fail"}).find("failed"), std::string::npos);
  EXPECT_EQ(TargetStatusProblem({0, 8, "thin", "2048 4095"}), "");
  EXPECT_EQ(TargetStatusProblem({0, 8, "integrity", "0 262144 -"}), "");
  EXPECT_NE(TargetStatusProblem({0, 8, "integrity", "3 262144 -"}).find("3 integrity mismatches"), std::string::npos);
  EXPECT_EQ(TargetStatusProblem({0, 8, "crypt", ""}), "");
}

TEST_F(VolumeManagerTest, ReportsDegradedWhenTheGuardPoolFailed) {
  ASSERT_OK(manager_->Activate(GuardedSpec("v1", "02/00"), std::chrono::milliseconds(10)));
  ASSERT_TRUE(manager_->Get("v1")->healthy) << manager_->Get("v1")->problem;
  dm_.status["coco-v1:pool"] = {{0, 8, "thin-pool", "Fail"}};
  dm_.status["coco-v1"] = {{0, 8, "thin", "Fail"}};
  auto info = manager_->Get("v1");
  ASSERT_OK(info);
  EXPECT_FALSE(info->healthy);
  EXPECT_NE(info->problem.find("coco-v1:pool: thin-pool failed"), std::string::npos) << info->problem;
  auto list = manager_->List();
  ASSERT_OK(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_FALSE((*list)[0].healthy);
  // Still deactivatable.
  EXPECT_OK(manager_->Deactivate("v1"));
}

TEST_F(VolumeManagerTest, ReportsDegradedWhenThePoolWentReadOnlyOrIntegrityMismatches) {
  ASSERT_OK(manager_->Activate(GuardedSpec("v1", "02/00"), std::chrono::milliseconds(10)));
  dm_.status["coco-v1:pool"] = {
      {0, 8, "thin-pool", "1 11/1024 20/2000 - ro discard_passdown error_if_no_space needs_check 1024"}};
  auto info = manager_->Get("v1");
  ASSERT_OK(info);
  EXPECT_FALSE(info->healthy);
  EXPECT_NE(info->problem.find("read-only"), std::string::npos) << info->problem;
  EXPECT_NE(info->problem.find("needs_check"), std::string::npos) << info->problem;
  dm_.status.clear();
  dm_.status["coco-v1:crypt_dif"] = {{0, 8, "integrity", "7 262144 -"}};
  info = manager_->Get("v1");
  ASSERT_OK(info);
  EXPECT_FALSE(info->healthy);
  EXPECT_NE(info->problem.find("7 integrity mismatches"), std::string::npos) << info->problem;
}

TEST_F(VolumeManagerTest, ReportsDegradedWhenTheFileSystemWentReadOnly) {
  ASSERT_OK(manager_->Activate(GuardedSpec("v1", "02/00"), std::chrono::milliseconds(10)));
  ASSERT_EQ(fs_.mounts.size(), 1u);
  fs_.mounts[0].read_only = true;  // ext4 after a journal abort
  auto info = manager_->Get("v1");
  ASSERT_OK(info);
  EXPECT_FALSE(info->healthy);
  EXPECT_NE(info->problem.find("went read-only"), std::string::npos) << info->problem;
  ASSERT_OK(manager_->Deactivate("v1"));
  // A volume asked for read-only is healthy read-only.
  VolumeSpec ro = GuardedSpec("v2", "03/00");
  ro.read_only = true;
  ASSERT_OK(manager_->Activate(ro, std::chrono::milliseconds(10)));
  fs_.mounts.back().read_only = true;
  info = manager_->Get("v2");
  ASSERT_OK(info);
  EXPECT_TRUE(info->healthy) << info->problem;
}

// A caller that left mid-activation (deadline, cancel) gets nothing more
// built: whichever step the cancel is seen at, what was made is undone, the
// call fails CANCELLED and a retry starts clean.
class CancelMidwayTest : public VolumeManagerTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(CancelMidwayTest, UndoesWhatItCreated) {
  const std::string step = GetParam();
  auto cancelled = [&] {
    if (step == "after-crypt") return dm_.devs.count("coco-v1:crypt") != 0;
    if (step == "after-guard") return dm_.devs.count("coco-v1") != 0;
    return !fs_.mkfs_calls.empty();  // before mount
  };
  auto info = manager_->Activate(GuardedSpec("v1", "02/00"), std::chrono::milliseconds(10), cancelled);
  EXPECT_THAT(info, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_TRUE(dm_.devs.empty()) << dm_.devs.begin()->first;
  EXPECT_TRUE(files_.files.empty()) << files_.files.begin()->first;
  EXPECT_TRUE(fs_.mounts.empty());
  EXPECT_TRUE(state_->LoadAll()->empty());
  if (step == "after-crypt" || step == "after-guard") {
    EXPECT_TRUE(fs_.mkfs_calls.empty());
  }
  if (step == "after-crypt") {
    EXPECT_TRUE(loops_.attached.empty());
  }
  EXPECT_THAT(manager_->Get("v1"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_OK(manager_->Activate(GuardedSpec("v1", "02/00"), std::chrono::milliseconds(10)));
}

INSTANTIATE_TEST_SUITE_P(Steps, CancelMidwayTest, ::testing::Values("after-crypt", "after-guard", "before-mount"),
                         [](const auto& p) {
                           std::string n = p.param;
                           std::erase(n, '-');
                           return n;
                         });

}  // namespace
}  // namespace cocostorage::agent
