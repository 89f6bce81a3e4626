#include <fcntl.h>
#include <libcryptsetup.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/common/unique_fd.h"
#include "crypt/crypt_engine.h"
#include "dm/mapper_lock.h"

namespace cocostorage::agent {
namespace {

// libcryptsetup's own messages go to our structured log at debug level. They
// never contain key material (it does not log keys).
void LogCallback(int level, const char* msg, void* /*usrptr*/) {
  std::string text(msg ? msg : "");
  while (!text.empty() && text.back() == '\n') text.pop_back();
  if (level == CRYPT_LOG_ERROR) {
    log::Warn("cryptsetup.message", {{"text", text}});
  } else {
    log::Debug("cryptsetup.message", {{"text", text}});
  }
}

struct CdDeleter {
  void operator()(crypt_device* cd) const { crypt_free(cd); }
};
using CdPtr = std::unique_ptr<crypt_device, CdDeleter>;

// libcryptsetup reports most failures as -EINVAL/-EIO without distinguishing
// bad input from a broken environment; only resource errors keep their code.
Status CryptError(int rc, const std::string& what) {
  int err = -rc;
  if (err == ENOMEM || err == ENOSPC || err == EBUSY || err == ENODEV) return ErrnoStatus(err, what);
  return absl::InternalError(Cat(what, ": ", std::strerror(err)));
}

// A libcryptsetup handle for `data_device` with its detached LUKS2 header
// in `header_file`, logging to ours. Call with MapperLock() held.
StatusOr<CdPtr> InitWithHeader(const std::string& header_file, const std::string& data_device) {
  crypt_device* raw = nullptr;
  int rc = crypt_init_data_device(&raw, header_file.c_str(), data_device.c_str());
  if (rc < 0) return CryptError(rc, Cat("opening ", data_device, " for LUKS2"));
  CdPtr cd(raw);
  crypt_set_log_callback(cd.get(), LogCallback, nullptr);
  return cd;
}

// A fresh keyless LUKS2 header (label "cocostorage") and, with integrity,
// the dm-integrity superblock. `uuid` null: libcryptsetup picks one.
Status FormatLuks2(crypt_device* cd, const std::string& data_device, const CipherSuite& suite, uint32_t sector_size,
                   const char* uuid, const SecureBuffer& key) {
  crypt_params_integrity integrity_params{};
  crypt_params_luks2 params{};
  params.sector_size = sector_size;
  params.integrity = suite.integrity.empty() ? nullptr : suite.integrity.c_str();
  params.integrity_params = suite.integrity.empty() ? nullptr : &integrity_params;
  params.label = "cocostorage";
  int rc = crypt_format(cd, CRYPT_LUKS2, suite.cipher.c_str(), suite.cipher_mode.c_str(), uuid, key.chars(), key.size(),
                        &params);
  // libcryptsetup says ENODEV when the device failed the integrity format's
  // writes (EIO from the disk): the device exists, it is failing. Not
  // NOT_FOUND, which a caller would take for "not hot-plugged yet".
  if (rc == -ENODEV) rc = -EIO;
  if (rc < 0) return CryptError(rc, Cat("formatting LUKS2 on ", data_device));
  return OkStatus();
}

class LibCryptsetupEngine : public CryptEngine {
 public:
  LibCryptsetupEngine() { crypt_set_log_callback(nullptr, LogCallback, nullptr); }

  Status FormatAndActivate(const CryptFormatRequest& req, const SecureBuffer& key) override {
    if (key.size() != req.suite.key_bytes) {
      return absl::InternalError(Cat("key size ", key.size(), " does not match suite ", req.suite.key_bytes));
    }
    std::lock_guard<std::mutex> lock(MapperLock());
    COCO_ASSIGN_OR_RETURN(CdPtr cd, InitWithHeader(req.header_file, req.data_device));
    COCO_RETURN_IF_ERROR(FormatLuks2(cd.get(), req.data_device, req.suite, req.sector_size, nullptr, key));

    uint32_t flags = 0;
    if (!req.suite.integrity.empty() && req.integrity_no_journal) flags |= CRYPT_ACTIVATE_NO_JOURNAL;
    int rc = crypt_activate_by_volume_key(cd.get(), req.name.c_str(), key.chars(), key.size(), flags);
    if (rc < 0) return CryptError(rc, Cat("activating ", req.name));
    return OkStatus();
  }

  Status FormatPersistent(const CryptPersistentFormat& req, const SecureBuffer& key) override {
    if (key.size() != req.suite.key_bytes) {
      return absl::InternalError(Cat("key size ", key.size(), " does not match suite ", req.suite.key_bytes));
    }
    if (req.data_offset_bytes == 0 || req.data_offset_bytes % 4096 != 0) {
      return absl::InternalError(Cat("data offset ", req.data_offset_bytes, " is not a positive multiple of 4096"));
    }
    std::lock_guard<std::mutex> lock(MapperLock());
    COCO_ASSIGN_OR_RETURN(CdPtr cd, InitWithHeader(req.header_file, req.data_device));
    int rc = crypt_set_data_offset(cd.get(), req.data_offset_bytes / 512);
    if (rc < 0) return CryptError(rc, Cat("setting the data offset of ", req.data_device));
    rc = crypt_set_metadata_size(cd.get(), req.metadata_bytes, req.keyslots_bytes);
    if (rc < 0) return CryptError(rc, "setting the LUKS2 metadata size");
    // The volume key's digest: a fixed, small PBKDF2 cost instead of a
    // benchmark (the key is a 256-bit HKDF output, not a passphrase), so the
    // header looks the same on every machine and the validator can bound it.
    crypt_pbkdf_type pbkdf{};
    pbkdf.type = CRYPT_KDF_PBKDF2;
    pbkdf.hash = "sha256";
    pbkdf.iterations = 1000;
    pbkdf.flags = CRYPT_PBKDF_NO_BENCHMARK;
    rc = crypt_set_pbkdf_type(cd.get(), &pbkdf);
    if (rc < 0) return CryptError(rc, "setting the LUKS2 digest cost");

    COCO_RETURN_IF_ERROR(FormatLuks2(cd.get(), req.data_device, req.suite, req.sector_size,
                                     req.uuid.empty() ? nullptr : req.uuid.c_str(), key));
    rc = crypt_activate_by_volume_key(cd.get(), req.name.c_str(), key.chars(), key.size(), 0);
    if (rc < 0) return CryptError(rc, Cat("activating ", req.name));
    return OkStatus();
  }

  Status OpenPersistent(const std::string& data_device, const std::string& header_file, const std::string& name,
                        const SecureBuffer& key) override {
    std::lock_guard<std::mutex> lock(MapperLock());
    COCO_ASSIGN_OR_RETURN(CdPtr cd, InitWithHeader(header_file, data_device));
    int rc = crypt_load(cd.get(), CRYPT_LUKS2, nullptr);
    if (rc < 0) return CryptError(rc, Cat("loading the validated LUKS2 header of ", data_device));
    rc = crypt_activate_by_volume_key(cd.get(), name.c_str(), key.chars(), key.size(), 0);
    // The header is authentic (its MAC and our key check passed): a digest
    // mismatch here means the derivation and the header disagree.
    if (rc == -EPERM) return absl::DataLossError(Cat("header_invalid: the volume key does not match the LUKS2 digest"));
    if (rc < 0) return CryptError(rc, Cat("activating ", name));
    return OkStatus();
  }

  // Writes zeros over the whole mapping with O_DIRECT writes only. Not
  // crypt_wipe(): opening a device through libcryptsetup does a read test of
  // its first block, which on a not-yet-wiped integrity device is exactly the
  // unwritten-sector read (INTEGRITY AEAD ERROR) the wipe is meant to prevent.
  // Needs no lock: plain I/O, no library state.
  Status Wipe(const std::string& name) override {
    std::string path = Cat("/dev/mapper/", name);
    UniqueFd fd(open(path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC));
    if (!fd.valid()) return ErrnoStatus(errno, Cat("opening ", path, " for wipe"));
    uint64_t size = 0;
    if (ioctl(fd.get(), BLKGETSIZE64, &size) != 0) return ErrnoStatus(errno, Cat("BLKGETSIZE64 ", path));
    constexpr size_t kChunk = 1 << 20;
    void* raw = nullptr;
    if (posix_memalign(&raw, 4096, kChunk) != 0) return absl::ResourceExhaustedError("wipe buffer");
    std::unique_ptr<void, decltype(&free)> buf(raw, &free);
    std::memset(raw, 0, kChunk);
    uint64_t done = 0;
    while (done < size) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, size - done));
      ssize_t w = pwrite(fd.get(), raw, n, static_cast<off_t>(done));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return ErrnoStatus(w < 0 ? errno : EIO, Cat("wiping ", path, " at byte ", done));
      done += static_cast<uint64_t>(w);
    }
    if (fdatasync(fd.get()) != 0) return ErrnoStatus(errno, Cat("flushing ", path));
    return OkStatus();
  }

  Status Deactivate(const std::string& name) override {
    std::lock_guard<std::mutex> lock(MapperLock());
    crypt_device* raw = nullptr;
    int rc = crypt_init_by_name(&raw, name.c_str());
    if (rc == -ENODEV || rc == -ENOENT) return OkStatus();
    if (rc < 0) return CryptError(rc, Cat("looking up ", name));
    CdPtr cd(raw);
    crypt_status_info st = crypt_status(cd.get(), name.c_str());
    if (st == CRYPT_INACTIVE || st == CRYPT_INVALID) return OkStatus();
    rc = crypt_deactivate_by_name(cd.get(), name.c_str(), 0);
    if (rc == -ENODEV) return OkStatus();
    if (rc < 0) return CryptError(rc, Cat("closing ", name));
    return OkStatus();
  }

  StatusOr<CryptStatus> Query(const std::string& name, const std::string& header_file) override {
    std::lock_guard<std::mutex> lock(MapperLock());
    CryptStatus out;
    crypt_device* raw = nullptr;
    int rc = crypt_init_by_name_and_header(&raw, name.c_str(), header_file.empty() ? nullptr : header_file.c_str());
    if (rc == -ENODEV || rc == -ENOENT) return out;
    if (rc < 0) return CryptError(rc, Cat("looking up ", name));
    CdPtr cd(raw);
    crypt_status_info st = crypt_status(cd.get(), name.c_str());
    out.active = st == CRYPT_ACTIVE || st == CRYPT_BUSY;
    if (!out.active) return out;
    const char* cipher = crypt_get_cipher(cd.get());
    const char* mode = crypt_get_cipher_mode(cd.get());
    if (cipher && mode) out.cipher = Cat(cipher, "-", mode);
    crypt_params_integrity ip{};
    if (crypt_get_integrity_info(cd.get(), &ip) == 0 && ip.integrity) out.integrity = ip.integrity;
    crypt_active_device ad{};
    if (crypt_get_active_device(cd.get(), name.c_str(), &ad) == 0) {
      out.size_bytes = ad.size * 512;
      out.offset_bytes = ad.offset * 512;
      out.integrity_journal = !out.integrity.empty() && (ad.flags & CRYPT_ACTIVATE_NO_JOURNAL) == 0;
    }
    out.integrity_tag_bytes = ip.tag_size;
    out.sector_size = static_cast<uint32_t>(crypt_get_sector_size(cd.get()));
    return out;
  }
};

}  // namespace

std::unique_ptr<CryptEngine> NewLibCryptsetupEngine() { return std::make_unique<LibCryptsetupEngine>(); }

}  // namespace cocostorage::agent
