// gRPC front of the VolumeManager: validation, conversion, status mapping.
#pragma once

#include <atomic>

#include "cocostorage/storage/v1/agent.grpc.pb.h"
#include "request/activation.h"
#include "request/admission.h"
#include "service/volume_manager.h"

namespace cocostorage::agent {

class StorageAgentService final : public storage::v1::StorageAgent::Service {
 public:
  // At most `max_activations` ActivateVolume calls work at once; more get
  // RESOURCE_EXHAUSTED (each may wait minutes for a device).
  StorageAgentService(VolumeManager* manager, AdmissionConfig admission, int max_activations = 16)
      : manager_(manager), admission_(std::move(admission)), max_activations_(max_activations) {}

  grpc::Status ActivateVolume(grpc::ServerContext* ctx, const storage::v1::ActivateVolumeRequest* req,
                              storage::v1::ActivateVolumeResponse* resp) override;
  grpc::Status DeactivateVolume(grpc::ServerContext* ctx, const storage::v1::DeactivateVolumeRequest* req,
                                storage::v1::DeactivateVolumeResponse* resp) override;
  grpc::Status GetVolume(grpc::ServerContext* ctx, const storage::v1::GetVolumeRequest* req,
                         storage::v1::Volume* resp) override;
  grpc::Status ListVolumes(grpc::ServerContext* ctx, const storage::v1::ListVolumesRequest* req,
                           storage::v1::ListVolumesResponse* resp) override;
  grpc::Status GetAgentInfo(grpc::ServerContext* ctx, const storage::v1::GetAgentInfoRequest* req,
                            storage::v1::AgentInfo* resp) override;

 private:
  VolumeManager* manager_;
  AdmissionConfig admission_;
  const int max_activations_;
  std::atomic<int> activations_{0};
};

// The transport adapter: wire request -> ActivationRequest (enum values
// mapped, unknown ones refused); everything else is Admit()'s job.
StatusOr<ActivationRequest> ActivationFromProto(const storage::v1::ActivateVolumeRequest& req);

void ToProto(const VolumeInfo& info, storage::v1::Volume* out);

}  // namespace cocostorage::agent
