#include "request/admission.h"

#include "cocostorage/common/base64.h"
#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "core/text.h"
#include "device/resolver.h"
#include "fs/options.h"
#include "policy/matcher.h"
#include "policy/policy_gate.h"

namespace cocostorage::agent {
namespace {

// What Kata's agent policy accepts as the source of a blk storage:
// ^[0-9a-f]{2}(/[0-9a-f]{2})?$
bool IsKataPolicyPciPath(std::string_view p) {
  auto two_hex = [&](size_t at) { return IsLowerHex(p[at]) && IsLowerHex(p[at + 1]); };
  if (p.size() == 2) return two_hex(0);
  if (p.size() == 5) return two_hex(0) && p[2] == '/' && two_hex(3);
  return false;
}

Status CheckOptionBounds(const std::vector<std::string>& opts, size_t max_count, const char* what) {
  if (opts.size() > max_count) {
    return absl::InvalidArgumentError(Cat(opts.size(), " ", what, " given; at most ", max_count, " are allowed"));
  }
  for (const auto& o : opts) {
    if (o.size() > kMaxOptionBytes) {
      return absl::InvalidArgumentError(Cat(what, " ", Quoted(o), " is longer than ", kMaxOptionBytes, " bytes"));
    }
  }
  return OkStatus();
}

// Where a request may put its volume. Our API: anywhere strictly below the
// storage root. A Kata storage: exactly where kata-agent mounts a blk storage
// (storage root + base64url(source)), and only for a source of the shape the
// Kata policy admits.
StatusOr<std::string> AdmitTarget(const ActivationRequest& req, const DeviceId& device, const AdmissionConfig& config) {
  if (req.target_path.empty()) return absl::InvalidArgumentError("target_path is required");
  if (req.target_path.size() > kMaxTargetPathBytes) {
    return absl::InvalidArgumentError(Cat("target_path is longer than ", kMaxTargetPathBytes, " bytes"));
  }
  COCO_ASSIGN_OR_RETURN(std::string target, NormalizeAbsolutePath(req.target_path));
  if (req.origin == Origin::kSecureMount && !config.trusted_store_target.empty() &&
      target == config.trusted_store_target) {
    return target;
  }
  if (target == config.storage_root || !IsPathWithin(config.storage_root, target)) {
    return absl::PermissionDeniedError(
        Cat("target_path ", Quoted(target), " is outside the allowed storage root ", config.storage_root));
  }
  // Exactly one level below the root (where kata-agent mounts storages): no
  // intermediate directory whose content the agent does not control.
  if (target.find('/', config.storage_root.size() + 1) != std::string::npos) {
    return absl::PermissionDeniedError(
        Cat("target_path ", Quoted(target), " must be directly below the storage root ", config.storage_root));
  }
  if (req.origin == Origin::kKataStorage) {
    if (device.kind != DeviceIdKind::kPciPath || !IsKataPolicyPciPath(device.value)) {
      return absl::PermissionDeniedError(Cat("storage source ", Quoted(device.value),
                                             " is not a PCI path the policy allows (^[0-9a-f]{2}(/[0-9a-f]{2})?$)"));
    }
    const std::string expected = Cat(config.storage_root, "/", Base64UrlEncode(device.value));
    if (target != expected) {
      return absl::PermissionDeniedError(
          Cat("storage mount_point ", Quoted(target), " is not ", expected, " (policy)"));
    }
  }
  return target;
}

}  // namespace

namespace {

// The agent's own rules, with or without a policy (a policy narrows what
// they allow, it never widens it).
StatusOr<ValidatedActivate> AdmitBuiltIn(const ActivationRequest& req, const AdmissionConfig& config,
                                         bool integrity_none_allowed) {
  ValidatedActivate out;
  VolumeSpec& s = out.spec;
  COCO_RETURN_IF_ERROR(ValidateVolumeId(req.volume_id));
  s.id = req.volume_id;

  if (!req.device) return absl::InvalidArgumentError("device is required (pci_path, serial or dev_number)");
  s.device = *req.device;
  COCO_RETURN_IF_ERROR(ValidateDeviceId(s.device));

  if (!req.key) return absl::InvalidArgumentError("key source is required");
  s.key = *req.key;

  s.integrity = req.integrity.value_or(IntegrityMode::kHmacSha256);
  if (s.integrity == IntegrityMode::kNone && !integrity_none_allowed) {
    return absl::PermissionDeniedError(
        "integrity \"none\" (no tamper evidence) is refused: the agent's configuration requires integrity "
        "(allow_integrity_none)");
  }
  s.init_mode = req.init_mode.value_or(InitMode::kZeroGuard);
  s.block_mode = req.block_mode;

  COCO_RETURN_IF_ERROR(CheckOptionBounds(req.mkfs_options, kMaxMkfsOptions, "mkfs options"));
  COCO_RETURN_IF_ERROR(CheckOptionBounds(req.mount_options, kMaxMountOptions, "mount options"));
  if (s.block_mode) {
    if (!req.fs_type.empty() || !req.mkfs_options.empty() || !req.mount_options.empty()) {
      return absl::InvalidArgumentError("block volumes take no filesystem settings");
    }
  } else {
    if (req.fs_type.empty()) return absl::InvalidArgumentError("filesystem.fs_type is required for filesystem volumes");
    if (!IsSupportedFsType(req.fs_type)) {
      return absl::InvalidArgumentError(
          Cat("unsupported fs type ", Quoted(req.fs_type, 32), " (supported: ext4, xfs)"));
    }
    s.fs_type = req.fs_type;
    s.mkfs_options = req.mkfs_options;
    s.mount_options = req.mount_options;
    // Validates every option and refuses those that conflict with what the
    // agent requires (the argv itself is built again at mkfs time).
    COCO_RETURN_IF_ERROR(
        BuildMkfsArgv(s.fs_type, s.mkfs_options, "/dev/null", MkfsRules{s.uses_guard(), s.key.ephemeral()}).status());
    COCO_RETURN_IF_ERROR(ParseMountOptions(s.fs_type, s.mount_options, req.read_only).status());
  }
  if (req.fs_group) {
    if (*req.fs_group < 0 || *req.fs_group > INT32_MAX) {
      return absl::InvalidArgumentError(Cat("fs_group ", *req.fs_group, " is out of range"));
    }
    s.fs_group = req.fs_group;
  }

  COCO_ASSIGN_OR_RETURN(s.target_path, AdmitTarget(req, s.device, config));
  s.read_only = req.read_only;

  if (req.device_timeout_ms > kMaxDeviceTimeoutMs) {
    return absl::InvalidArgumentError(Cat("device_timeout_ms above ", kMaxDeviceTimeoutMs, " (5 minutes)"));
  }
  out.device_timeout =
      req.device_timeout_ms ? std::chrono::milliseconds(req.device_timeout_ms) : config.default_device_timeout;
  s.policy_rules = req.policy_rules;
  s.create_if_blank = req.create_if_blank;
  s.full_blank_check = req.full_blank_check;
  s.persistent_candidates = req.persistent_candidates;
  s.teardown_on_unmount = req.origin == Origin::kSecureMount && !s.block_mode;
  return out;
}

}  // namespace

StatusOr<ValidatedActivate> Admit(const ActivationRequest& req, const AdmissionConfig& config) {
  if (config.policy == nullptr) {
    ActivationRequest r = req;
    r.policy_rules.clear();  // only the policy sets them
    r.create_if_blank = true;
    r.full_blank_check = false;
    r.persistent_candidates.clear();
    return AdmitBuiltIn(r, config, config.allow_integrity_none);
  }
  COCO_ASSIGN_OR_RETURN(std::shared_ptr<const policy::StoragePolicy> p, config.policy->Current());
  // Malformed input is INVALID_ARGUMENT before the policy is asked (the
  // integrity question is the policy's).
  COCO_RETURN_IF_ERROR(AdmitBuiltIn(req, config, /*integrity_none_allowed=*/true).status());
  COCO_ASSIGN_OR_RETURN(ActivationRequest shaped, policy::ApplyPolicy(req, *p));
  return AdmitBuiltIn(shaped, config, /*integrity_none_allowed=*/true);
}

}  // namespace cocostorage::agent
