// Kata direct-assigned volume descriptors ("mountInfo.json").
//
// For a CSI target path P the runtime looks for
//   <kata-direct-volume-root>/<base64url(P) with padding>/mountInfo.json
// and hot-plugs "device" into the pod's VM instead of bind-mounting P.
// Directory 0700, file 0600, written atomically. Never holds a secret.
//
// Metadata contract with the guest agent (exactly these keys):
//   encryptionKey                   "ephemeral", always (persistent volumes too)
//   createFilesystem                "true" in filesystem mode, "false" in block mode
//   fsGroup                         decimal gid (only when set)
//   cocostorage.dev/kind            persistent (keySource=kbs) | ephemeral
//   cocostorage.dev/kbsResourceUri  kbs:///repo/type/tag (only for kind persistent)
//   cocostorage.dev/integrity       hmac-sha256 | none | aegis128 | aes-gcm
//   cocostorage.dev/volumeMode      filesystem | block
//   cocostorage.dev/volumeId        the CSI volume id
//   cocostorage.dev/mkfsOptions     space-separated (only when set)
//
// Why encryptionKey never names the KBS resource: kata-agent
// (src/agent/src/storage/block_handler.rs) hands a block storage to the
// Confidential Data Hub slot (our agent) only when its driver options are
// exactly encryption_key=ephemeral plus create_filesystem; with any other
// encryption_key value it mounts the device in plaintext. So a persistent
// volume is presented like an ephemeral one, and what it is travels in the
// cocostorage.dev/ hints. They are hints: the guest's attested storage policy,
// when present, decides the key and whether the volume may be created, and the
// guest decides from the device's authenticated header whether to create or
// open it (createFilesystem never reformats a volume that holds a header).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cocostorage/common/status.h"
#include "volume_state.h"

namespace cocostorage::csi {

struct MountInfo {
  std::string volume_type = "blk";
  std::string device;
  std::string fs_type;
  std::map<std::string, std::string> metadata;
  std::vector<std::string> options;
  bool operator==(const MountInfo&) const = default;
};

// The createFilesystem hint: true for every filesystem publication, whatever
// the key (kata-agent refuses encryption_key=ephemeral without it; the guest
// creates a file system only on a device without a header of ours, so a
// persistent volume is never reformatted). Never for raw block consumers.
bool ShouldCreateFilesystem(VolumeMode publish_mode);
// The descriptor for publishing `volume` as `pub`.
MountInfo BuildMountInfo(const VolumeRecord& volume, const PublishRecord& pub);
std::string MountInfoToJson(const MountInfo& info);
StatusOr<MountInfo> MountInfoFromJson(const std::string& text);

class MountInfoWriter {
 public:
  explicit MountInfoWriter(std::string root) : root_(std::move(root)) {}

  // <root>/<base64url(target_path)>; target_path must be validated already.
  StatusOr<std::string> DirFor(const std::string& target_path) const;
  // Creates the directory (0700) and atomically (re)writes mountInfo.json (0600).
  Status Write(const std::string& target_path, const MountInfo& info) const;
  // Removes mountInfo.json, files the runtime left beside it (the sandbox-id
  // marker) and the directory. Missing is success.
  Status Remove(const std::string& target_path) const;
  // nullopt when there is no descriptor for `target_path`.
  StatusOr<std::optional<MountInfo>> Read(const std::string& target_path) const;

 private:
  std::string root_;
};

}  // namespace cocostorage::csi
