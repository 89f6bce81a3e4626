#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>

#include "backend.h"
#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/common/unique_fd.h"
#include "volume_state.h"

namespace cocostorage::csi {
namespace {

constexpr std::string_view kExt = ".img";

class SparseFileBackend final : public VolumeBackend {
 public:
  explicit SparseFileBackend(std::string root) : root_(std::move(root)) {}

  std::string Name() const override { return "sparse-file"; }

  StatusOr<BackingInfo> Create(const std::string& id, int64_t size_bytes) override {
    COCO_RETURN_IF_ERROR(MakeDirs(root_, 0700));
    std::string path = PathFor(id);
    UniqueFd fd(open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd.valid()) return ErrnoStatus(errno, Cat("creating ", path));
    struct stat st {};
    if (fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, Cat("stat ", path));
    if (!S_ISREG(st.st_mode)) return absl::FailedPreconditionError(Cat(path, " is not a regular file"));
    if (st.st_size < size_bytes) {
      if (ftruncate(fd.get(), size_bytes) != 0) {
        int err = errno;
        return err == ENOSPC || err == EFBIG ? absl::ResourceExhaustedError(Cat("sizing ", path, ": no space"))
                                             : ErrnoStatus(err, Cat("sizing ", path));
      }
      if (fsync(fd.get()) != 0) return ErrnoStatus(errno, Cat("fsync ", path));
      SyncDir(root_);
    }
    return Info(fd.get(), path);
  }

  Status Delete(const std::string& id) override {
    COCO_RETURN_IF_ERROR(RemoveFileIfExists(PathFor(id)));
    SyncDir(root_);
    return OkStatus();
  }

  Status Quarantine(const std::string& id) override {
    std::string from = PathFor(id);
    const std::string base = Cat(from, ".orphan-", static_cast<long long>(time(nullptr)));
    // Never over an earlier orphan of the same id (two crashes in one second).
    for (int n = 0;; ++n) {
      const std::string to = n == 0 ? base : Cat(base, "-", n);
      if (renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) break;
      if (errno == ENOENT) return OkStatus();
      if (errno != EEXIST || n >= 1000) return ErrnoStatus(errno, Cat("renaming ", from));
    }
    SyncDir(root_);
    return OkStatus();
  }

  StatusOr<BackingInfo> Expand(const std::string& id, int64_t size_bytes) override {
    std::string path = PathFor(id);
    UniqueFd fd(open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.valid()) return ErrnoStatus(errno, Cat("opening ", path));
    struct stat st {};
    if (fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, Cat("stat ", path));
    if (st.st_size < size_bytes) {
      if (ftruncate(fd.get(), size_bytes) != 0) return ErrnoStatus(errno, Cat("growing ", path));
      if (fsync(fd.get()) != 0) return ErrnoStatus(errno, Cat("fsync ", path));
    }
    return Info(fd.get(), path);
  }

  StatusOr<BackingInfo> Stat(const std::string& id) const override {
    std::string path = PathFor(id);
    UniqueFd fd(open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd.valid()) return ErrnoStatus(errno, Cat("opening ", path));
    return Info(fd.get(), path);
  }

  StatusOr<std::vector<std::string>> List() const override {
    std::vector<std::string> ids;
    DIR* d = opendir(root_.c_str());
    if (d == nullptr) {
      if (errno == ENOENT) return ids;
      return ErrnoStatus(errno, Cat("opening ", root_));
    }
    while (dirent* e = readdir(d)) {
      std::string n = e->d_name;
      if (n.size() > kExt.size() && n.compare(n.size() - kExt.size(), kExt.size(), kExt) == 0) {
        ids.push_back(n.substr(0, n.size() - kExt.size()));
      }
    }
    closedir(d);
    return ids;
  }

  StatusOr<int64_t> FreeBytes() const override {
    struct statvfs vfs {};
    if (statvfs(root_.c_str(), &vfs) != 0) return ErrnoStatus(errno, Cat("statvfs ", root_));
    return static_cast<int64_t>(vfs.f_bavail) * static_cast<int64_t>(vfs.f_frsize);
  }

  Status Check() const override {
    if (access(root_.c_str(), W_OK | X_OK) != 0) return ErrnoStatus(errno, Cat("backing root ", root_));
    return OkStatus();
  }

 private:
  std::string PathFor(const std::string& id) const { return Cat(root_, "/", id, kExt); }

  static StatusOr<BackingInfo> Info(int fd, const std::string& path) {
    struct stat st {};
    if (fstat(fd, &st) != 0) return ErrnoStatus(errno, Cat("stat ", path));
    BackingInfo info;
    info.device = path;
    info.size_bytes = st.st_size;
    info.allocated_bytes = static_cast<int64_t>(st.st_blocks) * 512;
    return info;
  }

  std::string root_;
};

}  // namespace

VolumeBackendPtr NewSparseFileBackend(std::string root) { return std::make_unique<SparseFileBackend>(std::move(root)); }

}  // namespace cocostorage::csi
