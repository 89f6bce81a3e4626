// The KBS protocol's reply parsers, fed the same hostile body: the auth
// challenge, the attest token, an error body, a Set-Cookie header, and a
// resource URI; a parsed nonce is then bound into report data.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "kbs/protocol.h"

using namespace cocostorage::agent::kbs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  auto nonce = ParseChallenge(body);
  if (nonce.ok()) {
    const nlohmann::json jwk = {{"kty", "EC"}, {"crv", "P-256"}, {"alg", "ECDH-ES+A256KW"}, {"x", "AA"}, {"y", "AA"}};
    (void)BindReportData(*nonce, jwk);
  }
  (void)ParseAttestResponse(body);
  ErrorBody e = ParseErrorBody(body);
  for (char c : e.variant + e.detail) {
    if (c < 0x20 || c > 0x7e) abort();  // documented: printable ASCII only
  }
  (void)SessionIdFromSetCookie(body);
  (void)ResourcePath(body);
  return 0;
}
