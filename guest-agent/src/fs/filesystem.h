// mkfs, mount(2), umount and what /proc/self/mountinfo says, behind one
// interface so orchestration logic can be tested with a fake.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cocostorage/common/exec.h"
#include "cocostorage/common/status.h"

namespace cocostorage::agent {

struct MountEntry {
  std::string dev_number;  // "253:3"
  std::string mount_point;
  std::string fs_type;
  std::string source;
  // The mount or its super block is read-only (ext4 and xfs turn read-only
  // on their own after I/O errors: errors=remount-ro, a journal abort).
  bool read_only = false;
};

// Pure: parses the text of /proc/self/mountinfo (octal escapes decoded).
std::vector<MountEntry> ParseMountInfo(const std::string& text);

struct FsUsage {
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;
  uint64_t available_bytes = 0;
};

// Targets (mount points, block nodes) are handled without following
// symlinks: the parent directory is opened with RESOLVE_NO_SYMLINKS, the
// target itself with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV
// relative to it (so a symlink or an existing mount point at the target is
// refused), and mount(2) goes through the opened file descriptor.
class Filesystem {
 public:
  virtual ~Filesystem() = default;
  virtual Status Mkfs(const std::vector<std::string>& argv) = 0;
  virtual Status Mount(const std::string& device, const std::string& target, const std::string& fs_type,
                       unsigned long flags, const std::string& data) = 0;
  // Not mounted is success. EBUSY -> UNAVAILABLE (a process still uses it).
  virtual Status Unmount(const std::string& target) = 0;
  virtual StatusOr<std::vector<MountEntry>> Mounts() = 0;
  virtual StatusOr<FsUsage> Usage(const std::string& mount_point) = 0;
  // Sets owner group and setgid bit on the volume root, like kubelet's fsGroup.
  virtual Status ApplyFsGroup(const std::string& mount_point, int64_t gid) = 0;
  // Block mode: a device node at `path` for `dev_number`, group `gid` if set.
  virtual Status MakeBlockNode(const std::string& path, unsigned major, unsigned minor, std::optional<int64_t> gid) = 0;
  virtual Status RemoveNode(const std::string& path) = 0;
  // Whether `path` is (not a symlink to) the block device node maj:min.
  virtual StatusOr<bool> IsBlockNode(const std::string& path, unsigned major, unsigned minor) = 0;
  virtual StatusOr<uint64_t> BlockDeviceSize(const std::string& dev_path) = 0;
  // Creates `path` and missing parents (mode for new ones). For trusted,
  // configured paths only (the storage root).
  virtual Status MakeDirs(const std::string& path, unsigned mode) = 0;
  // Creates the single directory `path` (its parent must exist); an existing
  // directory is fine, a symlink or anything else there is FAILED_PRECONDITION.
  virtual Status MakeDir(const std::string& path, unsigned mode) = 0;
  // Removes `path` if it is an empty directory; anything else is left alone.
  virtual void RemoveEmptyDir(const std::string& path) = 0;
};

std::unique_ptr<Filesystem> NewSystemFilesystem(CommandRunner* runner);

}  // namespace cocostorage::agent
