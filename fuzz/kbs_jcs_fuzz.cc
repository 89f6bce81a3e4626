// JCS (RFC 8785) of any JSON value nlohmann accepts: canonicalization must
// not crash and must be idempotent (the canonical form re-parsed and
// canonicalized again gives the same bytes). One documented exception: a
// large double is written in integer form ("9055555555555556000"), which
// nlohmann re-parses as an integer, and integers beyond 2^53 are refused.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>

#include "kbs/jcs.h"

using namespace cocostorage::agent::kbs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  auto once = Canonicalize(j);
  if (!once.ok()) return 0;
  nlohmann::json again = nlohmann::json::parse(*once, nullptr, false);
  if (again.is_discarded()) abort();  // JCS output must be JSON
  auto twice = Canonicalize(again);
  if (!twice.ok()) {
    if (!again.is_array() && !again.is_object() && !again.is_number_integer() && !again.is_number_unsigned()) abort();
    if (twice.status().message().find("not exactly representable") == std::string_view::npos) abort();
    return 0;
  }
  if (*twice != *once) abort();
  return 0;
}
