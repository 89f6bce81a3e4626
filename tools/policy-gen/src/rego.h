// The Rego additions for kata-agent's policy (genpolicy's rules.rego, package
// agent_policy): they admit, in a CreateContainerRequest, exactly the
// encrypted block storages of the generated policy, each bound to the OCI
// mount that puts it at its container path, and nothing else. How they
// combine with genpolicy's output: docs/policy-generator.md.
#pragma once

#include <string>

#include "policy_builder.h"

namespace cocostorage::policygen {

// The storage directory and driver options kata-agent uses for the
// SecureMount route (../shared/reference/coco-guest-integration.md).
inline constexpr std::string_view kKataStorageDir = "/run/kata-containers/sandbox/storage/";
// Guest PCI path of a hot-plugged virtio-blk device: slot/function pairs from
// the root bus ("02", "02/00"), lower-case hex, at most 8 levels.
inline constexpr std::string_view kPciPathRegex = "^[0-9a-f]{2}(/[0-9a-f]{2}){0,7}$";

// Deterministic text: same GeneratedPolicy, same bytes.
std::string GenerateRego(const GeneratedPolicy& g);

}  // namespace cocostorage::policygen
