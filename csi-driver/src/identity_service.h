// CSI Identity service: name, capabilities, health.
#pragma once

#include <utility>

#include "csi/v1/csi.grpc.pb.h"
#include "driver.h"

namespace cocostorage::csi {

class IdentityService final : public ::csi::v1::Identity::Service {
 public:
  explicit IdentityService(IdentityDeps d) : d_(std::move(d)) {}

  grpc::Status GetPluginInfo(grpc::ServerContext*, const ::csi::v1::GetPluginInfoRequest*,
                             ::csi::v1::GetPluginInfoResponse*) override;
  grpc::Status GetPluginCapabilities(grpc::ServerContext*, const ::csi::v1::GetPluginCapabilitiesRequest*,
                                     ::csi::v1::GetPluginCapabilitiesResponse*) override;
  grpc::Status Probe(grpc::ServerContext*, const ::csi::v1::ProbeRequest*, ::csi::v1::ProbeResponse*) override;

 private:
  IdentityDeps d_;
};

}  // namespace cocostorage::csi
