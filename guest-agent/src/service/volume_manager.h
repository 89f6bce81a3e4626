// Orchestrates one volume's life: device -> LUKS2/dm-integrity -> zero guard
// -> filesystem/mount or block node, and the reverse. Owns idempotency,
// per-volume locking and crash recovery; every system effect goes through the
// injected interfaces.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cocostorage/common/lock_map.h"
#include "cocostorage/common/status.h"
#include "core/volume_spec.h"
#include "crypt/crypt_engine.h"
#include "device/raw_io.h"
#include "device/resolver.h"
#include "dm/dm_client.h"
#include "dm/loop_device.h"
#include "dm/zero_guard.h"
#include "fs/filesystem.h"
#include "keys/key_provider.h"
#include "policy/matcher.h"
#include "pv/pv_header.h"
#include "state/scratch_files.h"
#include "state/state_store.h"

namespace cocostorage::agent {

struct AgentConfig {
  std::string storage_root = "/run/kata-containers/sandbox/storage";
  std::string state_dir = "/run/cocostorage";
  std::string sysfs_root = "/sys";
  std::chrono::milliseconds default_device_timeout{10000};
  // Whether an ephemeral volume may be formatted over a disk that visibly
  // holds something (a file system, a LUKS header, a partition table): off by
  // default, the host must hand over a blank disk. (What a previous ephemeral
  // activation left, a bare dm-integrity superblock whose key is gone, counts
  // as blank.)
  bool allow_format_non_blank = false;
};

struct VolumeInfo {
  VolumeRecord record;
  bool healthy = false;
  std::string problem;  // why not healthy
  std::string mapped_device;
  std::string cipher;
  std::string integrity_algorithm;
  uint32_t sector_size = 0;
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;
  uint64_t available_bytes = 0;
};

// Every system effect of the VolumeManager goes through one of these.
struct Deps {
  DeviceResolver* devices;
  CryptEngine* crypt;
  DmClient* dm;
  LoopDevices* loops;
  Filesystem* fs;
  ScratchFiles* files;
  StateStore* state;
  KeyProvider* keys;
  // Test-only fault injection (crash points); null in production.
  std::function<void(const char* point)> crash_hook;
  // The storage policy's word on a device about to be claimed (its size, how
  // many volumes are active): OK or the denial. Null without a policy.
  std::function<Status(const VolumeSpec& spec, uint64_t device_bytes, const std::vector<VolumeSpec>& others)>
      claim_check;
  // Persistent volumes read and write their header on the disk itself.
  // Null: persistent volumes are UNIMPLEMENTED.
  RawDiskIo* io = nullptr;
  // SecureMount under a storage policy: which persistent rule, if any, a
  // device is (policy::RouteSecureMount, then policy::PersistentSpecFromRule):
  // the spec to activate instead, or nullopt for the request's ephemeral
  // rules. Null without a policy.
  std::function<StatusOr<std::optional<VolumeSpec>>(const VolumeSpec& spec, const policy::DeviceFacts& facts,
                                                    const std::vector<VolumeSpec>& others)>
      route;
};

// Between provisioning steps: a caller that left (deadline, cancel) gets
// nothing more built for it; the activation fails and is undone.
Status CheckNotCancelled(const CancelFn& cancelled, const std::string& id, const char* step);

// Minimum raw device sizes (integrity metadata and filesystem minimums).
uint64_t MinimumDeviceBytes(const VolumeSpec& spec);

class VolumeManager {
 public:
  VolumeManager(AgentConfig config, Deps deps);

  // At startup: finishes or undoes what a crashed agent left half done.
  Status Recover();

  // `cancelled` (may be empty) stops a call whose caller has left: checked
  // after the per-volume lock is taken, while waiting for the device and
  // between provisioning steps (after the crypt format, after the guard,
  // before mkfs, before mount); a cancelled activation undoes what it created
  // and fails CANCELLED.
  StatusOr<VolumeInfo> Activate(const VolumeSpec& spec, std::chrono::milliseconds device_timeout,
                                const CancelFn& cancelled = {});
  // Returns whether the volume was active. Unknown volume: OK, false.
  StatusOr<bool> Deactivate(const std::string& id);
  // Tears down every active volume marked teardown_on_unmount whose file
  // system is no longer mounted at its target (kata-agent unmounted it).
  // Returns how many were torn down; failures are logged and retried at the
  // next call.
  size_t ReapUnmounted();
  StatusOr<VolumeInfo> Get(const std::string& id);
  StatusOr<std::vector<VolumeInfo>> List();

  const AgentConfig& config() const { return config_; }
  // Volume locks held or waited for right now (tests: no growth per id).
  size_t LockedVolumeCount() const { return locks_.Size(); }

 private:
  // What one activation call created, so that its failure undoes exactly
  // that and never something it found (another volume's, or a mount that is
  // not ours).
  struct Created {
    bool header = false;
    bool crypt = false;
    bool guard = false;
    bool target_dir = false;
    bool node = false;
    bool mounted = false;
  };
  StatusOr<VolumeInfo> Describe(const VolumeRecord& rec);
  // Ephemeral volumes: a fresh LUKS2 header and dm-integrity superblock with
  // `key`, then the guard, then mkfs (or the block node).
  Status FormatNew(const VolumeRecord& rec, const SecureBuffer& key, const CancelFn& cancelled, Created* created);
  // The encrypted device is active: guard, file system or node, mount.
  // `after_mkfs` (may be empty) runs once the fresh file system is on the
  // device, before it is mounted.
  Status ExposeToConsumer(const VolumeSpec& spec, const VolumeNames& names, bool fresh, const CancelFn& cancelled,
                          Created* created, const std::function<Status()>& after_mkfs = {});

  // Persistent volumes (volume_manager_persistent.cc, docs/design.md
  // "Persistent volumes"). What the device holds decides between creating
  // and opening, never a host-supplied field.
  struct PersistentPlan {
    enum class Action { kCreate, kOpen };
    Action action = Action::kCreate;
    uint64_t generation = 1;  // of the next superblock written
    std::vector<uint8_t> first_8k;
    pv::Superblock sb;  // kOpen: the authenticated superblock
  };
  // What one read of the device showed. The routing of a SecureMount request
  // and the plan use the same bytes, so they cannot disagree about a device
  // the host rewrites between two reads (and the blank proof runs once).
  struct DeviceProbe {
    std::vector<uint8_t> first_8k;
    std::optional<std::string> why_not_blank;  // set once the blank proof ran
    bool full = false;                         // why_not_blank is from the full scan
  };
  // "" when the device passes the structural blank proof, else why not.
  StatusOr<std::string> WhyNotBlank(const BlockDevice& dev);
  // Fills `probe` with what it read.
  StatusOr<policy::DeviceFacts> ReadDeviceFacts(const BlockDevice& dev, DeviceProbe* probe);
  // blank_check = "full": a device with no header of ours must read as zeros
  // end to end. Slow (the whole device), so it runs before the claim lock,
  // between reads of at most 8 MiB that each check `cancelled`.
  Status FullBlankProbe(const BlockDevice& dev, const CancelFn& cancelled, DeviceProbe* probe);
  // With `probe` from ReadDeviceFacts or FullBlankProbe on the same device,
  // reads nothing again.
  StatusOr<PersistentPlan> PlanPersistent(const VolumeSpec& spec, const BlockDevice& dev,
                                          const pv::PersistentKeys& keys, const DeviceProbe* probe);
  Status CreatePersistent(const VolumeRecord& rec, const PersistentPlan& plan, const pv::PersistentKeys& keys,
                          const CancelFn& cancelled, Created* created);
  Status OpenPersistent(const VolumeRecord& rec, const PersistentPlan& plan, const pv::PersistentKeys& keys,
                        const CancelFn& cancelled, Created* created);
  Status WriteSuperblock(const std::string& dev_path, const pv::Superblock& sb, const pv::PersistentKeys& keys);
  Status RemoveGuard(const VolumeSpec& spec, const VolumeNames& names);
  Status Undo(const VolumeSpec& spec, const Created& created);
  Status Teardown(const VolumeSpec& spec);
  // With the volume's lock held.
  StatusOr<bool> DeactivateLocked(const std::string& id);
  // Whether the volume's own file system is mounted at its target.
  StatusOr<bool> MountedAtTarget(const VolumeSpec& spec);
  Status CheckConflicts(const VolumeSpec& spec, const BlockDevice& dev);
  Status CheckDeviceFree(const BlockDevice& dev);
  // Formatting is for blank disks only (see AgentConfig::allow_format_non_blank).
  Status CheckBlankForFormat(const VolumeSpec& spec, const BlockDevice& dev);
  GuardDeps Guard() const { return {deps_.dm, deps_.loops, deps_.files}; }
  void Crash(const char* point);

  AgentConfig config_;
  Deps deps_;
  LockMap locks_;
  // Serialises the check-then-claim of devices and target paths across volumes.
  std::mutex claim_mu_;
};

}  // namespace cocostorage::agent
