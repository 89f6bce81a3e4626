// Init-data: the TOML document the VM was launched with (kata-agent leaves it
// at /run/confidential-containers/initdata/initdata.toml). Its digest is bound
// to the TEE's launch measurement (SNP HOST_DATA / TDX MRCONFIGID) and the KBS
// sees the same bytes in the attest request. Parsing is pure.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "cocostorage/common/status.h"

namespace cocostorage::agent::kbs {

inline constexpr char kInitDataPath[] = "/run/confidential-containers/initdata/initdata.toml";
inline constexpr size_t kMaxInitDataBytes = 1 << 20;

struct InitData {
  std::string raw;        // the TOML bytes exactly as received (what is hashed and sent)
  std::string algorithm;  // sha256 | sha384 | sha512
  std::string version;
  std::vector<uint8_t> digest;              // hash of `raw` with `algorithm`
  std::map<std::string, std::string> data;  // the [data] table
};

// version = "0.1.0", algorithm one of the three, [data] string → string, no
// other top-level keys. INVALID_ARGUMENT naming what is wrong.
StatusOr<InitData> ParseInitData(std::string raw);

// PERMISSION_DENIED unless the digest equals `expected_hex` (case-insensitive
// hex of the algorithm's length).
Status VerifyInitDataDigest(const InitData& init_data, std::string_view expected_hex);

// Lower-case hex of the digest (for logs, messages and KBS policies).
std::string DigestHex(const InitData& init_data);

}  // namespace cocostorage::agent::kbs
