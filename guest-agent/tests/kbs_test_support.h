// Test support for the KBS client: the independent JWE generator
// (tests/kbs/kbs_jose.py, Python `cryptography`) as a C++ call.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "cocostorage/common/exec.h"
#include "cocostorage/common/strings.h"

namespace cocostorage::agent::kbs::testing {

inline std::string HexOf(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

// A flattened JWE of `payload` for `public_jwk`, built by Python; "" on failure.
inline std::string PythonJwe(const nlohmann::json& public_jwk, std::string_view payload,
                             const std::string& alg_override = "") {
  auto runner = NewSystemCommandRunner();
  CommandSpec spec;
  spec.argv = {"/usr/bin/python3", Cat(COCOSTORAGE_SOURCE_DIR, "/tests/kbs/kbs_jose.py"),
               "encrypt",          "--jwk",
               public_jwk.dump(),  "--payload-hex",
               HexOf(payload)};
  if (!alg_override.empty()) {
    spec.argv.push_back("--alg");
    spec.argv.push_back(alg_override);
  }
  auto r = runner->Run(spec);
  if (!r.ok() || r->exit_code != 0) return "";
  return r->out;
}

}  // namespace cocostorage::agent::kbs::testing
