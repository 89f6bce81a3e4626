#include "device/raw_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "cocostorage/common/strings.h"
#include "cocostorage/common/unique_fd.h"

namespace cocostorage::agent {
namespace {

constexpr uint64_t kAlign = 4096;
constexpr size_t kChunk = 1 << 20;

struct AlignedBuffer {
  explicit AlignedBuffer(size_t n) {
    if (posix_memalign(&p, kAlign, n) != 0) p = nullptr;
  }
  ~AlignedBuffer() { free(p); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  void* p = nullptr;
};

Status CheckAligned(uint64_t offset, uint64_t len, const std::string& what) {
  if (offset % kAlign != 0 || len % kAlign != 0) {
    return absl::InternalError(Cat(what, ": offset ", offset, " / length ", len, " not 4096-aligned"));
  }
  return OkStatus();
}

class DirectDiskIo final : public RawDiskIo {
 public:
  StatusOr<std::vector<uint8_t>> Read(const std::string& dev_path, uint64_t offset, uint64_t len) override {
    COCO_RETURN_IF_ERROR(CheckAligned(offset, len, Cat("reading ", dev_path)));
    UniqueFd fd(open(dev_path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC));
    if (!fd.valid()) return ErrnoStatus(errno, Cat("opening ", dev_path));
    AlignedBuffer buf(kChunk);
    if (buf.p == nullptr) return absl::ResourceExhaustedError("read buffer");
    std::vector<uint8_t> out;
    out.reserve(len);
    uint64_t done = 0;
    while (done < len) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, len - done));
      ssize_t r = pread(fd.get(), buf.p, n, static_cast<off_t>(offset + done));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return ErrnoStatus(errno, Cat("reading ", dev_path, " at byte ", offset + done));
      if (r == 0) return absl::OutOfRangeError(Cat(dev_path, " ends before byte ", offset + len));
      auto* p = static_cast<const uint8_t*>(buf.p);
      out.insert(out.end(), p, p + r);
      done += static_cast<uint64_t>(r);
    }
    return out;
  }

  Status Write(const std::string& dev_path, uint64_t offset, std::span<const uint8_t> bytes) override {
    COCO_RETURN_IF_ERROR(CheckAligned(offset, bytes.size(), Cat("writing ", dev_path)));
    return WriteLoop(dev_path, offset, bytes.size(),
                     [&](void* dst, uint64_t at, size_t n) { std::memcpy(dst, bytes.data() + at, n); });
  }

  Status Zero(const std::string& dev_path, uint64_t offset, uint64_t len) override {
    COCO_RETURN_IF_ERROR(CheckAligned(offset, len, Cat("zeroing ", dev_path)));
    return WriteLoop(dev_path, offset, len, [](void* dst, uint64_t, size_t n) { std::memset(dst, 0, n); });
  }

 private:
  template <typename Fill>
  Status WriteLoop(const std::string& dev_path, uint64_t offset, uint64_t len, Fill fill) {
    UniqueFd fd(open(dev_path.c_str(), O_WRONLY | O_DIRECT | O_DSYNC | O_CLOEXEC));
    if (!fd.valid()) return ErrnoStatus(errno, Cat("opening ", dev_path, " for writing"));
    AlignedBuffer buf(kChunk);
    if (buf.p == nullptr) return absl::ResourceExhaustedError("write buffer");
    uint64_t done = 0;
    while (done < len) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, len - done));
      fill(buf.p, done, n);
      ssize_t w = pwrite(fd.get(), buf.p, n, static_cast<off_t>(offset + done));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return ErrnoStatus(w < 0 ? errno : EIO, Cat("writing ", dev_path, " at byte ", offset + done));
      done += static_cast<uint64_t>(w);
    }
    if (fdatasync(fd.get()) != 0) return ErrnoStatus(errno, Cat("flushing ", dev_path));
    return OkStatus();
  }
};

}  // namespace

std::unique_ptr<RawDiskIo> NewDirectDiskIo() { return std::make_unique<DirectDiskIo>(); }

}  // namespace cocostorage::agent
