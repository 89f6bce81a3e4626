// Base64 with the URL-safe alphabet (RFC 4648 section 5) and '=' padding: Go's
// base64.URLEncoding, which Kata uses to name a direct volume's directory and
// a sandbox storage's mount point. One copy for both binaries.
#pragma once

#include <string>
#include <string_view>

namespace cocostorage {

std::string Base64UrlEncode(std::string_view data);

}  // namespace cocostorage
