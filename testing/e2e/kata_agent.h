// What an unmodified kata-agent (Rust, in the guest) does with the runtime's
// blk Storage in a CoCo guest, as pure functions the flow runs in the guest:
//
//   Storage.driver_options -> KataAgentRoute: SecureMount only when they hold
//     "encryption_key=ephemeral" and "create_filesystem" (block_handler.rs);
//     anything else kata-agent mounts in plaintext (or refuses)
//   Storage.source (PCI path) -> PciPathToDevNumberScript -> "MAJ:MIN" (sysfs)
//   Storage + MAJ:MIN -> KataSecureMountCall -> coco-kata-securemount in the
//     guest (the real Go ttrpc client, kata-agent's exact request) -> our agent
//     on /run/confidential-containers/cdh.sock
//
// Test scaffolding, written from shared/reference/coco-guest-integration.md;
// not kata-agent itself.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "cocostorage/common/status.h"
#include "kata/storage_mapping.h"

namespace cocostorage::e2e {

using agent::KataStorage;

inline constexpr char kEphemeralKeyOption[] = "encryption_key=ephemeral";
inline constexpr char kCreateFilesystemOption[] = "create_filesystem";
// kata-agent's constant mkfs options for an ephemeral ext4 storage.
inline constexpr char kKataAgentMkfsOpts[] = "-O ^has_journal -m 0 -i 163840 -I 128";
inline constexpr char kCdhSocket[] = "/run/confidential-containers/cdh.sock";

// kata-agent's choice for a blk Storage: OK means the SecureMount call;
// FAILED_PRECONDITION "kata-agent would mount this in plaintext" when the
// ephemeral marker is absent (any other encryption_key= is ignored by
// kata-agent); INVALID_ARGUMENT when the marker comes without
// create_filesystem (kata-agent refuses that storage).
Status KataAgentRoute(const KataStorage& storage);

// SecureMountRequest as kata-agent fills it.
struct KataSecureMountCall {
  std::string volume_type = "block-device";
  std::string device_id;    // MAJ:MIN of the disk
  std::string mount_point;  // Storage.mount_point
  std::string fs_type;      // Storage.fstype
  std::string mkfs_opts = kKataAgentMkfsOpts;
  bool data_integrity = true;  // agent.secure_storage_integrity, default true

  // The request's options map, exactly as sent.
  std::map<std::string, std::string> Options() const;
  // The guest command that sends it (coco-kata-securemount).
  std::string GuestCommand() const;
};

// Checks the route and `device_id` ("MAJ:MIN", decimal) and builds the call.
StatusOr<KataSecureMountCall> SecureMountCallFor(const KataStorage& storage, const std::string& device_id);

// The id our agent gives a SecureMount volume: "sm-" + the mount point's last
// component (base64url of the PCI path) without its '=' padding.
std::string SecureMountVolumeId(std::string_view mount_point);

// A guest shell command printing the MAJ:MIN of the virtio-blk disk at Kata
// PCI path `pci_path` ("02/00": bridge at slot 02 of pci0000:00, device 00 on
// the bridge's secondary bus), walking sysfs the way kata-agent does, waiting
// up to `timeout_ds` tenths of a second for the disk to appear.
StatusOr<std::string> PciPathToDevNumberScript(std::string_view pci_path, int timeout_ds = 300);

// coco-kata-securemount's answer ("ok" / "error: <code> <message>") as a Status
// with the gRPC code the agent answered.
Status SecureMountOutputToStatus(std::string_view output, int exit_code);

}  // namespace cocostorage::e2e
