// Where a volume's bytes live on the host. The CSI layer only ever talks to
// this interface; the embedded default is SparseFileBackend. Another backing
// (an LVM volume group, a raw device pool) is a new implementation plus one
// line in main.cc, nothing in the services.
//
// All operations are idempotent and keyed by the CSI volume id, which the
// caller has validated (ValidateVolumeId) and serialises (VolumeLocks).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cocostorage/common/status.h"

namespace cocostorage::csi {

struct BackingInfo {
  std::string device;           // host path Kata hot-plugs (file or block device)
  int64_t size_bytes = 0;       // size the guest sees
  int64_t allocated_bytes = 0;  // host bytes actually consumed (thin provisioning)
};

class VolumeBackend {
 public:
  virtual ~VolumeBackend() = default;

  // Short stable name stored in volume records ("sparse-file").
  virtual std::string Name() const = 0;
  // Ensures the volume exists with at least `size_bytes`; an existing volume of
  // the right size is success (a retried or crash-interrupted create).
  virtual StatusOr<BackingInfo> Create(const std::string& id, int64_t size_bytes) = 0;
  // Destroys the volume and its bytes; a missing volume is success.
  virtual Status Delete(const std::string& id) = 0;
  // Grows to `size_bytes` (never shrinks).
  virtual StatusOr<BackingInfo> Expand(const std::string& id, int64_t size_bytes) = 0;
  // NOT_FOUND when the volume does not exist.
  virtual StatusOr<BackingInfo> Stat(const std::string& id) const = 0;
  // Sets aside a volume no record claims (a create interrupted by a crash, or
  // a state dir that was lost): it stops being a volume, but its bytes stay
  // for an operator. Never destroys data on its own.
  virtual Status Quarantine(const std::string& id) = 0;
  // Ids of all volumes present (for reconciliation after a crash).
  virtual StatusOr<std::vector<std::string>> List() const = 0;
  // Bytes the backing could still physically provide (free space).
  virtual StatusOr<int64_t> FreeBytes() const = 0;
  // Health for Probe: the backing is reachable and writable.
  virtual Status Check() const = 0;
};

using VolumeBackendPtr = std::unique_ptr<VolumeBackend>;

// Sparse files <root>/<id>.img, mode 0600, created with ftruncate: no byte is
// written or read by the plugin, so creation is O(1) whatever the size.
VolumeBackendPtr NewSparseFileBackend(std::string root);

}  // namespace cocostorage::csi
