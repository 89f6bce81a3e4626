#include "dm/zero_guard.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"

namespace cocostorage::agent {

StatusOr<GuardLayout> ComputeGuardLayout(uint64_t data_bytes) {
  constexpr uint64_t kMinBlock = 64 * 1024;
  constexpr uint64_t kMaxBlocks = 1ull << 20;
  if (data_bytes < kMinBlock * 16) {
    return absl::FailedPreconditionError(Cat("encrypted device of ", data_bytes, " bytes is too small for the guard"));
  }
  uint64_t block = kMinBlock;
  while (data_bytes / block > kMaxBlocks) block *= 2;
  GuardLayout l;
  l.block_sectors = block / 512;
  l.nr_blocks = data_bytes / block;
  l.volume_sectors = l.nr_blocks * l.block_sectors;
  // dm-thin needs about 64 bytes per mapped block in the worst case; double it
  // for btree slack plus a fixed 4 MiB for superblock and space maps.
  uint64_t meta = l.nr_blocks * 128 + (4ull << 20);
  l.meta_bytes = (meta + 4095) / 4096 * 4096;
  return l;
}

StatusOr<LoopAttachment> AttachLoop(const std::string& file) {
  UniqueFd backing(open(file.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (!backing.valid()) return ErrnoStatus(errno, Cat("opening ", file));
  UniqueFd ctl(open("/dev/loop-control", O_RDWR | O_CLOEXEC));
  if (!ctl.valid()) return ErrnoStatus(errno, "opening /dev/loop-control (is the loop module loaded?)");
  for (int attempt = 0; attempt < 20; ++attempt) {
    int n = ioctl(ctl.get(), LOOP_CTL_GET_FREE);
    if (n < 0) return ErrnoStatus(errno, "LOOP_CTL_GET_FREE");
    std::string path = Cat("/dev/loop", n);
    UniqueFd dev;
    for (int wait = 0; wait < 50 && !dev.valid(); ++wait) {
      dev.Reset(open(path.c_str(), O_RDWR | O_CLOEXEC));
      if (!dev.valid() && errno == ENOENT)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      else
        break;
    }
    if (!dev.valid()) return ErrnoStatus(errno, Cat("opening ", path));
    loop_config cfg{};
    cfg.fd = static_cast<uint32_t>(backing.get());
    cfg.block_size = 4096;
    // Autoclear: the kernel detaches the loop device when its last user (our
    // fd now, the dm table later) goes away, so a crash cannot leak it.
    cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
    if (ioctl(dev.get(), LOOP_CONFIGURE, &cfg) != 0) {
      if (errno == EBUSY) continue;  // raced with another user of that loop device
      return ErrnoStatus(errno, Cat("LOOP_CONFIGURE ", path));
    }
    struct stat st {};
    if (fstat(dev.get(), &st) != 0) return ErrnoStatus(errno, Cat("stat ", path));
    LoopAttachment out;
    out.fd = std::move(dev);
    out.major = ::major(st.st_rdev);
    out.minor = ::minor(st.st_rdev);
    out.path = path;
    return out;
  }
  return absl::UnavailableError("no free loop device after 20 attempts");
}

Status CreateZeroGuard(DmClient& dm, const GuardNames& names, const std::string& data_dev, const GuardLayout& layout) {
  {
    UniqueFd meta(open(names.meta_file.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!meta.valid()) return ErrnoStatus(errno, Cat("creating ", names.meta_file));
    // A zeroed metadata device makes dm-thin format it on first load.
    if (ftruncate(meta.get(), static_cast<off_t>(layout.meta_bytes)) != 0) {
      return ErrnoStatus(errno, Cat("sizing ", names.meta_file));
    }
  }
  auto cleanup = [&](const Status& why) {
    (void)dm.Remove(names.thin);
    (void)dm.Remove(names.pool);
    (void)RemoveFileIfExists(names.meta_file);
    return why;
  };
  auto loop = AttachLoop(names.meta_file);
  if (!loop.ok()) return cleanup(loop.status());

  // error_if_no_space: fail writes instead of queueing them forever (the pool
  // is never overcommitted, so this only fires on a metadata sizing bug).
  DmTarget pool{0, layout.volume_sectors, "thin-pool",
                Cat(loop->major, ":", loop->minor, " ", data_dev, " ", layout.block_sectors, " 0 1 error_if_no_space")};
  if (Status s = dm.Create(names.pool, {pool}, false); !s.ok()) return cleanup(s);
  loop->fd.Reset();  // the pool holds the loop device now
  if (Status s = dm.Message(names.pool, "create_thin 0"); !s.ok()) return cleanup(s);
  auto pool_info = dm.Info(names.pool);
  if (!pool_info.ok()) return cleanup(pool_info.status());
  if (!*pool_info) return cleanup(absl::InternalError(Cat("pool ", names.pool, " vanished")));
  DmTarget thin{0, layout.volume_sectors, "thin", Cat((*pool_info)->DevNumber(), " 0")};
  if (Status s = dm.Create(names.thin, {thin}, false); !s.ok()) return cleanup(s);
  return OkStatus();
}

Status RemoveZeroGuard(DmClient& dm, const GuardNames& names) {
  COCO_RETURN_IF_ERROR(dm.Remove(names.thin));
  COCO_RETURN_IF_ERROR(dm.Remove(names.pool));
  return RemoveFileIfExists(names.meta_file);
}

}  // namespace cocostorage::agent
