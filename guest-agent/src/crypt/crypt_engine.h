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

// A persistent volume's stack: the LUKS2 header is detached (a guest tmpfs
// file whose validated bytes the agent stores in the disk's prefix) and
// segment 0 starts at `data_offset` on the disk, so the crypt and integrity
// layers never write into the prefix. dm-integrity keeps its journal: data and
// tag are committed together, so a power cut leaves no sector that fails.
struct CryptPersistentFormat {
  std::string data_device;
  std::string header_file;
  std::string name;
  CipherSuite suite;
  uint32_t sector_size = 4096;
  uint64_t data_offset_bytes = 0;
  uint64_t metadata_bytes = 16384;  // per LUKS2 header copy
  uint64_t keyslots_bytes = 16384;  // stays all zero: no keyslot is ever added
  std::string uuid;                 // LUKS2 uuid text
};

struct CryptStatus {
  bool active = false;
  std::string cipher;     // "aes-xts-plain64"
  std::string integrity;  // "hmac(sha256)" or ""
  uint32_t sector_size = 0;
  uint64_t size_bytes = 0;    // of the crypt mapping
  uint64_t offset_bytes = 0;  // where the data starts on the disk
  uint32_t integrity_tag_bytes = 0;
  // dm-integrity runs with its journal (from the kernel's table, not the header).
  bool integrity_journal = false;
};

class CryptEngine {
 public:
  virtual ~CryptEngine() = default;
  // Writes a fresh LUKS2 header (no keyslot: the key is not stored anywhere)
  // and the dm-integrity superblock, then activates `name` with `key`.
  // Does NOT wipe: see Wipe().
  virtual Status FormatAndActivate(const CryptFormatRequest& req, const SecureBuffer& key) = 0;
  // Persistent volumes: formats the detached header and the dm-integrity
  // superblock and journal at `data_offset_bytes`, then activates (journal on).
  virtual Status FormatPersistent(const CryptPersistentFormat& req, const SecureBuffer& key) = 0;
  // Activates `name` over `data_device` from a header file the caller has
  // validated byte for byte, with the integrity journal (replayed by the
  // kernel). The key is checked against the header's digest.
  virtual Status OpenPersistent(const std::string& data_device, const std::string& header_file, const std::string& name,
                                const SecureBuffer& key) = 0;
  // Zeroes the whole active mapping (the slow, linear-time initialisation).
  virtual Status Wipe(const std::string& name) = 0;
  // Closes `name` (and its integrity sub-device). Missing is success.
  virtual Status Deactivate(const std::string& name) = 0;
  // `header_file` is the detached header (needed for integrity details).
  virtual StatusOr<CryptStatus> Query(const std::string& name, const std::string& header_file) = 0;
};

std::unique_ptr<CryptEngine> NewLibCryptsetupEngine();

}  // namespace cocostorage::agent
