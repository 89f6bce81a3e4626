#include "cocostorage/common/secure_buffer.h"

#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace cocostorage {

SecureBuffer::~SecureBuffer() { Wipe(); }

SecureBuffer::SecureBuffer(SecureBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      mapped_(std::exchange(other.mapped_, 0)) {}

SecureBuffer& SecureBuffer::operator=(SecureBuffer&& other) noexcept {
  if (this != &other) {
    Wipe();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    mapped_ = std::exchange(other.mapped_, 0);
  }
  return *this;
}

StatusOr<SecureBuffer> SecureBuffer::Allocate(size_t size) {
  if (size == 0) return absl::InvalidArgumentError("secure buffer of size 0");
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t mapped = (size + page - 1) / page * page;
  void* p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return ErrnoStatus(errno, "mmap for key memory");
  if (mlock(p, mapped) != 0) {
    int err = errno;
    munmap(p, mapped);
    // Refusing is deliberate: unlocked key pages could reach swap.
    return ErrnoStatus(err, "mlock for key memory");
  }
  madvise(p, mapped, MADV_DONTDUMP);
  madvise(p, mapped, MADV_WIPEONFORK);
  return SecureBuffer(static_cast<uint8_t*>(p), size, mapped);
}

StatusOr<SecureBuffer> SecureBuffer::Random(size_t size) {
  COCO_ASSIGN_OR_RETURN(SecureBuffer buf, Allocate(size));
  COCO_RETURN_IF_ERROR(FillRandom({buf.data(), buf.size()}));
  return buf;
}

void SecureBuffer::Wipe() {
  if (data_ == nullptr) return;
  explicit_bzero(data_, mapped_);
  munlock(data_, mapped_);
  munmap(data_, mapped_);
  data_ = nullptr;
  size_ = 0;
  mapped_ = 0;
}

Status FillRandom(std::span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "getrandom");
    }
    done += static_cast<size_t>(n);
  }
  return OkStatus();
}

}  // namespace cocostorage
