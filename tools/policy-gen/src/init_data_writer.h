// The init-data document that carries the storage policy to the guest
// (design §2.1): version "0.1.0", the TEE's digest algorithm, and
// [data]."cocostorage.toml". Also its digest (what the host puts in SNP
// HOST_DATA / TDX MRCONFIGID) and the value of the pod annotation
// io.katacontainers.config.hypervisor.cc_init_data (base64 of gzip). Pure.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "cocostorage/common/status.h"

namespace cocostorage::policygen {

inline constexpr std::string_view kPolicyDataKey = "cocostorage.toml";
inline constexpr std::string_view kInitDataAnnotation = "io.katacontainers.config.hypervisor.cc_init_data";

// "snp" -> "sha256" (32-byte HOST_DATA), "tdx" -> "sha384" (48-byte MRCONFIGID).
StatusOr<std::string> AlgorithmForTee(std::string_view tee);

// A new init-data holding only the policy.
StatusOr<std::string> BuildInitData(std::string_view policy_toml, std::string_view algorithm);

// Adds the policy to an existing init-data (e.g. one holding policy.rego,
// aa.toml, cdh.toml): every other byte stays as it is; the entry is appended
// at the end of the [data] table. An existing cocostorage.toml is
// FAILED_PRECONDITION unless `replace` (then its lines are removed first).
// `algorithm`, when set, must equal the document's (FAILED_PRECONDITION).
// The result is re-parsed and checked: the other [data] entries must be
// unchanged and ours must read back exactly, else INTERNAL.
StatusOr<std::string> MergeInitData(std::string_view existing, std::string_view policy_toml,
                                    std::optional<std::string> algorithm, bool replace);

// Lower-case hex of the document's digest with its own algorithm.
StatusOr<std::string> InitDataDigestHex(std::string_view init_data);

// gzip with a fixed header (mtime 0, no name, OS "Unix"), so the same bytes
// always compress to the same stream with a given zlib.
StatusOr<std::string> GzipDeterministic(std::string_view data);

// base64(gzip(init-data)): the cc_init_data annotation value.
StatusOr<std::string> InitDataAnnotationValue(std::string_view init_data);

}  // namespace cocostorage::policygen
