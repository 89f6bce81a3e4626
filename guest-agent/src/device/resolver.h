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

class DeviceResolver {
 public:
  virtual ~DeviceResolver() = default;
  // NOT_FOUND-free contract: returns DEADLINE_EXCEEDED when the device does not
  // appear in time, INVALID_ARGUMENT for a malformed id, FAILED_PRECONDITION
  // when it resolves to something that is not an acceptable disk.
  virtual StatusOr<BlockDevice> WaitFor(const DeviceId& id, std::chrono::milliseconds timeout) = 0;
};

// Syntax checks only (no I/O): "02/00" style PCI paths (1-4 two-hex-digit
// slots), serials of [A-Za-z0-9_.-]{1,20}, and "MAJ:MIN".
Status ValidateDeviceId(const DeviceId& id);

class SysfsDeviceResolver : public DeviceResolver {
 public:
  using SleepFn = std::function<void(std::chrono::milliseconds)>;
  // Tries an exclusive open of the device node; returns 0 or an errno.
  using ExclusiveProbeFn = std::function<int(const std::string& dev_path)>;
  // `sysfs_root` and `dev_root` are "/sys" and "/dev" in production; tests
  // pass a fake tree and probe.
  SysfsDeviceResolver(std::string sysfs_root, std::string dev_root, SleepFn sleep = nullptr,
                      ExclusiveProbeFn probe = nullptr);
  StatusOr<BlockDevice> WaitFor(const DeviceId& id, std::chrono::milliseconds timeout) override;

  // One look, no waiting: nullopt when not (yet) present.
  StatusOr<std::optional<BlockDevice>> LookupOnce(const DeviceId& id);

 private:
  StatusOr<std::optional<std::string>> FindByPciPath(const std::string& path);
  StatusOr<std::optional<std::string>> FindBySerial(const std::string& serial);
  StatusOr<std::optional<std::string>> FindByDevNumber(const std::string& devno);
  StatusOr<std::optional<BlockDevice>> Describe(const std::string& name);

  std::string sysfs_;
  std::string dev_;
  SleepFn sleep_;
  ExclusiveProbeFn probe_;
  bool last_busy_ = false;
};

}  // namespace cocostorage::agent
