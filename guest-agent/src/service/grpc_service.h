// gRPC front of the VolumeManager: validation, conversion, status mapping.
#pragma once

#include "cocostorage/storage/v1/agent.grpc.pb.h"
#include "service/volume_manager.h"

namespace cocostorage::agent {

class StorageAgentService final : public storage::v1::StorageAgent::Service {
 public:
  explicit StorageAgentService(VolumeManager* manager) : manager_(manager) {}

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
};

void ToProto(const VolumeInfo& info, storage::v1::Volume* out);

}  // namespace cocostorage::agent
