// Validation of the mkfs and mount options a request may carry.
//
// The host is untrusted, so options are an allowlist, not a denylist: an
// option that could read other files into the filesystem (mkfs.ext4 -d), read
// the whole device (-c), point at another device (xfs -r rtdev, -l logdev) or
// weaken durability is refused with INVALID_ARGUMENT.
#pragma once

#include <string>
#include <vector>

#include "cocostorage/common/status.h"

namespace cocostorage::agent {

bool IsSupportedFsType(const std::string& fs_type);
std::vector<std::string> SupportedFsTypes();

// Each element of `options` is one argv word ("-m", "0", "-O", "^has_journal").
Status ValidateMkfsOptions(const std::string& fs_type, const std::vector<std::string>& options);

struct ParsedMountOptions {
  unsigned long flags = 0;  // MS_* flags
  std::string data;         // comma-joined filesystem-specific options
};
StatusOr<ParsedMountOptions> ParseMountOptions(const std::string& fs_type, const std::vector<std::string>& options,
                                               bool read_only);

// The filesystem-specific mount data the agent passes to mount(2): `data`
// from ParseMountOptions, plus what the guard makes pointless (see
// BuildMkfsArgv).
std::string MountDataFor(const std::string& fs_type, const std::string& data, bool guarded);

struct MkfsRules {
  // Never-written blocks read as zeros (zero guard): ext4 may skip
  // inode-table and journal zeroing.
  bool guarded = true;
  // ext4 without a journal: acceptable where the data dies with the VM
  // (ephemeral keys: a crash ends the VM and the key with it).
  bool journal_removable = true;
};

// The mkfs argv the agent runs: the request's options (validated) merged
// with the agent's required ones, which it may add to but never remove or
// override. INVALID_ARGUMENT on a conflict or a repeated single-valued flag.
StatusOr<std::vector<std::string>> BuildMkfsArgv(const std::string& fs_type,
                                                 const std::vector<std::string>& user_options,
                                                 const std::string& device, const MkfsRules& rules);

}  // namespace cocostorage::agent
