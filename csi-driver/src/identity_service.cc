#include "identity_service.h"

#include <unistd.h>

#include <cerrno>

#include "cocostorage/common/strings.h"
#include "csi_util.h"

namespace cocostorage::csi {

grpc::Status IdentityService::GetPluginInfo(grpc::ServerContext*, const pb::GetPluginInfoRequest*,
                                            pb::GetPluginInfoResponse* resp) {
  resp->set_name(d_.driver_name);
  resp->set_vendor_version(d_.vendor_version);
  (*resp->mutable_manifest())["backend"] = d_.backend.Name();
  return grpc::Status::OK;
}

grpc::Status IdentityService::GetPluginCapabilities(grpc::ServerContext*, const pb::GetPluginCapabilitiesRequest*,
                                                    pb::GetPluginCapabilitiesResponse* resp) {
  resp->add_capabilities()->mutable_service()->set_type(pb::PluginCapability::Service::CONTROLLER_SERVICE);
  resp->add_capabilities()->mutable_service()->set_type(
      pb::PluginCapability::Service::VOLUME_ACCESSIBILITY_CONSTRAINTS);
  // The VM holds the device while published; growing is done in between.
  resp->add_capabilities()->mutable_volume_expansion()->set_type(pb::PluginCapability::VolumeExpansion::OFFLINE);
  return grpc::Status::OK;
}

grpc::Status IdentityService::Probe(grpc::ServerContext*, const pb::ProbeRequest*, pb::ProbeResponse* resp) {
  Status s = d_.backend.Check();
  if (s.ok() && access(d_.state_dir.c_str(), W_OK | X_OK) != 0) {
    s = ErrnoStatus(errno, Cat("state dir ", d_.state_dir));
  }
  if (s.ok() && access(d_.kata_root.c_str(), W_OK | X_OK) != 0) {
    s = ErrnoStatus(errno, Cat("kata direct-volume root ", d_.kata_root));
  }
  if (!s.ok()) return Reply("Probe", "", absl::FailedPreconditionError(Cat("unhealthy: ", s.message())));
  resp->mutable_ready()->set_value(true);
  return grpc::Status::OK;
}

}  // namespace cocostorage::csi
