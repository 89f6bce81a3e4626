// The agent's internal description of a volume: what was asked for, after
// validation. Independent of the wire format so the orchestration logic can be
// tested without gRPC. Holds no secrets (a KBS URI is a name, not a key).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cocostorage/common/status.h"
#include "core/key_source.h"

namespace cocostorage::agent {

// A volume id: 1-64 characters of [A-Za-z0-9_.-], the first alphanumeric
// (it names device-mapper mappings and state files).
Status ValidateVolumeId(const std::string& id);

enum class DeviceIdKind { kPciPath, kSerial, kDevNumber };

struct DeviceId {
  DeviceIdKind kind = DeviceIdKind::kPciPath;
  std::string value;
  std::string Describe() const;
  bool operator==(const DeviceId&) const = default;
};

enum class IntegrityMode { kNone, kHmacSha256, kAegis128, kAesGcm };
enum class InitMode { kZeroGuard, kFullWipe };

// What libcryptsetup is asked to build for an integrity mode.
struct CipherSuite {
  std::string cipher;       // "aes"
  std::string cipher_mode;  // "xts-plain64"
  std::string integrity;    // "hmac(sha256)", "aead" or "" for none
  size_t key_bytes = 0;     // volume key incl. the integrity key part
  std::string Describe() const { return cipher + "-" + cipher_mode; }
};
CipherSuite SuiteFor(IntegrityMode mode);

const char* IntegrityName(IntegrityMode m);  // "hmac-sha256", "none", "aegis128", "aes-gcm"
StatusOr<IntegrityMode> ParseIntegrityName(const std::string& name);

struct VolumeSpec {
  std::string id;
  DeviceId device;
  KeySource key = KeySource::Ephemeral();
  IntegrityMode integrity = IntegrityMode::kHmacSha256;
  InitMode init_mode = InitMode::kZeroGuard;
  bool block_mode = false;
  std::string fs_type;  // empty in block mode
  std::vector<std::string> mkfs_options;
  std::vector<std::string> mount_options;
  std::optional<int64_t> fs_group;
  std::string target_path;
  bool read_only = false;
  // The storage-policy rules (ids) this request matched, in policy order;
  // empty when the agent runs without a policy. Which of them admits the
  // device is decided when it is claimed (its size is known only then).
  std::vector<std::string> policy_rules;
  // kata-agent only unmounts a SecureMount volume when its pod is done; the
  // agent then tears the rest down itself (VolumeManager::ReapUnmounted).
  bool teardown_on_unmount = false;
  // Persistent (KBS-keyed) volumes: whether a provably blank device may
  // become this volume. The attested policy's `create` decides when there is
  // one; a device that holds anything is never formatted either way.
  bool create_if_blank = true;
  // The policy's blank_check = "full": before creating, every byte of the
  // device must read as zero, not only the places an earlier volume would
  // have written (the structural proof).
  bool full_blank_check = false;
  // A persistent volume's identity: what its header records and its keys are
  // bound to. Empty: `id` (our API names volumes by their identity; a
  // SecureMount record is named by its mount point instead).
  std::string persistent_id;
  // SecureMount under a policy: persistent rules (ids) this request may turn
  // out to be once the device is read (docs/design.md §2.4). Never stored
  // for an activated volume: routing resolves them.
  std::vector<std::string> persistent_candidates;

  // A KBS key means data that outlives the activation: the volume's header is
  // on the disk (docs/design.md, "Persistent volumes").
  bool persistent() const { return !key.ephemeral(); }
  const std::string& PvId() const { return persistent_id.empty() ? id : persistent_id; }
  bool integrity_enabled() const { return integrity != IntegrityMode::kNone; }
  bool uses_guard() const { return integrity_enabled() && init_mode == InitMode::kZeroGuard; }

  // Equality of everything that defines the volume (used for idempotency).
  bool SameVolumeAs(const VolumeSpec& o) const;
  // Human-readable list of differing fields, for ALREADY_EXISTS messages.
  std::string DiffAgainst(const VolumeSpec& o) const;

  nlohmann::json ToJson() const;
  static StatusOr<VolumeSpec> FromJson(const nlohmann::json& j);
};

// Names derived from the volume id; deterministic so that a restarted agent
// finds (and can clean up) everything a crashed one created.
struct VolumeNames {
  std::string crypt;  // "coco-<id>:crypt" (+ "<crypt>_dif", the dm-integrity libcryptsetup makes)
  std::string pool;   // "coco-<id>:pool", the dm-thin pool of the zero guard
  std::string top;    // device handed to the consumer (thin volume, or crypt without guard)
  std::string header_file;
  std::string guard_meta_file;
  // Persistent volumes keep the guard's metadata inside the encrypted device:
  // two linear mappings split it into the pool's metadata and data devices.
  std::string guard_meta_linear;  // "coco-<id>:gmeta"
  std::string guard_data_linear;  // "coco-<id>:gdata"
  static VolumeNames For(const std::string& volume_id, const std::string& state_dir, bool guard);
};

// True when device-mapper name `dm_name` is one of `volume_id`'s mappings.
// "coco-v1" and "coco-v1:..." belong to v1; "coco-v10" and "coco-v1-x" do not.
bool MappingBelongsTo(const std::string& volume_id, const std::string& dm_name);

constexpr const char* kDmPrefix = "coco-";

}  // namespace cocostorage::agent
