// RFC 8785 JSON Canonicalization Scheme: the exact bytes trustee hashes to
// bind the nonce and the TEE public key into the evidence's report data.
// Pure; no I/O.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "cocostorage/common/status.h"

namespace cocostorage::agent::kbs {

// Members sorted by their UTF-16 code units, no whitespace, strings escaped
// as RFC 8785 §3.2.2.2 says, numbers serialized as ECMAScript does
// (§3.2.2.3). INVALID_ARGUMENT for what JCS cannot represent (NaN, infinity,
// invalid UTF-8, integers beyond IEEE-754 double precision).
StatusOr<std::string> Canonicalize(const nlohmann::json& value);

}  // namespace cocostorage::agent::kbs
