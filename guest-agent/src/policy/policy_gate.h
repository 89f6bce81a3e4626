// The agent's one verified storage policy, shared by every transport. Loaded
// at start; a load that failed for a transient reason (the Attestation Agent
// not up yet) is retried when the next request needs the policy, a mismatch
// is final (init-data cannot change after launch).
#pragma once

#include <functional>
#include <memory>
#include <mutex>

#include "cocostorage/common/status.h"
#include "policy/policy_source.h"

namespace cocostorage::agent::policy {

class PolicyGate {
 public:
  using Loader = std::function<PolicyState()>;
  explicit PolicyGate(Loader loader);

  // FAILED_PRECONDITION "no attested storage policy: <reason>" when there is
  // no verified policy.
  StatusOr<std::shared_ptr<const StoragePolicy>> Current();
  PolicyState Snapshot();

 private:
  Loader loader_;
  std::mutex mu_;
  PolicyState state_;
  std::shared_ptr<const StoragePolicy> policy_;
};

}  // namespace cocostorage::agent::policy
