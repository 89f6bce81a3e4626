// Key providers: where an activation's key material comes from. Every key is
// returned in locked, non-dumpable memory (SecureBuffer) of exactly the size
// the cipher suite needs, is borrowed by the crypt engine for format/open and
// is zeroized when the buffer goes away. Nothing here logs or stores a key.
#pragma once

#include <cstddef>
#include <memory>

#include "cocostorage/common/secure_buffer.h"
#include "cocostorage/common/status.h"
#include "core/key_source.h"

namespace cocostorage::agent {

// FAILED_PRECONDITION unless a key for `source` has exactly `want` bytes: the
// key format is raw bytes, never truncated or padded.
Status CheckKeySize(const KeySource& source, size_t have, size_t want);

class KeyProvider {
 public:
  virtual ~KeyProvider() = default;
  // `bytes` of key for `source`. A resource that is not exactly `bytes` long
  // is refused (never truncated or padded).
  virtual StatusOr<SecureBuffer> GetKey(const KeySource& source, size_t bytes) = 0;
};

// Fresh key from getrandom(2) for every call; refuses non-ephemeral sources.
class EphemeralKeyProvider final : public KeyProvider {
 public:
  StatusOr<SecureBuffer> GetKey(const KeySource& source, size_t bytes) override;
};

// Routes by source kind. Without a KBS provider (this version), KBS sources
// are UNIMPLEMENTED before anything touches a device.
class KeyProviderRouter final : public KeyProvider {
 public:
  explicit KeyProviderRouter(std::unique_ptr<KeyProvider> ephemeral, std::unique_ptr<KeyProvider> kbs = nullptr)
      : ephemeral_(std::move(ephemeral)), kbs_(std::move(kbs)) {}
  StatusOr<SecureBuffer> GetKey(const KeySource& source, size_t bytes) override;

 private:
  std::unique_ptr<KeyProvider> ephemeral_;
  std::unique_ptr<KeyProvider> kbs_;
};

}  // namespace cocostorage::agent
