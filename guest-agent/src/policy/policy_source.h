// Where the agent's storage policy comes from, and why it may be trusted:
// the init-data document kata-agent leaves in the guest, whose digest the TEE
// bound to the launch (SNP HOST_DATA, TDX MRCONFIGID). The agent trusts the
// policy only after comparing that digest with the launch field
// (docs/design.md, "Attested storage policy").
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "cocostorage/common/status.h"
#include "kbs/init_data.h"
#include "policy/storage_policy.h"

namespace cocostorage::agent::policy {

// Compares an init-data digest with what the TEE recorded at launch.
// OK: they are equal. PERMISSION_DENIED: they differ (sticky: init-data
// cannot change after launch). UNAVAILABLE: the launch field could not be read
// now (e.g. the Attestation Agent's socket is not there yet; retried later).
// FAILED_PRECONDITION: this verifier cannot work here (no configfs-tsm, the
// digest length does not fit the field).
class LaunchFieldVerifier {
 public:
  virtual ~LaunchFieldVerifier() = default;
  virtual const char* name() const = 0;  // "tsm", "aa", "configured-digest"
  virtual Status Verify(const kbs::InitData& init_data) = 0;
};

struct PolicySourceConfig {
  // false only in test builds (--storage-policy=off with --insecure-test-build):
  // the agent then applies its built-in admission rules alone, as before.
  bool required = true;
  std::string verifier = "auto";  // auto | tsm | aa | configured-digest
  std::string init_data_path = "/run/confidential-containers/initdata/initdata.toml";
  std::string configured_digest_hex;  // configured-digest: only with insecure_test_build
  std::string tsm_root = "/sys/kernel/config/tsm/report";
  std::string aa_socket = "/run/confidential-containers/attestation-agent/attestation-agent.sock";
  bool insecure_test_build = false;
};

// The outcome of loading the policy: verified (with how), or not (with why).
struct PolicyState {
  std::optional<StoragePolicy> policy;  // set <=> verified
  std::string init_data_digest_hex;
  std::string verified_by;        // verifier name when verified
  std::string unverified_reason;  // when not verified: for FAILED_PRECONDITION messages
  bool retryable = false;         // unverified for a transient reason (UNAVAILABLE)

  bool verified() const { return policy.has_value(); }
};

StatusOr<std::unique_ptr<LaunchFieldVerifier>> NewLaunchFieldVerifier(const PolicySourceConfig& config);

// Reads the init-data file, verifies its digest with `verifier`, parses
// data["cocostorage.toml"]. Never fails: every problem becomes an unverified
// state with a reason for humans.
PolicyState LoadPolicyState(const PolicySourceConfig& config, LaunchFieldVerifier& verifier);

}  // namespace cocostorage::agent::policy
