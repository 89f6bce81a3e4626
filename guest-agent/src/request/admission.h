// The validation-and-policy layer: ActivationRequest -> VolumeSpec. Every rule
// about what the (untrusted) host may ask for lives here, as pure logic:
// identifiers, device names, key sources, filesystem and mount option
// allowlists, where a volume may be mounted, and bounds on every field. All
// transports go through Admit(); nothing else builds a VolumeSpec.
#pragma once

#include <chrono>
#include <string>

#include "cocostorage/common/status.h"
#include "core/volume_spec.h"
#include "request/activation.h"

namespace cocostorage::agent::policy {
class PolicyGate;
}

namespace cocostorage::agent {

// The agent's own minimum for security-relevant choices the host would
// otherwise make alone (until an attested policy says more).
struct AdmissionConfig {
  std::string storage_root = "/run/kata-containers/sandbox/storage";
  std::chrono::milliseconds default_device_timeout{10000};
  // Confidentiality without tamper evidence (INTEGRITY_NONE) only when the
  // agent's configuration says so; refused (PERMISSION_DENIED) by default.
  bool allow_integrity_none = false;
  // The one target outside the storage root a SecureMount may name: where
  // kata-agent mounts the /dev/trusted_store device (image layers).
  std::string trusted_store_target = "/run/kata-containers/image";
  // The attested storage policy every request must also satisfy (null only
  // when the agent runs without one: test builds, --storage-policy=off).
  // With a policy, the policy's rules decide integrity "none", not
  // allow_integrity_none.
  policy::PolicyGate* policy = nullptr;
};

// Bounds on what a request may carry (a hostile host sent 120,000 mkfs options).
inline constexpr size_t kMaxMkfsOptions = 32;
inline constexpr size_t kMaxMountOptions = 32;
inline constexpr size_t kMaxOptionBytes = 256;
inline constexpr size_t kMaxTargetPathBytes = 1024;
inline constexpr uint32_t kMaxDeviceTimeoutMs = 300000;

// ValidateVolumeId: core/volume_spec.h (the storage policy checks ids too).

struct ValidatedActivate {
  VolumeSpec spec;
  std::chrono::milliseconds device_timeout{0};
};

StatusOr<ValidatedActivate> Admit(const ActivationRequest& req, const AdmissionConfig& config);

}  // namespace cocostorage::agent
