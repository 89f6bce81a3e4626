// Narrow interface over device-mapper ioctls (libdevmapper), serialized.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cocostorage/common/status.h"

namespace cocostorage::agent {

struct DmTarget {
  uint64_t start = 0;   // sectors
  uint64_t length = 0;  // sectors
  std::string type;     // "thin-pool", "thin", "zero"
  std::string params;
};

struct DmInfo {
  unsigned major = 0;
  unsigned minor = 0;
  int open_count = 0;
  std::string DevNumber() const;
  std::string DevPath() const;  // /dev/dm-N (devtmpfs always has it)
};

class DmClient {
 public:
  virtual ~DmClient() = default;
  virtual Status Create(const std::string& name, const std::vector<DmTarget>& table, bool read_only) = 0;
  // Missing is success. Retries briefly on EBUSY (a closing opener).
  virtual Status Remove(const std::string& name) = 0;
  virtual Status Message(const std::string& name, const std::string& message) = 0;
  virtual StatusOr<std::optional<DmInfo>> Info(const std::string& name) = 0;
  virtual StatusOr<std::vector<std::string>> ListNames() = 0;
  // The targets' status lines (`dmsetup status`): `params` is the target's
  // status text, e.g. "Fail" for a thin pool that gave up.
  virtual StatusOr<std::vector<DmTarget>> TargetStatus(const std::string& name) = 0;
  // The loaded table (`dmsetup table`), to verify what the kernel runs. A
  // dm-crypt target's parameters hold key material: they are never returned
  // (`params` empty for type "crypt").
  virtual StatusOr<std::vector<DmTarget>> Table(const std::string& name) = 0;
};

std::unique_ptr<DmClient> NewLibDevmapperClient();

}  // namespace cocostorage::agent
