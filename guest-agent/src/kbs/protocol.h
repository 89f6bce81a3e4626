// Trustee KBS protocol 0.4.0 (kbs-protocol.md): the request bodies the guest
// sends and strict parsers of what the (untrusted, until it proves otherwise
// by answering under our attested key) server returns. Pure: no I/O.
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "cocostorage/common/status.h"

namespace cocostorage::agent::kbs {

inline constexpr std::string_view kProtocolVersion = "0.4.0";
inline constexpr std::string_view kSessionCookie = "kbs-session-id";
// Bounds on what we accept from the server (a volume key reply is < 1 KiB).
inline constexpr size_t kMaxResponseBytes = 256 * 1024;

using ReportData = std::array<uint8_t, 48>;

// POST /kbs/v0/auth body.
std::string AuthRequestBody(std::string_view tee);

// The auth reply's nonce, verbatim (it is echoed, never decoded by trustee's
// client either); `extra-params` may be a string or an object.
StatusOr<std::string> ParseChallenge(std::string_view body);

// SHA-384(JCS({"additional-evidence": "", "nonce": nonce, "tee-pubkey": jwk})).
StatusOr<ReportData> BindReportData(std::string_view nonce, const nlohmann::json& tee_pubkey);

// POST /kbs/v0/attest body. `init_data_toml` = the raw TOML the VM was
// launched with, sent as {"format":"toml","body":...}; nullopt sends null.
std::string AttestRequestBody(std::string_view nonce, const nlohmann::json& tee_pubkey,
                              const nlohmann::json& primary_evidence, const std::optional<std::string>& init_data_toml);

// The attest reply's token (a JWT; not verified by the client, as in trustee's
// client: only the KBS reads it).
StatusOr<std::string> ParseAttestResponse(std::string_view body);

// A KBS error body {"type": ".../errors/<Variant>", "detail": ...}; the variant
// and detail are clipped and reduced to printable ASCII, because they end up
// in our error messages and logs. Empty strings when the body is not one.
struct ErrorBody {
  std::string variant;
  std::string detail;
};
ErrorBody ParseErrorBody(std::string_view body);

// kbs:///repo/type/tag (a KeySource-validated URI) → /kbs/v0/resource/repo/type/tag.
StatusOr<std::string> ResourcePath(std::string_view kbs_uri);

// The session id from one Set-Cookie header value, if it sets kbs-session-id.
std::optional<std::string> SessionIdFromSetCookie(std::string_view header_value);

// The `sample` attester's primary evidence for `report_data` (trustee's
// sample verifier: {"svn": "1", "report_data": base64}).
nlohmann::json SampleEvidence(const ReportData& report_data);

}  // namespace cocostorage::agent::kbs
