#include "cocostorage/testing/temp_dir.h"

#include <ftw.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "cocostorage/common/strings.h"

namespace cocostorage::testing {

Status RemoveTree(const std::string& path) {
  struct stat st {};
  if (path.empty() || lstat(path.c_str(), &st) != 0) return OkStatus();
  int rc = nftw(
      path.c_str(),
      [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p) == 0 || errno == ENOENT ? 0 : -1; },
      16, FTW_DEPTH | FTW_PHYS);
  if (rc != 0) return ErrnoStatus(errno, Cat("removing ", path));
  return OkStatus();
}

StatusOr<TempDir> TempDir::Make(const std::string& parent, const std::string& prefix) {
  std::string tmpl = Cat(parent, "/", prefix, ".XXXXXX");
  if (mkdtemp(tmpl.data()) == nullptr) return ErrnoStatus(errno, Cat("mkdtemp ", tmpl));
  TempDir d;
  d.path_ = tmpl;
  d.keep_ = std::getenv("COCOSTORAGE_KEEP_TMP") != nullptr || std::getenv("COCOSTORAGE_E2E_KEEP") != nullptr;
  return d;
}

TempDir::~TempDir() {
  if (!path_.empty() && !keep_) (void)RemoveTree(path_);
}

TempDir::TempDir(TempDir&& o) noexcept : path_(std::exchange(o.path_, "")), keep_(o.keep_) {}

TempDir& TempDir::operator=(TempDir&& o) noexcept {
  if (this != &o) {
    if (!path_.empty() && !keep_) (void)RemoveTree(path_);
    path_ = std::exchange(o.path_, "");
    keep_ = o.keep_;
  }
  return *this;
}

}  // namespace cocostorage::testing
