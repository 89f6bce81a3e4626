// Memory for key material: page-aligned, locked (never swapped), excluded from
// core dumps, and zeroized before it is released. Move-only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "cocostorage/common/status.h"

namespace cocostorage {

class SecureBuffer {
 public:
  SecureBuffer() = default;
  ~SecureBuffer();
  SecureBuffer(SecureBuffer&& other) noexcept;
  SecureBuffer& operator=(SecureBuffer&& other) noexcept;
  SecureBuffer(const SecureBuffer&) = delete;
  SecureBuffer& operator=(const SecureBuffer&) = delete;

  // Allocates `size` zeroed bytes of locked memory.
  static StatusOr<SecureBuffer> Allocate(size_t size);
  // Allocates `size` bytes and fills them from getrandom(2) (blocking until the
  // kernel's pool is initialised, never falling back to a weaker source).
  static StatusOr<SecureBuffer> Random(size_t size);

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<const uint8_t> span() const { return {data_, size_}; }
  const char* chars() const { return reinterpret_cast<const char*>(data_); }

  // Zeroizes and frees now (the destructor does the same).
  void Wipe();

 private:
  SecureBuffer(uint8_t* data, size_t size, size_t mapped) : data_(data), size_(size), mapped_(mapped) {}
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t mapped_ = 0;
};

// Fills `out` from getrandom(2).
Status FillRandom(std::span<uint8_t> out);

}  // namespace cocostorage
