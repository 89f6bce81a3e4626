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

#include "cocostorage/common/status.h"
#include "core/volume_spec.h"
#include "crypt/crypt_engine.h"
#include "device/resolver.h"
#include "dm/dm_client.h"
#include "fs/filesystem.h"
#include "state/state_store.h"

namespace cocostorage::agent {

struct AgentConfig {
  std::string storage_root = "/run/kata-containers/sandbox/storage";
  std::string state_dir = "/run/cocostorage";
  std::string sysfs_root = "/sys";
  std::chrono::milliseconds default_device_timeout{10000};
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

struct Deps {
  DeviceResolver* devices;
  CryptEngine* crypt;
  DmClient* dm;
  Filesystem* fs;
  StateStore* state;
  // Test-only fault injection (crash points); null in production.
  std::function<void(const char* point)> crash_hook;
};

// Minimum raw device sizes (integrity metadata and filesystem minimums).
uint64_t MinimumDeviceBytes(const VolumeSpec& spec);

class VolumeManager {
 public:
  VolumeManager(AgentConfig config, Deps deps);

  // At startup: finishes or undoes what a crashed agent left half done.
  Status Recover();

  StatusOr<VolumeInfo> Activate(const VolumeSpec& spec, std::chrono::milliseconds device_timeout);
  // Returns whether the volume was active. Unknown volume: OK, false.
  StatusOr<bool> Deactivate(const std::string& id);
  StatusOr<VolumeInfo> Get(const std::string& id);
  StatusOr<std::vector<VolumeInfo>> List();

  const AgentConfig& config() const { return config_; }

 private:
  std::shared_ptr<std::mutex> LockFor(const std::string& id);
  StatusOr<VolumeInfo> Describe(const VolumeRecord& rec);
  Status Provision(VolumeRecord& rec);
  Status Teardown(const VolumeSpec& spec);
  Status CheckConflicts(const VolumeSpec& spec);
  Status CheckDeviceFree(const BlockDevice& dev);
  void Crash(const char* point);

  AgentConfig config_;
  Deps deps_;
  std::mutex locks_mu_;
  std::map<std::string, std::shared_ptr<std::mutex>> locks_;
  // Serialises the check-then-claim of devices and target paths across volumes.
  std::mutex claim_mu_;
};

}  // namespace cocostorage::agent
