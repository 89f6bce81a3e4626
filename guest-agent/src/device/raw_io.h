// Direct reads and writes of a whole disk or mapping, for the few places the
// agent handles bytes itself: a persistent volume's prefix (superblocks and
// the LUKS2 header image, which the host controls) and zeroing a range of an
// encrypted mapping. O_DIRECT, so what is read is what the disk holds now
// (not a page cache copy) and a write is on the device when it returns.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cocostorage/common/status.h"

namespace cocostorage::agent {

class RawDiskIo {
 public:
  virtual ~RawDiskIo() = default;
  // `offset` and `len` multiples of 4096. Short device: OUT_OF_RANGE.
  virtual StatusOr<std::vector<uint8_t>> Read(const std::string& dev_path, uint64_t offset, uint64_t len) = 0;
  // O_DIRECT | O_DSYNC: durable when it returns. Length a multiple of 4096.
  virtual Status Write(const std::string& dev_path, uint64_t offset, std::span<const uint8_t> bytes) = 0;
  // Writes zeros over [offset, offset + len), then flushes.
  virtual Status Zero(const std::string& dev_path, uint64_t offset, uint64_t len) = 0;
};

std::unique_ptr<RawDiskIo> NewDirectDiskIo();

}  // namespace cocostorage::agent
