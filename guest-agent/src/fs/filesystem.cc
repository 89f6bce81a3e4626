#include "fs/filesystem.h"

#include <fcntl.h>
#include <libmount/libmount.h>
#include <linux/fs.h>
#include <linux/openat2.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/common/unique_fd.h"

namespace cocostorage::agent {
namespace {

StatusOr<UniqueFd> OpenAt2(int dirfd, const std::string& path, uint64_t flags, uint64_t resolve, int* err = nullptr) {
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  how.resolve = resolve;
  int fd = static_cast<int>(syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof(how)));
  if (fd < 0) {
    if (err != nullptr) *err = errno;
    return ErrnoStatus(errno, Cat("opening ", path, " without following symlinks"));
  }
  return UniqueFd(fd);
}

struct SplitPath {
  std::string parent;
  std::string name;
};

StatusOr<SplitPath> SplitTarget(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos || slash + 1 >= path.size()) {
    return absl::InvalidArgumentError(Cat("bad target path ", path));
  }
  std::string name = path.substr(slash + 1);
  if (name == "." || name == "..") return absl::InvalidArgumentError(Cat("bad target path ", path));
  return SplitPath{slash == 0 ? "/" : path.substr(0, slash), name};
}

// The parent of a target, opened without following any symlink on the way.
StatusOr<UniqueFd> OpenParent(const SplitPath& p) {
  return OpenAt2(AT_FDCWD, p.parent, O_PATH | O_DIRECTORY, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
}

// The target itself: beneath its parent, no symlink, no mount crossing. An
// ELOOP/EXDEV here means a symlink or a mount point sits at the target.
StatusOr<UniqueFd> OpenTarget(int parent_fd, const SplitPath& p, uint64_t flags) {
  int err = 0;
  auto fd = OpenAt2(parent_fd, p.name, flags,
                    RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV, &err);
  if (!fd.ok() && (err == ELOOP || err == EXDEV || err == ENOTDIR)) {
    return absl::FailedPreconditionError(Cat(p.parent, "/", p.name, " is ",
                                             err == ELOOP   ? "a symlink"
                                             : err == EXDEV ? "a mount point"
                                                            : "not a directory",
                                             "; refusing to use it as a target"));
  }
  return fd;
}

class SystemFilesystem : public Filesystem {
 public:
  explicit SystemFilesystem(CommandRunner* runner) : runner_(runner) {}

  Status Mkfs(const std::vector<std::string>& argv) override {
    CommandSpec spec{argv, std::chrono::minutes(30)};
    COCO_ASSIGN_OR_RETURN(CommandResult r, runner_->Run(spec));
    if (r.exit_code != 0) return absl::InternalError(DescribeFailure(spec, r));
    return OkStatus();
  }

  Status Mount(const std::string& device, const std::string& target, const std::string& fs_type, unsigned long flags,
               const std::string& data) override {
    COCO_ASSIGN_OR_RETURN(SplitPath p, SplitTarget(target));
    COCO_ASSIGN_OR_RETURN(UniqueFd parent, OpenParent(p));
    COCO_ASSIGN_OR_RETURN(UniqueFd dir, OpenTarget(parent.get(), p, O_PATH | O_DIRECTORY));
    // Through the opened directory: what was checked is what gets mounted on.
    const std::string via = Cat("/proc/self/fd/", dir.get());
    if (mount(device.c_str(), via.c_str(), fs_type.c_str(), flags, data.empty() ? nullptr : data.c_str()) != 0) {
      return ErrnoStatus(errno, Cat("mounting ", device, " (", fs_type, ") on ", target));
    }
    return OkStatus();
  }

  Status Unmount(const std::string& target) override {
    for (int attempt = 0; attempt < 20; ++attempt) {
      if (umount2(target.c_str(), UMOUNT_NOFOLLOW) == 0) return OkStatus();
      if (errno == EINVAL || errno == ENOENT) return OkStatus();  // not a mount point (any more)
      if (errno != EBUSY) return ErrnoStatus(errno, Cat("unmounting ", target));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return absl::UnavailableError(Cat(target, " is busy: a process still uses the volume"));
  }

  StatusOr<std::vector<MountEntry>> Mounts() override {
    COCO_ASSIGN_OR_RETURN(std::string text, ReadFileToString("/proc/self/mountinfo"));
    return ParseMountInfo(text);
  }

  StatusOr<FsUsage> Usage(const std::string& mount_point) override {
    struct statvfs sv {};
    if (statvfs(mount_point.c_str(), &sv) != 0) return ErrnoStatus(errno, Cat("statvfs ", mount_point));
    FsUsage u;
    u.capacity_bytes = static_cast<uint64_t>(sv.f_blocks) * sv.f_frsize;
    u.available_bytes = static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
    u.used_bytes = static_cast<uint64_t>(sv.f_blocks - sv.f_bfree) * sv.f_frsize;
    return u;
  }

  Status ApplyFsGroup(const std::string& mount_point, int64_t gid) override {
    COCO_ASSIGN_OR_RETURN(SplitPath p, SplitTarget(mount_point));
    COCO_ASSIGN_OR_RETURN(UniqueFd parent, OpenParent(p));
    // Our freshly mounted file system's root (crossing into it is expected).
    COCO_ASSIGN_OR_RETURN(UniqueFd dir, OpenAt2(parent.get(), p.name, O_RDONLY | O_DIRECTORY,
                                                RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS));
    if (fchown(dir.get(), static_cast<uid_t>(-1), static_cast<gid_t>(gid)) != 0) {
      return ErrnoStatus(errno, Cat("chown ", mount_point));
    }
    if (fchmod(dir.get(), 02775) != 0) return ErrnoStatus(errno, Cat("chmod ", mount_point));
    return OkStatus();
  }

  Status MakeBlockNode(const std::string& path, unsigned major, unsigned minor, std::optional<int64_t> gid) override {
    COCO_ASSIGN_OR_RETURN(SplitPath p, SplitTarget(path));
    COCO_ASSIGN_OR_RETURN(UniqueFd parent, OpenParent(p));
    struct stat st {};
    if (fstatat(parent.get(), p.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      if (S_ISBLK(st.st_mode) && st.st_rdev == makedev(major, minor)) return OkStatus();
      return absl::FailedPreconditionError(Cat(path, " exists and is not the volume's device node"));
    }
    // mknodat never follows a symlink at the name: an existing one is EEXIST.
    if (mknodat(parent.get(), p.name.c_str(), S_IFBLK | 0660, makedev(major, minor)) != 0) {
      return ErrnoStatus(errno, Cat("mknod ", path));
    }
    if (gid && fchownat(parent.get(), p.name.c_str(), 0, static_cast<gid_t>(*gid), AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoStatus(errno, Cat("chown ", path));
    }
    return OkStatus();
  }

  Status RemoveNode(const std::string& path) override {
    COCO_ASSIGN_OR_RETURN(SplitPath p, SplitTarget(path));
    auto parent = OpenParent(p);
    if (!parent.ok()) return absl::IsNotFound(parent.status()) ? OkStatus() : parent.status();
    struct stat st {};
    if (fstatat(parent->get(), p.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return OkStatus();
    if (!S_ISBLK(st.st_mode)) return absl::FailedPreconditionError(Cat(path, " is not a block device node"));
    if (unlinkat(parent->get(), p.name.c_str(), 0) != 0 && errno != ENOENT) {
      return ErrnoStatus(errno, Cat("removing ", path));
    }
    return OkStatus();
  }

  StatusOr<bool> IsBlockNode(const std::string& path, unsigned major, unsigned minor) override {
    struct stat st {};
    if (lstat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) return false;
      return ErrnoStatus(errno, Cat("stat ", path));
    }
    return S_ISBLK(st.st_mode) && st.st_rdev == makedev(major, minor);
  }

  Status MakeDirs(const std::string& path, unsigned mode) override { return ::cocostorage::MakeDirs(path, mode); }

  Status MakeDir(const std::string& path, unsigned mode) override {
    COCO_ASSIGN_OR_RETURN(SplitPath p, SplitTarget(path));
    COCO_ASSIGN_OR_RETURN(UniqueFd parent, OpenParent(p));
    if (mkdirat(parent.get(), p.name.c_str(), mode) != 0 && errno != EEXIST) {
      return ErrnoStatus(errno, Cat("mkdir ", path));
    }
    // Whatever is there now must be a plain directory on the parent's file
    // system: not a symlink, not a mount point.
    COCO_ASSIGN_OR_RETURN(UniqueFd dir, OpenTarget(parent.get(), p, O_PATH | O_DIRECTORY));
    return OkStatus();
  }

  void RemoveEmptyDir(const std::string& path) override {
    auto p = SplitTarget(path);
    if (!p.ok()) return;
    auto parent = OpenParent(*p);
    if (parent.ok()) unlinkat(parent->get(), p->name.c_str(), AT_REMOVEDIR);
  }

  StatusOr<uint64_t> BlockDeviceSize(const std::string& dev_path) override {
    UniqueFd fd(open(dev_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return ErrnoStatus(errno, Cat("opening ", dev_path));
    uint64_t size = 0;
    if (ioctl(fd.get(), BLKGETSIZE64, &size) != 0) return ErrnoStatus(errno, Cat("BLKGETSIZE64 ", dev_path));
    return size;
  }

 private:
  CommandRunner* runner_;
};

}  // namespace

std::vector<MountEntry> ParseMountInfo(const std::string& text) {
  std::vector<MountEntry> out;
  if (text.empty()) return out;
  // libmount parses (escapes, optional fields, the "-" separator); fmemopen
  // hands it the text.
  std::string copy = text;
  std::unique_ptr<FILE, int (*)(FILE*)> f(fmemopen(copy.data(), copy.size(), "r"), &fclose);
  if (!f) return out;
  std::unique_ptr<libmnt_table, void (*)(libmnt_table*)> tb(mnt_new_table(), &mnt_unref_table);
  if (!tb) return out;
  // A malformed line is skipped, not fatal: the kernel wrote the file.
  mnt_table_set_parser_errcb(tb.get(), [](libmnt_table*, const char*, int) { return 1; });
  if (mnt_table_parse_stream(tb.get(), f.get(), "mountinfo") != 0) return out;
  std::unique_ptr<libmnt_iter, void (*)(libmnt_iter*)> it(mnt_new_iter(MNT_ITER_FORWARD), &mnt_free_iter);
  libmnt_fs* fs = nullptr;
  while (it && mnt_table_next_fs(tb.get(), it.get(), &fs) == 0) {
    MountEntry e;
    const dev_t dev = mnt_fs_get_devno(fs);
    e.dev_number = Cat(::major(dev), ":", ::minor(dev));
    const char* target = mnt_fs_get_target(fs);
    const char* type = mnt_fs_get_fstype(fs);
    const char* source = mnt_fs_get_source(fs);
    e.mount_point = target ? target : "";
    e.fs_type = type ? type : "";
    e.source = source ? source : "";
    // Per-mount flags and the super block's: an fs that shut itself down
    // after errors only flips the latter.
    for (const char* opts : {mnt_fs_get_vfs_options(fs), mnt_fs_get_fs_options(fs)}) {
      if (opts != nullptr && mnt_optstr_get_option(opts, "ro", nullptr, nullptr) == 0) e.read_only = true;
    }
    out.push_back(std::move(e));
  }
  return out;
}

std::unique_ptr<Filesystem> NewSystemFilesystem(CommandRunner* runner) {
  return std::make_unique<SystemFilesystem>(runner);
}

}  // namespace cocostorage::agent
