// State shared by the three CSI services: configuration, the backing store,
// persisted records, Kata descriptors, per-volume locks and the capacity
// ledger. Built once in main.cc and passed by reference.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "backend.h"
#include "cocostorage/common/lock_map.h"
#include "cocostorage/common/status.h"
#include "kubelet_root.h"
#include "mount_info.h"
#include "rbd_mapper.h"
#include "volume_state.h"

namespace cocostorage::csi {

inline constexpr char kTopologyKey[] = "topology.cocostorage.dev/node";
inline constexpr int64_t kSizeGranularity = 1 << 20;              // 1 MiB
inline constexpr int64_t kDefaultVolumeBytes = int64_t{1} << 30;  // 1 GiB when unspecified

struct DriverConfig {
  std::string driver_name = "csi.cocostorage.dev";
  std::string vendor_version;
  std::string node_id;
  std::string backing_root = "/var/lib/cocostorage/volumes";
  std::string state_dir = "/var/lib/cocostorage/state";
  std::string kata_root = "/run/kata-containers/shared/direct-volumes";
  // Every target_path / staging_target_path must lie below it.
  std::string kubelet_root = "/var/lib/kubelet";
  int64_t capacity_bytes = -1;  // -1: derive from the backing's free space
  int64_t max_volumes_per_node = 64;
  // --backend=rbd: the plugin's own cephx credentials (--rbd-secret-dir), for
  // a node stage whose request carries no secrets. Never logged.
  std::optional<RbdCredentials> rbd_credentials;
  // --backend=rbd: the monitors of the one Ceph cluster this plugin serves
  // (--rbd-monitors); a StorageClass may leave them out.
  std::string rbd_monitors;
  std::chrono::seconds rbd_timeout{10};
};

// One mutex per key (a volume id, or a target path), created on demand and
// dropped when unused: the lock map shared with the agent.
using VolumeLocks = LockMap;

// Thin-provisioning ledger: every volume counts with its full size against a
// fixed total, so what GetCapacity reports can really be created and filled.
class CapacityLedger {
 public:
  void SetTotal(int64_t total, int64_t max_volumes);
  // Accounts `bytes` for `id` (replacing any previous amount).
  // OUT_OF_RANGE when larger than the total, RESOURCE_EXHAUSTED when it does
  // not fit now or the volume count limit is reached.
  Status Reserve(const std::string& id, int64_t bytes);
  // Accounts a committed volume found at start-up, without any check (the
  // total or the count limit may have shrunk meanwhile).
  void Restore(const std::string& id, int64_t bytes);
  void Release(const std::string& id);
  int64_t Available() const;
  int64_t Total() const;
  size_t Count() const;

 private:
  mutable std::mutex mu_;
  int64_t total_ = 0;
  int64_t max_volumes_ = 0;
  std::map<std::string, int64_t> used_;
};

// What each service may touch, handed out by the composition root
// (Driver::For*): the Controller manages volumes (backend, records, ledger,
// volume locks) but never descriptors or kubelet paths; the Node hands volumes
// to Kata (records, descriptors, kubelet paths, both lock maps; the backend
// and ledger only for inline ephemeral volumes and stats); Identity reads
// names and checks health.
struct ControllerDeps {
  std::string node_id;
  std::string rbd_monitors;
  VolumeBackend& backend;
  const StateStore& store;
  CapacityLedger& ledger;
  VolumeLocks& locks;
};

struct NodeDeps {
  std::string node_id;
  int64_t max_volumes_per_node;
  VolumeBackend& backend;
  const StateStore& store;
  const MountInfoWriter& mount_info;
  const KubeletRoot& kubelet;
  CapacityLedger& ledger;
  VolumeLocks& locks;
  VolumeLocks& target_locks;  // always taken before `locks`
  // Maps RBD images on this node; null when the plugin serves no RBD volumes.
  RbdMapper* rbd_mapper;
  const std::optional<RbdCredentials>& rbd_credentials;
  std::string rbd_monitors;
  std::chrono::seconds rbd_timeout;
};

struct IdentityDeps {
  std::string driver_name;
  std::string vendor_version;
  std::string state_dir;
  std::string kata_root;
  const VolumeBackend& backend;
};

// The shared state itself; only main.cc (and tests) hold it whole.
struct Driver {
  Driver(DriverConfig cfg, VolumeBackendPtr b, std::unique_ptr<RbdMapper> mapper = nullptr)
      : config(std::move(cfg)),
        backend(std::move(b)),
        rbd_mapper(std::move(mapper)),
        store(config.state_dir),
        mount_info(config.kata_root),
        kubelet(config.kubelet_root) {}

  // Creates directories, loads records, drops backing volumes no record
  // claims (a create interrupted by a crash) and sets up the ledger.
  Status Init();
  // --backend=rbd, after a node restart: maps every image the records say is
  // staged and that is not mapped (needs the plugin's own credentials), and
  // rewrites their descriptors. Run by main.cc on a thread once the socket
  // is served: a slow or dead cluster must not keep the plugin from
  // answering (liveness) while kubelet's re-stage would do the same.
  void RemapStagedVolumes();

  ControllerDeps ForController() { return {config.node_id, config.rbd_monitors, *backend, store, ledger, locks}; }
  NodeDeps ForNode() {
    return {config.node_id,
            config.max_volumes_per_node,
            *backend,
            store,
            mount_info,
            kubelet,
            ledger,
            locks,
            target_locks,
            rbd_mapper.get(),
            config.rbd_credentials,
            config.rbd_monitors,
            config.rbd_timeout};
  }
  IdentityDeps ForIdentity() const {
    return {config.driver_name, config.vendor_version, config.state_dir, config.kata_root, *backend};
  }

  const DriverConfig config;
  VolumeBackendPtr backend;
  std::unique_ptr<RbdMapper> rbd_mapper;
  StateStore store;
  MountInfoWriter mount_info;
  KubeletRoot kubelet;
  VolumeLocks locks;
  // Per target_path: two publications of different volumes at one target
  // must not both pass the "no other volume's descriptor here" check. Order:
  // the target lock is always taken before the volume lock.
  VolumeLocks target_locks;
  CapacityLedger ledger;

 private:
  Status InitClusterWide();
  Status CheckRecordsBackend(const std::vector<VolumeRecord>& records) const;
  void RemapStaged(VolumeRecord& r);
};

}  // namespace cocostorage::csi
