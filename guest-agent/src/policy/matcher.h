// Evaluating a request against the attested storage policy, in two pure
// steps around the device read (docs/design.md, "Attested storage policy"):
//   ApplyPolicy  - before anything is touched: which rules admit what the
//                  request asks for, and what the request becomes under them
//                  (defaults from the rule, forced read-only);
//   CheckClaim   - when the device is known and about to be claimed: its size
//                  and how many volumes are already active.
// Every denial is PERMISSION_DENIED naming the policy version and a stable
// rule name ("volume[scratch].integrity", "match.no_rule", ...).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cocostorage/common/status.h"
#include "core/volume_spec.h"
#include "policy/storage_policy.h"
#include "request/activation.h"

namespace cocostorage::agent::policy {

// The request as the policy admits it, with `policy_rules` set to every rule
// that admits it (in policy order).
StatusOr<ActivationRequest> ApplyPolicy(const ActivationRequest& request, const StoragePolicy& policy);

// `spec` came from ApplyPolicy + admission; `active` are the other volumes
// this agent holds (any phase). Returns the id of the rule that admits the
// device, or the denial.
StatusOr<std::string> CheckClaim(const StoragePolicy& policy, const VolumeSpec& spec, uint64_t device_bytes,
                                 const std::vector<VolumeSpec>& active);

// What a SecureMount device holds, read before any key is fetched.
struct DeviceFacts {
  enum class Kind {
    kBlank,  // provably blank (the structural proof, docs/design.md §4.5)
    kOurs,   // a persistent volume's header naming `volume_id` (not yet authenticated)
    kOther,  // anything else: `detail` says what
  };
  Kind kind = Kind::kBlank;
  std::string volume_id;
  std::string detail;
};

// Phase B for a SecureMount request with persistent candidates (design
// §2.4): the persistent rule the device is (its header names it) or may
// become (blank, create = if-blank), or "" for the ephemeral rules in
// spec.policy_rules. `active` are the agent's other volumes. A device
// holding another volume is FAILED_PRECONDITION foreign_volume; an ambiguous
// blank device is decided by [secure_mount] blank_device or denied.
StatusOr<std::string> RouteSecureMount(const StoragePolicy& policy, const VolumeSpec& spec, const DeviceFacts& facts,
                                       const std::vector<VolumeSpec>& active);

// The spec of persistent rule `rule` for a SecureMount request: the rule's
// key, identity, integrity, mkfs options and create rule.
VolumeSpec PersistentSpecFromRule(const VolumeSpec& requested, const VolumeRule& rule);

// PERMISSION_DENIED "storage policy v<N>, rule <rule>: <detail>".
Status Denied(const StoragePolicy& policy, const std::string& rule, const std::string& detail);

}  // namespace cocostorage::agent::policy
