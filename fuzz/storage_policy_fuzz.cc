// The attested storage policy (cocostorage.toml in init-data): the parser
// never crashes, and whatever it accepts survives serialization unchanged
// (the generator hashes the serialized text; the agent parses it back).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "policy/storage_policy.h"

using namespace cocostorage::agent::policy;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto parsed = ParseStoragePolicy(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!parsed.ok()) return 0;
  const std::string text = SerializeStoragePolicy(*parsed);
  auto again = ParseStoragePolicy(text);
  if (!again.ok() || !(*again == *parsed)) abort();
  if (SerializeStoragePolicy(*again) != text) abort();
  return 0;
}
