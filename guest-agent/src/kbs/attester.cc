#include "kbs/attester.h"

#include "attestation_agent/attestation_agent.pb.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/ttrpc/client.h"

namespace cocostorage::agent::kbs {
namespace {

class SampleAttester final : public Attester {
 public:
  std::string tee() const override { return "sample"; }
  StatusOr<nlohmann::json> PrimaryEvidence(const ReportData& report_data) override {
    return SampleEvidence(report_data);
  }
};

class AttestationAgentAttester final : public Attester {
 public:
  AttestationAgentAttester(std::string socket, std::string tee, std::chrono::milliseconds timeout)
      : socket_(std::move(socket)), tee_(std::move(tee)), timeout_(timeout) {}
  std::string tee() const override { return tee_; }

  StatusOr<nlohmann::json> PrimaryEvidence(const ReportData& report_data) override {
    auto client = ttrpc::Client::ConnectUnix(socket_);
    if (!client.ok())
      return absl::UnavailableError(Cat("Attestation Agent at ", socket_, ": ", client.status().message()));
    attestation_agent::GetEvidenceRequest req;
    req.set_runtimedata(std::string(reinterpret_cast<const char*>(report_data.data()), report_data.size()));
    auto reply =
        (*client)->Call("attestation_agent.AttestationAgentService", "GetEvidence", req.SerializeAsString(), timeout_);
    if (!reply.ok()) return Annotate(reply.status(), "Attestation Agent GetEvidence");
    attestation_agent::GetEvidenceResponse resp;
    if (!resp.ParseFromString(*reply)) return absl::InternalError("Attestation Agent: unparsable GetEvidence reply");
    nlohmann::json evidence = nlohmann::json::parse(resp.evidence(), nullptr, false);
    if (evidence.is_discarded() || !evidence.is_object())
      return absl::InternalError("Attestation Agent: evidence is not a JSON object");
    return evidence;
  }

 private:
  std::string socket_;
  std::string tee_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

std::unique_ptr<Attester> NewSampleAttester() { return std::make_unique<SampleAttester>(); }

std::unique_ptr<Attester> NewAttestationAgentAttester(std::string socket_path, std::string tee,
                                                      std::chrono::milliseconds timeout) {
  return std::make_unique<AttestationAgentAttester>(std::move(socket_path), std::move(tee), timeout);
}

}  // namespace cocostorage::agent::kbs
