// Crash-safe persisted state: one JSON file per volume under --state-dir,
// written with AtomicWriteFile (a crash leaves the old or the new record,
// never a torn one). The record is the commit point of every RPC that changes
// a volume, so a restarted plugin answers exactly as before.
//
// Callers serialise access to one volume id (VolumeLocks); the store itself
// only guarantees that each file operation is atomic.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cocostorage/common/record_dir.h"
#include "cocostorage/common/status.h"
#include "params.h"

namespace cocostorage::csi {

enum class VolumeMode { kFilesystem, kBlock };
const char* VolumeModeName(VolumeMode m);

struct StageRecord {
  std::string path;
  VolumeMode mode = VolumeMode::kFilesystem;
  int access_mode = 0;  // csi.v1.VolumeCapability.AccessMode.Mode
  // RBD: the kernel device the image is mapped at on this node (/dev/rbdN),
  // what mountInfo.json hands Kata. Empty for backings Kata opens directly.
  std::string device;
  // The request part (device is the result).
  bool SameRequest(const StageRecord& o) const {
    return path == o.path && mode == o.mode && access_mode == o.access_mode;
  }
  bool operator==(const StageRecord&) const = default;
};

struct PublishRecord {
  VolumeMode mode = VolumeMode::kFilesystem;
  int access_mode = 0;
  bool readonly = false;
  std::string fs_group;                  // decimal, empty when unset
  std::vector<std::string> mount_flags;  // passed to the guest as options
  // The createFilesystem hint written for this target: ShouldCreateFilesystem
  // of the mode (so a retried publish writes the identical descriptor).
  bool create_filesystem = false;
  // Same request? (create_filesystem is derived, not requested.)
  bool SameRequest(const PublishRecord& o) const {
    return mode == o.mode && access_mode == o.access_mode && readonly == o.readonly && fs_group == o.fs_group &&
           mount_flags == o.mount_flags;
  }
};

struct VolumeRecord {
  std::string id;
  std::string name;  // CreateVolume name; empty for inline volumes
  int64_t capacity_bytes = 0;
  VolumeParams params;
  VolumeMode mode = VolumeMode::kFilesystem;  // from CreateVolume's capabilities
  std::string backend;                        // VolumeBackend::Name() that owns the bytes
  std::string device;                         // host path handed to Kata
  bool inline_ephemeral = false;              // CSI inline volume: destroyed on unpublish
  // Made by NodeStage on a node whose controller did not create the volume
  // (RBD: reachable from every node): only this node's stage and
  // publications; dropped at unstage, never the image.
  bool attached_only = false;
  std::optional<StageRecord> staged;
  std::map<std::string, PublishRecord> targets;  // target_path -> publication
};

std::string RecordToJson(const VolumeRecord& r);
StatusOr<VolumeRecord> RecordFromJson(const std::string& text);

class StateStore {
 public:
  // `dir` must exist (see Init); records are <dir>/<volume id>.json, mode 0600.
  explicit StateStore(std::string dir) : records_(std::move(dir)) {}
  Status Init();  // creates the directory (0700) and removes stale temp files

  // nullopt when there is no record.
  StatusOr<std::optional<VolumeRecord>> Load(const std::string& id) const;
  Status Save(const VolumeRecord& r) const;
  Status Remove(const std::string& id) const;  // missing is OK
  // Every readable record; unreadable ones are logged and skipped.
  StatusOr<std::vector<VolumeRecord>> List() const;
  // The id of every record file, readable or not: a volume whose record is
  // corrupt still exists, and its bytes must never be taken for an orphan's.
  StatusOr<std::vector<std::string>> Ids() const { return records_.ListIds(); }
  std::string PathFor(const std::string& id) const { return records_.PathFor(id); }

 private:
  RecordDir records_;
};

}  // namespace cocostorage::csi
