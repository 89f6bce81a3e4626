// Building blocks of jose.cc, exposed for their known-answer tests (RFC 3394,
// RFC 7518 Appendix C). Not an API for other modules: use TeeKeyPair.
#pragma once

#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "cocostorage/common/secure_buffer.h"
#include "cocostorage/common/status.h"

namespace cocostorage::agent::kbs::jose_internal {

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

// A big-endian unsigned integer left-padded with zero bytes to `width`
// (a JWK's EC coordinate, RFC 7518 §6.2.1.2). INVALID_ARGUMENT if longer.
StatusOr<std::string> LeftPad(std::string_view big_endian, size_t width);

// A P-256 public key from its affine coordinates (32 big-endian bytes each).
// INVALID_ARGUMENT unless (x, y) is a point on the curve (OpenSSL refuses it
// at import; a public-key check runs as well).
StatusOr<PkeyPtr> ImportP256PublicKey(std::string_view x, std::string_view y);

// The ECDH shared secret Z (the x coordinate, 32 bytes for P-256).
StatusOr<SecureBuffer> EcdhSharedSecret(EVP_PKEY* own, EVP_PKEY* peer);

// RFC 7518 §4.6.2 (NIST SP 800-56A Concat KDF, SHA-256): AlgorithmID =
// `alg_id`, PartyUInfo = `apu`, PartyVInfo = `apv` (each length-prefixed),
// SuppPubInfo = `key_bits` as u32be, SuppPrivInfo empty.
StatusOr<SecureBuffer> ConcatKdfSha256(std::span<const uint8_t> z, std::string_view alg_id, std::string_view apu,
                                       std::string_view apv, size_t key_bits);

// RFC 3394 AES key unwrap with a 256-bit KEK and the default IV.
// PERMISSION_DENIED when the integrity check fails.
StatusOr<SecureBuffer> AesKeyUnwrap(std::span<const uint8_t> kek, std::string_view wrapped);

// AES-256-GCM with a 12-byte IV and a 16-byte tag. PERMISSION_DENIED when the
// tag does not verify (nothing of the plaintext is returned then). An empty
// ciphertext yields an empty buffer.
StatusOr<SecureBuffer> Aes256GcmDecrypt(std::span<const uint8_t> key, std::string_view iv, std::string_view aad,
                                        std::string_view ciphertext, std::string_view tag);

}  // namespace cocostorage::agent::kbs::jose_internal
