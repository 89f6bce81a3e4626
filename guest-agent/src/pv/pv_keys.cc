#include "pv/pv_keys.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "cocostorage/common/strings.h"
#include "pv/pv_keys_internal.h"

namespace cocostorage::agent::pv {
namespace internal {
namespace {

constexpr size_t kSha256Bytes = 32;

struct KdfDeleter {
  void operator()(EVP_KDF* k) const { EVP_KDF_free(k); }
  void operator()(EVP_KDF_CTX* c) const { EVP_KDF_CTX_free(c); }
};

// One EVP_KDF "HKDF" (SHA-256) derivation in `mode`. OpenSSL copies the
// parameters into its context and cleanses them when the context is freed.
Status RunHkdf(int mode, std::span<const uint8_t> key, std::span<const uint8_t> salt, std::span<const uint8_t> info,
               std::span<uint8_t> out) {
  std::unique_ptr<EVP_KDF, KdfDeleter> kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr));
  if (!kdf) return absl::InternalError("OpenSSL has no HKDF");
  std::unique_ptr<EVP_KDF_CTX, KdfDeleter> ctx(EVP_KDF_CTX_new(kdf.get()));
  if (!ctx) return absl::ResourceExhaustedError("EVP_KDF_CTX_new");
  char digest[] = "SHA256";
  // OSSL_PARAM takes non-const pointers; OpenSSL only reads these buffers.
  auto* key_ptr = const_cast<uint8_t*>(key.data());
  auto* salt_ptr = const_cast<uint8_t*>(salt.data());
  auto* info_ptr = const_cast<uint8_t*>(info.data());
  std::vector<OSSL_PARAM> params;
  params.push_back(OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode));
  params.push_back(OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0));
  params.push_back(OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, key_ptr, key.size()));
  if (mode == EVP_KDF_HKDF_MODE_EXTRACT_ONLY) {
    params.push_back(OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, salt_ptr, salt.size()));
  } else {
    params.push_back(OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info_ptr, info.size()));
  }
  params.push_back(OSSL_PARAM_construct_end());
  if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params.data()) != 1) {
    OPENSSL_cleanse(out.data(), out.size());
    return absl::InternalError("HKDF derivation failed");
  }
  return OkStatus();
}

}  // namespace

StatusOr<SecureBuffer> HkdfExtract(std::span<const uint8_t> salt, std::span<const uint8_t> ikm) {
  if (ikm.empty()) return absl::InvalidArgumentError("HKDF-Extract: empty input key material");
  COCO_ASSIGN_OR_RETURN(SecureBuffer prk, SecureBuffer::Allocate(kSha256Bytes));
  // RFC 5869: an absent salt is HashLen zero bytes (OpenSSL wants a non-empty one).
  static constexpr uint8_t kZeroSalt[kSha256Bytes] = {};
  if (salt.empty()) salt = kZeroSalt;
  COCO_RETURN_IF_ERROR(RunHkdf(EVP_KDF_HKDF_MODE_EXTRACT_ONLY, ikm, salt, {}, {prk.data(), prk.size()}));
  return prk;
}

Status HkdfExpand(std::span<const uint8_t> prk, std::span<const uint8_t> info, std::span<uint8_t> out) {
  if (prk.size() < kSha256Bytes) return absl::InvalidArgumentError(Cat("HKDF-Expand: PRK of ", prk.size(), " bytes"));
  if (out.empty() || out.size() > 255 * kSha256Bytes) {
    return absl::InvalidArgumentError(Cat("HKDF-Expand: output of ", out.size(), " bytes"));
  }
  return RunHkdf(EVP_KDF_HKDF_MODE_EXPAND_ONLY, prk, {}, info, out);
}

}  // namespace internal

namespace {

constexpr std::string_view kSalt = "cocostorage.dev/pv/v1";

// label 0x00 [suite 0x00] u8(len(id)) id
std::vector<uint8_t> Info(std::string_view label, std::string_view suite, std::string_view id) {
  std::vector<uint8_t> info(label.begin(), label.end());
  info.push_back(0);
  if (!suite.empty()) {
    info.insert(info.end(), suite.begin(), suite.end());
    info.push_back(0);
  }
  info.push_back(static_cast<uint8_t>(id.size()));
  info.insert(info.end(), id.begin(), id.end());
  return info;
}

std::span<const uint8_t> Bytes(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

}  // namespace

StatusOr<PersistentKeys> DeriveKeys(const SecureBuffer& root, std::string_view volume_id, IntegrityMode integrity) {
  if (root.size() != kRootKeyBytes) {
    return absl::FailedPreconditionError(
        Cat("persistent volume key must be exactly ", kRootKeyBytes, " bytes, the KBS resource has ", root.size()));
  }
  Status id_ok = ValidateVolumeId(std::string(volume_id));
  if (!id_ok.ok()) return absl::InvalidArgumentError(id_ok.message());
  const CipherSuite suite = SuiteFor(integrity);
  if (suite.key_bytes == 0) return absl::InvalidArgumentError("unknown integrity mode");

  COCO_ASSIGN_OR_RETURN(SecureBuffer prk, internal::HkdfExtract(Bytes(kSalt), root.span()));
  PersistentKeys keys;
  COCO_ASSIGN_OR_RETURN(keys.luks_key, SecureBuffer::Allocate(suite.key_bytes));
  COCO_ASSIGN_OR_RETURN(keys.mac_key, SecureBuffer::Allocate(kMacKeyBytes));
  COCO_ASSIGN_OR_RETURN(SecureBuffer kcv, SecureBuffer::Allocate(kKcvBytes));
  COCO_RETURN_IF_ERROR(internal::HkdfExpand(prk.span(), Info("luks-volume-key", IntegrityName(integrity), volume_id),
                                            {keys.luks_key.data(), keys.luks_key.size()}));
  COCO_RETURN_IF_ERROR(
      internal::HkdfExpand(prk.span(), Info("header-mac", "", volume_id), {keys.mac_key.data(), keys.mac_key.size()}));
  COCO_RETURN_IF_ERROR(internal::HkdfExpand(prk.span(), Info("key-check", "", volume_id), {kcv.data(), kcv.size()}));
  std::copy(kcv.data(), kcv.data() + kKcvBytes, keys.kcv.begin());
  return keys;
}

}  // namespace cocostorage::agent::pv
