#include "service/request_validation.h"

#include <regex>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "device/resolver.h"
#include "fs/options.h"

namespace cocostorage::agent {

namespace pb = cocostorage::storage::v1;

Status ValidateVolumeId(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("volume_id is required");
  if (!std::regex_match(id, std::regex("[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"))) {
    return absl::InvalidArgumentError(
        Cat("volume_id \"", id.substr(0, 80), "\" is not 1-64 characters of [A-Za-z0-9_.-] starting alphanumeric"));
  }
  return OkStatus();
}

StatusOr<ValidatedActivate> ValidateActivate(const pb::ActivateVolumeRequest& req, const std::string& storage_root,
                                             std::chrono::milliseconds default_timeout) {
  ValidatedActivate out;
  VolumeSpec& s = out.spec;
  COCO_RETURN_IF_ERROR(ValidateVolumeId(req.volume_id()));
  s.id = req.volume_id();

  switch (req.device().id_case()) {
    case pb::DeviceRef::kPciPath:
      s.device = {DeviceIdKind::kPciPath, req.device().pci_path()};
      break;
    case pb::DeviceRef::kSerial:
      s.device = {DeviceIdKind::kSerial, req.device().serial()};
      break;
    case pb::DeviceRef::kDevNumber:
      s.device = {DeviceIdKind::kDevNumber, req.device().dev_number()};
      break;
    default:
      return absl::InvalidArgumentError("device is required (pci_path, serial or dev_number)");
  }
  COCO_RETURN_IF_ERROR(ValidateDeviceId(s.device));

  switch (req.key().source_case()) {
    case pb::KeySource::kEphemeral:
      s.key_source = "ephemeral";
      break;
    case pb::KeySource::kKbsResourceUri:
      return absl::UnimplementedError("KBS-released keys (persistent volumes) are not supported by this agent yet");
    default:
      return absl::InvalidArgumentError("key source is required");
  }

  switch (req.integrity()) {
    case pb::INTEGRITY_UNSPECIFIED:
    case pb::INTEGRITY_HMAC_SHA256:
      s.integrity = IntegrityMode::kHmacSha256;
      break;
    case pb::INTEGRITY_NONE:
      s.integrity = IntegrityMode::kNone;
      break;
    case pb::INTEGRITY_AEGIS128:
      s.integrity = IntegrityMode::kAegis128;
      break;
    case pb::INTEGRITY_AES_GCM:
      s.integrity = IntegrityMode::kAesGcm;
      break;
    default:
      return absl::InvalidArgumentError(Cat("unknown integrity value ", static_cast<int>(req.integrity())));
  }

  switch (req.init_mode()) {
    case pb::INIT_MODE_UNSPECIFIED:
    case pb::INIT_MODE_ZERO_GUARD:
      s.init_mode = InitMode::kZeroGuard;
      break;
    case pb::INIT_MODE_FULL_WIPE:
      s.init_mode = InitMode::kFullWipe;
      break;
    default:
      return absl::InvalidArgumentError(Cat("unknown init_mode value ", static_cast<int>(req.init_mode())));
  }

  switch (req.mode()) {
    case pb::VOLUME_MODE_UNSPECIFIED:
    case pb::VOLUME_MODE_FILESYSTEM:
      s.block_mode = false;
      break;
    case pb::VOLUME_MODE_BLOCK:
      s.block_mode = true;
      break;
    default:
      return absl::InvalidArgumentError(Cat("unknown volume mode ", static_cast<int>(req.mode())));
  }

  const auto& fs = req.filesystem();
  if (s.block_mode) {
    if (!fs.fs_type().empty() || fs.mkfs_options_size() || fs.mount_options_size()) {
      return absl::InvalidArgumentError("block volumes take no filesystem settings");
    }
  } else {
    if (fs.fs_type().empty())
      return absl::InvalidArgumentError("filesystem.fs_type is required for filesystem volumes");
    if (!IsSupportedFsType(fs.fs_type())) {
      return absl::InvalidArgumentError(
          Cat("unsupported fs type \"", fs.fs_type().substr(0, 32), "\" (supported: ext4, xfs)"));
    }
    s.fs_type = fs.fs_type();
    s.mkfs_options.assign(fs.mkfs_options().begin(), fs.mkfs_options().end());
    s.mount_options.assign(fs.mount_options().begin(), fs.mount_options().end());
    COCO_RETURN_IF_ERROR(ValidateMkfsOptions(s.fs_type, s.mkfs_options));
    COCO_RETURN_IF_ERROR(ParseMountOptions(s.fs_type, s.mount_options, req.read_only()).status());
  }
  if (fs.has_fs_group()) {
    if (fs.fs_group() < 0 || fs.fs_group() > INT32_MAX) {
      return absl::InvalidArgumentError(Cat("fs_group ", fs.fs_group(), " is out of range"));
    }
    s.fs_group = fs.fs_group();
  }

  if (req.target_path().empty()) return absl::InvalidArgumentError("target_path is required");
  COCO_ASSIGN_OR_RETURN(std::string target, NormalizeAbsolutePath(req.target_path()));
  if (target == storage_root || !IsPathWithin(storage_root, target)) {
    return absl::PermissionDeniedError(
        Cat("target_path ", target, " is outside the allowed storage root ", storage_root));
  }
  s.target_path = target;
  s.read_only = req.read_only();

  if (req.device_timeout_ms() > 300000) {
    return absl::InvalidArgumentError("device_timeout_ms above 300000 (5 minutes)");
  }
  out.device_timeout = req.device_timeout_ms() ? std::chrono::milliseconds(req.device_timeout_ms()) : default_timeout;
  return out;
}

}  // namespace cocostorage::agent
