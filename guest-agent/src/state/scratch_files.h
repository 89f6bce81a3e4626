// Files in the agent's private state directory on guest tmpfs: detached LUKS2
// headers and the zero guard's metadata. Guest memory: the host never sees
// them, and they die with the VM. A seam so that orchestration is testable
// without touching the file system.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cocostorage/common/status.h"

namespace cocostorage::agent {

class ScratchFiles {
 public:
  virtual ~ScratchFiles() = default;
  // Creates (or truncates) `path` as a sparse file of `bytes`, mode 0600,
  // never following a symlink.
  virtual Status CreateSparse(const std::string& path, uint64_t bytes) = 0;
  // Creates (or truncates) `path` holding exactly `bytes`, mode 0600, never
  // following a symlink.
  virtual Status Write(const std::string& path, std::span<const uint8_t> bytes) = 0;
  virtual StatusOr<std::vector<uint8_t>> Read(const std::string& path) = 0;
  // Missing is success.
  virtual Status Remove(const std::string& path) = 0;
  virtual Status MakeDir(const std::string& path) = 0;  // 0700, with parents
};

std::unique_ptr<ScratchFiles> NewTmpfsScratchFiles();

}  // namespace cocostorage::agent
