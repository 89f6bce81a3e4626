#include "service/volume_manager.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/secure_buffer.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/common/unique_fd.h"
#include "dm/zero_guard.h"
#include "fs/options.h"

namespace cocostorage::agent {
namespace {

using Clock = std::chrono::steady_clock;

// Sectors written to a block device since boot (/sys/block/X/stat field 7).
uint64_t SectorsWritten(const std::string& sysfs_root, const std::string& name) {
  auto text = ReadFileToString(Cat(sysfs_root, "/block/", name, "/stat"), 4096);
  if (!text.ok()) return 0;
  auto fields = Split(*text, ' ');
  unsigned long long v = 0;
  if (fields.size() > 6 && ParseUint64(fields[6], &v)) return v;
  return 0;
}

bool DirEmpty(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return true;
  bool empty = true;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") {
      empty = false;
      break;
    }
  }
  closedir(d);
  return empty;
}

GuardNames GuardNamesFor(const VolumeNames& n) { return {n.pool, n.top, n.guard_meta_file}; }

}  // namespace

uint64_t MinimumDeviceBytes(const VolumeSpec& spec) {
  constexpr uint64_t MiB = 1ull << 20;
  // xfsprogs refuses filesystems under 300 MiB; integrity tags take ~1 %.
  if (spec.block_mode) return 16 * MiB;
  if (spec.fs_type == "xfs") return 320 * MiB;
  return 32 * MiB;
}

VolumeManager::VolumeManager(AgentConfig config, Deps deps) : config_(std::move(config)), deps_(std::move(deps)) {}

std::shared_ptr<std::mutex> VolumeManager::LockFor(const std::string& id) {
  std::lock_guard<std::mutex> lock(locks_mu_);
  auto& m = locks_[id];
  if (!m) m = std::make_shared<std::mutex>();
  return m;
}

void VolumeManager::Crash(const char* point) {
  if (deps_.crash_hook) deps_.crash_hook(point);
}

Status VolumeManager::Recover() {
  COCO_RETURN_IF_ERROR(deps_.state->Init());
  COCO_RETURN_IF_ERROR(MakeDirs(Cat(config_.state_dir, "/headers"), 0700));
  COCO_RETURN_IF_ERROR(MakeDirs(Cat(config_.state_dir, "/guard"), 0700));
  COCO_ASSIGN_OR_RETURN(std::vector<VolumeRecord> records, deps_.state->LoadAll());
  std::vector<std::string> known;
  for (auto& rec : records) {
    known.push_back(rec.spec.id);
    if (rec.phase == Phase::kActive) {
      log::Info("recovery.volume_active", {{"volume", rec.spec.id}, {"target", rec.spec.target_path}});
      continue;
    }
    // A crash mid-activation leaves a volume no consumer has seen: undo it
    // completely so a retried Activate starts clean. A crash mid-deactivation
    // is finished.
    const char* what = rec.phase == Phase::kActivating ? "undo_partial_activation" : "finish_deactivation";
    Status s = Teardown(rec.spec);
    if (s.ok()) s = deps_.state->Delete(rec.spec.id);
    log::Warn("recovery.cleanup",
              {{"volume", rec.spec.id}, {"action", what}, {"ok", s.ok()}, {"error", std::string(s.message())}});
  }
  // Mappings with our prefix and no record: created between a crash and... a
  // record is always written first, so these are from a lost state dir.
  auto names = deps_.dm->ListNames();
  // Without device-mapper the agent can serve nothing: say so once, loudly.
  if (!names.ok()) return Annotate(names.status(), "device-mapper is not usable");
  for (const auto& name : *names) {
    if (name.rfind(kDmPrefix, 0) != 0) continue;
    bool owned = false;
    for (const auto& id : known) {
      // "coco-<id>" or "coco-<id>-...": a plain prefix would let v1 own v10's mappings.
      const std::string base = Cat(kDmPrefix, id);
      owned = owned || name == base || name.rfind(Cat(base, "-"), 0) == 0;
    }
    if (!owned) log::Warn("recovery.orphan_mapping", {{"dm_name", name}});
  }
  return OkStatus();
}

Status VolumeManager::CheckConflicts(const VolumeSpec& spec) {
  COCO_ASSIGN_OR_RETURN(std::vector<VolumeRecord> records, deps_.state->LoadAll());
  for (const auto& rec : records) {
    if (rec.spec.id == spec.id) continue;
    if (rec.spec.device == spec.device) {
      return absl::FailedPreconditionError(
          Cat("device ", spec.device.Describe(), " is already used by volume ", rec.spec.id));
    }
    if (IsPathWithin(rec.spec.target_path, spec.target_path) || IsPathWithin(spec.target_path, rec.spec.target_path)) {
      return absl::FailedPreconditionError(
          Cat("target path ", spec.target_path, " overlaps volume ", rec.spec.id, " at ", rec.spec.target_path));
    }
  }
  return OkStatus();
}

Status VolumeManager::CheckDeviceFree(const BlockDevice& dev) {
  if (!DirEmpty(Cat(config_.sysfs_root, "/block/", dev.name, "/holders"))) {
    return absl::FailedPreconditionError(Cat(dev.dev_path, " is in use by another mapping"));
  }
  COCO_ASSIGN_OR_RETURN(std::vector<MountEntry> mounts, deps_.fs->Mounts());
  for (const auto& m : mounts) {
    if (m.dev_number == dev.DevNumber()) {
      return absl::FailedPreconditionError(Cat(dev.dev_path, " is mounted at ", m.mount_point));
    }
  }
  return OkStatus();
}

StatusOr<VolumeInfo> VolumeManager::Activate(const VolumeSpec& spec, std::chrono::milliseconds device_timeout) {
  auto vol_lock = LockFor(spec.id);
  std::lock_guard<std::mutex> lock(*vol_lock);

  auto existing = deps_.state->Load(spec.id);
  if (existing.ok()) {
    if (existing->phase == Phase::kActive) {
      std::string diff = existing->spec.DiffAgainst(spec);
      if (!diff.empty()) {
        return absl::AlreadyExistsError(
            Cat("volume ", spec.id, " is already active with different parameters (", diff, ")"));
      }
      log::Info("volume.activate_idempotent", {{"volume", spec.id}});
      return Describe(*existing);
    }
    // Leftover of an interrupted operation: undo before starting over.
    COCO_RETURN_IF_ERROR(Teardown(existing->spec));
    COCO_RETURN_IF_ERROR(deps_.state->Delete(spec.id));
  } else if (existing.status().code() != absl::StatusCode::kNotFound) {
    return existing.status();
  }

  if (spec.key_source != "ephemeral") {
    return absl::UnimplementedError("only ephemeral keys are supported by this agent version");
  }

  auto start = Clock::now();
  COCO_ASSIGN_OR_RETURN(BlockDevice dev, deps_.devices->WaitFor(spec.device, device_timeout));
  if (dev.size_bytes < MinimumDeviceBytes(spec)) {
    return absl::FailedPreconditionError(Cat("device ", dev.dev_path, " has ", dev.size_bytes, " bytes; ",
                                             spec.block_mode ? "block" : spec.fs_type, " volumes need at least ",
                                             MinimumDeviceBytes(spec)));
  }

  VolumeRecord rec;
  rec.spec = spec;
  rec.phase = Phase::kActivating;
  rec.device_name = dev.name;
  rec.device_path = dev.dev_path;
  rec.device_number = dev.DevNumber();
  rec.device_size_bytes = dev.size_bytes;
  {
    std::lock_guard<std::mutex> claim(claim_mu_);
    COCO_RETURN_IF_ERROR(CheckConflicts(spec));
    COCO_RETURN_IF_ERROR(CheckDeviceFree(dev));
    // The record goes to disk before any kernel object exists, so a crash at
    // any later point is visible to the next agent.
    COCO_RETURN_IF_ERROR(deps_.state->Save(rec));
  }
  Crash("after-record");

  uint64_t written_before = SectorsWritten(config_.sysfs_root, dev.name);
  Status s = Provision(rec);
  if (!s.ok()) {
    log::Error(
        "volume.activate_failed",
        {{"volume", spec.id}, {"code", absl::StatusCodeToString(s.code())}, {"error", std::string(s.message())}});
    Status undo = Teardown(spec);
    if (undo.ok())
      (void)deps_.state->Delete(spec.id);
    else
      log::Error("volume.cleanup_failed", {{"volume", spec.id}, {"error", std::string(undo.message())}});
    return s;
  }
  rec.provisioning_bytes_written = (SectorsWritten(config_.sysfs_root, dev.name) - written_before) * 512;
  rec.provisioning_duration_ms =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
  rec.phase = Phase::kActive;
  COCO_RETURN_IF_ERROR(deps_.state->Save(rec));
  log::Info("volume.activated", {{"volume", spec.id},
                                 {"device", dev.dev_path},
                                 {"device_bytes", dev.size_bytes},
                                 {"mode", spec.block_mode ? "block" : "filesystem"},
                                 {"fs_type", spec.fs_type},
                                 {"integrity", IntegrityName(spec.integrity)},
                                 {"init", spec.init_mode == InitMode::kFullWipe ? "full-wipe" : "zero-guard"},
                                 {"target", spec.target_path},
                                 {"provisioning_ms", rec.provisioning_duration_ms},
                                 {"provisioning_bytes_written", rec.provisioning_bytes_written}});
  return Describe(rec);
}

Status VolumeManager::Provision(VolumeRecord& rec) {
  const VolumeSpec& spec = rec.spec;
  VolumeNames names = VolumeNames::For(spec.id, config_.state_dir, spec.uses_guard());
  CipherSuite suite = SuiteFor(spec.integrity);

  // The detached header lives in guest memory: the host never sees it.
  // libcryptsetup does not grow a header file: size it for the default LUKS2
  // layout. tmpfs keeps it sparse (no keyslots are ever written).
  {
    UniqueFd hdr(open(names.header_file.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!hdr.valid()) return ErrnoStatus(errno, Cat("creating ", names.header_file));
    if (ftruncate(hdr.get(), 16 << 20) != 0) return ErrnoStatus(errno, Cat("sizing ", names.header_file));
  }
  {
    COCO_ASSIGN_OR_RETURN(SecureBuffer key, SecureBuffer::Random(suite.key_bytes));
    CryptFormatRequest req;
    req.data_device = rec.device_path;
    req.header_file = names.header_file;
    req.name = names.crypt;
    req.suite = suite;
    COCO_RETURN_IF_ERROR(deps_.crypt->FormatAndActivate(req, key));
    // `key` is zeroized and unmapped here; only the kernel holds it now.
  }
  Crash("after-crypt");

  COCO_ASSIGN_OR_RETURN(std::optional<DmInfo> crypt_info, deps_.dm->Info(names.crypt));
  if (!crypt_info) return absl::InternalError(Cat("mapping ", names.crypt, " missing after activation"));

  if (spec.integrity_enabled() && spec.init_mode == InitMode::kFullWipe) {
    COCO_RETURN_IF_ERROR(deps_.crypt->Wipe(names.crypt));
  }
  if (spec.uses_guard()) {
    COCO_ASSIGN_OR_RETURN(uint64_t crypt_bytes, deps_.fs->BlockDeviceSize(crypt_info->DevPath()));
    COCO_ASSIGN_OR_RETURN(GuardLayout layout, ComputeGuardLayout(crypt_bytes));
    COCO_RETURN_IF_ERROR(CreateZeroGuard(*deps_.dm, GuardNamesFor(names), crypt_info->DevNumber(), layout));
  }
  Crash("after-guard");

  COCO_ASSIGN_OR_RETURN(std::optional<DmInfo> top, deps_.dm->Info(names.top));
  if (!top) return absl::InternalError(Cat("mapping ", names.top, " missing"));
  const std::string top_dev = top->DevPath();

  COCO_RETURN_IF_ERROR(MakeDirs(spec.target_path.substr(0, spec.target_path.rfind('/')), 0750));
  if (spec.block_mode) {
    COCO_RETURN_IF_ERROR(deps_.fs->MakeBlockNode(spec.target_path, top->major, top->minor, spec.fs_group));
    return OkStatus();
  }
  COCO_RETURN_IF_ERROR(deps_.fs->Mkfs(BuildMkfsArgv(spec.fs_type, spec.mkfs_options, top_dev, spec.uses_guard())));
  Crash("after-mkfs");
  COCO_RETURN_IF_ERROR(MakeDirs(spec.target_path, 0750));
  COCO_ASSIGN_OR_RETURN(ParsedMountOptions mo, ParseMountOptions(spec.fs_type, spec.mount_options, spec.read_only));
  COCO_RETURN_IF_ERROR(deps_.fs->Mount(top_dev, spec.target_path, spec.fs_type, mo.flags,
                                       MountDataFor(spec.fs_type, mo.data, spec.uses_guard())));
  if (spec.fs_group && !spec.read_only) COCO_RETURN_IF_ERROR(deps_.fs->ApplyFsGroup(spec.target_path, *spec.fs_group));
  return OkStatus();
}

Status VolumeManager::Teardown(const VolumeSpec& spec) {
  VolumeNames names = VolumeNames::For(spec.id, config_.state_dir, spec.uses_guard());
  if (spec.block_mode) {
    COCO_RETURN_IF_ERROR(deps_.fs->RemoveNode(spec.target_path));
  } else {
    COCO_RETURN_IF_ERROR(deps_.fs->Unmount(spec.target_path));
    rmdir(spec.target_path.c_str());  // ours; fails harmlessly if not empty or absent
  }
  if (spec.uses_guard()) COCO_RETURN_IF_ERROR(RemoveZeroGuard(*deps_.dm, GuardNamesFor(names)));
  COCO_RETURN_IF_ERROR(deps_.crypt->Deactivate(names.crypt));
  return RemoveFileIfExists(names.header_file);
}

StatusOr<bool> VolumeManager::Deactivate(const std::string& id) {
  auto vol_lock = LockFor(id);
  std::lock_guard<std::mutex> lock(*vol_lock);
  auto rec = deps_.state->Load(id);
  if (!rec.ok()) {
    if (rec.status().code() == absl::StatusCode::kNotFound) return false;
    return rec.status();
  }
  rec->phase = Phase::kDeactivating;
  COCO_RETURN_IF_ERROR(deps_.state->Save(*rec));
  Status s = Teardown(rec->spec);
  if (!s.ok()) {
    log::Error("volume.deactivate_failed", {{"volume", id}, {"error", std::string(s.message())}});
    return s;
  }
  COCO_RETURN_IF_ERROR(deps_.state->Delete(id));
  log::Info("volume.deactivated", {{"volume", id}});
  return true;
}

StatusOr<VolumeInfo> VolumeManager::Get(const std::string& id) {
  auto vol_lock = LockFor(id);
  std::lock_guard<std::mutex> lock(*vol_lock);
  auto rec = deps_.state->Load(id);
  if (!rec.ok()) {
    if (rec.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(Cat("volume ", id, " is not active"));
    }
    return rec.status();
  }
  return Describe(*rec);
}

StatusOr<std::vector<VolumeInfo>> VolumeManager::List() {
  COCO_ASSIGN_OR_RETURN(std::vector<VolumeRecord> records, deps_.state->LoadAll());
  std::vector<VolumeInfo> out;
  for (const auto& r : records) {
    auto vol_lock = LockFor(r.spec.id);
    std::unique_lock<std::mutex> lock(*vol_lock, std::try_to_lock);
    // A volume mid-activation is reported from its record rather than waited for.
    if (!lock.owns_lock() || r.phase != Phase::kActive) {
      VolumeInfo info;
      info.record = r;
      info.problem = "operation in progress";
      out.push_back(std::move(info));
      continue;
    }
    COCO_ASSIGN_OR_RETURN(VolumeInfo info, Describe(r));
    out.push_back(std::move(info));
  }
  return out;
}

StatusOr<VolumeInfo> VolumeManager::Describe(const VolumeRecord& rec) {
  VolumeInfo info;
  info.record = rec;
  const VolumeSpec& spec = rec.spec;
  VolumeNames names = VolumeNames::For(spec.id, config_.state_dir, spec.uses_guard());
  std::vector<std::string> problems;

  COCO_ASSIGN_OR_RETURN(CryptStatus cs, deps_.crypt->Query(names.crypt, names.header_file));
  if (!cs.active) problems.push_back(Cat("encrypted mapping ", names.crypt, " is not active"));
  info.cipher = cs.cipher;
  info.integrity_algorithm = cs.integrity;
  info.sector_size = cs.sector_size;

  COCO_ASSIGN_OR_RETURN(std::optional<DmInfo> top, deps_.dm->Info(names.top));
  if (!top) {
    problems.push_back(Cat("mapping ", names.top, " is missing"));
  } else {
    info.mapped_device = Cat("/dev/mapper/", names.top);
    if (spec.block_mode) {
      struct stat st {};
      if (lstat(spec.target_path.c_str(), &st) != 0 || !S_ISBLK(st.st_mode)) {
        problems.push_back(Cat("block node ", spec.target_path, " is missing"));
      }
      auto size = deps_.fs->BlockDeviceSize(top->DevPath());
      if (size.ok()) info.capacity_bytes = *size;
      info.available_bytes = info.capacity_bytes;
    } else {
      COCO_ASSIGN_OR_RETURN(std::vector<MountEntry> mounts, deps_.fs->Mounts());
      bool mounted = false;
      for (const auto& m : mounts) {
        if (m.mount_point == spec.target_path && m.dev_number == top->DevNumber()) mounted = true;
      }
      if (!mounted) {
        problems.push_back(Cat("not mounted at ", spec.target_path));
      } else {
        auto usage = deps_.fs->Usage(spec.target_path);
        if (usage.ok()) {
          info.capacity_bytes = usage->capacity_bytes;
          info.used_bytes = usage->used_bytes;
          info.available_bytes = usage->available_bytes;
        }
      }
    }
  }
  info.healthy = problems.empty();
  info.problem = Join(problems, "; ");
  return info;
}

}  // namespace cocostorage::agent
