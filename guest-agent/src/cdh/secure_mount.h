// Transport adapter for the Confidential Data Hub's SecureMount, the call an
// unmodified kata-agent makes for a block storage with driver_options
// encryption_key=ephemeral + create_filesystem (block_handler.rs):
//
//   volume_type "block-device", flags [], mount_point <sandbox storage>/<b64url(source)>,
//   options {deviceId "MAJ:MIN", sourceType "empty", targetType "fileSystem",
//            filesystemType "ext4", mkfsOpts "-O ^has_journal -m 0 -i 163840 -I 128",
//            encryptionType "luks2", dataIntegrity "true"|"false"}
//
// (and the /dev/trusted_store caller: mount point /run/kata-containers/image,
// mkfsOpts "-E lazy_journal_init"). Translation only; admission applies the
// rules. Unknown volume types, option keys or values are refused with
// INVALID_ARGUMENT naming them: nothing is guessed.
#pragma once

#include <chrono>
#include <string>

#include "cdh/api.pb.h"
#include "cocostorage/common/status.h"
#include "request/activation.h"

namespace cocostorage::agent {

inline constexpr char kSecureMountService[] = "api.SecureMountService";
inline constexpr char kSecureMountMethod[] = "SecureMount";
// Where kata-agent connects (a constant there, not configurable).
inline constexpr char kCdhSocket[] = "/run/confidential-containers/cdh.sock";

StatusOr<ActivationRequest> ActivationFromSecureMount(const api::SecureMountRequest& req,
                                                      std::chrono::milliseconds device_timeout);

}  // namespace cocostorage::agent
