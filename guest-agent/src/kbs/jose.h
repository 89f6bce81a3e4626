// The JOSE pieces of the KBS protocol (kbs-protocol.md): the guest's
// ephemeral TEE key pair, its public JWK exactly as trustee binds it, and
// decryption of the flattened JWE a KBS answers a resource request with.
// Parsers here see bytes from the network: strict, bounded, pure apart from
// OpenSSL. Key material stays in OpenSSL objects and SecureBuffers.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "cocostorage/common/secure_buffer.h"
#include "cocostorage/common/status.h"

namespace cocostorage::agent::kbs {

// Key-management algorithm of the TEE key (`alg` of the JWK and the JWE).
// RSA1_5 and everything else are refused, never negotiated down to.
enum class KeyAlgorithm { kEcdhEsA256Kw, kRsaOaep256 };

std::string_view KeyAlgorithmName(KeyAlgorithm alg);  // "ECDH-ES+A256KW" | "RSA-OAEP-256"
StatusOr<KeyAlgorithm> ParseKeyAlgorithm(std::string_view name);

// Largest JWE (serialized JSON) Decrypt accepts; a volume key is 64 bytes.
inline constexpr size_t kMaxJweBytes = size_t{64} * 1024;

class TeeKeyPair {
 public:
  // A fresh key: P-256 for ECDH-ES+A256KW, RSA-3072 (e = 65537) for RSA-OAEP-256.
  static StatusOr<TeeKeyPair> Generate(KeyAlgorithm alg);
  ~TeeKeyPair();
  TeeKeyPair(TeeKeyPair&&) noexcept;
  TeeKeyPair& operator=(TeeKeyPair&&) noexcept;

  KeyAlgorithm algorithm() const { return alg_; }
  // Exactly {kty, crv, alg, x, y} (EC; coordinates base64url, no padding,
  // left-padded to 32 bytes) or {kty, alg, n, e} (RSA, minimal big-endian).
  // Any other member would break the report-data binding.
  nlohmann::json PublicJwk() const;

  // Decrypts a KBS resource reply: a flattened JWE JSON object with members
  // protected, encrypted_key, iv, ciphertext, tag (an `aad` or unknown member
  // is refused). The protected header's alg must be this key's algorithm, enc
  // must be A256GCM; for ECDH-ES+A256KW it carries epk (P-256, a point on the
  // curve); `zip` or `crit` are refused. GCM's additional data is the
  // `protected` string as received. Duplicate member names (anywhere) are
  // refused rather than resolved; epk has exactly kty, crv, x, y; apu / apv,
  // when the header has them, enter the Concat KDF as RFC 7518 §4.6.2 says
  // (kbs-protocol.md has both empty). INVALID_ARGUMENT for malformed input,
  // PERMISSION_DENIED when authentication fails (wrong key, tampered bytes).
  // The plaintext is returned in locked memory.
  StatusOr<SecureBuffer> Decrypt(std::string_view jwe_json) const;

 private:
  struct Impl;
  TeeKeyPair(KeyAlgorithm alg, std::unique_ptr<Impl> impl);
  KeyAlgorithm alg_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cocostorage::agent::kbs
