// A directory of small records, one file "<id>.json" (mode 0600) per id,
// written atomically. The storage layer under both binaries' state stores:
// they own the format of a record, this owns the files.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "cocostorage/common/status.h"

namespace cocostorage {

class RecordDir {
 public:
  explicit RecordDir(std::string dir) : dir_(std::move(dir)) {}
  // Creates the directory (0700) and removes temp files of writes a crash
  // interrupted ("<id>.json.tmp.<pid>", see AtomicWriteFile).
  Status Init() const;
  // nullopt when there is no record.
  StatusOr<std::optional<std::string>> Read(const std::string& id) const;
  Status Write(const std::string& id, const std::string& content) const;
  Status Remove(const std::string& id) const;          // missing is OK
  StatusOr<std::vector<std::string>> ListIds() const;  // sorted
  std::string PathFor(const std::string& id) const { return dir_ + "/" + id + ".json"; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

// fsync of a directory, so a rename or unlink in it is durable. Best effort.
void SyncDir(const std::string& dir);

}  // namespace cocostorage
