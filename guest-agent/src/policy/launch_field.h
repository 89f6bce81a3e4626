// The pieces behind policy_source.h, exposed for tests and for main's config
// handling: the SNP report parser (pure), the configfs-tsm file operations
// behind an interface (a fake stands in for configfs in unit tests), each
// verifier's constructor, the agent config's `policy` object, and
// LoadPolicyState with an injectable storage-policy parser.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "cocostorage/common/status.h"
#include "policy/policy_source.h"

namespace cocostorage::agent::policy {

// AMD SEV-SNP ATTESTATION_REPORT (SNP firmware ABI spec, "ATTESTATION_REPORT
// Structure"; the same offsets in Linux's and virtee/sev's report structs).
// Report versions 2 to 5 keep these fields where they are.
inline constexpr size_t kSnpReportSize = 0x4A0;  // through the 512-byte signature at 0x2A0
inline constexpr size_t kSnpReportDataOffset = 0x050;
inline constexpr size_t kSnpReportDataSize = 64;
inline constexpr size_t kSnpHostDataOffset = 0x0C0;  // right after MEASUREMENT (48 bytes at 0x090)
inline constexpr size_t kSnpHostDataSize = 32;
inline constexpr uint32_t kSnpMinReportVersion = 2;
inline constexpr uint32_t kSnpMaxReportVersion = 5;

struct SnpReportFields {
  uint32_t version = 0;
  std::array<uint8_t, kSnpReportDataSize> report_data{};
  std::array<uint8_t, kSnpHostDataSize> host_data{};
};

// INVALID_ARGUMENT when the bytes are shorter than a report or carry a
// version we do not know (the layout could differ).
StatusOr<SnpReportFields> ParseSnpReport(std::string_view report);
StatusOr<std::array<uint8_t, kSnpHostDataSize>> SnpReportHostData(std::string_view report);

// The few file operations the tsm verifier does under tsm_root. The real one
// is plain syscalls; configfs generates `outblob` on read, which a plain
// directory cannot, hence the seam.
class TsmFs {
 public:
  virtual ~TsmFs() = default;
  virtual bool Exists(const std::string& path) = 0;
  virtual Status MakeDir(const std::string& path) = 0;
  virtual Status RemoveDir(const std::string& path) = 0;
  virtual StatusOr<std::string> ReadFile(const std::string& path, size_t max_bytes) = 0;
  virtual Status WriteFile(const std::string& path, std::string_view data) = 0;
};
std::unique_ptr<TsmFs> NewRealTsmFs();

// How many times the tsm verifier redoes a report another writer raced.
inline constexpr int kTsmAttempts = 3;

std::unique_ptr<LaunchFieldVerifier> NewTsmVerifier(std::string tsm_root, std::unique_ptr<TsmFs> fs);
std::unique_ptr<LaunchFieldVerifier> NewAttestationAgentVerifier(std::string socket, std::chrono::milliseconds timeout);
std::unique_ptr<LaunchFieldVerifier> NewConfiguredDigestVerifier(std::string digest_hex);

// Applies the agent config's "policy" object: required, verifier,
// init_data, init_data_digest, tsm_root, aa_socket. INVALID_ARGUMENT on an
// unknown or mistyped key. (insecure_test_build comes from the agent's flag.)
Status ApplyPolicyConfigJson(const nlohmann::json& policy, PolicySourceConfig* out);

// INVALID_ARGUMENT for an unknown verifier or a digest that is not hex of a
// sha256/384/512 length; FAILED_PRECONDITION for what only a test build may
// do (required=false, the configured-digest verifier).
Status ValidatePolicySourceConfig(const PolicySourceConfig& config);

using StoragePolicyParser = std::function<StatusOr<StoragePolicy>(std::string_view toml_text)>;

// LoadPolicyState of policy_source.h with the parser given (tests inject one;
// the two-argument form passes ParseStoragePolicy).
PolicyState LoadPolicyState(const PolicySourceConfig& config, LaunchFieldVerifier& verifier,
                            const StoragePolicyParser& parse);

}  // namespace cocostorage::agent::policy
