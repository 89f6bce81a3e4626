#include "kbs/jose.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/params.h>
#include <openssl/rsa.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <initializer_list>
#include <set>
#include <utility>
#include <vector>

#include "cocostorage/common/base64.h"
#include "cocostorage/common/strings.h"
#include "kbs/jose_internal.h"

namespace cocostorage::agent::kbs {
namespace {

using jose_internal::PkeyPtr;

struct PkeyCtxDeleter {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxDeleter>;
struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); }
};
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;
struct BnDeleter {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
using BnPtr = std::unique_ptr<BIGNUM, BnDeleter>;

constexpr size_t kCekBytes = 32;                    // A256GCM
constexpr size_t kIvBytes = 12;                     // A256GCM
constexpr size_t kTagBytes = 16;                    // A256GCM
constexpr size_t kP256Bytes = 32;                   // a P-256 coordinate
constexpr size_t kWrappedCekBytes = kCekBytes + 8;  // RFC 3394 adds one 64-bit block
constexpr int kRsaBits = 3072;

// OpenSSL's reason for the latest failure, for internal errors only; the
// queue is emptied so one failure does not leak into the next call's report.
std::string TakeOpensslError() {
  const unsigned long err = ERR_get_error();  // NOLINT(google-runtime-int): OpenSSL's type
  ERR_clear_error();
  if (err == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(err, buf, sizeof(buf));
  return buf;
}

Status OpensslInternal(std::string_view what) { return absl::InternalError(Cat(what, ": ", TakeOpensslError())); }

// For messages: a network-supplied string, bounded.
std::string Shown(std::string_view s) {
  constexpr size_t kMax = 40;
  std::string out(s.substr(0, kMax));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  }
  return Cat("\"", out, s.size() > kMax ? "...\"" : "\"");
}

const unsigned char* Bytes(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

// JSON from the network: nlohmann's strict RFC 8259 parser (valid UTF-8, no
// trailing content), without exceptions, and with duplicate member names
// refused. (nlohmann alone would keep the last of duplicates; refusing them
// means no two readers of the same bytes can disagree.)
StatusOr<nlohmann::json> ParseJson(std::string_view text, std::string_view what) {
  std::vector<std::set<std::string>> open_objects;
  bool duplicate = false;
  auto callback = [&](int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    switch (event) {
      case nlohmann::json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case nlohmann::json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case nlohmann::json::parse_event_t::key:
        if (!open_objects.empty() && parsed.is_string() &&
            !open_objects.back().insert(parsed.get_ref<const std::string&>()).second) {
          duplicate = true;
        }
        break;
      default:
        break;
    }
    return true;
  };
  nlohmann::json parsed;
  try {
    parsed = nlohmann::json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/false);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(Cat(what, " is not valid JSON: ", e.what()));
  }
  if (parsed.is_discarded()) return absl::InvalidArgumentError(Cat(what, " is not valid JSON"));
  if (duplicate) return absl::InvalidArgumentError(Cat(what, " has a duplicate member name"));
  return parsed;
}

// The string member `name` of `object`, or null when it is absent.
// INVALID_ARGUMENT when present with another type.
StatusOr<const std::string*> OptionalString(const nlohmann::json& object, const char* name, std::string_view what) {
  auto it = object.find(name);
  if (it == object.end()) return nullptr;
  if (!it->is_string()) return absl::InvalidArgumentError(Cat(what, " member ", name, " is not a string"));
  return &it->get_ref<const std::string&>();
}

StatusOr<const std::string*> RequiredString(const nlohmann::json& object, const char* name, std::string_view what) {
  COCO_ASSIGN_OR_RETURN(const std::string* value, OptionalString(object, name, what));
  if (value == nullptr) return absl::InvalidArgumentError(Cat(what, " has no ", name));
  return value;
}

// `object` has exactly the members `names`.
Status ExactMembers(const nlohmann::json& object, std::initializer_list<const char*> names, std::string_view what) {
  for (const char* name : names) {
    if (!object.contains(name)) return absl::InvalidArgumentError(Cat(what, " has no ", name));
  }
  if (object.size() != names.size()) {
    for (auto it = object.begin(); it != object.end(); ++it) {
      bool known = false;
      for (const char* name : names) known = known || it.key() == name;
      if (!known) return absl::InvalidArgumentError(Cat(what, " has an unexpected member ", Shown(it.key())));
    }
  }
  return OkStatus();
}

StatusOr<std::string> DecodeB64Url(std::string_view text, std::string_view what) {
  auto decoded = Base64Decode(text, Base64Alphabet::kUrl, Base64Padding::kNone);
  if (!decoded.ok()) return Annotate(decoded.status(), Cat(what, " is not unpadded base64url"));
  return decoded;
}

// The flattened JWE's pieces, decoded.
struct Jwe {
  std::string protected_b64;  // the GCM additional data, as received
  nlohmann::json header;      // the decoded protected header, an object
  std::string encrypted_key;
  std::string iv;
  std::string ciphertext;
  std::string tag;
};

StatusOr<Jwe> ParseJwe(std::string_view text) {
  if (text.size() > kMaxJweBytes) {
    return absl::InvalidArgumentError(Cat("JWE of ", text.size(), " bytes exceeds the limit of ", kMaxJweBytes));
  }
  COCO_ASSIGN_OR_RETURN(nlohmann::json json, ParseJson(text, "JWE"));
  if (!json.is_object()) return absl::InvalidArgumentError("JWE is not a JSON object");
  // No aad, header, recipients or unknown members: exactly what trustee sends.
  COCO_RETURN_IF_ERROR(ExactMembers(json, {"protected", "encrypted_key", "iv", "ciphertext", "tag"}, "JWE"));
  Jwe jwe;
  COCO_ASSIGN_OR_RETURN(const std::string* protected_b64, RequiredString(json, "protected", "JWE"));
  COCO_ASSIGN_OR_RETURN(const std::string* encrypted_key, RequiredString(json, "encrypted_key", "JWE"));
  COCO_ASSIGN_OR_RETURN(const std::string* iv, RequiredString(json, "iv", "JWE"));
  COCO_ASSIGN_OR_RETURN(const std::string* ciphertext, RequiredString(json, "ciphertext", "JWE"));
  COCO_ASSIGN_OR_RETURN(const std::string* tag, RequiredString(json, "tag", "JWE"));
  jwe.protected_b64 = *protected_b64;
  COCO_ASSIGN_OR_RETURN(std::string header_bytes, DecodeB64Url(*protected_b64, "JWE protected"));
  COCO_ASSIGN_OR_RETURN(jwe.encrypted_key, DecodeB64Url(*encrypted_key, "JWE encrypted_key"));
  COCO_ASSIGN_OR_RETURN(jwe.iv, DecodeB64Url(*iv, "JWE iv"));
  COCO_ASSIGN_OR_RETURN(jwe.ciphertext, DecodeB64Url(*ciphertext, "JWE ciphertext"));
  COCO_ASSIGN_OR_RETURN(jwe.tag, DecodeB64Url(*tag, "JWE tag"));
  if (jwe.iv.size() != kIvBytes) {
    return absl::InvalidArgumentError(Cat("JWE iv has ", jwe.iv.size(), " bytes; A256GCM needs ", kIvBytes));
  }
  if (jwe.tag.size() != kTagBytes) {
    return absl::InvalidArgumentError(Cat("JWE tag has ", jwe.tag.size(), " bytes; A256GCM needs ", kTagBytes));
  }
  // The header is parsed from the bytes the sender authenticated, never from
  // a re-serialization.
  COCO_ASSIGN_OR_RETURN(jwe.header, ParseJson(header_bytes, "JWE protected header"));
  if (!jwe.header.is_object()) return absl::InvalidArgumentError("JWE protected header is not a JSON object");
  return jwe;
}

// Checks the header members every algorithm shares: alg, enc, zip, crit.
// Unknown non-critical members (kid, typ, cty, ...) are ignored as RFC 7516
// §4 asks.
Status CheckHeader(const nlohmann::json& header, KeyAlgorithm expected) {
  COCO_ASSIGN_OR_RETURN(const std::string* alg_name, RequiredString(header, "alg", "JWE protected header"));
  auto alg = ParseKeyAlgorithm(*alg_name);
  if (!alg.ok()) return Annotate(alg.status(), "JWE protected header");
  if (*alg != expected) {
    return absl::InvalidArgumentError(
        Cat("JWE alg ", *alg_name, " does not match the TEE key's ", KeyAlgorithmName(expected)));
  }
  COCO_ASSIGN_OR_RETURN(const std::string* enc, RequiredString(header, "enc", "JWE protected header"));
  if (*enc != "A256GCM") return absl::InvalidArgumentError(Cat("JWE enc ", Shown(*enc), " refused; only A256GCM"));
  if (header.contains("zip")) return absl::InvalidArgumentError("JWE zip (compression) refused");
  // No extension is understood, so any critical one must be refused (RFC 7515 §4.1.11).
  if (header.contains("crit")) return absl::InvalidArgumentError("JWE crit header refused");
  return OkStatus();
}

StatusOr<SecureBuffer> UnwrapEcdhCek(EVP_PKEY* own, const Jwe& jwe) {
  auto epk_it = jwe.header.find("epk");
  if (epk_it == jwe.header.end()) return absl::InvalidArgumentError("JWE header has no epk for ECDH-ES+A256KW");
  const nlohmann::json& epk = *epk_it;
  if (!epk.is_object()) return absl::InvalidArgumentError("JWE epk is not an object");
  // Exactly the public members (no d, no alg/kid a sender has no reason to add).
  COCO_RETURN_IF_ERROR(ExactMembers(epk, {"kty", "crv", "x", "y"}, "JWE epk"));
  COCO_ASSIGN_OR_RETURN(const std::string* kty, RequiredString(epk, "kty", "JWE epk"));
  COCO_ASSIGN_OR_RETURN(const std::string* crv, RequiredString(epk, "crv", "JWE epk"));
  COCO_ASSIGN_OR_RETURN(const std::string* x_b64, RequiredString(epk, "x", "JWE epk"));
  COCO_ASSIGN_OR_RETURN(const std::string* y_b64, RequiredString(epk, "y", "JWE epk"));
  if (*kty != "EC") return absl::InvalidArgumentError(Cat("JWE epk kty ", Shown(*kty), " is not EC"));
  if (*crv != "P-256") return absl::InvalidArgumentError(Cat("JWE epk crv ", Shown(*crv), " is not P-256"));
  COCO_ASSIGN_OR_RETURN(std::string x, DecodeB64Url(*x_b64, "JWE epk x"));
  COCO_ASSIGN_OR_RETURN(std::string y, DecodeB64Url(*y_b64, "JWE epk y"));
  if (x.size() != kP256Bytes || y.size() != kP256Bytes) {
    return absl::InvalidArgumentError("JWE epk coordinates are not 32 bytes each");
  }
  COCO_ASSIGN_OR_RETURN(PkeyPtr peer, jose_internal::ImportP256PublicKey(x, y));

  // PartyUInfo / PartyVInfo: empty unless the sender put apu / apv in the
  // header (RFC 7518 §4.6.1.2-3); kbs-protocol.md has both empty.
  COCO_ASSIGN_OR_RETURN(const std::string* apu_b64, OptionalString(jwe.header, "apu", "JWE protected header"));
  COCO_ASSIGN_OR_RETURN(const std::string* apv_b64, OptionalString(jwe.header, "apv", "JWE protected header"));
  std::string apu;
  std::string apv;
  if (apu_b64 != nullptr) {
    COCO_ASSIGN_OR_RETURN(apu, DecodeB64Url(*apu_b64, "JWE apu"));
  }
  if (apv_b64 != nullptr) {
    COCO_ASSIGN_OR_RETURN(apv, DecodeB64Url(*apv_b64, "JWE apv"));
  }

  if (jwe.encrypted_key.size() != kWrappedCekBytes) {
    return absl::InvalidArgumentError(Cat("JWE encrypted_key has ", jwe.encrypted_key.size(),
                                          " bytes; a wrapped A256GCM key has ", kWrappedCekBytes));
  }
  COCO_ASSIGN_OR_RETURN(SecureBuffer z, jose_internal::EcdhSharedSecret(own, peer.get()));
  COCO_ASSIGN_OR_RETURN(SecureBuffer kek, jose_internal::ConcatKdfSha256(z.span(), "ECDH-ES+A256KW", apu, apv, 256));
  z.Wipe();
  return jose_internal::AesKeyUnwrap(kek.span(), jwe.encrypted_key);
}

StatusOr<SecureBuffer> DecryptRsaCek(EVP_PKEY* own, const Jwe& jwe) {
  for (const char* name : {"epk", "apu", "apv"}) {
    if (jwe.header.contains(name)) return absl::InvalidArgumentError(Cat("JWE header has ", name, " for RSA-OAEP-256"));
  }
  const size_t modulus_bytes = static_cast<size_t>(EVP_PKEY_get_size(own));
  if (jwe.encrypted_key.size() != modulus_bytes) {
    return absl::InvalidArgumentError(
        Cat("JWE encrypted_key has ", jwe.encrypted_key.size(), " bytes; the RSA modulus has ", modulus_bytes));
  }
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new(own, nullptr));
  if (ctx == nullptr || EVP_PKEY_decrypt_init(ctx.get()) <= 0 ||
      EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) <= 0 ||
      EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), EVP_sha256()) <= 0 ||
      EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_sha256()) <= 0) {
    return OpensslInternal("RSA-OAEP-256 setup");
  }
  COCO_ASSIGN_OR_RETURN(SecureBuffer out, SecureBuffer::Allocate(modulus_bytes));
  size_t out_len = out.size();
  if (EVP_PKEY_decrypt(ctx.get(), out.data(), &out_len, Bytes(jwe.encrypted_key), jwe.encrypted_key.size()) <= 0) {
    ERR_clear_error();
    return absl::PermissionDeniedError("JWE encrypted_key does not decrypt (RSA-OAEP-256) with the TEE key");
  }
  if (out_len != kCekBytes) {
    return absl::InvalidArgumentError(Cat("JWE content key has ", out_len, " bytes; A256GCM needs ", kCekBytes));
  }
  COCO_ASSIGN_OR_RETURN(SecureBuffer cek, SecureBuffer::Allocate(kCekBytes));
  std::memcpy(cek.data(), out.data(), kCekBytes);
  return cek;
}

StatusOr<SecureBuffer> BigNumParam(const EVP_PKEY* pkey, const char* name) {
  BIGNUM* raw = nullptr;
  if (EVP_PKEY_get_bn_param(pkey, name, &raw) != 1) return OpensslInternal(Cat("reading key parameter ", name));
  BnPtr bn(raw);
  const int bytes = BN_num_bytes(bn.get());
  if (bytes <= 0) return absl::InternalError(Cat("key parameter ", name, " is zero"));
  COCO_ASSIGN_OR_RETURN(SecureBuffer out, SecureBuffer::Allocate(static_cast<size_t>(bytes)));
  if (BN_bn2bin(bn.get(), out.data()) != bytes) return OpensslInternal(Cat("encoding key parameter ", name));
  return out;
}

StatusOr<nlohmann::json> MakePublicJwk(const EVP_PKEY* pkey, KeyAlgorithm alg) {
  nlohmann::json jwk = nlohmann::json::object();
  jwk["alg"] = std::string(KeyAlgorithmName(alg));
  if (alg == KeyAlgorithm::kEcdhEsA256Kw) {
    COCO_ASSIGN_OR_RETURN(SecureBuffer x, BigNumParam(pkey, OSSL_PKEY_PARAM_EC_PUB_X));
    COCO_ASSIGN_OR_RETURN(SecureBuffer y, BigNumParam(pkey, OSSL_PKEY_PARAM_EC_PUB_Y));
    COCO_ASSIGN_OR_RETURN(std::string x_padded, jose_internal::LeftPad({x.chars(), x.size()}, kP256Bytes));
    COCO_ASSIGN_OR_RETURN(std::string y_padded, jose_internal::LeftPad({y.chars(), y.size()}, kP256Bytes));
    jwk["kty"] = "EC";
    jwk["crv"] = "P-256";
    jwk["x"] = Base64UrlEncodeNoPad(x_padded);
    jwk["y"] = Base64UrlEncodeNoPad(y_padded);
  } else {
    // Minimal big-endian (RFC 7518 §6.3.1): BN_bn2bin has no leading zeros.
    COCO_ASSIGN_OR_RETURN(SecureBuffer n, BigNumParam(pkey, OSSL_PKEY_PARAM_RSA_N));
    COCO_ASSIGN_OR_RETURN(SecureBuffer e, BigNumParam(pkey, OSSL_PKEY_PARAM_RSA_E));
    jwk["kty"] = "RSA";
    jwk["n"] = Base64UrlEncodeNoPad({n.chars(), n.size()});
    jwk["e"] = Base64UrlEncodeNoPad({e.chars(), e.size()});
  }
  return jwk;
}

}  // namespace

namespace jose_internal {

StatusOr<std::string> LeftPad(std::string_view big_endian, size_t width) {
  if (big_endian.size() > width) {
    return absl::InvalidArgumentError(Cat("integer of ", big_endian.size(), " bytes does not fit in ", width));
  }
  std::string out(width - big_endian.size(), '\0');
  out.append(big_endian);
  return out;
}

StatusOr<PkeyPtr> ImportP256PublicKey(std::string_view x, std::string_view y) {
  if (x.size() != kP256Bytes || y.size() != kP256Bytes) {
    return absl::InvalidArgumentError("P-256 coordinates must be 32 bytes each");
  }
  std::array<unsigned char, 1 + 2 * kP256Bytes> point{};
  point[0] = 0x04;  // SEC 1 uncompressed encoding
  std::memcpy(point.data() + 1, x.data(), kP256Bytes);
  std::memcpy(point.data() + 1 + kP256Bytes, y.data(), kP256Bytes);
  char group[] = "P-256";
  std::array<OSSL_PARAM, 3> params = {
      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()),
      OSSL_PARAM_construct_end(),
  };
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  if (ctx == nullptr || EVP_PKEY_fromdata_init(ctx.get()) <= 0) return OpensslInternal("EC import setup");
  EVP_PKEY* raw = nullptr;
  // Decoding the point checks that it lies on the curve (and its coordinates
  // are below p); the check below adds the full public-key validation.
  if (EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.data()) <= 0) {
    ERR_clear_error();
    return absl::InvalidArgumentError("epk is not a point on P-256");
  }
  PkeyPtr pkey(raw);
  PkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey.get(), nullptr));
  if (check == nullptr) return OpensslInternal("EC check setup");
  if (EVP_PKEY_public_check(check.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("epk is not a valid P-256 public key");
  }
  return pkey;
}

StatusOr<SecureBuffer> EcdhSharedSecret(EVP_PKEY* own, EVP_PKEY* peer) {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new(own, nullptr));
  if (ctx == nullptr || EVP_PKEY_derive_init(ctx.get()) <= 0) return OpensslInternal("ECDH setup");
  if (EVP_PKEY_derive_set_peer_ex(ctx.get(), peer, /*validate_peer=*/1) <= 0) {
    ERR_clear_error();
    return absl::InvalidArgumentError("ECDH peer key is not usable with the TEE key");
  }
  size_t len = 0;
  if (EVP_PKEY_derive(ctx.get(), nullptr, &len) <= 0 || len == 0) return OpensslInternal("ECDH size");
  COCO_ASSIGN_OR_RETURN(SecureBuffer z, SecureBuffer::Allocate(len));
  if (EVP_PKEY_derive(ctx.get(), z.data(), &len) <= 0 || len != z.size()) return OpensslInternal("ECDH");
  return z;
}

StatusOr<SecureBuffer> ConcatKdfSha256(std::span<const uint8_t> z, std::string_view alg_id, std::string_view apu,
                                       std::string_view apv, size_t key_bits) {
  if (key_bits == 0 || key_bits % 8 != 0 || key_bits > size_t{8} * 1024) {
    return absl::InvalidArgumentError(Cat("Concat KDF: unsupported key length of ", key_bits, " bits"));
  }
  auto u32be = [](size_t v) {
    const auto w = static_cast<uint32_t>(v);
    return std::array<unsigned char, 4>{static_cast<unsigned char>(w >> 24), static_cast<unsigned char>(w >> 16),
                                        static_cast<unsigned char>(w >> 8), static_cast<unsigned char>(w)};
  };
  COCO_ASSIGN_OR_RETURN(SecureBuffer out, SecureBuffer::Allocate(key_bits / 8));
  MdCtxPtr md(EVP_MD_CTX_new());
  if (md == nullptr) return OpensslInternal("Concat KDF setup");
  std::array<unsigned char, 32> block{};
  for (size_t done = 0, counter = 1; done < out.size(); ++counter) {
    const auto counter_be = u32be(counter);
    const auto alg_len = u32be(alg_id.size());
    const auto apu_len = u32be(apu.size());
    const auto apv_len = u32be(apv.size());
    const auto bits_be = u32be(key_bits);
    unsigned int block_len = 0;
    const bool ok = EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr) == 1 &&
                    EVP_DigestUpdate(md.get(), counter_be.data(), counter_be.size()) == 1 &&
                    EVP_DigestUpdate(md.get(), z.data(), z.size()) == 1 &&
                    EVP_DigestUpdate(md.get(), alg_len.data(), alg_len.size()) == 1 &&
                    EVP_DigestUpdate(md.get(), alg_id.data(), alg_id.size()) == 1 &&
                    EVP_DigestUpdate(md.get(), apu_len.data(), apu_len.size()) == 1 &&
                    EVP_DigestUpdate(md.get(), apu.data(), apu.size()) == 1 &&
                    EVP_DigestUpdate(md.get(), apv_len.data(), apv_len.size()) == 1 &&
                    EVP_DigestUpdate(md.get(), apv.data(), apv.size()) == 1 &&
                    EVP_DigestUpdate(md.get(), bits_be.data(), bits_be.size()) == 1 &&
                    EVP_DigestFinal_ex(md.get(), block.data(), &block_len) == 1 && block_len == block.size();
    if (!ok) {
      OPENSSL_cleanse(block.data(), block.size());
      return OpensslInternal("Concat KDF");
    }
    const size_t take = std::min(block.size(), out.size() - done);
    std::memcpy(out.data() + done, block.data(), take);
    done += take;
  }
  OPENSSL_cleanse(block.data(), block.size());
  return out;
}

StatusOr<SecureBuffer> AesKeyUnwrap(std::span<const uint8_t> kek, std::string_view wrapped) {
  if (kek.size() != 32) return absl::InvalidArgumentError("AES-256 key unwrap needs a 32-byte KEK");
  if (wrapped.size() < 24 || wrapped.size() % 8 != 0 || wrapped.size() > 4096) {
    return absl::InvalidArgumentError(Cat("wrapped key of ", wrapped.size(), " bytes is not RFC 3394 output"));
  }
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (ctx == nullptr) return OpensslInternal("key unwrap setup");
  EVP_CIPHER_CTX_set_flags(ctx.get(), EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
  if (EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_wrap(), nullptr, kek.data(), nullptr) != 1) {
    return OpensslInternal("key unwrap init");
  }
  // OpenSSL wants room for a block more than the input.
  COCO_ASSIGN_OR_RETURN(SecureBuffer scratch, SecureBuffer::Allocate(wrapped.size() + 8));
  int len = 0;
  int final_len = 0;
  if (EVP_DecryptUpdate(ctx.get(), scratch.data(), &len, Bytes(wrapped), static_cast<int>(wrapped.size())) != 1 ||
      EVP_DecryptFinal_ex(ctx.get(), scratch.data() + len, &final_len) != 1 ||
      static_cast<size_t>(len) + static_cast<size_t>(final_len) != wrapped.size() - 8) {
    ERR_clear_error();
    return absl::PermissionDeniedError("AES key unwrap: integrity check failed");
  }
  COCO_ASSIGN_OR_RETURN(SecureBuffer key, SecureBuffer::Allocate(wrapped.size() - 8));
  std::memcpy(key.data(), scratch.data(), key.size());
  return key;
}

StatusOr<SecureBuffer> Aes256GcmDecrypt(std::span<const uint8_t> key, std::string_view iv, std::string_view aad,
                                        std::string_view ciphertext, std::string_view tag) {
  if (key.size() != kCekBytes || iv.size() != kIvBytes || tag.size() != kTagBytes) {
    return absl::InvalidArgumentError("AES-256-GCM needs a 32-byte key, a 12-byte IV and a 16-byte tag");
  }
  if (ciphertext.size() > kMaxJweBytes || aad.size() > kMaxJweBytes) {
    return absl::InvalidArgumentError("AES-256-GCM input too large");
  }
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (ctx == nullptr || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(kIvBytes), nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), Bytes(iv)) != 1 ||
      (!aad.empty() && EVP_DecryptUpdate(ctx.get(), nullptr, &len, Bytes(aad), static_cast<int>(aad.size())) != 1)) {
    return OpensslInternal("AES-256-GCM setup");
  }
  SecureBuffer plain;
  if (!ciphertext.empty()) {
    COCO_ASSIGN_OR_RETURN(plain, SecureBuffer::Allocate(ciphertext.size()));
    if (EVP_DecryptUpdate(ctx.get(), plain.data(), &len, Bytes(ciphertext), static_cast<int>(ciphertext.size())) != 1 ||
        static_cast<size_t>(len) != ciphertext.size()) {
      return OpensslInternal("AES-256-GCM");
    }
  }
  std::array<unsigned char, kTagBytes> tag_copy{};
  std::memcpy(tag_copy.data(), tag.data(), kTagBytes);
  std::array<unsigned char, 16> tail{};  // GCM's final step writes nothing
  int tail_len = 0;
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagBytes), tag_copy.data()) != 1) {
    return OpensslInternal("AES-256-GCM tag");
  }
  if (EVP_DecryptFinal_ex(ctx.get(), tail.data(), &tail_len) != 1 || tail_len != 0) {
    ERR_clear_error();
    plain.Wipe();
    return absl::PermissionDeniedError("JWE authentication failed (AES-256-GCM tag mismatch)");
  }
  return plain;
}

}  // namespace jose_internal

std::string_view KeyAlgorithmName(KeyAlgorithm alg) {
  switch (alg) {
    case KeyAlgorithm::kEcdhEsA256Kw:
      return "ECDH-ES+A256KW";
    case KeyAlgorithm::kRsaOaep256:
      return "RSA-OAEP-256";
  }
  return "unknown";
}

StatusOr<KeyAlgorithm> ParseKeyAlgorithm(std::string_view name) {
  if (name == "ECDH-ES+A256KW") return KeyAlgorithm::kEcdhEsA256Kw;
  if (name == "RSA-OAEP-256") return KeyAlgorithm::kRsaOaep256;
  return absl::InvalidArgumentError(
      Cat("key algorithm ", Shown(name), " refused; only ECDH-ES+A256KW and RSA-OAEP-256 are accepted"));
}

struct TeeKeyPair::Impl {
  PkeyPtr pkey;
  nlohmann::json jwk;
};

TeeKeyPair::TeeKeyPair(KeyAlgorithm alg, std::unique_ptr<Impl> impl) : alg_(alg), impl_(std::move(impl)) {}
TeeKeyPair::~TeeKeyPair() = default;
TeeKeyPair::TeeKeyPair(TeeKeyPair&&) noexcept = default;
TeeKeyPair& TeeKeyPair::operator=(TeeKeyPair&&) noexcept = default;

StatusOr<TeeKeyPair> TeeKeyPair::Generate(KeyAlgorithm alg) {
  const bool ec = alg == KeyAlgorithm::kEcdhEsA256Kw;
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, ec ? "EC" : "RSA", nullptr));
  if (ctx == nullptr || EVP_PKEY_keygen_init(ctx.get()) <= 0) return OpensslInternal("key generation setup");
  // RSA's public exponent defaults to 65537.
  if (ec ? EVP_PKEY_CTX_set_group_name(ctx.get(), "P-256") <= 0
         : EVP_PKEY_CTX_set_rsa_keygen_bits(ctx.get(), kRsaBits) <= 0) {
    return OpensslInternal("key generation parameters");
  }
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_generate(ctx.get(), &raw) <= 0) return OpensslInternal("key generation");
  auto impl = std::make_unique<Impl>();
  impl->pkey.reset(raw);
  try {
    COCO_ASSIGN_OR_RETURN(impl->jwk, MakePublicJwk(impl->pkey.get(), alg));
  } catch (const nlohmann::json::exception& e) {
    return absl::InternalError(Cat("building the public JWK: ", e.what()));
  }
  return TeeKeyPair(alg, std::move(impl));
}

nlohmann::json TeeKeyPair::PublicJwk() const { return impl_ == nullptr ? nlohmann::json() : impl_->jwk; }

StatusOr<SecureBuffer> TeeKeyPair::Decrypt(std::string_view jwe_json) const {
  if (impl_ == nullptr) return absl::FailedPreconditionError("TeeKeyPair was moved from");
  try {
    COCO_ASSIGN_OR_RETURN(Jwe jwe, ParseJwe(jwe_json));
    COCO_RETURN_IF_ERROR(CheckHeader(jwe.header, alg_));
    SecureBuffer cek;
    if (alg_ == KeyAlgorithm::kEcdhEsA256Kw) {
      COCO_ASSIGN_OR_RETURN(cek, UnwrapEcdhCek(impl_->pkey.get(), jwe));
    } else {
      COCO_ASSIGN_OR_RETURN(cek, DecryptRsaCek(impl_->pkey.get(), jwe));
    }
    if (cek.size() != kCekBytes) return absl::InvalidArgumentError("JWE content key is not 32 bytes");
    return jose_internal::Aes256GcmDecrypt(cek.span(), jwe.iv, jwe.protected_b64, jwe.ciphertext, jwe.tag);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(Cat("JWE: ", e.what()));
  }
}

}  // namespace cocostorage::agent::kbs
