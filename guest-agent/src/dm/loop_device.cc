#include "dm/loop_device.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "cocostorage/common/strings.h"

namespace cocostorage::agent {

std::string LoopAttachment::DevNumber() const { return Cat(major, ":", minor); }

namespace {

class KernelLoopDevices final : public LoopDevices {
 public:
  StatusOr<LoopAttachment> Attach(const std::string& file) override {
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
};

}  // namespace

std::unique_ptr<LoopDevices> NewKernelLoopDevices() { return std::make_unique<KernelLoopDevices>(); }

}  // namespace cocostorage::agent
