#include "service/grpc_service.h"

#include <sys/utsname.h>

#include "cocostorage/common/grpc_util.h"
#include "cocostorage/common/log.h"
#include "fs/options.h"
#include "service/request_validation.h"

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
                            {"volume", volume},
                            {"code", absl::StatusCodeToString(s.code())},
                            {"error", std::string(s.message())}});
  }
  return ToGrpcStatus(s);
}

}  // namespace

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
  out->set_key_source(s.key_source);
  out->set_device_size_bytes(info.record.device_size_bytes);
  out->set_capacity_bytes(info.capacity_bytes);
  out->set_used_bytes(info.used_bytes);
  out->set_available_bytes(info.available_bytes);
  if (s.fs_group) out->set_fs_group(*s.fs_group);
  out->set_read_only(s.read_only);
  out->set_provisioning_bytes_written(info.record.provisioning_bytes_written);
  out->set_provisioning_duration_ms(info.record.provisioning_duration_ms);
}

grpc::Status StorageAgentService::ActivateVolume(grpc::ServerContext*, const pb::ActivateVolumeRequest* req,
                                                 pb::ActivateVolumeResponse* resp) {
  auto v = ValidateActivate(*req, manager_->config().storage_root, manager_->config().default_device_timeout);
  if (!v.ok()) return Reply("ActivateVolume", req->volume_id(), v.status());
  auto info = manager_->Activate(v->spec, v->device_timeout);
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
