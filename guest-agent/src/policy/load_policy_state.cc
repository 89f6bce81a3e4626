// The two-argument LoadPolicyState, alone in its file: it is the one
// reference to ParseStoragePolicy, so code that injects its own parser (the
// verifier's unit tests) links without the parser's object.
#include "policy/launch_field.h"
#include "policy/policy_source.h"
#include "policy/storage_policy.h"

namespace cocostorage::agent::policy {

PolicyState LoadPolicyState(const PolicySourceConfig& config, LaunchFieldVerifier& verifier) {
  return LoadPolicyState(config, verifier, [](std::string_view text) { return ParseStoragePolicy(text); });
}

}  // namespace cocostorage::agent::policy
