// Echoing untrusted input in messages: printable ASCII only, bounded length,
// so an error or log line never carries a megabyte (or a terminal escape) the
// host sent.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace cocostorage::agent {

inline constexpr size_t kMaxEcho = 96;

// "\"value\"" with non-printable bytes as '?' and "..." past `max` bytes.
std::string Quoted(std::string_view s, size_t max = kMaxEcho);

}  // namespace cocostorage::agent

namespace cocostorage::agent {

// Character classes for hand-written allowlist checks (no std::regex on
// untrusted input: its backtracking recursion overflowed the stack on a long
// value).
inline bool IsDigit(char c) { return c >= '0' && c <= '9'; }
inline bool IsLowerHex(char c) { return IsDigit(c) || (c >= 'a' && c <= 'f'); }
inline bool IsLower(char c) { return c >= 'a' && c <= 'z'; }
inline bool IsAlnum(char c) { return IsDigit(c) || IsLower(c) || (c >= 'A' && c <= 'Z'); }

// True when `s` has between `min` and `max` characters, each satisfying `pred`.
template <typename Pred>
bool CharsAre(std::string_view s, size_t min, size_t max, Pred pred) {
  if (s.size() < min || s.size() > max) return false;
  for (char c : s) {
    if (!pred(c)) return false;
  }
  return true;
}

// Decimal digits only, 1..max_digits of them.
inline bool IsDecimal(std::string_view s, size_t max_digits) { return CharsAre(s, 1, max_digits, IsDigit); }

}  // namespace cocostorage::agent
