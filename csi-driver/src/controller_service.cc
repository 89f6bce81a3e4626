#include "controller_service.h"

#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"
#include "csi_util.h"
#include "params.h"

namespace cocostorage::csi {
namespace {

// Fills in the file system type: the StorageClass parameter wins; a
// capability naming a different one is a conflict.
Status ResolveFsType(VolumeParams* params, const std::vector<Capability>& caps) {
  for (const auto& c : caps) {
    if (c.fs_type.empty()) continue;
    if (params->fs_type.empty()) {
      params->fs_type = c.fs_type;
    } else if (params->fs_type != c.fs_type) {
      return absl::InvalidArgumentError(
          Cat("fsType \"", params->fs_type, "\" conflicts with capability fs_type \"", c.fs_type, "\""));
    }
  }
  if (params->fs_type.empty()) params->fs_type = "ext4";
  return OkStatus();
}

StatusOr<std::vector<Capability>> ParseCapabilities(
    const google::protobuf::RepeatedPtrField<pb::VolumeCapability>& caps, VolumeMode* mode) {
  if (caps.empty()) return absl::InvalidArgumentError("volume_capabilities is required");
  std::vector<Capability> out;
  for (const auto& c : caps) {
    COCO_ASSIGN_OR_RETURN(Capability parsed, ParseCapability(c));
    COCO_RETURN_IF_ERROR(RequireSingleNode(parsed, absl::StatusCode::kInvalidArgument));
    out.push_back(std::move(parsed));
  }
  *mode = out.front().mode;
  for (const auto& c : out) {
    if (c.mode != *mode) {
      return absl::InvalidArgumentError("volume_capabilities mix block and mount access types");
    }
  }
  return out;
}

// `node_id` empty: the volume is reachable from every node (no topology).
void FillVolume(const std::string& node_id, const VolumeRecord& r, pb::Volume* v) {
  v->set_volume_id(r.id);
  v->set_capacity_bytes(r.capacity_bytes);
  for (const auto& [k, val] : r.params.ToMap()) (*v->mutable_volume_context())[k] = val;
  if (!node_id.empty()) (*v->add_accessible_topology()->mutable_segments())[kTopologyKey] = node_id;
}

// The parameters of a volume match the plugin's backend: RBD volumes name
// their cluster, sparse files never do.
Status CheckParamsFitBackend(const VolumeParams& params, const VolumeBackend& backend) {
  if (backend.ClusterWide() && !params.IsRbd()) {
    return absl::InvalidArgumentError(
        "this plugin runs the Ceph RBD backend (--backend=rbd): the StorageClass needs the parameters monitors and "
        "pool");
  }
  if (!backend.ClusterWide() && params.IsRbd()) {
    return absl::InvalidArgumentError(
        Cat("parameters monitors and pool are for the Ceph RBD backend; this plugin "
            "runs \"",
            backend.Name(), "\" (start it with --backend=rbd)"));
  }
  return OkStatus();
}

// RBD: a StorageClass may repeat the plugin's monitors but name no other
// cluster; pools must fit in a volume id.
Status ResolveClusterParams(VolumeParams* params, const std::string& plugin_monitors) {
  if (!params->IsRbd()) return OkStatus();
  if (params->rbd_pool.size() > kMaxRbdPoolInVolumeId) {
    return absl::InvalidArgumentError(
        Cat("parameter pool: at most ", kMaxRbdPoolInVolumeId, " characters (the pool is part of the volume id)"));
  }
  if (!params->rbd_monitors.empty() && params->rbd_monitors != plugin_monitors) {
    return absl::InvalidArgumentError(Cat("parameter monitors \"", Echo(params->rbd_monitors),
                                          "\" is not the Ceph cluster this plugin serves (--rbd-monitors \"",
                                          Echo(plugin_monitors), "\")"));
  }
  // Never recorded: every call uses the plugin's current monitors.
  params->rbd_monitors.clear();
  return OkStatus();
}

}  // namespace

bool ControllerService::TopologyIsOurs(const pb::Topology& t) const {
  auto it = t.segments().find(kTopologyKey);
  return it != t.segments().end() && it->second == d_.node_id;
}

grpc::Status ControllerService::CreateVolume(grpc::ServerContext*, const pb::CreateVolumeRequest* req,
                                             pb::CreateVolumeResponse* resp) {
  std::string id;
  Status s = DoCreate(*req, resp, &id);
  return Reply("CreateVolume", id, s);
}

Status ControllerService::DoCreate(const pb::CreateVolumeRequest& req, pb::CreateVolumeResponse* resp,
                                   std::string* volume_id) {
  if (req.name().empty()) return absl::InvalidArgumentError("name is required");
  if (req.name().size() > 1024) return absl::InvalidArgumentError("name is longer than 1024 bytes");
  VolumeMode mode;
  COCO_ASSIGN_OR_RETURN(std::vector<Capability> caps, ParseCapabilities(req.volume_capabilities(), &mode));
  if (req.has_volume_content_source()) {
    return absl::InvalidArgumentError("volume_content_source is not supported (no snapshots or clones)");
  }
  const std::map<std::string, std::string> req_params = ToStdMap(req.parameters());
  COCO_ASSIGN_OR_RETURN(VolumeParams params, ParseVolumeParams(req_params));
  // A kbsResourceUri template becomes this volume's concrete URI here, from
  // the PVC/PV metadata the external-provisioner passes; only the concrete
  // URI is recorded and handed on (volume context, mountInfo.json).
  COCO_RETURN_IF_ERROR(ResolveVolumeParams(&params, req_params));
  COCO_RETURN_IF_ERROR(ResolveFsType(&params, caps));
  COCO_RETURN_IF_ERROR(CheckParamsFitBackend(params, d_.backend));
  COCO_RETURN_IF_ERROR(ResolveClusterParams(&params, d_.rbd_monitors));
  const bool cluster_wide = d_.backend.ClusterWide();
  // Node-local volumes: this node is the only place we can provision. A
  // cluster's volumes are reachable from every node: any topology fits.
  bool topology_ours = true;
  if (!cluster_wide && req.has_accessibility_requirements() && !req.accessibility_requirements().requisite().empty()) {
    topology_ours = false;
    for (const auto& t : req.accessibility_requirements().requisite()) {
      topology_ours = topology_ours || TopologyIsOurs(t);
    }
  }
  const int64_t required = req.capacity_range().required_bytes();
  const int64_t limit = req.capacity_range().limit_bytes();
  COCO_ASSIGN_OR_RETURN(int64_t size, ResolveCapacity(required, limit, kDefaultVolumeBytes, kSizeGranularity));

  const std::string id = cluster_wide ? RbdVolumeIdForName(params.rbd_pool, req.name()) : VolumeIdForName(req.name());
  *volume_id = id;
  const std::string topology_node = cluster_wide ? std::string() : d_.node_id;
  auto guard = d_.locks.Lock(id);
  COCO_ASSIGN_OR_RETURN(std::optional<VolumeRecord> existing, d_.store.Load(id));
  if (existing) {
    // An attached-only record (this node staged a cluster volume another
    // node created) has no name; the image behind the id is this volume.
    if ((existing->name != req.name() && !existing->attached_only) || existing->inline_ephemeral) {
      return absl::AlreadyExistsError(Cat("volume id ", id, " is taken by another volume"));
    }
    if (!CapacityFits(existing->capacity_bytes, required, limit)) {
      return absl::AlreadyExistsError(Cat("volume \"", Echo(req.name()), "\" exists with ", existing->capacity_bytes,
                                          " bytes, outside the requested capacity_range"));
    }
    if (existing->params.kbs_resource_uri != params.kbs_resource_uri) {
      // e.g. a template resolved from other PVC metadata: another key.
      return absl::AlreadyExistsError(Cat("volume \"", Echo(req.name()), "\" exists with kbsResourceUri \"",
                                          Echo(existing->params.kbs_resource_uri), "\", this request asks for \"",
                                          Echo(params.kbs_resource_uri), "\""));
    }
    if (!(existing->params == params) || existing->mode != mode) {
      return absl::AlreadyExistsError(
          Cat("volume \"", Echo(req.name()), "\" exists with different parameters or volume mode"));
    }
    if (!topology_ours) {
      // The volume exists on this node, which the requisite topology excludes.
      return absl::AlreadyExistsError(Cat("volume \"", Echo(req.name()), "\" exists on node ", d_.node_id,
                                          ", outside the requested accessibility_requirements"));
    }
    FillVolume(topology_node, *existing, resp->mutable_volume());
    return OkStatus();
  }

  if (!topology_ours) {
    return absl::ResourceExhaustedError(
        Cat("accessibility_requirements do not include node ", d_.node_id, " (", kTopologyKey, ")"));
  }
  COCO_ASSIGN_OR_RETURN(VolumeBackendRef backend, d_.backend.Scoped(params, ToStdMap(req.secrets())));
  // A cluster's capacity is its pool's, which Ceph enforces (thin images).
  if (!cluster_wide) COCO_RETURN_IF_ERROR(d_.ledger.Reserve(id, size));
  VolumeRecord r;
  r.id = id;
  r.name = req.name();
  r.capacity_bytes = size;
  r.params = params;
  r.mode = mode;
  r.backend = d_.backend.Name();
  auto info = backend->Create(id, size);
  if (!info.ok()) {
    d_.ledger.Release(id);
    return info.status();
  }
  r.device = info->device;
  // The record is the commit point: without it a restart removes the file.
  if (Status s = d_.store.Save(r); !s.ok()) {
    d_.ledger.Release(id);
    (void)backend->Delete(id);
    return s;
  }
  log::Info(
      "volume.created",
      {{"volume", id}, {"name", Echo(r.name)}, {"bytes", size}, {"mode", VolumeModeName(mode)}, {"device", r.device}});
  FillVolume(topology_node, r, resp->mutable_volume());
  return OkStatus();
}

grpc::Status ControllerService::DeleteVolume(grpc::ServerContext*, const pb::DeleteVolumeRequest* req,
                                             pb::DeleteVolumeResponse*) {
  return Reply("DeleteVolume", req->volume_id(), DoDelete(req->volume_id(), ToStdMap(req->secrets())));
}

Status ControllerService::DoDelete(const std::string& id, const std::map<std::string, std::string>& secrets) {
  Status valid = ValidateVolumeId(id);
  if (absl::IsNotFound(valid)) return OkStatus();  // cannot exist: already deleted
  COCO_RETURN_IF_ERROR(valid);
  auto guard = d_.locks.Lock(id);
  COCO_ASSIGN_OR_RETURN(std::optional<VolumeRecord> r, d_.store.Load(id));
  if (!r && d_.backend.ClusterWide()) return DeleteUnrecordedImage(id, secrets);
  if (!r) return OkStatus();
  if (!r->targets.empty() || r->staged) {
    return absl::FailedPreconditionError(
        Cat("volume ", id, " is still ", r->targets.empty() ? "staged" : "published", " on the node"));
  }
  // Bytes first, record last: a crash in between leaves a record whose
  // DeleteVolume retry finishes the job. (RBD: an image still mapped on any
  // node has a watcher and is refused, FAILED_PRECONDITION.)
  COCO_ASSIGN_OR_RETURN(VolumeBackendRef backend, d_.backend.Scoped(r->params, secrets));
  COCO_RETURN_IF_ERROR(backend->Delete(id));
  COCO_RETURN_IF_ERROR(d_.store.Remove(id));
  d_.ledger.Release(id);
  log::Info("volume.deleted", {{"volume", id}});
  return OkStatus();
}

Status ControllerService::DeleteUnrecordedImage(const std::string& id,
                                                const std::map<std::string, std::string>& secrets) {
  // Created by another node's plugin (every node's provisioner may be asked):
  // the id names the pool, the plugin its cluster, the image is the volume.
  const std::string pool = RbdPoolOfVolumeId(id);
  if (pool.empty()) return OkStatus();  // never an RBD volume id: nothing to delete
  VolumeParams params;
  params.rbd_pool = pool;
  COCO_ASSIGN_OR_RETURN(VolumeBackendRef backend, d_.backend.Scoped(params, secrets));
  COCO_RETURN_IF_ERROR(backend->Delete(id));
  log::Info("volume.deleted", {{"volume", id}, {"record", false}});
  return OkStatus();
}

grpc::Status ControllerService::ValidateVolumeCapabilities(grpc::ServerContext*,
                                                           const pb::ValidateVolumeCapabilitiesRequest* req,
                                                           pb::ValidateVolumeCapabilitiesResponse* resp) {
  return Reply("ValidateVolumeCapabilities", req->volume_id(), DoValidate(*req, resp));
}

Status ControllerService::DoValidate(const pb::ValidateVolumeCapabilitiesRequest& req,
                                     pb::ValidateVolumeCapabilitiesResponse* resp) {
  COCO_RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  if (req.volume_capabilities().empty()) return absl::InvalidArgumentError("volume_capabilities is required");
  COCO_ASSIGN_OR_RETURN(std::optional<VolumeRecord> r, d_.store.Load(req.volume_id()));
  if (!r) return absl::NotFoundError(Cat("volume ", req.volume_id(), " does not exist"));
  VolumeMode mode;
  auto caps = ParseCapabilities(req.volume_capabilities(), &mode);
  if (!caps.ok()) {
    resp->set_message(std::string(caps.status().message()));
    return OkStatus();
  }
  if (mode != r->mode) {
    resp->set_message(Cat("volume ", r->id, " was created for ", VolumeModeName(r->mode), " access"));
    return OkStatus();
  }
  for (const auto& c : *caps) {
    if (!c.fs_type.empty() && c.fs_type != r->params.fs_type) {
      resp->set_message(Cat("volume ", r->id, " uses fsType ", r->params.fs_type));
      return OkStatus();
    }
  }
  if (!req.parameters().empty()) {
    const std::map<std::string, std::string> req_params = ToStdMap(req.parameters());
    auto params = ParseVolumeParams(req_params);
    Status resolved = params.ok() ? ResolveVolumeParams(&*params, req_params) : params.status();
    if (!resolved.ok()) {
      resp->set_message(std::string(resolved.message()));
      return OkStatus();
    }
    if (resolved.ok()) resolved = ResolveClusterParams(&*params, d_.rbd_monitors);
    if (!resolved.ok()) {
      resp->set_message(std::string(resolved.message()));
      return OkStatus();
    }
    if (params->fs_type.empty()) params->fs_type = r->params.fs_type;
    if (!(*params == r->params)) {
      resp->set_message("parameters differ from those the volume was created with");
      return OkStatus();
    }
  }
  auto* confirmed = resp->mutable_confirmed();
  *confirmed->mutable_volume_capabilities() = req.volume_capabilities();
  *confirmed->mutable_volume_context() = req.volume_context();
  *confirmed->mutable_parameters() = req.parameters();
  return OkStatus();
}

grpc::Status ControllerService::GetCapacity(grpc::ServerContext*, const pb::GetCapacityRequest* req,
                                            pb::GetCapacityResponse* resp) {
  Status s = [&]() -> Status {
    std::optional<VolumeParams> params;
    if (!req->parameters().empty()) {
      COCO_ASSIGN_OR_RETURN(params, ParseVolumeParams(ToStdMap(req->parameters())));
      COCO_RETURN_IF_ERROR(CheckParamsFitBackend(*params, d_.backend));
      COCO_RETURN_IF_ERROR(ResolveClusterParams(&*params, d_.rbd_monitors));
    }
    if (d_.backend.ClusterWide()) {
      // The pool's free space, as its monitors report it (max_avail: what can
      // still be written given replication and the fullest OSD), with the
      // plugin's own credentials: GetCapacity carries no secrets.
      int64_t available = 0;
      bool servable = params.has_value();
      for (const auto& c : req->volume_capabilities()) {
        auto parsed = ParseCapability(c);
        servable = servable && parsed.ok() && IsSingleNodeMode(parsed->access_mode);
      }
      if (servable) {
        COCO_ASSIGN_OR_RETURN(VolumeBackendRef backend, d_.backend.Scoped(*params, {}));
        COCO_ASSIGN_OR_RETURN(available, backend->FreeBytes());
      }
      resp->set_available_capacity(available);
      resp->mutable_maximum_volume_size()->set_value(available / kSizeGranularity * kSizeGranularity);
      resp->mutable_minimum_volume_size()->set_value(kSizeGranularity);
      return OkStatus();
    }
    bool servable = !req->has_accessible_topology() || TopologyIsOurs(req->accessible_topology());
    for (const auto& c : req->volume_capabilities()) {
      auto parsed = ParseCapability(c);
      servable = servable && parsed.ok() && IsSingleNodeMode(parsed->access_mode);
    }
    int64_t available = servable ? d_.ledger.Available() : 0;
    resp->set_available_capacity(available);
    resp->mutable_maximum_volume_size()->set_value(available / kSizeGranularity * kSizeGranularity);
    resp->mutable_minimum_volume_size()->set_value(kSizeGranularity);
    return OkStatus();
  }();
  if (!s.ok()) return Reply("GetCapacity", "", s);
  return grpc::Status::OK;
}

grpc::Status ControllerService::ControllerGetCapabilities(grpc::ServerContext*,
                                                          const pb::ControllerGetCapabilitiesRequest*,
                                                          pb::ControllerGetCapabilitiesResponse* resp) {
  using T = pb::ControllerServiceCapability::RPC;
  for (auto t : {T::CREATE_DELETE_VOLUME, T::GET_CAPACITY, T::EXPAND_VOLUME, T::SINGLE_NODE_MULTI_WRITER}) {
    resp->add_capabilities()->mutable_rpc()->set_type(t);
  }
  return grpc::Status::OK;
}

grpc::Status ControllerService::ControllerExpandVolume(grpc::ServerContext*,
                                                       const pb::ControllerExpandVolumeRequest* req,
                                                       pb::ControllerExpandVolumeResponse* resp) {
  return Reply("ControllerExpandVolume", req->volume_id(), DoExpand(*req, resp));
}

Status ControllerService::DoExpand(const pb::ControllerExpandVolumeRequest& req,
                                   pb::ControllerExpandVolumeResponse* resp) {
  COCO_RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  if (!req.has_capacity_range()) return absl::InvalidArgumentError("capacity_range is required");
  std::optional<Capability> cap;
  if (req.has_volume_capability()) {
    COCO_ASSIGN_OR_RETURN(cap, ParseCapability(req.volume_capability()));
  }
  const std::string& id = req.volume_id();
  auto guard = d_.locks.Lock(id);
  COCO_ASSIGN_OR_RETURN(std::optional<VolumeRecord> r, d_.store.Load(id));
  if (!r) return absl::NotFoundError(Cat("volume ", id, " does not exist"));
  // The spec's "exceeds capabilities" for the expand calls is INVALID_ARGUMENT.
  if (cap) COCO_RETURN_IF_ERROR(CheckCapabilityFits(*r, *cap, absl::StatusCode::kInvalidArgument));
  const int64_t required = req.capacity_range().required_bytes();
  const int64_t limit = req.capacity_range().limit_bytes();
  COCO_ASSIGN_OR_RETURN(int64_t size, ResolveCapacity(required, limit, r->capacity_bytes, kSizeGranularity));
  if (size <= r->capacity_bytes) {
    if (limit > 0 && r->capacity_bytes > limit) {
      return absl::OutOfRangeError(Cat("volume ", id, " already has ", r->capacity_bytes, " bytes > limit ", limit));
    }
    resp->set_capacity_bytes(r->capacity_bytes);  // never shrink; already large enough
    resp->set_node_expansion_required(false);
    return OkStatus();
  }
  if (!r->targets.empty() || r->staged) {
    return absl::FailedPreconditionError(Cat("volume ", id, " is in use; only offline expansion is supported"));
  }
  COCO_ASSIGN_OR_RETURN(VolumeBackendRef backend, d_.backend.Scoped(r->params, ToStdMap(req.secrets())));
  if (!d_.backend.ClusterWide()) COCO_RETURN_IF_ERROR(d_.ledger.Reserve(id, size));
  auto info = backend->Expand(id, size);
  if (!info.ok()) {
    if (!d_.backend.ClusterWide()) (void)d_.ledger.Reserve(id, r->capacity_bytes);
    return info.status();
  }
  r->capacity_bytes = size;
  COCO_RETURN_IF_ERROR(d_.store.Save(*r));
  log::Info("volume.expanded", {{"volume", id}, {"bytes", size}});
  resp->set_capacity_bytes(size);
  // The guest grows its mapping and file system at the next activation.
  resp->set_node_expansion_required(false);
  return OkStatus();
}

}  // namespace cocostorage::csi
