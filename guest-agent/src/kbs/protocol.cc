#include "kbs/protocol.h"

#include <openssl/evp.h>

#include <cctype>

#include "cocostorage/common/base64.h"
#include "cocostorage/common/strings.h"
#include "core/key_source.h"
#include "kbs/jcs.h"

namespace cocostorage::agent::kbs {
namespace {

using nlohmann::json;

StatusOr<json> ParseObject(std::string_view body, std::string_view what) {
  if (body.size() > kMaxResponseBytes) return absl::InvalidArgumentError(Cat(what, " is larger than allowed"));
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(Cat(what, " is not a JSON object"));
  return j;
}

std::string Printable(std::string_view s, size_t max) {
  std::string out;
  for (char c : s.substr(0, max)) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  return out;
}

}  // namespace

std::string AuthRequestBody(std::string_view tee) {
  json j = {{"version", kProtocolVersion},
            {"tee", tee},
            {"extra-params", {{"supported-hash-algorithms", {"sha256", "sha384", "sha512"}}}}};
  return j.dump();
}

StatusOr<std::string> ParseChallenge(std::string_view body) {
  COCO_ASSIGN_OR_RETURN(json j, ParseObject(body, "KBS auth reply"));
  auto nonce = j.find("nonce");
  if (nonce == j.end() || !nonce->is_string() || nonce->get_ref<const std::string&>().empty() ||
      nonce->get_ref<const std::string&>().size() > 1024)
    return absl::InvalidArgumentError("KBS auth reply has no usable nonce");
  auto extra = j.find("extra-params");
  if (extra != j.end() && !extra->is_string() && !extra->is_object())
    return absl::InvalidArgumentError("KBS auth reply: extra-params is neither a string nor an object");
  return nonce->get<std::string>();
}

StatusOr<ReportData> BindReportData(std::string_view nonce, const json& tee_pubkey) {
  COCO_ASSIGN_OR_RETURN(std::string canonical,
                        Canonicalize(json{{"additional-evidence", ""}, {"nonce", nonce}, {"tee-pubkey", tee_pubkey}}));
  ReportData out{};
  unsigned int len = 0;
  if (EVP_Digest(canonical.data(), canonical.size(), out.data(), &len, EVP_sha384(), nullptr) != 1 || len != out.size())
    return absl::InternalError("SHA-384 failed");
  return out;
}

std::string AttestRequestBody(std::string_view nonce, const json& tee_pubkey, const json& primary_evidence,
                              const std::optional<std::string>& init_data_toml) {
  json init = nullptr;
  if (init_data_toml) init = {{"format", "toml"}, {"body", *init_data_toml}};
  json j = {{"init-data", init},
            {"runtime-data", {{"nonce", nonce}, {"tee-pubkey", tee_pubkey}}},
            {"tee-evidence", {{"primary_evidence", primary_evidence}, {"additional_evidence", ""}}}};
  return j.dump();
}

StatusOr<std::string> ParseAttestResponse(std::string_view body) {
  COCO_ASSIGN_OR_RETURN(json j, ParseObject(body, "KBS attest reply"));
  auto token = j.find("token");
  if (token == j.end() || !token->is_string() || token->get_ref<const std::string&>().empty())
    return absl::InvalidArgumentError("KBS attest reply has no token");
  const std::string& t = token->get_ref<const std::string&>();
  // A JWT is three base64url parts; it goes into an HTTP header, so no
  // control characters or spaces may pass.
  for (char c : t)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == '='))
      return absl::InvalidArgumentError("KBS attest reply: token has characters a JWT cannot have");
  return t;
}

ErrorBody ParseErrorBody(std::string_view body) {
  ErrorBody out;
  if (body.size() > kMaxResponseBytes) return out;
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return out;
  if (auto t = j.find("type"); t != j.end() && t->is_string()) {
    std::string_view type = t->get_ref<const std::string&>();
    size_t slash = type.rfind('/');
    out.variant = Printable(slash == std::string_view::npos ? type : type.substr(slash + 1), 64);
  }
  if (auto d = j.find("detail"); d != j.end() && d->is_string())
    out.detail = Printable(d->get_ref<const std::string&>(), 256);
  return out;
}

StatusOr<std::string> ResourcePath(std::string_view kbs_uri) {
  COCO_RETURN_IF_ERROR(ValidateKbsResourceUri(kbs_uri));
  constexpr std::string_view kScheme = "kbs://";
  std::string_view rest = kbs_uri.substr(kScheme.size());
  // The authority (if any) is ignored: the configured KBS URL is used.
  rest = rest.substr(rest.find('/'));
  return Cat("/kbs/v0/resource", rest);
}

std::optional<std::string> SessionIdFromSetCookie(std::string_view header_value) {
  std::string_view first = header_value.substr(0, header_value.find(';'));
  first = TrimWhitespace(first);
  const std::string prefix = Cat(kSessionCookie, "=");
  if (first.substr(0, prefix.size()) != prefix) return std::nullopt;
  std::string_view id = first.substr(prefix.size());
  if (id.empty() || id.size() > 128) return std::nullopt;
  for (char c : id)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return std::nullopt;
  return std::string(id);
}

json SampleEvidence(const ReportData& report_data) {
  return {{"svn", "1"},
          {"report_data",
           Base64Encode(std::string_view(reinterpret_cast<const char*>(report_data.data()), report_data.size()))}};
}

}  // namespace cocostorage::agent::kbs
