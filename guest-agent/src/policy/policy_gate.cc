#include "policy/policy_gate.h"

#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"

namespace cocostorage::agent::policy {
namespace {

void LogState(const PolicyState& s) {
  if (s.verified()) {
    log::Info("policy.verified", {{"policy_version", s.policy->policy_version},
                                  {"workload", s.policy->workload},
                                  {"volumes", s.policy->volumes.size()},
                                  {"init_data_digest", s.init_data_digest_hex},
                                  {"verified_by", s.verified_by}});
  } else {
    log::Error("policy.unverified", {{"reason", s.unverified_reason}, {"retryable", s.retryable}});
  }
}

}  // namespace

PolicyGate::PolicyGate(Loader loader) : loader_(std::move(loader)), state_(loader_()) {
  if (state_.verified()) policy_ = std::make_shared<const StoragePolicy>(*state_.policy);
  LogState(state_);
}

StatusOr<std::shared_ptr<const StoragePolicy>> PolicyGate::Current() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!policy_ && state_.retryable) {
    state_ = loader_();
    if (state_.verified()) policy_ = std::make_shared<const StoragePolicy>(*state_.policy);
    LogState(state_);
  }
  if (policy_) return policy_;
  return absl::FailedPreconditionError(Cat("no attested storage policy: ", state_.unverified_reason));
}

PolicyState PolicyGate::Snapshot() {
  std::lock_guard<std::mutex> lock(mu_);
  return state_;
}

}  // namespace cocostorage::agent::policy
