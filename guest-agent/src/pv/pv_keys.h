// Key hierarchy of a persistent volume (docs/design.md, "Persistent volumes",
// §4.2): the KBS releases one 32-byte root per volume (or per class); every key
// the volume uses is derived from it with HKDF-SHA256 (RFC 5869) and bound to
// the volume id, so two volumes under one root still have distinct keys and
// presenting one as the other fails the key check. Pure (OpenSSL EVP_KDF).
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "cocostorage/common/secure_buffer.h"
#include "cocostorage/common/status.h"
#include "core/volume_spec.h"

namespace cocostorage::agent::pv {

inline constexpr size_t kRootKeyBytes = 32;
inline constexpr size_t kKcvBytes = 16;
inline constexpr size_t kMacKeyBytes = 32;

using Kcv = std::array<uint8_t, kKcvBytes>;

struct PersistentKeys {
  SecureBuffer luks_key;  // suite.key_bytes: the dm-crypt (+ integrity) volume key
  SecureBuffer mac_key;   // 32: HMAC-SHA256 key of the superblock slots
  Kcv kcv{};              // key-check value, stored in clear in the superblock
};

// FAILED_PRECONDITION when `root` is not exactly kRootKeyBytes (never
// truncated or padded); INVALID_ARGUMENT for an id failing ValidateVolumeId.
//   PRK     = HKDF-Extract(salt "cocostorage.dev/pv/v1", IKM root)
//   ctx     = u8(len(id)) || id
//   K_luks  = Expand(PRK, "luks-volume-key" 0x00 suite 0x00 ctx, suite.key_bytes)
//   K_mac   = Expand(PRK, "header-mac" 0x00 ctx, 32)
//   KCV     = Expand(PRK, "key-check" 0x00 ctx, 16)
// where `suite` is IntegrityName(integrity) ("hmac-sha256", "none", ...).
StatusOr<PersistentKeys> DeriveKeys(const SecureBuffer& root, std::string_view volume_id, IntegrityMode integrity);

}  // namespace cocostorage::agent::pv
