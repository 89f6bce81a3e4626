#include "service/grpc_service.h"

#include <sys/utsname.h>

#include "cocostorage/common/grpc_util.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"
#include "fs/options.h"

namespace cocostorage::agent {

namespace pb = cocostorage::storage::v1;

namespace {

pb::Integrity IntegrityToProto(IntegrityMode m) {
  switch (m) {
    case IntegrityMode::kNone:
      return pb::INTEGRITY_NONE;
    case IntegrityMode::kHmacSha256:
      return pb::INTEGRITY_HMAC_SHA256;
    case IntegrityMode::kAegis128:
      return pb::INTEGRITY_AEGIS128;
    case IntegrityMode::kAesGcm:
      return pb::INTEGRITY_AES_GCM;
  }
  return pb::INTEGRITY_UNSPECIFIED;
}

grpc::Status Reply(const char* rpc, const std::string& volume, const Status& s) {
  if (!s.ok()) {
    log::Warn("rpc.error", {{"rpc", rpc},
                            {"volume", volume.substr(0, 96)},
                            {"code", absl::StatusCodeToString(s.code())},
                            {"error", std::string(s.message())}});
  }
  return ToGrpcStatus(s);
}

}  // namespace

StatusOr<ActivationRequest> ActivationFromProto(const pb::ActivateVolumeRequest& req) {
  ActivationRequest a;
  a.origin = Origin::kAgentApi;
  a.volume_id = req.volume_id();
  switch (req.device().id_case()) {
    case pb::DeviceRef::kPciPath:
      a.device = DeviceId{DeviceIdKind::kPciPath, req.device().pci_path()};
      break;
    case pb::DeviceRef::kSerial:
      a.device = DeviceId{DeviceIdKind::kSerial, req.device().serial()};
      break;
    case pb::DeviceRef::kDevNumber:
      a.device = DeviceId{DeviceIdKind::kDevNumber, req.device().dev_number()};
      break;
    default:
      break;  // Admit() says what is missing
  }
  switch (req.key().source_case()) {
    case pb::KeySource::kEphemeral:
      a.key = KeySource::Ephemeral();
      break;
    case pb::KeySource::kKbsResourceUri: {
      COCO_ASSIGN_OR_RETURN(a.key, KeySource::Kbs(req.key().kbs_resource_uri()));
      break;
    }
    default:
      break;
  }
  switch (req.integrity()) {
    case pb::INTEGRITY_UNSPECIFIED:
      break;
    case pb::INTEGRITY_HMAC_SHA256:
      a.integrity = IntegrityMode::kHmacSha256;
      break;
    case pb::INTEGRITY_NONE:
      a.integrity = IntegrityMode::kNone;
      break;
    case pb::INTEGRITY_AEGIS128:
      a.integrity = IntegrityMode::kAegis128;
      break;
    case pb::INTEGRITY_AES_GCM:
      a.integrity = IntegrityMode::kAesGcm;
      break;
    default:
      return absl::InvalidArgumentError(Cat("unknown integrity value ", static_cast<int>(req.integrity())));
  }
  switch (req.init_mode()) {
    case pb::INIT_MODE_UNSPECIFIED:
      break;
    case pb::INIT_MODE_ZERO_GUARD:
      a.init_mode = InitMode::kZeroGuard;
      break;
    case pb::INIT_MODE_FULL_WIPE:
      a.init_mode = InitMode::kFullWipe;
      break;
    default:
      return absl::InvalidArgumentError(Cat("unknown init_mode value ", static_cast<int>(req.init_mode())));
  }
  switch (req.mode()) {
    case pb::VOLUME_MODE_UNSPECIFIED:
    case pb::VOLUME_MODE_FILESYSTEM:
      a.block_mode = false;
      break;
    case pb::VOLUME_MODE_BLOCK:
      a.block_mode = true;
      break;
    default:
      return absl::InvalidArgumentError(Cat("unknown volume mode ", static_cast<int>(req.mode())));
  }
  const auto& fs = req.filesystem();
  a.fs_type = fs.fs_type();
  a.mkfs_options.assign(fs.mkfs_options().begin(), fs.mkfs_options().end());
  a.mount_options.assign(fs.mount_options().begin(), fs.mount_options().end());
  if (fs.has_fs_group()) a.fs_group = fs.fs_group();
  a.target_path = req.target_path();
  a.read_only = req.read_only();
  a.device_timeout_ms = req.device_timeout_ms();
  return a;
}

void ToProto(const VolumeInfo& info, pb::Volume* out) {
  const VolumeSpec& s = info.record.spec;
  out->set_volume_id(s.id);
  out->set_state(info.healthy ? pb::VOLUME_STATE_ACTIVE : pb::VOLUME_STATE_DEGRADED);
  out->set_message(info.problem);
  switch (s.device.kind) {
    case DeviceIdKind::kPciPath:
      out->mutable_device()->set_pci_path(s.device.value);
      break;
    case DeviceIdKind::kSerial:
      out->mutable_device()->set_serial(s.device.value);
      break;
    case DeviceIdKind::kDevNumber:
      out->mutable_device()->set_dev_number(s.device.value);
      break;
  }
  out->set_device_path(info.record.device_path);
  out->set_mapped_device(info.mapped_device);
  out->set_target_path(s.target_path);
  out->set_mode(s.block_mode ? pb::VOLUME_MODE_BLOCK : pb::VOLUME_MODE_FILESYSTEM);
  out->set_fs_type(s.fs_type);
  out->set_integrity(IntegrityToProto(s.integrity));
  out->set_integrity_enabled(s.integrity_enabled());
  out->set_cipher(info.cipher);
  out->set_integrity_algorithm(info.integrity_algorithm);
  out->set_sector_size(info.sector_size);
  out->set_init_mode(s.init_mode == InitMode::kFullWipe ? pb::INIT_MODE_FULL_WIPE : pb::INIT_MODE_ZERO_GUARD);
  out->set_key_source(s.key.ToString());
  out->set_device_size_bytes(info.record.device_size_bytes);
  out->set_capacity_bytes(info.capacity_bytes);
  out->set_used_bytes(info.used_bytes);
  out->set_available_bytes(info.available_bytes);
  if (s.fs_group) out->set_fs_group(*s.fs_group);
  out->set_read_only(s.read_only);
  out->set_provisioning_bytes_written(info.record.provisioning_bytes_written);
  out->set_provisioning_duration_ms(info.record.provisioning_duration_ms);
}

grpc::Status StorageAgentService::ActivateVolume(grpc::ServerContext* ctx, const pb::ActivateVolumeRequest* req,
                                                 pb::ActivateVolumeResponse* resp) {
  struct Slot {
    std::atomic<int>& n;
    ~Slot() { --n; }
  } slot{activations_};
  if (++activations_ > max_activations_) {
    return Reply(
        "ActivateVolume", req->volume_id(),
        absl::ResourceExhaustedError(Cat("more than ", max_activations_, " activations in flight; retry later")));
  }
  auto a = ActivationFromProto(*req);
  if (!a.ok()) return Reply("ActivateVolume", req->volume_id(), a.status());
  auto v = Admit(*a, admission_);
  if (!v.ok()) return Reply("ActivateVolume", req->volume_id(), v.status());
  auto info = manager_->Activate(v->spec, v->device_timeout, [ctx] { return ctx != nullptr && ctx->IsCancelled(); });
  if (!info.ok()) return Reply("ActivateVolume", req->volume_id(), info.status());
  ToProto(*info, resp->mutable_volume());
  return grpc::Status::OK;
}

grpc::Status StorageAgentService::DeactivateVolume(grpc::ServerContext*, const pb::DeactivateVolumeRequest* req,
                                                   pb::DeactivateVolumeResponse* resp) {
  if (Status s = ValidateVolumeId(req->volume_id()); !s.ok()) return Reply("DeactivateVolume", req->volume_id(), s);
  auto was = manager_->Deactivate(req->volume_id());
  if (!was.ok()) return Reply("DeactivateVolume", req->volume_id(), was.status());
  resp->set_was_active(*was);
  return grpc::Status::OK;
}

grpc::Status StorageAgentService::GetVolume(grpc::ServerContext*, const pb::GetVolumeRequest* req, pb::Volume* resp) {
  if (Status s = ValidateVolumeId(req->volume_id()); !s.ok()) return Reply("GetVolume", req->volume_id(), s);
  auto info = manager_->Get(req->volume_id());
  if (!info.ok()) {
    if (info.status().code() == absl::StatusCode::kNotFound) return ToGrpcStatus(info.status());
    return Reply("GetVolume", req->volume_id(), info.status());
  }
  ToProto(*info, resp);
  return grpc::Status::OK;
}

grpc::Status StorageAgentService::ListVolumes(grpc::ServerContext*, const pb::ListVolumesRequest*,
                                              pb::ListVolumesResponse* resp) {
  auto list = manager_->List();
  if (!list.ok()) return Reply("ListVolumes", "", list.status());
  for (const auto& info : *list) ToProto(info, resp->add_volumes());
  return grpc::Status::OK;
}

grpc::Status StorageAgentService::GetAgentInfo(grpc::ServerContext*, const pb::GetAgentInfoRequest*,
                                               pb::AgentInfo* resp) {
  resp->set_version(COCOSTORAGE_VERSION);
  utsname u{};
  if (uname(&u) == 0) resp->set_kernel_release(u.release);
  for (const auto& f : SupportedFsTypes()) resp->add_fs_types(f);
  for (auto m : {pb::INTEGRITY_NONE, pb::INTEGRITY_HMAC_SHA256, pb::INTEGRITY_AEGIS128, pb::INTEGRITY_AES_GCM}) {
    resp->add_integrity_modes(m);
  }
  resp->set_storage_root(manager_->config().storage_root);
  return grpc::Status::OK;
}

}  // namespace cocostorage::agent
