// Where the KBS client's evidence comes from. In a CoCo guest the
// Attestation Agent produces it for every TEE trustee supports (we never
// re-implement hardware attesters); the `sample` attester (no hardware, no
// security) exists for tests and is refused unless the agent is configured as
// a test build.
#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cocostorage/common/status.h"
#include "kbs/protocol.h"

namespace cocostorage::agent::kbs {

class Attester {
 public:
  virtual ~Attester() = default;
  // The `tee` name sent in the auth request (sample, snp, tdx, ...).
  virtual std::string tee() const = 0;
  // The TEE's primary evidence binding `report_data`.
  virtual StatusOr<nlohmann::json> PrimaryEvidence(const ReportData& report_data) = 0;
};

std::unique_ptr<Attester> NewSampleAttester();

// GetEvidence over the Attestation Agent's ttrpc socket (one connection per
// call: the AA may restart). `tee` is the platform the AA attests (config).
std::unique_ptr<Attester> NewAttestationAgentAttester(std::string socket_path, std::string tee,
                                                      std::chrono::milliseconds timeout);

inline constexpr char kAttestationAgentSocket[] =
    "/run/confidential-containers/attestation-agent/attestation-agent.sock";

}  // namespace cocostorage::agent::kbs
