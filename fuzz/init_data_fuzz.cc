// Init-data TOML as the VM was launched with it: the parser, and the digest
// check against its own digest (which must pass).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "kbs/init_data.h"

using namespace cocostorage::agent::kbs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto parsed = ParseInitData(std::string(reinterpret_cast<const char*>(data), size));
  if (!parsed.ok()) return 0;
  if (!VerifyInitDataDigest(*parsed, DigestHex(*parsed)).ok()) abort();
  return 0;
}
