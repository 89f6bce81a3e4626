#include "cdh/secure_mount.h"

#include <set>

#include "cocostorage/common/strings.h"
#include "core/text.h"
#include "kata/storage_mapping.h"

namespace cocostorage::agent {
namespace {

Status Invalid(const std::string& what) { return absl::InvalidArgumentError(Cat("SecureMount: ", what)); }

}  // namespace

StatusOr<ActivationRequest> ActivationFromSecureMount(const api::SecureMountRequest& req,
                                                      std::chrono::milliseconds device_timeout) {
  if (req.volume_type() != "block-device") {
    return Invalid(Cat("volume_type ", Quoted(req.volume_type()), " is not supported (only \"block-device\")"));
  }
  if (!req.flags().empty()) return Invalid(Cat("flags are not supported (got ", req.flags_size(), ")"));
  if (req.options_size() > 16) return Invalid("more than 16 options");
  static const std::set<std::string> kKnown = {"deviceId", "sourceType",     "targetType",   "filesystemType",
                                               "mkfsOpts", "encryptionType", "dataIntegrity"};
  for (const auto& [key, value] : req.options()) {
    if (!kKnown.count(key)) return Invalid(Cat("unknown option ", Quoted(key)));
    if (value.size() > 256) return Invalid(Cat("option ", key, " is longer than 256 bytes"));
  }
  auto opt = [&](const char* key) -> const std::string* {
    auto it = req.options().find(key);
    return it == req.options().end() ? nullptr : &it->second;
  };
  auto require = [&](const char* key, std::initializer_list<const char*> allowed) -> StatusOr<std::string> {
    const std::string* v = opt(key);
    if (v == nullptr) return Invalid(Cat("option ", key, " is required"));
    for (const char* a : allowed) {
      if (*v == a) return *v;
    }
    return Invalid(Cat("option ", key, " ", Quoted(*v), " is not supported"));
  };

  ActivationRequest r;
  r.origin = Origin::kSecureMount;
  const std::string* device = opt("deviceId");
  if (device == nullptr || device->empty()) return Invalid("option deviceId (MAJ:MIN) is required");
  r.device = DeviceId{DeviceIdKind::kDevNumber, *device};
  // "empty": a blank device for an ephemeral volume (the only kind kata-agent
  // forwards: encryption_key=ephemeral).
  COCO_RETURN_IF_ERROR(require("sourceType", {"empty"}).status());
  COCO_RETURN_IF_ERROR(require("targetType", {"fileSystem"}).status());
  COCO_RETURN_IF_ERROR(require("encryptionType", {"luks2"}).status());
  COCO_ASSIGN_OR_RETURN(r.fs_type, require("filesystemType", {"ext4", "xfs"}));
  COCO_ASSIGN_OR_RETURN(std::string integrity, require("dataIntegrity", {"true", "false"}));
  // dataIntegrity=false asks for confidentiality only; the admission layer
  // refuses that unless the agent's configuration allows it.
  r.integrity = integrity == "true" ? IntegrityMode::kHmacSha256 : IntegrityMode::kNone;
  if (const std::string* mkfs = opt("mkfsOpts")) r.mkfs_options = Split(*mkfs, ' ');
  r.key = KeySource::Ephemeral();
  r.init_mode = InitMode::kZeroGuard;
  r.target_path = req.mount_point();
  r.device_timeout_ms = static_cast<uint32_t>(device_timeout.count());
  // The volume is named by its mount point (one per Kata storage): the last
  // component is base64url of the guest PCI path.
  std::string mount = req.mount_point();
  while (mount.size() > 1 && mount.back() == '/') mount.pop_back();  // kata-agent writes ".../image/"
  const auto slash = mount.rfind('/');
  std::string last = slash == std::string::npos ? mount : mount.substr(slash + 1);
  // base64 padding is determined by the length: dropping it keeps ids distinct.
  while (!last.empty() && last.back() == '=') last.pop_back();
  if (last.empty()) return Invalid(Cat("mount_point ", Quoted(req.mount_point()), " has no last component"));
  r.volume_id = SanitizeVolumeId(Cat("sm-", last.substr(0, 56)));
  return r;
}

}  // namespace cocostorage::agent
