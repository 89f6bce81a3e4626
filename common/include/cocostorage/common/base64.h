// Base64 (RFC 4648). Base64UrlEncode is Go's base64.URLEncoding (URL-safe
// alphabet, '=' padding), which Kata uses to name a direct volume's directory
// and a sandbox storage's mount point. The other encoders and the strict
// decoder serve the KBS protocol: standard base64 for nonces and report data,
// base64url without padding for JOSE (RFC 7515 §2). One copy for all binaries.
#pragma once

#include <string>
#include <string_view>

#include "cocostorage/common/status.h"

namespace cocostorage {

enum class Base64Alphabet {
  kStandard,  // RFC 4648 §4: A-Z a-z 0-9 + /
  kUrl,       // RFC 4648 §5: A-Z a-z 0-9 - _
};

enum class Base64Padding {
  kRequired,  // length a multiple of 4, '=' filling the last quantum
  kNone,      // no '=' at all (JOSE's base64url)
};

std::string Base64UrlEncode(std::string_view data);       // URL alphabet, padded
std::string Base64Encode(std::string_view data);          // standard alphabet, padded
std::string Base64UrlEncodeNoPad(std::string_view data);  // URL alphabet, no padding

// Strict decoding: exactly one accepted spelling per byte string. Refuses
// (INVALID_ARGUMENT) characters outside `alphabet` (including whitespace and
// the other alphabet's 62nd/63rd characters), padding other than `padding`
// asks for, a length no encoding produces, and non-zero unused bits in the
// last character (a non-canonical encoding).
StatusOr<std::string> Base64Decode(std::string_view text, Base64Alphabet alphabet, Base64Padding padding);

}  // namespace cocostorage
