// A KBS resource reply (flattened JWE JSON) decrypted with the guest's TEE
// key: one EC and one RSA key, each generated once per process. The fuzzer
// cannot forge the tag; it exercises every parser before it (JSON, duplicate
// members, base64url, the protected header, epk, the key unwrap).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "kbs/jose.h"

using namespace cocostorage::agent::kbs;

namespace {

const TeeKeyPair& Key(KeyAlgorithm alg) {
  static TeeKeyPair* ec = nullptr;
  static TeeKeyPair* rsa = nullptr;
  TeeKeyPair*& slot = alg == KeyAlgorithm::kEcdhEsA256Kw ? ec : rsa;
  if (slot == nullptr) {
    auto k = TeeKeyPair::Generate(alg);
    if (!k.ok()) abort();
    slot = new TeeKeyPair(std::move(*k));
  }
  return *slot;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte picks the key; the rest is the reply body.
  const KeyAlgorithm alg = (data[0] & 1) != 0 ? KeyAlgorithm::kRsaOaep256 : KeyAlgorithm::kEcdhEsA256Kw;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  auto plain = Key(alg).Decrypt(body);
  (void)plain;
  return 0;
}
