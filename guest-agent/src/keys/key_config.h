// Which provider releases persistent volumes' keys, from the agent config.
// The checks that keep a production agent from trusting test shortcuts live
// here (pure apart from reading the init-data file), not in main.
#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "kbs/init_data.h"
#include "keys/key_provider.h"
#include "keys/remote_key_providers.h"

namespace cocostorage::agent {

struct KeyConfig {
  std::string provider = "cdh";  // cdh | kbs | none
  std::string cdh_socket = kCdhResourceSocket;
  std::string kbs_url;
  std::string kbs_ca_bundle;
  std::string tee_key_algorithm = "ECDH-ES+A256KW";
  std::string attester = "aa";  // aa | sample
  std::string aa_socket = kbs::kAttestationAgentSocket;
  std::string tee;  // for the aa attester: snp, tdx, az-snp-vtpm, ...
  std::string init_data_path = kbs::kInitDataPath;
  std::string init_data_digest;  // hex; required with the sample attester when init-data exists
  std::chrono::milliseconds timeout{60000};
  // Test builds only: the sample attester and plain-HTTP KBS URLs.
  bool insecure_test_build = false;
};

// Applies one `keys` member of the JSON config (INVALID_ARGUMENT on an
// unknown or mistyped key).
Status ApplyKeyConfigJson(const nlohmann::json& keys, KeyConfig* out);

// The provider for KBS sources, or nullptr for "none" (KBS keys are then
// UNIMPLEMENTED). FAILED_PRECONDITION for a configuration a production agent
// must not run with (sample attester or http:// outside a test build, a
// sample attester with init-data whose digest is not the configured one).
StatusOr<std::unique_ptr<KeyProvider>> NewRemoteKeyProvider(const KeyConfig& config);

}  // namespace cocostorage::agent
