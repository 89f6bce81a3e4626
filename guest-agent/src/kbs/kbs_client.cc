#include "kbs/kbs_client.h"

#include <thread>

#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"
#include "kbs/protocol.h"

namespace cocostorage::agent::kbs {
namespace {

bool Retryable(const Status& s) {
  return s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kDeadlineExceeded;
}

std::string Describe(const HttpResponse& r) {
  ErrorBody e = ParseErrorBody(r.body);
  if (e.variant.empty()) return Cat("HTTP ", r.status);
  return Cat("HTTP ", r.status, " ", e.variant, e.detail.empty() ? "" : ": ", e.detail);
}

}  // namespace

KbsClient::KbsClient(KbsClientOptions options, std::unique_ptr<HttpClient> http, std::unique_ptr<Attester> attester,
                     Sleep sleep)
    : options_(std::move(options)), http_(std::move(http)), attester_(std::move(attester)), sleep_(std::move(sleep)) {
  while (!options_.url.empty() && options_.url.back() == '/') options_.url.pop_back();
  if (!sleep_) sleep_ = [](std::chrono::milliseconds d) { std::this_thread::sleep_for(d); };
}

std::vector<std::pair<std::string, std::string>> KbsClient::SessionHeaders() const {
  std::vector<std::pair<std::string, std::string>> h{{"Content-Type", "application/json"}};
  if (!session_id_.empty()) h.emplace_back("Cookie", Cat(kSessionCookie, "=", session_id_));
  return h;
}

Status KbsClient::HandshakeOnce() {
  token_.clear();
  session_id_.clear();
  COCO_ASSIGN_OR_RETURN(TeeKeyPair key, TeeKeyPair::Generate(options_.key_algorithm));
  HttpRequest auth{"POST", Cat(options_.url, "/kbs/v0/auth"), SessionHeaders(), AuthRequestBody(attester_->tee()),
                   options_.request_timeout};
  COCO_ASSIGN_OR_RETURN(HttpResponse ar, http_->Send(auth));
  if (ar.status >= 500) return absl::UnavailableError(Cat("KBS auth failed: ", Describe(ar)));
  if (ar.status != 200) return absl::PermissionDeniedError(Cat("KBS refused the auth request: ", Describe(ar)));
  for (const auto& [name, value] : ar.headers)
    if (name == "set-cookie")
      if (auto id = SessionIdFromSetCookie(value)) session_id_ = *id;
  if (session_id_.empty()) return absl::InvalidArgumentError("KBS auth reply set no kbs-session-id cookie");
  COCO_ASSIGN_OR_RETURN(std::string nonce, ParseChallenge(ar.body));

  const nlohmann::json jwk = key.PublicJwk();
  COCO_ASSIGN_OR_RETURN(ReportData report_data, BindReportData(nonce, jwk));
  COCO_ASSIGN_OR_RETURN(nlohmann::json evidence, attester_->PrimaryEvidence(report_data));
  HttpRequest attest{"POST", Cat(options_.url, "/kbs/v0/attest"), SessionHeaders(),
                     AttestRequestBody(nonce, jwk, evidence, options_.init_data_toml), options_.request_timeout};
  COCO_ASSIGN_OR_RETURN(HttpResponse tr, http_->Send(attest));
  if (tr.status >= 500) return absl::UnavailableError(Cat("KBS attest failed: ", Describe(tr)));
  if (tr.status != 200)
    return absl::PermissionDeniedError(Cat("KBS refused the attestation (", attester_->tee(), "): ", Describe(tr)));
  COCO_ASSIGN_OR_RETURN(token_, ParseAttestResponse(tr.body));
  key_ = std::move(key);
  return OkStatus();
}

Status KbsClient::Handshake() {
  Status last;
  for (int attempt = 1; attempt <= options_.handshake_attempts; ++attempt) {
    last = HandshakeOnce();
    if (last.ok()) {
      log::Info("kbs.attested", {{"kbs", options_.url}, {"tee", attester_->tee()}, {"attempt", attempt}});
      return last;
    }
    if (!Retryable(last)) break;
    log::Warn("kbs.handshake_retry",
              {{"kbs", options_.url}, {"attempt", attempt}, {"error", std::string(last.message())}});
    if (attempt < options_.handshake_attempts) sleep_(options_.handshake_retry_delay);
  }
  token_.clear();
  return last;
}

StatusOr<SecureBuffer> KbsClient::GetResource(std::string_view kbs_uri) {
  COCO_ASSIGN_OR_RETURN(std::string path, ResourcePath(kbs_uri));
  std::lock_guard<std::mutex> lock(mu_);
  Status last;
  for (int attempt = 1; attempt <= options_.resource_attempts; ++attempt) {
    if (token_.empty()) COCO_RETURN_IF_ERROR(Handshake());
    auto headers = SessionHeaders();
    headers.emplace_back("Authorization", Cat("Bearer ", token_));
    auto reply = http_->Send(HttpRequest{"GET", Cat(options_.url, path), headers, "", options_.request_timeout});
    if (!reply.ok()) {
      if (!Retryable(reply.status())) return reply.status();
      // The KBS may have restarted (sessions and tokens gone): the next
      // attempt handshakes again, with the handshake's retries and backoff.
      last = reply.status();
      token_.clear();
      continue;
    }
    if (reply->status == 200) {
      auto plain = key_->Decrypt(reply->body);
      if (!plain.ok()) return Annotate(plain.status(), Cat("KBS reply for ", kbs_uri));
      log::Info("kbs.resource_released", {{"uri", std::string(kbs_uri)}, {"bytes", plain->size()}});
      return plain;
    }
    if (reply->status == 404)
      return absl::NotFoundError(Cat("KBS has no resource ", kbs_uri, " (", Describe(*reply), ")"));
    if (reply->status >= 500) {
      last = absl::UnavailableError(Cat("KBS failed the resource request: ", Describe(*reply)));
      token_.clear();
      sleep_(options_.handshake_retry_delay);
      continue;
    }
    // Some trustee versions answer a policy denial with 403: final.
    ErrorBody e = ParseErrorBody(reply->body);
    if (reply->status == 403)
      return absl::PermissionDeniedError(Cat("KBS policy denies ", kbs_uri, " to this VM (", Describe(*reply), ")"));
    // 401 (and any other refusal): the token may have expired; attest again.
    if (e.variant == "PolicyDeny")
      last = absl::PermissionDeniedError(Cat("KBS policy denies ", kbs_uri, " to this VM (", Describe(*reply), ")"));
    else if (e.variant == "PluginInternalError" ||
             (e.variant.find("NotFound") != std::string::npos && e.variant != "TokenNotFound"))
      // Trustee wraps "no such resource" in its resource plugin's error.
      last = absl::NotFoundError(
          Cat("KBS could not produce ", kbs_uri, " (missing, or its storage failed: ", Describe(*reply), ")"));
    else
      last = absl::PermissionDeniedError(Cat("KBS refused ", kbs_uri, " (", Describe(*reply), ")"));
    log::Warn("kbs.resource_refused",
              {{"uri", std::string(kbs_uri)}, {"attempt", attempt}, {"error", std::string(last.message())}});
    token_.clear();
  }
  return last;
}

}  // namespace cocostorage::agent::kbs
