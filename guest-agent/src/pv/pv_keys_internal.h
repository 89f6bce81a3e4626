// The HKDF-SHA256 primitives under DeriveKeys (RFC 5869), exposed for the
// published test vectors. Not for other callers: DeriveKeys is the key
// hierarchy.
#pragma once

#include <cstdint>
#include <span>

#include "cocostorage/common/secure_buffer.h"
#include "cocostorage/common/status.h"

namespace cocostorage::agent::pv::internal {

// PRK = HMAC-SHA256(salt, ikm), 32 bytes.
StatusOr<SecureBuffer> HkdfExtract(std::span<const uint8_t> salt, std::span<const uint8_t> ikm);

// OKM = T(1) || T(2) || ... truncated to out.size() (at most 255 * 32 bytes).
// INVALID_ARGUMENT for a PRK shorter than 32 bytes or an empty/oversized out.
Status HkdfExpand(std::span<const uint8_t> prk, std::span<const uint8_t> info, std::span<uint8_t> out);

}  // namespace cocostorage::agent::pv::internal
