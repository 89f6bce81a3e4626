// CSI Controller service for node-local volumes: runs beside the node plugin
// (external-provisioner in distributed mode), one topology segment per node.
#pragma once

#include <utility>

#include "csi/v1/csi.grpc.pb.h"
#include "driver.h"

namespace cocostorage::csi {

class ControllerService final : public ::csi::v1::Controller::Service {
 public:
  explicit ControllerService(ControllerDeps d) : d_(std::move(d)) {}

  grpc::Status CreateVolume(grpc::ServerContext*, const ::csi::v1::CreateVolumeRequest*,
                            ::csi::v1::CreateVolumeResponse*) override;
  grpc::Status DeleteVolume(grpc::ServerContext*, const ::csi::v1::DeleteVolumeRequest*,
                            ::csi::v1::DeleteVolumeResponse*) override;
  grpc::Status ValidateVolumeCapabilities(grpc::ServerContext*, const ::csi::v1::ValidateVolumeCapabilitiesRequest*,
                                          ::csi::v1::ValidateVolumeCapabilitiesResponse*) override;
  grpc::Status GetCapacity(grpc::ServerContext*, const ::csi::v1::GetCapacityRequest*,
                           ::csi::v1::GetCapacityResponse*) override;
  grpc::Status ControllerGetCapabilities(grpc::ServerContext*, const ::csi::v1::ControllerGetCapabilitiesRequest*,
                                         ::csi::v1::ControllerGetCapabilitiesResponse*) override;
  grpc::Status ControllerExpandVolume(grpc::ServerContext*, const ::csi::v1::ControllerExpandVolumeRequest*,
                                      ::csi::v1::ControllerExpandVolumeResponse*) override;

 private:
  Status DoCreate(const ::csi::v1::CreateVolumeRequest& req, ::csi::v1::CreateVolumeResponse* resp,
                  std::string* volume_id);
  Status DoDelete(const std::string& id, const std::map<std::string, std::string>& secrets);
  Status DeleteUnrecordedImage(const std::string& id, const std::map<std::string, std::string>& secrets);
  Status DoValidate(const ::csi::v1::ValidateVolumeCapabilitiesRequest& req,
                    ::csi::v1::ValidateVolumeCapabilitiesResponse* resp);
  Status DoExpand(const ::csi::v1::ControllerExpandVolumeRequest& req, ::csi::v1::ControllerExpandVolumeResponse* resp);
  bool TopologyIsOurs(const ::csi::v1::Topology& t) const;

  ControllerDeps d_;
};

}  // namespace cocostorage::csi
