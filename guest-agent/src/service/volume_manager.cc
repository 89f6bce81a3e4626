#include "service/volume_manager.h"

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/secure_buffer.h"
#include "cocostorage/common/strings.h"
#include "dm/zero_guard.h"
#include "fs/options.h"

namespace cocostorage::agent {
namespace {

using Clock = std::chrono::steady_clock;

GuardNames GuardNamesFor(const VolumeNames& n) { return {n.pool, n.top, n.guard_meta_file}; }

}  // namespace

Status CheckNotCancelled(const CancelFn& cancelled, const std::string& id, const char* step) {
  if (cancelled && cancelled()) {
    return absl::CancelledError(Cat("activation of ", id, " stopped ", step, ": its caller left (deadline or cancel)"));
  }
  return OkStatus();
}

uint64_t MinimumDeviceBytes(const VolumeSpec& spec) {
  constexpr uint64_t MiB = 1ull << 20;
  // xfsprogs refuses filesystems under 300 MiB; integrity tags take ~1 %.
  if (spec.block_mode) return 16 * MiB;
  if (spec.fs_type == "xfs") return 320 * MiB;
  return 32 * MiB;
}

VolumeManager::VolumeManager(AgentConfig config, Deps deps) : config_(std::move(config)), deps_(std::move(deps)) {}

void VolumeManager::Crash(const char* point) {
  if (deps_.crash_hook) deps_.crash_hook(point);
}

Status VolumeManager::Recover() {
  COCO_RETURN_IF_ERROR(deps_.state->Init());
  COCO_RETURN_IF_ERROR(deps_.fs->MakeDirs(config_.storage_root, 0750));
  COCO_RETURN_IF_ERROR(deps_.files->MakeDir(Cat(config_.state_dir, "/headers")));
  COCO_RETURN_IF_ERROR(deps_.files->MakeDir(Cat(config_.state_dir, "/guard")));
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
    for (const auto& id : known) owned = owned || MappingBelongsTo(id, name);
    if (!owned) log::Warn("recovery.orphan_mapping", {{"dm_name", name}});
  }
  return OkStatus();
}

Status VolumeManager::CheckConflicts(const VolumeSpec& spec, const BlockDevice& dev) {
  COCO_ASSIGN_OR_RETURN(std::vector<VolumeRecord> records, deps_.state->LoadAll());
  for (const auto& rec : records) {
    if (rec.spec.id == spec.id) continue;
    // One persistent volume, one activation: a cloned disk plugged twice is
    // refused before its header is even read.
    if (spec.persistent() && rec.spec.persistent() && rec.spec.PvId() == spec.PvId()) {
      return absl::FailedPreconditionError(
          Cat("persistent volume ", spec.PvId(), " is already active on ", rec.device_path, " (as ", rec.spec.id, ")"));
    }
    // The disk, not the name the request used: one disk can be named by PCI
    // path, serial and MAJ:MIN.
    if (rec.spec.device == spec.device || rec.device_number == dev.DevNumber()) {
      return absl::FailedPreconditionError(
          Cat("device ", spec.device.Describe(), " (", dev.dev_path, ") is already used by volume ", rec.spec.id));
    }
    if (IsPathWithin(rec.spec.target_path, spec.target_path) || IsPathWithin(spec.target_path, rec.spec.target_path)) {
      return absl::FailedPreconditionError(
          Cat("target path ", spec.target_path, " overlaps volume ", rec.spec.id, " at ", rec.spec.target_path));
    }
  }
  return OkStatus();
}

Status VolumeManager::CheckDeviceFree(const BlockDevice& dev) {
  COCO_ASSIGN_OR_RETURN(bool held, deps_.devices->HasHolders(dev));
  if (held) return absl::FailedPreconditionError(Cat(dev.dev_path, " is in use by another mapping"));
  COCO_ASSIGN_OR_RETURN(std::vector<MountEntry> mounts, deps_.fs->Mounts());
  for (const auto& m : mounts) {
    if (m.dev_number == dev.DevNumber()) {
      return absl::FailedPreconditionError(Cat(dev.dev_path, " is mounted at ", m.mount_point));
    }
  }
  return OkStatus();
}

Status VolumeManager::CheckBlankForFormat(const VolumeSpec& /*spec*/, const BlockDevice& dev) {
  COCO_ASSIGN_OR_RETURN(std::string what, deps_.devices->ProbeSignature(dev));
  // A previous ephemeral volume: only the dm-integrity superblock is visible
  // (the LUKS header was detached, in guest memory, and died with the key).
  if (what.empty() || what == "DM_integrity") return OkStatus();
  if (config_.allow_format_non_blank) {
    log::Warn("volume.format_non_blank", {{"device", dev.dev_path}, {"signature", what}});
    return OkStatus();
  }
  return absl::FailedPreconditionError(Cat(dev.dev_path, " is not blank: it holds a ", what,
                                           " signature; refusing to format it (allow_format_non_blank)"));
}

StatusOr<VolumeInfo> VolumeManager::Activate(const VolumeSpec& requested, std::chrono::milliseconds device_timeout,
                                             const CancelFn& cancelled) {
  auto lock = locks_.Lock(requested.id);
  // Calls for one id queue on its lock; one whose caller gave up meanwhile
  // must not start the work.
  if (cancelled && cancelled()) return absl::CancelledError(Cat("activation of ", requested.id, " was cancelled"));

  auto existing = deps_.state->Load(requested.id);
  if (existing.ok()) {
    if (existing->phase == Phase::kActive) {
      // A routed volume is compared with what was asked, not what it became.
      std::string diff = existing->request.value_or(existing->spec).DiffAgainst(requested);
      if (!diff.empty()) {
        return absl::AlreadyExistsError(
            Cat("volume ", requested.id, " is already active with different parameters (", diff, ")"));
      }
      log::Info("volume.activate_idempotent", {{"volume", requested.id}});
      return Describe(*existing);
    }
    // Leftover of an interrupted operation: undo before starting over.
    COCO_RETURN_IF_ERROR(Teardown(existing->spec));
    COCO_RETURN_IF_ERROR(deps_.state->Delete(requested.id));
  } else if (existing.status().code() != absl::StatusCode::kNotFound) {
    return existing.status();
  }

  auto start = Clock::now();
  COCO_ASSIGN_OR_RETURN(BlockDevice dev, deps_.devices->WaitFor(requested.device, device_timeout, cancelled));
  // SecureMount under a policy: the device says which volume this is (design
  // §2.4), read before any key is fetched and before anything is written.
  VolumeSpec spec = requested;
  bool routed = false;
  DeviceProbe probe;
  if (!requested.persistent_candidates.empty()) {
    if (!deps_.route || deps_.io == nullptr) {
      return absl::InternalError("a request with persistent candidates needs the storage policy's routing");
    }
    COCO_ASSIGN_OR_RETURN(policy::DeviceFacts facts, ReadDeviceFacts(dev, &probe));
    COCO_ASSIGN_OR_RETURN(std::vector<VolumeRecord> all, deps_.state->LoadAll());
    std::vector<VolumeSpec> others;
    for (auto& r : all) others.push_back(std::move(r.spec));
    COCO_ASSIGN_OR_RETURN(std::optional<VolumeSpec> as_persistent, deps_.route(requested, facts, others));
    if (as_persistent) {
      spec = std::move(*as_persistent);
      routed = true;
    }
    spec.persistent_candidates.clear();
    log::Info("volume.routed", {{"volume", requested.id},
                                {"device", dev.dev_path},
                                {"kind", routed ? "persistent" : "ephemeral"},
                                {"persistent_volume", routed ? spec.PvId() : ""}});
  }

  const CipherSuite suite = SuiteFor(spec.integrity);
  if (spec.persistent() && deps_.io == nullptr) {
    return absl::UnimplementedError("persistent volumes need raw disk access, which this agent was built without");
  }
  // The key exists before anything is recorded or created, so that a key
  // provider's failure leaves the device untouched. A persistent volume's
  // KBS resource is a 32-byte root its keys are derived from.
  SecureBuffer key;
  std::optional<pv::PersistentKeys> pv_keys;
  if (spec.persistent()) {
    COCO_ASSIGN_OR_RETURN(SecureBuffer root, deps_.keys->GetKey(spec.key, pv::kRootKeyBytes));
    COCO_ASSIGN_OR_RETURN(pv::PersistentKeys derived, pv::DeriveKeys(root, spec.PvId(), spec.integrity));
    pv_keys = std::move(derived);
  } else {
    COCO_ASSIGN_OR_RETURN(key, deps_.keys->GetKey(spec.key, suite.key_bytes));
  }

  if (dev.size_bytes < MinimumDeviceBytes(spec)) {
    return absl::FailedPreconditionError(Cat("device ", dev.dev_path, " has ", dev.size_bytes, " bytes; ",
                                             spec.block_mode ? "block" : spec.fs_type, " volumes need at least ",
                                             MinimumDeviceBytes(spec)));
  }

  if (spec.persistent() && spec.full_blank_check) {
    COCO_RETURN_IF_ERROR(FullBlankProbe(dev, cancelled, &probe));
  }

  VolumeRecord rec;
  rec.spec = spec;
  if (routed || spec.persistent_candidates != requested.persistent_candidates) rec.request = requested;
  rec.phase = Phase::kActivating;
  rec.device_name = dev.name;
  rec.device_path = dev.dev_path;
  rec.device_number = dev.DevNumber();
  rec.device_size_bytes = dev.size_bytes;
  PersistentPlan plan;
  {
    std::lock_guard<std::mutex> claim(claim_mu_);
    if (deps_.claim_check) {
      COCO_ASSIGN_OR_RETURN(std::vector<VolumeRecord> all, deps_.state->LoadAll());
      std::vector<VolumeSpec> others;
      for (auto& r : all) {
        if (r.spec.id != spec.id) others.push_back(std::move(r.spec));
      }
      COCO_RETURN_IF_ERROR(deps_.claim_check(spec, dev.size_bytes, others));
    }
    COCO_RETURN_IF_ERROR(CheckConflicts(spec, dev));
    COCO_RETURN_IF_ERROR(CheckDeviceFree(dev));
    if (spec.persistent()) {
      COCO_ASSIGN_OR_RETURN(plan, PlanPersistent(spec, dev, *pv_keys, probe.first_8k.empty() ? nullptr : &probe));
    } else {
      COCO_RETURN_IF_ERROR(CheckBlankForFormat(spec, dev));
    }
    // The record goes to disk before any kernel object exists, so a crash at
    // any later point is visible to the next agent.
    COCO_RETURN_IF_ERROR(deps_.state->Save(rec));
  }
  Crash("after-record");

  const uint64_t written_before = deps_.devices->SectorsWritten(dev).value_or(0);
  Created created;
  Status s;
  if (!spec.persistent()) {
    s = FormatNew(rec, key, cancelled, &created);
  } else if (plan.action == PersistentPlan::Action::kCreate) {
    s = CreatePersistent(rec, plan, *pv_keys, cancelled, &created);
  } else {
    s = OpenPersistent(rec, plan, *pv_keys, cancelled, &created);
  }
  key.Wipe();  // only the kernel holds it now
  pv_keys.reset();
  if (!s.ok()) {
    log::Error(
        "volume.activate_failed",
        {{"volume", spec.id}, {"code", absl::StatusCodeToString(s.code())}, {"error", std::string(s.message())}});
    Status undo = Undo(spec, created);
    if (undo.ok())
      (void)deps_.state->Delete(spec.id);
    else
      log::Error("volume.cleanup_failed", {{"volume", spec.id}, {"error", std::string(undo.message())}});
    return s;
  }
  rec.provisioning_bytes_written = (deps_.devices->SectorsWritten(dev).value_or(written_before) - written_before) * 512;
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
                                 {"kind", spec.persistent() ? "persistent" : "ephemeral"},
                                 {"action", !spec.persistent()                               ? "format"
                                            : plan.action == PersistentPlan::Action::kCreate ? "create"
                                                                                             : "open"},
                                 {"target", spec.target_path},
                                 {"provisioning_ms", rec.provisioning_duration_ms},
                                 {"provisioning_bytes_written", rec.provisioning_bytes_written}});
  return Describe(rec);
}

Status VolumeManager::FormatNew(const VolumeRecord& rec, const SecureBuffer& key, const CancelFn& cancelled,
                                Created* created) {
  const VolumeSpec& spec = rec.spec;
  VolumeNames names = VolumeNames::For(spec.id, config_.state_dir, spec.uses_guard());

  // The detached header lives in guest memory: the host never sees it.
  // libcryptsetup does not grow a header file: size it for the default LUKS2
  // layout. tmpfs keeps it sparse (no keyslots are ever written).
  COCO_RETURN_IF_ERROR(deps_.files->CreateSparse(names.header_file, 16 << 20));
  created->header = true;
  CryptFormatRequest req;
  req.data_device = rec.device_path;
  req.header_file = names.header_file;
  req.name = names.crypt;
  req.suite = SuiteFor(spec.integrity);
  COCO_RETURN_IF_ERROR(deps_.crypt->FormatAndActivate(req, key));
  created->crypt = true;
  Crash("after-crypt");
  COCO_RETURN_IF_ERROR(CheckNotCancelled(cancelled, spec.id, "after the crypt format"));

  if (spec.integrity_enabled() && spec.init_mode == InitMode::kFullWipe) {
    COCO_RETURN_IF_ERROR(deps_.crypt->Wipe(names.crypt));
  }
  return ExposeToConsumer(spec, names, /*fresh=*/true, cancelled, created);
}

Status VolumeManager::ExposeToConsumer(const VolumeSpec& spec, const VolumeNames& names, bool fresh,
                                       const CancelFn& cancelled, Created* created,
                                       const std::function<Status()>& after_mkfs) {
  COCO_ASSIGN_OR_RETURN(std::optional<DmInfo> crypt_info, deps_.dm->Info(names.crypt));
  if (!crypt_info) return absl::InternalError(Cat("mapping ", names.crypt, " missing after activation"));
  // A persistent volume's guard is built (or opened) by its own path.
  if (spec.uses_guard() && !spec.persistent()) {
    COCO_ASSIGN_OR_RETURN(uint64_t crypt_bytes, deps_.fs->BlockDeviceSize(crypt_info->DevPath()));
    COCO_ASSIGN_OR_RETURN(GuardLayout layout, ComputeGuardLayout(crypt_bytes));
    COCO_RETURN_IF_ERROR(CreateZeroGuard(Guard(), GuardNamesFor(names), crypt_info->DevNumber(), layout));
    created->guard = true;
  }
  Crash("after-guard");
  COCO_RETURN_IF_ERROR(CheckNotCancelled(cancelled, spec.id, "after the zero guard"));

  COCO_ASSIGN_OR_RETURN(std::optional<DmInfo> top, deps_.dm->Info(names.top));
  if (!top) return absl::InternalError(Cat("mapping ", names.top, " missing"));
  const std::string top_dev = top->DevPath();

  if (spec.block_mode) {
    if (after_mkfs) COCO_RETURN_IF_ERROR(after_mkfs());
    COCO_RETURN_IF_ERROR(deps_.fs->MakeBlockNode(spec.target_path, top->major, top->minor, spec.fs_group));
    created->node = true;
    return OkStatus();
  }
  if (fresh) {
    COCO_RETURN_IF_ERROR(CheckNotCancelled(cancelled, spec.id, "before mkfs"));
    COCO_ASSIGN_OR_RETURN(
        std::vector<std::string> argv,
        BuildMkfsArgv(spec.fs_type, spec.mkfs_options, top_dev, MkfsRules{spec.uses_guard(), spec.key.ephemeral()}));
    COCO_RETURN_IF_ERROR(deps_.fs->Mkfs(argv));
    Crash("after-mkfs");
    if (after_mkfs) COCO_RETURN_IF_ERROR(after_mkfs());
  }
  // Single level below the storage root, no symlink, no mount point.
  COCO_RETURN_IF_ERROR(deps_.fs->MakeDir(spec.target_path, 0750));
  created->target_dir = true;
  // Never mount over a mount point (someone else's volume, or anything the
  // host arranged there); a failure must then not unmount it either.
  COCO_ASSIGN_OR_RETURN(std::vector<MountEntry> mounts, deps_.fs->Mounts());
  for (const auto& m : mounts) {
    if (m.mount_point == spec.target_path) {
      return absl::FailedPreconditionError(Cat("target_path ", spec.target_path, " is already a mount point"));
    }
  }
  COCO_RETURN_IF_ERROR(CheckNotCancelled(cancelled, spec.id, "before mount"));
  COCO_ASSIGN_OR_RETURN(ParsedMountOptions mo, ParseMountOptions(spec.fs_type, spec.mount_options, spec.read_only));
  COCO_RETURN_IF_ERROR(deps_.fs->Mount(top_dev, spec.target_path, spec.fs_type, mo.flags,
                                       MountDataFor(spec.fs_type, mo.data, spec.uses_guard())));
  created->mounted = true;
  if (spec.fs_group && !spec.read_only) COCO_RETURN_IF_ERROR(deps_.fs->ApplyFsGroup(spec.target_path, *spec.fs_group));
  return OkStatus();
}

Status VolumeManager::Undo(const VolumeSpec& spec, const Created& created) {
  VolumeNames names = VolumeNames::For(spec.id, config_.state_dir, spec.uses_guard());
  if (created.mounted) COCO_RETURN_IF_ERROR(deps_.fs->Unmount(spec.target_path));
  if (created.node) COCO_RETURN_IF_ERROR(deps_.fs->RemoveNode(spec.target_path));
  if (created.target_dir) deps_.fs->RemoveEmptyDir(spec.target_path);
  if (created.guard) COCO_RETURN_IF_ERROR(RemoveGuard(spec, names));
  if (created.crypt) COCO_RETURN_IF_ERROR(deps_.crypt->Deactivate(names.crypt));
  if (created.header) COCO_RETURN_IF_ERROR(deps_.files->Remove(names.header_file));
  return OkStatus();
}

Status VolumeManager::RemoveGuard(const VolumeSpec& spec, const VolumeNames& names) {
  if (spec.persistent()) {
    return RemovePersistentGuard(Guard(), {names.guard_meta_linear, names.guard_data_linear, names.pool, names.top});
  }
  return RemoveZeroGuard(Guard(), GuardNamesFor(names));
}

Status VolumeManager::Teardown(const VolumeSpec& spec) {
  VolumeNames names = VolumeNames::For(spec.id, config_.state_dir, spec.uses_guard());
  if (spec.block_mode) {
    COCO_RETURN_IF_ERROR(deps_.fs->RemoveNode(spec.target_path));
  } else {
    // Unmount only our own file system: something mounted over (or instead
    // of) it at the target is not ours to take down.
    COCO_ASSIGN_OR_RETURN(std::optional<DmInfo> top, deps_.dm->Info(names.top));
    COCO_ASSIGN_OR_RETURN(std::vector<MountEntry> mounts, deps_.fs->Mounts());
    bool ours_mounted = false;
    for (const auto& m : mounts) {
      if (m.mount_point != spec.target_path) continue;
      if (top && m.dev_number == top->DevNumber()) {
        ours_mounted = true;
      } else {
        return absl::FailedPreconditionError(Cat("target_path ", spec.target_path, " has a mount (", m.source,
                                                 ") that is not volume ", spec.id, "'s; not unmounting it"));
      }
    }
    if (ours_mounted) COCO_RETURN_IF_ERROR(deps_.fs->Unmount(spec.target_path));
    deps_.fs->RemoveEmptyDir(spec.target_path);  // ours; left alone if not empty
  }
  if (spec.uses_guard()) COCO_RETURN_IF_ERROR(RemoveGuard(spec, names));
  COCO_RETURN_IF_ERROR(deps_.crypt->Deactivate(names.crypt));
  return deps_.files->Remove(names.header_file);
}

StatusOr<bool> VolumeManager::Deactivate(const std::string& id) {
  auto lock = locks_.Lock(id);
  return DeactivateLocked(id);
}

StatusOr<bool> VolumeManager::MountedAtTarget(const VolumeSpec& spec) {
  VolumeNames names = VolumeNames::For(spec.id, config_.state_dir, spec.uses_guard());
  COCO_ASSIGN_OR_RETURN(std::optional<DmInfo> top, deps_.dm->Info(names.top));
  if (!top) return false;
  COCO_ASSIGN_OR_RETURN(std::vector<MountEntry> mounts, deps_.fs->Mounts());
  for (const auto& m : mounts) {
    if (m.mount_point == spec.target_path && m.dev_number == top->DevNumber()) return true;
  }
  return false;
}

size_t VolumeManager::ReapUnmounted() {
  auto records = deps_.state->LoadAll();
  if (!records.ok()) {
    log::Error("volume.reap_failed", {{"error", std::string(records.status().message())}});
    return 0;
  }
  size_t reaped = 0;
  for (const auto& listed : *records) {
    if (listed.phase != Phase::kActive || !listed.spec.teardown_on_unmount) continue;
    // Judged again under the lock: the id may have been deactivated and
    // activated anew (SecureMount ids come from the mount point) meanwhile.
    auto lock = locks_.Lock(listed.spec.id);
    auto rec = deps_.state->Load(listed.spec.id);
    if (!rec.ok() || rec->phase != Phase::kActive || !rec->spec.teardown_on_unmount) continue;
    auto mounted = MountedAtTarget(rec->spec);
    if (!mounted.ok() || *mounted) continue;
    log::Info("volume.unmounted", {{"volume", rec->spec.id}, {"target", rec->spec.target_path}});
    auto done = DeactivateLocked(rec->spec.id);
    if (done.ok() && *done) ++reaped;
  }
  return reaped;
}

StatusOr<bool> VolumeManager::DeactivateLocked(const std::string& id) {
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
  auto lock = locks_.Lock(id);
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
    const bool locked = locks_.TryLock(r.spec.id);
    // A volume mid-activation is reported from its record rather than waited for.
    if (!locked || r.phase != Phase::kActive) {
      if (locked) locks_.Unlock(r.spec.id);
      VolumeInfo info;
      info.record = r;
      info.problem = "operation in progress";
      out.push_back(std::move(info));
      continue;
    }
    auto info = Describe(r);
    locks_.Unlock(r.spec.id);
    if (!info.ok()) return info.status();
    out.push_back(std::move(*info));
  }
  return out;
}

StatusOr<VolumeInfo> VolumeManager::Describe(const VolumeRecord& rec) {
  VolumeInfo info;
  info.record = rec;
  const VolumeSpec& spec = rec.spec;
  VolumeNames names = VolumeNames::For(spec.id, config_.state_dir, spec.uses_guard());
  std::vector<std::string> problems;

  // The disk under the stack: a host that unplugged it leaves every mapping
  // in place, all failing I/O.
  if (!rec.device_path.empty() && !deps_.fs->BlockDeviceSize(rec.device_path).ok()) {
    problems.push_back(Cat("device ", rec.device_path, " is gone"));
  }
  COCO_ASSIGN_OR_RETURN(CryptStatus cs, deps_.crypt->Query(names.crypt, names.header_file));
  if (!cs.active) problems.push_back(Cat("encrypted mapping ", names.crypt, " is not active"));
  info.cipher = cs.cipher;
  info.integrity_algorithm = cs.integrity;
  info.sector_size = cs.sector_size;

  // What the kernel says of the mappings themselves: after write errors the
  // zero guard's pool may have given up (all I/O fails, for good) while every
  // mapping still exists. Missing ones are reported below.
  std::vector<std::string> layers;
  if (spec.integrity_enabled()) layers.push_back(Cat(names.crypt, "_dif"));
  if (spec.uses_guard()) layers.insert(layers.end(), {names.pool, names.top});
  for (const auto& layer : layers) {
    auto st = deps_.dm->TargetStatus(layer);
    if (!st.ok()) {
      if (st.status().code() != absl::StatusCode::kNotFound) {
        problems.push_back(Cat("status of ", layer, " unreadable: ", st.status().message()));
      }
      continue;
    }
    for (const auto& t : *st) {
      if (std::string p = TargetStatusProblem(t); !p.empty()) problems.push_back(Cat(layer, ": ", p));
    }
  }

  COCO_ASSIGN_OR_RETURN(std::optional<DmInfo> top, deps_.dm->Info(names.top));
  if (!top) {
    problems.push_back(Cat("mapping ", names.top, " is missing"));
  } else {
    info.mapped_device = Cat("/dev/mapper/", names.top);
    if (spec.block_mode) {
      auto node = deps_.fs->IsBlockNode(spec.target_path, top->major, top->minor);
      if (!node.ok() || !*node) problems.push_back(Cat("block node ", spec.target_path, " is missing"));
      auto size = deps_.fs->BlockDeviceSize(top->DevPath());
      if (size.ok()) info.capacity_bytes = *size;
      info.available_bytes = info.capacity_bytes;
    } else {
      COCO_ASSIGN_OR_RETURN(std::vector<MountEntry> mounts, deps_.fs->Mounts());
      bool mounted = false;
      bool read_only = false;
      for (const auto& m : mounts) {
        if (m.mount_point == spec.target_path && m.dev_number == top->DevNumber()) {
          mounted = true;
          read_only = read_only || m.read_only;
        }
      }
      // Mounted read-write, now read-only: the file system shut itself down
      // after I/O errors.
      if (mounted && read_only && !spec.read_only) {
        problems.push_back(Cat("file system at ", spec.target_path, " went read-only (after I/O errors)"));
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
