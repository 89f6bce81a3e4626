// The attested storage policy (docs/design.md, "Attested storage policy"): the
// document the workload's owner puts into the VM's init-data under
// [data]."cocostorage.toml". It declares every volume the guest may create,
// open or mount; nothing absent from it is allowed. Pure: parsing and
// serialization only (the digest check lives in policy_source.h, matching a
// request in matcher.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cocostorage/common/status.h"
#include "core/key_source.h"
#include "core/volume_spec.h"
#include "request/activation.h"

namespace cocostorage::agent::policy {

inline constexpr std::string_view kSchemaName = "cocostorage.dev/storage-policy";
inline constexpr uint32_t kSchemaVersion = 1;
// Bounds on the document (it is attested, but a bug in the generator or a
// careless owner must not make the agent allocate without limit).
inline constexpr size_t kMaxPolicyBytes = 64 * 1024;
inline constexpr size_t kMaxVolumes = 64;
inline constexpr size_t kMaxStringBytes = 256;
inline constexpr size_t kMaxListItems = 32;

enum class VolumeKind { kEphemeral, kPersistent };
const char* VolumeKindName(VolumeKind k);  // "ephemeral", "persistent"

// Whether a blank device may become this persistent volume (issue 12).
enum class CreateRule { kNever, kIfBlank };
const char* CreateRuleName(CreateRule c);  // "never", "if-blank"

// How a device is proven blank before a persistent volume is created on it.
enum class BlankCheck { kStructural, kFull };
const char* BlankCheckName(BlankCheck b);  // "structural", "full"

struct VolumeRule {
  std::string id;  // ValidateVolumeId syntax; unique in the document
  VolumeKind kind = VolumeKind::kEphemeral;
  KeySource key = KeySource::Ephemeral();  // ephemeral <=> KeySource::Ephemeral()
  CreateRule create = CreateRule::kNever;  // persistent only
  BlankCheck blank_check = BlankCheck::kStructural;  // persistent only
  // Allowed integrity modes; never empty; the first is the default when a
  // request leaves integrity unset. Persistent: exactly one.
  std::vector<IntegrityMode> integrity;
  bool block_mode = false;  // mode = "block" | "filesystem"
  std::string fs_type;      // "ext4" | "xfs"; empty in block mode
  // Filesystem mode only. A request's mkfs words must equal this list exactly
  // (same words, same order) or be empty, in which case these are used.
  std::vector<std::string> mkfs_options;
  // Each mount option a request carries must be one of these.
  std::vector<std::string> mount_options;
  bool read_only = false;  // true: the volume is always mounted read-only
  uint64_t min_size_bytes = 0;  // device size bounds, inclusive
  uint64_t max_size_bytes = 0;  // required, >= min_size_bytes, > 0
  std::vector<Origin> routes;   // transports that may activate it; never empty
  // For the generator's Rego only (the agent never sees container paths).
  std::string container_path;

  bool operator==(const VolumeRule&) const = default;
};

// How an ambiguous blank SecureMount device is resolved (design §2.4).
struct BlankDeviceRule {
  enum class Kind { kDeny, kEphemeral, kVolume };
  Kind kind = Kind::kDeny;
  std::string volume_id;  // kVolume: a persistent rule's id
  bool operator==(const BlankDeviceRule&) const = default;
};

struct StoragePolicy {
  uint32_t schema_version = kSchemaVersion;
  uint32_t policy_version = 1;  // owner-chosen, >= 1, monotonic (a KBS can pin a minimum)
  std::string workload;         // informational, logged with every decision
  // How many ephemeral volumes may be active at once in this VM. Absent from
  // the document: the number of ephemeral rules.
  uint32_t max_ephemeral_volumes = 0;
  BlankDeviceRule secure_mount_blank_device;
  std::vector<VolumeRule> volumes;

  const VolumeRule* Find(std::string_view id) const;
  bool operator==(const StoragePolicy&) const = default;
};

// Strict: unknown keys, wrong types, duplicate ids, values out of bounds and
// inconsistent combinations are INVALID_ARGUMENT naming the key
// ("volume[2].integrity: ..."). Never a partially applied policy.
StatusOr<StoragePolicy> ParseStoragePolicy(std::string_view toml_text);

// Canonical TOML (fixed key order, sizes in bytes with the largest exact
// binary suffix): ParseStoragePolicy(SerializeStoragePolicy(p)) == p, and the
// same policy always gives the same bytes (the generator's output is hashed).
std::string SerializeStoragePolicy(const StoragePolicy& p);

// "1Gi" -> 1073741824; accepts a bare number of bytes and Ki/Mi/Gi/Ti.
StatusOr<uint64_t> ParseSize(std::string_view text);
std::string FormatSize(uint64_t bytes);

}  // namespace cocostorage::agent::policy
