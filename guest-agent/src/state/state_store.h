// Per-volume records in the agent's state directory (guest tmpfs, /run):
// survive an agent restart, die with the VM like the ephemeral keys. Written
// atomically before any kernel object is created, so a restarted agent knows
// what a crashed one was doing. Never contains key material.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cocostorage/common/record_dir.h"
#include "cocostorage/common/status.h"
#include "core/volume_spec.h"

namespace cocostorage::agent {

enum class Phase { kActivating, kActive, kDeactivating };

struct VolumeRecord {
  VolumeSpec spec;
  // The spec as the caller asked for it, when routing made it another
  // (a SecureMount request that is a persistent volume): what a retried
  // request is compared against.
  std::optional<VolumeSpec> request;
  Phase phase = Phase::kActivating;
  std::string device_name;  // "vdb"
  std::string device_path;
  std::string device_number;
  uint64_t device_size_bytes = 0;
  uint64_t provisioning_bytes_written = 0;
  uint64_t provisioning_duration_ms = 0;
};

// Pure: one record's text as Save wrote it. DATA_LOSS when it is not such a
// record.
StatusOr<VolumeRecord> VolumeRecordFromJson(const std::string& text);

class StateStore {
 public:
  explicit StateStore(std::string dir);
  Status Init();
  Status Save(const VolumeRecord& rec);
  // NOT_FOUND when there is no record.
  StatusOr<VolumeRecord> Load(const std::string& id);
  Status Delete(const std::string& id);
  StatusOr<std::vector<VolumeRecord>> LoadAll();

 private:
  std::string dir_;
  RecordDir records_;  // <dir>/volumes
};

}  // namespace cocostorage::agent
