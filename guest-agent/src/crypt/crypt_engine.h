// LUKS2 (+ dm-integrity) through the libcryptsetup API.
//
// libcryptsetup is not thread-safe: every call in this module runs under one
// process-wide mutex. Keys are only borrowed (SecureBuffer) for the duration
// of a call; after activation the kernel holds the key and we keep none.
#pragma once

#include <memory>
#include <string>

#include "cocostorage/common/secure_buffer.h"
#include "cocostorage/common/status.h"
#include "core/volume_spec.h"

namespace cocostorage::agent {

struct CryptFormatRequest {
  std::string data_device;  // /dev/vdb
  std::string header_file;  // detached LUKS2 header, on guest-memory tmpfs
  std::string name;         // dm name of the crypt mapping
  CipherSuite suite;
  uint32_t sector_size = 4096;
  // dm-integrity without its journal: ~2x write throughput; a torn write can
  // leave a sector that fails until rewritten, which only matters for data
  // that outlives a crash (not ephemeral volumes).
  bool integrity_no_journal = true;
};

struct CryptStatus {
  bool active = false;
  std::string cipher;     // "aes-xts-plain64"
  std::string integrity;  // "hmac(sha256)" or ""
  uint32_t sector_size = 0;
  uint64_t size_bytes = 0;  // of the crypt mapping
};

class CryptEngine {
 public:
  virtual ~CryptEngine() = default;
  // Writes a fresh LUKS2 header (no keyslot: the key is not stored anywhere)
  // and the dm-integrity superblock, then activates `name` with `key`.
  // Does NOT wipe: see Wipe().
  virtual Status FormatAndActivate(const CryptFormatRequest& req, const SecureBuffer& key) = 0;
  // Zeroes the whole active mapping (the slow, linear-time initialisation).
  virtual Status Wipe(const std::string& name) = 0;
  // Closes `name` (and its integrity sub-device). Missing is success.
  virtual Status Deactivate(const std::string& name) = 0;
  // `header_file` is the detached header (needed for integrity details).
  virtual StatusOr<CryptStatus> Query(const std::string& name, const std::string& header_file) = 0;
};

std::unique_ptr<CryptEngine> NewLibCryptsetupEngine();

}  // namespace cocostorage::agent
