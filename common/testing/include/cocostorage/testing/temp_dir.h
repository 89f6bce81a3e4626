// A directory that exists for a test's lifetime and is removed with all it
// holds afterwards (no symlink following). Move-only. Keep `parent` short for
// unix socket paths (107 bytes).
#pragma once

#include <string>

#include "cocostorage/common/status.h"

namespace cocostorage::testing {

class TempDir {
 public:
  static StatusOr<TempDir> Make(const std::string& parent = "/tmp", const std::string& prefix = "coco");
  TempDir() = default;
  ~TempDir();
  TempDir(TempDir&& o) noexcept;
  TempDir& operator=(TempDir&& o) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // Keeps the directory (e.g. when COCOSTORAGE_KEEP_TMP is set, for debugging).
  void Keep() { keep_ = true; }

 private:
  std::string path_;
  bool keep_ = false;
};

// Removes a tree without following symlinks. Missing is fine.
Status RemoveTree(const std::string& path);

}  // namespace cocostorage::testing
