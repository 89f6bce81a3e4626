// Where a volume's bytes live on the host. The CSI layer only ever talks to
// this interface; the embedded default is SparseFileBackend. Another backing
// (an LVM volume group, a raw device pool) is a new implementation plus one
// line in main.cc, nothing in the services.
//
// All operations are idempotent and keyed by the CSI volume id, which the
// caller has validated (ValidateVolumeId) and serialises (VolumeLocks).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cocostorage/common/status.h"
#include "params.h"

namespace cocostorage::csi {

struct BackingInfo {
  std::string device;           // host path Kata hot-plugs (file or block device)
  int64_t size_bytes = 0;       // size the guest sees
  int64_t allocated_bytes = 0;  // host bytes actually consumed (thin provisioning)
};

class VolumeBackend;
using VolumeBackendRef = std::shared_ptr<VolumeBackend>;

class VolumeBackend {
 public:
  virtual ~VolumeBackend() = default;

  // The backend that holds a volume with these parameters, reached with the
  // request's secrets (CSI `secrets`; may be empty). A node-local backend is
  // itself whatever the arguments. A cluster backend (RBD) answers a
  // connection to the volume's cluster and pool opened with those
  // credentials, or with the plugin's own when the request has none;
  // FAILED_PRECONDITION when it has neither, INVALID_ARGUMENT for parameters
  // that name no cluster. The services call every operation below on the
  // result, never on a cluster backend directly.
  virtual StatusOr<VolumeBackendRef> Scoped(const VolumeParams& params,
                                            const std::map<std::string, std::string>& secrets) {
    (void)params;
    (void)secrets;
    return VolumeBackendRef(VolumeBackendRef(), this);  // non-owning: the driver owns *this
  }
  // Volumes live outside this node and are reachable from every node: no
  // topology, no node capacity ledger, and a node never reconciles (lists,
  // quarantines) them at start, since other nodes' plugins own records too.
  virtual bool ClusterWide() const { return false; }

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
