// Shared by the KBS unit tests: running the independent Python reference
// implementations (/usr/bin/python3, the repository's tests/kbs/kbs_jose.py).
#pragma once

#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "cocostorage/common/exec.h"
#include "cocostorage/common/status.h"
#include "cocostorage/common/strings.h"

namespace cocostorage::agent::kbs::kbs_testing {

inline constexpr char kPython[] = "/usr/bin/python3";

inline bool HavePython() { return access(kPython, X_OK) == 0; }

// Runs `argv` (no shell: common/exec.h) and returns its standard output; an
// error unless it exits 0.
inline StatusOr<std::string> RunCommand(std::vector<std::string> argv) {
  CommandSpec spec;
  spec.argv = std::move(argv);
  COCO_ASSIGN_OR_RETURN(CommandResult r, NewSystemCommandRunner()->Run(spec));
  if (r.exit_code != 0) return absl::InternalError(DescribeFailure(spec, r));
  return std::move(r.out);
}

inline std::string Unhex(std::string_view hex) {
  auto nibble = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(nibble(hex[i]) * 16 + nibble(hex[i + 1])));
  return out;
}

// A flattened JWE of `payload` for `public_jwk`, built by tests/kbs/kbs_jose.py
// (Python's cryptography); `alg` / `enc` override the header (hostile inputs).
inline StatusOr<std::string> PythonJwe(const nlohmann::json& public_jwk, std::string_view payload,
                                       std::string_view alg = "", std::string_view enc = "") {
  std::vector<std::string> argv = {kPython,           Cat(COCOSTORAGE_SOURCE_DIR, "/tests/kbs/kbs_jose.py"),
                                   "encrypt",         "--jwk",
                                   public_jwk.dump(), "--payload-hex",
                                   HexEncode(payload)};
  if (!alg.empty()) argv.insert(argv.end(), {"--alg", std::string(alg)});
  if (!enc.empty()) argv.insert(argv.end(), {"--enc", std::string(enc)});
  return RunCommand(std::move(argv));
}

}  // namespace cocostorage::agent::kbs::kbs_testing
