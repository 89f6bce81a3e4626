// Loop devices over files in guest memory (the zero guard's metadata). A seam
// so the guard's orchestration is unit-testable without a kernel.
#pragma once

#include <memory>
#include <string>

#include "cocostorage/common/status.h"
#include "cocostorage/common/unique_fd.h"

namespace cocostorage::agent {

// The open loop device keeps the attachment alive until a device-mapper
// table that uses it holds it; with autoclear the kernel detaches the device
// when its last user goes away, so a crash cannot leak it.
struct LoopAttachment {
  UniqueFd fd;
  unsigned major = 0;
  unsigned minor = 0;
  std::string path;
  std::string DevNumber() const;
};

class LoopDevices {
 public:
  virtual ~LoopDevices() = default;
  // Attaches `file` to a free loop device (4 KiB logical blocks, autoclear).
  virtual StatusOr<LoopAttachment> Attach(const std::string& file) = 0;
};

std::unique_ptr<LoopDevices> NewKernelLoopDevices();

}  // namespace cocostorage::agent
