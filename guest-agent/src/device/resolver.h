// Finds the block device the host hot-plugged, by the name the Kata runtime
// gives it, waiting up to a deadline for it to appear.
//
// Only whole virtio-blk disks (vd*) are accepted: the host must not be able to
// point the agent at the guest's own root disk, a partition or a dm device.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "cocostorage/common/status.h"
#include "core/volume_spec.h"

namespace cocostorage::agent {

struct BlockDevice {
  std::string name;      // "vdb"
  std::string dev_path;  // "/dev/vdb"
  unsigned major = 0;
  unsigned minor = 0;
  uint64_t size_bytes = 0;
  std::string serial;
  std::string DevNumber() const;  // "254:16"
};

// True once the caller has given up (the RPC was cancelled or its deadline
// passed): long waits stop then instead of burning CPU for nobody.
using CancelFn = std::function<bool()>;

class DeviceResolver {
 public:
  virtual ~DeviceResolver() = default;
  // NOT_FOUND-free contract: returns DEADLINE_EXCEEDED when the device does not
  // appear (or get ready) in time, INVALID_ARGUMENT for a malformed id,
  // FAILED_PRECONDITION when it resolves to something that is not an
  // acceptable disk or stays busy.
  // CANCELLED as soon as `cancelled` (may be empty) says so.
  virtual StatusOr<BlockDevice> WaitFor(const DeviceId& id, std::chrono::milliseconds timeout,
                                        const CancelFn& cancelled) = 0;
  // Sectors written to the disk since boot (sysfs stat field 7).
  virtual StatusOr<uint64_t> SectorsWritten(const BlockDevice& dev) = 0;
  // Whether a kernel object (a dm mapping, md...) holds the disk.
  virtual StatusOr<bool> HasHolders(const BlockDevice& dev) = 0;
  // What the disk visibly holds, by its on-disk signature ("ext4",
  // "crypto_LUKS", "DM_integrity", a partition table "gpt"/"dos", ...), or ""
  // when libblkid recognises nothing.
  virtual StatusOr<std::string> ProbeSignature(const BlockDevice& dev) = 0;
};

// Syntax checks only (no I/O): "02/00" style PCI paths (1-4 two-hex-digit
// slots), serials of [A-Za-z0-9_.-]{1,20}, and "MAJ:MIN".
Status ValidateDeviceId(const DeviceId& id);

// Time as the resolver sees it (steady clock), injectable for tests.
struct WaitClock {
  std::function<std::chrono::steady_clock::time_point()> now;
  std::function<void(std::chrono::milliseconds)> sleep;
  static WaitClock Real();
};

class SysfsDeviceResolver : public DeviceResolver {
 public:
  // Tries an exclusive open of the device node; returns 0 or an errno.
  using ExclusiveProbeFn = std::function<int(const std::string& dev_path)>;
  // `sysfs_root` and `dev_root` are "/sys" and "/dev" in production; tests
  // pass a fake tree, clock and probe. Stateless between calls: safe to use
  // from concurrent activations.
  SysfsDeviceResolver(std::string sysfs_root, std::string dev_root, WaitClock clock = WaitClock::Real(),
                      ExclusiveProbeFn probe = nullptr);
  StatusOr<BlockDevice> WaitFor(const DeviceId& id, std::chrono::milliseconds timeout,
                                const CancelFn& cancelled) override;
  StatusOr<uint64_t> SectorsWritten(const BlockDevice& dev) override;
  StatusOr<bool> HasHolders(const BlockDevice& dev) override;
  StatusOr<std::string> ProbeSignature(const BlockDevice& dev) override;

  // Why a present disk is not usable yet: the errno of its exclusive open.
  struct Probe {
    int last_errno = 0;
  };
  // One look, no waiting: nullopt when not (yet) present or not ready.
  StatusOr<std::optional<BlockDevice>> LookupOnce(const DeviceId& id, Probe* probe = nullptr);

 private:
  StatusOr<std::optional<std::string>> FindByPciPath(const std::string& path);
  StatusOr<std::optional<std::string>> FindBySerial(const std::string& serial);
  StatusOr<std::optional<std::string>> FindByDevNumber(const std::string& devno);
  StatusOr<std::optional<BlockDevice>> Describe(const std::string& name, Probe* probe);

  std::string sysfs_;
  std::string dev_;
  WaitClock clock_;
  ExclusiveProbeFn probe_;
};

}  // namespace cocostorage::agent
