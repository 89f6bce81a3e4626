// String helpers. Debian's absl is built with its own string_view, so the
// project uses fmt and these helpers instead of absl/strings.
#pragma once

#include <fmt/format.h>

#include <iterator>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "absl/strings/string_view.h"

namespace cocostorage {

// Splits on `sep`, dropping empty pieces when `skip_empty`.
std::vector<std::string> Split(std::string_view text, char sep, bool skip_empty = true);
std::string Join(const std::vector<std::string>& parts, std::string_view sep);
std::string_view TrimWhitespace(std::string_view s);
bool ParseUint64(std::string_view s, unsigned long long* out);
// Lower-case hex of the bytes: HexEncode("\x01\xab") == "01ab".
std::string HexEncode(std::string_view bytes);

namespace strings_internal {
inline void Append(std::string& out, std::string_view v) { out.append(v); }
inline void Append(std::string& out, const char* v) { out.append(v); }
inline void Append(std::string& out, const std::string& v) { out.append(v); }
inline void Append(std::string& out, absl::string_view v) { out.append(v.data(), v.size()); }
inline void Append(std::string& out, char v) { out.push_back(v); }
template <typename T>
requires std::is_arithmetic_v<T>
void Append(std::string& out, T v) { fmt::format_to(std::back_inserter(out), "{}", v); }
}  // namespace strings_internal

// Concatenates strings and numbers: Cat("volume ", id, " is ", size, " bytes").
template <typename... Args>
std::string Cat(const Args&... args) {
  std::string out;
  (strings_internal::Append(out, args), ...);
  return out;
}

}  // namespace cocostorage
