#include "driver.h"

#include <climits>
#include <set>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"

namespace cocostorage::csi {

void CapacityLedger::SetTotal(int64_t total, int64_t max_volumes) {
  std::lock_guard<std::mutex> l(mu_);
  total_ = total;
  max_volumes_ = max_volumes;
}

Status CapacityLedger::Reserve(const std::string& id, int64_t bytes) {
  std::lock_guard<std::mutex> l(mu_);
  int64_t used = 0;
  for (const auto& [k, v] : used_) {
    if (k != id) used += v;
  }
  if (bytes > total_) {
    return absl::OutOfRangeError(Cat("requested ", bytes, " bytes exceed the node's total capacity of ", total_));
  }
  if (bytes > total_ - used) {
    return absl::ResourceExhaustedError(
        Cat("not enough capacity: requested ", bytes, " bytes, available ", total_ - used));
  }
  if (used_.count(id) == 0 && max_volumes_ > 0 && static_cast<int64_t>(used_.size()) >= max_volumes_) {
    return absl::ResourceExhaustedError(Cat("node already holds the maximum of ", max_volumes_, " volumes"));
  }
  used_[id] = bytes;
  return OkStatus();
}

void CapacityLedger::Restore(const std::string& id, int64_t bytes) {
  std::lock_guard<std::mutex> l(mu_);
  used_[id] = bytes;
}

void CapacityLedger::Release(const std::string& id) {
  std::lock_guard<std::mutex> l(mu_);
  used_.erase(id);
}

int64_t CapacityLedger::Available() const {
  std::lock_guard<std::mutex> l(mu_);
  int64_t used = 0;
  for (const auto& [k, v] : used_) used += v;
  return used >= total_ ? 0 : total_ - used;
}

int64_t CapacityLedger::Total() const {
  std::lock_guard<std::mutex> l(mu_);
  return total_;
}

size_t CapacityLedger::Count() const {
  std::lock_guard<std::mutex> l(mu_);
  return used_.size();
}

Status Driver::Init() {
  if (backend->ClusterWide()) return InitClusterWide();
  COCO_RETURN_IF_ERROR(MakeDirs(config.backing_root, 0700));
  COCO_RETURN_IF_ERROR(MakeDirs(config.kata_root, 0700));
  COCO_RETURN_IF_ERROR(store.Init());
  COCO_ASSIGN_OR_RETURN(std::vector<VolumeRecord> records, store.List());
  COCO_RETURN_IF_ERROR(CheckRecordsBackend(records));
  // Claimed = a record FILE exists, readable or not. Only bytes no record
  // file names are orphans: quarantining a volume because its record is
  // corrupt would turn a repairable record into lost data.
  COCO_ASSIGN_OR_RETURN(std::vector<std::string> record_ids, store.Ids());
  std::set<std::string> known(record_ids.begin(), record_ids.end());
  std::set<std::string> loaded;
  for (const auto& r : records) loaded.insert(r.id);
  std::map<std::string, int64_t> unreadable;  // id -> backing size, accounted as used
  for (const auto& id : record_ids) {
    if (loaded.count(id)) continue;
    auto st = backend->Stat(id);
    unreadable[id] = st.ok() ? st->size_bytes : 0;
    log::Error("state.volume_needs_operator",
               {{"volume", id},
                {"record", store.PathFor(id)},
                {"backing_present", st.ok()},
                {"action",
                 "record unreadable: its backing file is kept and counted as used; the volume answers "
                 "DATA_LOSS until an operator repairs or removes the record"}});
  }
  int64_t provisioned = 0;
  int64_t allocated = 0;
  for (const auto& r : records) {
    provisioned += r.capacity_bytes;
    if (auto st = backend->Stat(r.id); st.ok()) {
      allocated += st->allocated_bytes;
    } else {
      log::Warn("state.backing_missing", {{"volume", r.id}, {"error", std::string(st.status().message())}});
    }
  }
  COCO_ASSIGN_OR_RETURN(std::vector<std::string> present, backend->List());
  for (const auto& id : present) {
    if (known.count(id)) continue;
    // No record: usually a CreateVolume that crashed before its commit point
    // (the CO retries and gets a fresh volume); possibly a lost state dir.
    // Bytes are set aside, never deleted: they may be someone's persistent
    // data. A backing with no byte allocated holds none (a sparse file that
    // was never written reads as zeros): removed.
    auto st = backend->Stat(id);
    if (st.ok() && st->allocated_bytes == 0) {
      log::Info("state.orphan_removed", {{"volume", id}, {"reason", "no record and not one byte written"}});
      COCO_RETURN_IF_ERROR(backend->Delete(id));
      continue;
    }
    log::Warn("state.orphan_quarantined", {{"volume", id}});
    COCO_RETURN_IF_ERROR(backend->Quarantine(id));
  }
  int64_t total = config.capacity_bytes;
  if (total < 0) {
    // Everything still free plus what our volumes already occupy: all
    // provisioned volumes can then be filled without ENOSPC.
    COCO_ASSIGN_OR_RETURN(int64_t free_bytes, backend->FreeBytes());
    total = free_bytes + allocated;
  }
  ledger.SetTotal(total, config.max_volumes_per_node);
  for (const auto& r : records) ledger.Restore(r.id, r.capacity_bytes);
  for (const auto& [id, bytes] : unreadable) ledger.Restore(id, bytes);
  if (provisioned > total) {
    // The total shrank below what is committed: nothing new fits until
    // volumes are deleted; existing ones keep working.
    log::Warn("capacity.overcommitted", {{"provisioned", provisioned}, {"total", total}});
  }
  log::Info("driver.loaded", {{"volumes", records.size()},
                              {"unreadable", unreadable.size()},
                              {"capacity_total", ledger.Total()},
                              {"capacity_available", ledger.Available()}});
  return OkStatus();
}

Status Driver::CheckRecordsBackend(const std::vector<VolumeRecord>& records) const {
  // A state dir of another backend (the plugin restarted with another
  // --backend): its volumes would be served from the wrong place.
  for (const auto& r : records) {
    if (r.backend != backend->Name()) {
      return absl::FailedPreconditionError(Cat("volume ", r.id, " in ", config.state_dir, " belongs to backend \"",
                                               r.backend, "\", this plugin runs \"", backend->Name(), "\""));
    }
  }
  return OkStatus();
}

void Driver::RemapStagedVolumes() {
  if (!backend->ClusterWide() || rbd_mapper == nullptr) return;
  auto ids = store.Ids();
  if (!ids.ok()) return;
  for (const auto& id : *ids) {
    // Under the volume's lock, from a fresh read: a NodeStage or NodeUnstage
    // may have run since the plugin started serving.
    auto guard = locks.Lock(id);
    auto r = store.Load(id);
    if (r.ok() && r->has_value()) RemapStaged(**r);
  }
}

void Driver::RemapStaged(VolumeRecord& r) {
  // After a node restart every mapping is gone. kubelet stages again before
  // it republishes (its staging path is no mount point, so it cannot know),
  // which maps the image with the request's secrets; with credentials of its
  // own the plugin maps what it had staged at once, so a volume kubelet
  // considers staged is never left unmapped.
  if (!r.staged || r.device.rfind("rbd:", 0) != 0 || rbd_mapper == nullptr) return;
  auto ref = ParseRbdDeviceRef(r.device);
  if (!ref.ok()) return;
  auto mapped = rbd_mapper->MappedDevice(*ref);
  if (mapped.ok() && !mapped->empty() && *mapped == r.staged->device) return;
  auto warn = [&](const Status& s) {
    log::Warn("volume.remap_failed",
              {{"volume", r.id}, {"error", std::string(s.message())}, {"action", "the next NodeStageVolume maps it"}});
  };
  if (!mapped.ok()) return warn(mapped.status());
  if (mapped->empty()) {
    auto cluster = RbdClusterOptions(config.rbd_monitors, r.params, {}, config.rbd_credentials, config.rbd_timeout);
    if (!cluster.ok()) return warn(cluster.status());
    mapped = rbd_mapper->Map(*cluster, *ref);
    if (!mapped.ok()) return warn(mapped.status());
  }
  r.staged->device = *mapped;
  if (Status s = store.Save(r); !s.ok()) return warn(s);
  for (const auto& [target, pub] : r.targets) {
    auto existing = mount_info.Read(target);
    if (existing.ok() && *existing) (void)mount_info.Write(target, BuildMountInfo(r, pub));
  }
  log::Info("volume.remapped", {{"volume", r.id}, {"device", *mapped}});
}

Status Driver::InitClusterWide() {
  // Volumes live in a cluster that other nodes' plugins share: nothing to
  // list or quarantine from here (an image no record of ours names may be
  // another node's volume), and capacity is the pool's (GetCapacity), not a
  // node ledger's.
  COCO_RETURN_IF_ERROR(MakeDirs(config.kata_root, 0700));
  COCO_RETURN_IF_ERROR(store.Init());
  COCO_ASSIGN_OR_RETURN(std::vector<VolumeRecord> records, store.List());
  COCO_ASSIGN_OR_RETURN(std::vector<std::string> record_ids, store.Ids());
  COCO_RETURN_IF_ERROR(CheckRecordsBackend(records));
  ledger.SetTotal(INT64_MAX, 0);
  log::Info("driver.loaded", {{"volumes", records.size()},
                              {"unreadable", record_ids.size() - records.size()},
                              {"backend", backend->Name()},
                              {"cluster_wide", true}});
  return OkStatus();
}

}  // namespace cocostorage::csi
