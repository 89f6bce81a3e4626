// The node-side step of an RBD volume: mapping the image as a kernel block
// device (/dev/rbdN) that Kata hot-plugs into the guest, and unmapping it.
//
// Behind a narrow interface because the kernel's rbd module is a property of
// the node, not of this code: CI hosts have none (and no device-mapper), so
// the services are tested against FakeRbdMapper, and KrbdMapper's command
// lines and parsing are tested with a fake CommandRunner. On a real node
// KrbdMapper runs exactly (no shell; <key> only in the child's environment):
//   rbd -c /dev/null device list --format json     # is <pool>/<image> mapped already?
//   CEPH_ARGS=--key=<key> rbd -c /dev/null -m <mon_host> --id <user>
//       --client-mount-timeout <t> --rados-mon-op-timeout <t> --rados-osd-op-timeout <t>
//       device map --exclusive <pool>/<image>      # prints /dev/rbdN; holds the image's lock
//   rbd -c /dev/null device unmap /dev/rbdN        # only when the list has it
// Only map talks to the cluster; list and unmap are the kernel's (sysfs), so
// NodeUnstageVolume, which carries no secrets, can still unmap.
// `-c /dev/null`: like the librados backend, nothing of /etc/ceph is read; the
// StorageClass's cluster is the only one. The key goes through CEPH_ARGS, not
// argv: /proc/<pid>/cmdline is world-readable, /proc/<pid>/environ is not.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "cocostorage/common/exec.h"
#include "cocostorage/common/status.h"
#include "rbd_backend.h"

namespace cocostorage::csi {

struct RbdImageRef {
  std::string pool;
  std::string image;
};

// "rbd:<pool>/<image>" (BackingInfo::device of the RBD backend, RbdDeviceRef)
// back to its parts; INVALID_ARGUMENT for anything else.
StatusOr<RbdImageRef> ParseRbdDeviceRef(std::string_view ref);
// The device `ref` is mapped at in the JSON of `rbd device list --format json`,
// "" when it is not mapped. INTERNAL when the answer is not that JSON.
StatusOr<std::string> MappedDeviceFromList(std::string_view list_json, const RbdImageRef& ref);
// The status of a failed `rbd` command from its stderr: the "(N) ..." errno
// that rbd prints is mapped like librbd's return values (RbdStatus), so a
// wrong key is PERMISSION_DENIED and a dead cluster UNAVAILABLE here too. When
// rbd could not connect it prints no errno but exits with it.
Status RbdCommandStatus(int exit_code, std::string_view stderr_text, std::string_view what);

class RbdMapper {
 public:
  virtual ~RbdMapper() = default;
  // Maps the image; one already mapped is success with its existing device
  // (a retried NodeStage must not map it twice). Returns "/dev/rbdN".
  // `cluster`: the volume's monitors and the node-stage credentials.
  virtual StatusOr<std::string> Map(const RbdOptions& cluster, const RbdImageRef& ref) = 0;
  // Unmaps the image; one not mapped is success.
  virtual Status Unmap(const RbdImageRef& ref) = 0;
  // The device the image is mapped at, "" when it is not mapped.
  virtual StatusOr<std::string> MappedDevice(const RbdImageRef& ref) = 0;
};

// The real mapper: execs `rbd device ...` through `runner` (see the top of
// this file); `timeout` bounds the local commands (map uses its cluster's).
// When `rbd_sysfs` (the rbd module's sysfs directory) is missing, Map runs
// `modprobe rbd`, and is FAILED_PRECONDITION when that does not bring it; ""
// skips the check (tests with a fake runner).
StatusOr<std::unique_ptr<RbdMapper>> NewKrbdMapper(std::shared_ptr<CommandRunner> runner,
                                                   std::chrono::seconds timeout = std::chrono::seconds(10),
                                                   std::string rbd_sysfs = "/sys/bus/rbd");

}  // namespace cocostorage::csi
