// One activation request, whatever transport brought it: our gRPC API, a Kata
// Storage (what kata-agent hands the guest's storage handler), or the CDH
// SecureMount call. Transports only translate their wire shape into this; the
// admission layer (admission.h) is the one place that decides what the
// untrusted host may ask for, and the only way to a VolumeSpec.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/key_source.h"
#include "core/volume_spec.h"

namespace cocostorage::agent {

enum class Origin {
  kAgentApi,     // cocostorage.storage.v1.StorageAgent/ActivateVolume
  kKataStorage,  // a Kata agent Storage (driver blk, mount point in the sandbox storage dir)
  kSecureMount,  // the CDH's api.SecureMountService/SecureMount, as kata-agent calls it
};
const char* OriginName(Origin o);

struct ActivationRequest {
  Origin origin = Origin::kAgentApi;
  std::string volume_id;
  std::optional<DeviceId> device;
  std::optional<KeySource> key;
  std::optional<IntegrityMode> integrity;  // unset: the agent's default
  std::optional<InitMode> init_mode;       // unset: zero guard
  bool block_mode = false;
  std::string fs_type;
  std::vector<std::string> mkfs_options;
  std::vector<std::string> mount_options;
  std::optional<int64_t> fs_group;
  std::string target_path;
  bool read_only = false;
  uint32_t device_timeout_ms = 0;  // 0: the agent's default
  // Set by the storage policy (policy/matcher.h), never by a transport.
  std::vector<std::string> policy_rules;
  // Persistent volumes: whether a provably blank device may be formatted as
  // this volume. Only the storage policy turns it off.
  bool create_if_blank = true;
  // The policy's blank_check = "full" (see VolumeSpec::full_blank_check).
  bool full_blank_check = false;
  // SecureMount: persistent rules the device may turn out to be (set by the
  // storage policy only; see VolumeSpec::persistent_candidates).
  std::vector<std::string> persistent_candidates;
};

}  // namespace cocostorage::agent
