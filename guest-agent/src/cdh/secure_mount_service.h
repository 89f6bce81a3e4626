// api.SecureMountService/SecureMount over ttrpc, answered by the agent in the
// Confidential Data Hub's place: the request goes through the same pipeline
// as every other transport (adapter -> admission -> VolumeManager).
#pragma once

#include "cocostorage/ttrpc/server.h"
#include "request/admission.h"
#include "service/volume_manager.h"

namespace cocostorage::agent {

class SecureMountService {
 public:
  SecureMountService(VolumeManager* manager, AdmissionConfig admission)
      : manager_(manager), admission_(std::move(admission)) {}
  void Register(ttrpc::Server& server);

 private:
  Status SecureMount(const ttrpc::CallContext& ctx, const std::string& request, std::string* response);

  VolumeManager* manager_;
  AdmissionConfig admission_;
};

}  // namespace cocostorage::agent
