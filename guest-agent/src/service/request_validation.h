// Wire request -> validated VolumeSpec. Every rule about what the (untrusted)
// host may ask for lives here, as pure logic.
#pragma once

#include <chrono>
#include <string>

#include "cocostorage/common/status.h"
#include "cocostorage/storage/v1/agent.pb.h"
#include "core/volume_spec.h"

namespace cocostorage::agent {

Status ValidateVolumeId(const std::string& id);

struct ValidatedActivate {
  VolumeSpec spec;
  std::chrono::milliseconds device_timeout{0};
};

StatusOr<ValidatedActivate> ValidateActivate(const storage::v1::ActivateVolumeRequest& req,
                                             const std::string& storage_root,
                                             std::chrono::milliseconds default_timeout);

}  // namespace cocostorage::agent
