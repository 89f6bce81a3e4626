// Transport adapter for a Kata agent Storage: what kata-agent hands a guest
// storage handler for a direct-assigned block volume (driver "blk", source =
// the guest PCI path such as "02/00", driver_options from mountInfo.json's
// metadata, mount_point = <sandbox storage dir>/<base64url(source)>).
//
// It only translates; the admission layer (request/admission.h) applies the
// rules, including the Kata policy's (source shape, mount point). No I/O.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "cocostorage/common/status.h"
#include "request/activation.h"

namespace cocostorage::agent {

// Where the Kata agent mounts sandbox storages inside the guest.
inline constexpr char kKataSandboxStorageDir[] = "/run/kata-containers/sandbox/storage";
// Our metadata / driver-option key prefix.
inline constexpr char kCocoKeyPrefix[] = "cocostorage.dev/";

// The subset of the Kata agent's Storage message a direct block volume uses.
struct KataStorage {
  std::string driver;                       // "blk"
  std::vector<std::string> driver_options;  // "encryption_key=ephemeral", "create_filesystem", ...
  std::string source;                       // guest PCI path, "02/00"
  std::string fs_type;
  std::vector<std::string> options;  // mount options
  std::string mount_point;           // kKataSandboxStorageDir/<base64url(source)>
};

// Storage -> ActivationRequest (origin kKataStorage). INVALID_ARGUMENT naming
// the field for anything malformed, unknown or contradictory; never guesses.
// target_path is the mount point in both modes: a mounted directory for
// filesystem volumes, the block device node itself for block volumes.
//
// The key source. The CSI plugin presents every volume to kata-agent as
// encryption_key=ephemeral (+ create_filesystem in filesystem mode), the only
// options for which kata-agent calls the CDH slot instead of mounting the
// device in plaintext; what the volume is comes in two hints:
//   cocostorage.dev/kind            "persistent" | "ephemeral" (absent: ephemeral)
//   cocostorage.dev/kbsResourceUri  the persistent volume's KBS resource URI
// Rules (violations are INVALID_ARGUMENT naming the option):
//   - kind=persistent requires kbsResourceUri; with encryption_key=ephemeral
//     the key is that KBS resource (a persistent volume), and create_filesystem
//     is accepted with or without (the device's header decides create vs open).
//   - kbsResourceUri without kind=persistent is refused.
//   - encryption_key=ephemeral, kind ephemeral or absent: an ephemeral key
//     (filesystem mode requires create_filesystem).
//   - encryption_key=kbs:///... (the older spelling) is a KBS key as before;
//     with kind=ephemeral it is refused, with kind=persistent the hint must
//     name the same URI.
// These are host hints like everything here: the attested storage policy,
// when present, matches the resulting key against its own (policy/matcher.h).
// Unknown cocostorage.dev/ keys are refused.
StatusOr<ActivationRequest> ActivationFromKataStorage(const KataStorage& storage,
                                                      std::chrono::milliseconds device_timeout);

// Makes any string a valid agent volume id ([A-Za-z0-9][A-Za-z0-9_.-]{0,63}):
// other characters become '-', a non-alphanumeric start gets a "v" prefix, and
// an over-long id keeps its first 47 characters plus a 16-hex-digit hash of
// the whole (so distinct long ids stay distinct).
std::string SanitizeVolumeId(std::string_view id);

}  // namespace cocostorage::agent
