// Shared by the KBS unit tests: running the independent Python reference
// implementations (/usr/bin/python3, the repository's tests/kbs/kbs_jose.py).
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "cocostorage/common/status.h"
#include "cocostorage/common/strings.h"

namespace cocostorage::agent::kbs::kbs_testing {

inline constexpr char kPython[] = "/usr/bin/python3";

inline bool HavePython() { return access(kPython, X_OK) == 0; }

// 'text' for /bin/sh.
inline std::string ShellQuote(std::string_view text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  out.push_back('\'');
  return out;
}

// Runs `command` with /bin/sh and returns its standard output; an error
// unless it exits 0.
inline StatusOr<std::string> RunCommand(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return absl::InternalError(Cat("popen failed for ", command));
  std::string out;
  char buf[4096];
  size_t n = 0;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  const int status = pclose(pipe);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(Cat("command failed (status ", status, "): ", command));
  }
  return out;
}

inline std::string Hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (char c : bytes) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back(kDigits[u >> 4]);
    out.push_back(kDigits[u & 0xf]);
  }
  return out;
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
  std::string command = Cat(kPython, " ", COCOSTORAGE_SOURCE_DIR, "/tests/kbs/kbs_jose.py encrypt --jwk ",
                            ShellQuote(public_jwk.dump()), " --payload-hex ", ShellQuote(Hex(payload)));
  if (!alg.empty()) command += Cat(" --alg ", ShellQuote(alg));
  if (!enc.empty()) command += Cat(" --enc ", ShellQuote(enc));
  return RunCommand(command);
}

}  // namespace cocostorage::agent::kbs::kbs_testing
