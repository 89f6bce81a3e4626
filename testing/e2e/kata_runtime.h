// What the Kata runtime (host side, Go) does with a direct-assigned volume,
// as pure functions, so the end-to-end flow maps a CSI publication to the
// guest the way a real CoCo node would:
//
//   mountInfo.json (written by the CSI plugin, read by the Kata runtime)
//     -> ParseMountInfo -> KataMountInfo
//   KataMountInfo + guest PCI path of the hot-plugged disk
//     -> BuildKataStorage -> agent::KataStorage (driver "blk", source "02/00",
//        driver_options, mount_point)
//
// Test scaffolding: a stand-in for the runtime, not product code. The guest
// side of the mapping (Storage -> activation) lives in the agent
// (guest-agent/src/kata/storage_mapping.h).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "cocostorage/common/status.h"
#include "kata/storage_mapping.h"

namespace cocostorage::e2e {

using agent::KataStorage;
using agent::kKataSandboxStorageDir;

// Kata's direct-volume mountInfo.json ("volume-type", "device", "fstype",
// "metadata", "options").
struct KataMountInfo {
  std::string volume_type;
  std::string device;
  std::string fs_type;
  std::map<std::string, std::string> metadata;
  std::vector<std::string> options;
};

// Name of the direct-volume directory for a volume (CSI target) path.
std::string DirectVolumeDirName(std::string_view volume_path);

// Parses mountInfo.json. Every field is required and must have the right JSON
// type; metadata values must be strings.
StatusOr<KataMountInfo> ParseMountInfo(std::string_view json);

// The Storage the Kata runtime sends for a "blk" direct volume hot-plugged at
// `guest_pci_path`. Refuses other volume types and malformed PCI paths.
StatusOr<KataStorage> BuildKataStorage(const KataMountInfo& info, const std::string& guest_pci_path);

}  // namespace cocostorage::e2e
