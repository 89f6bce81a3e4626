// What the Kata runtime and agent do with a direct-assigned volume, as pure
// functions, so the end-to-end flow maps a CSI publication to our agent's
// request exactly the way a real CoCo node would:
//
//   mountInfo.json (written by the CSI plugin, read by the Kata runtime)
//     -> ParseMountInfo -> KataMountInfo
//   KataMountInfo + guest PCI path of the hot-plugged disk
//     -> BuildKataStorage -> KataStorage (the agent's Storage message:
//        driver "blk", source "02/00", driver_options, mount_point)
//   KataStorage
//     -> ToActivateRequest -> cocostorage.storage.v1.ActivateVolumeRequest
//
// No I/O, no exceptions: every error is an INVALID_ARGUMENT (or
// PERMISSION_DENIED for a storage the guest policy must refuse) naming the
// offending field. See docs/e2e.md for the mapping table.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "cocostorage/common/status.h"
#include "cocostorage/storage/v1/agent.pb.h"

namespace cocostorage::e2e {

// Where the Kata agent mounts sandbox storages inside the guest.
inline constexpr char kKataSandboxStorageDir[] = "/run/kata-containers/sandbox/storage";
// Our metadata / driver-option key prefix.
inline constexpr char kCocoKeyPrefix[] = "cocostorage.dev/";

// Kata's direct-volume mountInfo.json ("volume-type", "device", "fstype",
// "metadata", "options").
struct KataMountInfo {
  std::string volume_type;
  std::string device;
  std::string fs_type;
  std::map<std::string, std::string> metadata;
  std::vector<std::string> options;
};

// The subset of the Kata agent's Storage message a direct block volume uses.
struct KataStorage {
  std::string driver;                       // "blk"
  std::vector<std::string> driver_options;  // "encryption_key=ephemeral", "create_filesystem", ...
  std::string source;                       // guest PCI path, "02/00"
  std::string fs_type;
  std::vector<std::string> options;  // mount options
  std::string mount_point;           // kKataSandboxStorageDir/<base64url(source)>
};

// Base64 with the URL-safe alphabet and '=' padding (Go's base64.URLEncoding),
// which Kata uses for both the direct-volume directory and the mount point.
std::string Base64UrlEncode(std::string_view data);

// Name of the direct-volume directory for a volume (CSI target) path.
std::string DirectVolumeDirName(std::string_view volume_path);

// Parses mountInfo.json. Every field is required and must have the right JSON
// type; metadata values must be strings.
StatusOr<KataMountInfo> ParseMountInfo(std::string_view json);

// True when `pci_path` is what the Kata agent policy accepts as a blk source:
// ^[0-9a-f]{2}(/[0-9a-f]{2})?$
bool IsPolicyPciPath(std::string_view pci_path);

// The Storage the Kata runtime sends for a "blk" direct volume hot-plugged at
// `guest_pci_path`. Refuses other volume types and malformed PCI paths.
StatusOr<KataStorage> BuildKataStorage(const KataMountInfo& info, const std::string& guest_pci_path);

// Turns a blk Storage into our agent's request. The guest side of the trust
// boundary: the source must be a policy PCI path and the mount point exactly
// the storage dir + base64url(source), or the request is refused.
//
// target_path is the mount point in both modes: a mounted directory for
// filesystem volumes, the block device node itself for block volumes.
StatusOr<storage::v1::ActivateVolumeRequest> ToActivateRequest(
    const KataStorage& storage, std::chrono::milliseconds device_timeout = std::chrono::seconds(30));

// Makes any string a valid agent volume id ([A-Za-z0-9][A-Za-z0-9_.-]{0,63}):
// other characters become '-', a non-alphanumeric start gets a "v" prefix, and
// an over-long id keeps its first 47 characters plus a 16-hex-digit hash of
// the whole (so distinct long ids stay distinct).
std::string SanitizeVolumeId(std::string_view id);

}  // namespace cocostorage::e2e
