#include "kbs/jose.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>

#include <cstring>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cocostorage/common/base64.h"
#include "cocostorage/testing/status_matchers.h"
#include "kbs/jose_internal.h"
#include "kbs_test_util.h"

namespace cocostorage::agent::kbs {
namespace {

using ::cocostorage::testing::StatusIs;
using jose_internal::PkeyPtr;
using kbs_testing::Unhex;
using nlohmann::json;
using ::testing::HasSubstr;

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
constexpr auto kDenied = absl::StatusCode::kPermissionDenied;

std::string B64(std::string_view bytes) { return Base64UrlEncodeNoPad(bytes); }
std::string UnB64(std::string_view text) {
  auto out = Base64Decode(text, Base64Alphabet::kUrl, Base64Padding::kNone);
  EXPECT_OK(out);
  return out.ok() ? *out : std::string();
}
std::span<const uint8_t> Span(const std::string& s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }
std::string Str(const SecureBuffer& b) { return b.empty() ? std::string() : std::string(b.chars(), b.size()); }

// ---- RFC 3394 §4.3 and §4.6 (256-bit KEK) ----

TEST(AesKeyUnwrapTest, Rfc3394Vectors) {
  const std::string kek = Unhex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
  // §4.6: 256 bits of key data.
  auto key = jose_internal::AesKeyUnwrap(
      Span(kek), Unhex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21"));
  ASSERT_OK(key);
  EXPECT_EQ(HexEncode(Str(*key)), "00112233445566778899aabbccddeeff000102030405060708090a0b0c0d0e0f");
  // §4.3: 128 bits of key data.
  auto short_key = jose_internal::AesKeyUnwrap(Span(kek), Unhex("64E8C3F9CE0F5BA263E9777905818A2A93C8191E7D6E8AE7"));
  ASSERT_OK(short_key);
  EXPECT_EQ(HexEncode(Str(*short_key)), "00112233445566778899aabbccddeeff");
}

TEST(AesKeyUnwrapTest, IntegrityFailureIsPermissionDenied) {
  const std::string kek = Unhex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
  std::string wrapped = Unhex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21");
  for (size_t i : {size_t{0}, size_t{7}, size_t{8}, size_t{39}}) {
    std::string tampered = wrapped;
    tampered[i] = static_cast<char>(tampered[i] ^ 0x01);
    EXPECT_THAT(jose_internal::AesKeyUnwrap(Span(kek), tampered), StatusIs(kDenied)) << i;
  }
  std::string other_kek = kek;
  other_kek[31] = static_cast<char>(other_kek[31] ^ 0x80);
  EXPECT_THAT(jose_internal::AesKeyUnwrap(Span(other_kek), wrapped), StatusIs(kDenied));
  EXPECT_THAT(jose_internal::AesKeyUnwrap(Span(kek), wrapped.substr(0, 39)), StatusIs(kInvalid));
  EXPECT_THAT(jose_internal::AesKeyUnwrap(Span(kek), wrapped.substr(0, 16)), StatusIs(kInvalid));
  EXPECT_THAT(jose_internal::AesKeyUnwrap(Span(kek.substr(0, 16)), wrapped), StatusIs(kInvalid));
}

// ---- RFC 7518 Appendix C: ECDH-ES with the Concat KDF ----

// A P-256 private key from a JWK's d, x and y (test-only import).
PkeyPtr ImportP256PrivateKey(const std::string& d, const std::string& x, const std::string& y) {
  std::unique_ptr<OSSL_PARAM_BLD, decltype(&OSSL_PARAM_BLD_free)> bld(OSSL_PARAM_BLD_new(), OSSL_PARAM_BLD_free);
  std::unique_ptr<BIGNUM, decltype(&BN_free)> priv(
      BN_bin2bn(reinterpret_cast<const unsigned char*>(d.data()), static_cast<int>(d.size()), nullptr), BN_free);
  const std::string point = "\x04" + x + y;
  if (bld == nullptr || priv == nullptr ||
      OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "P-256", 0) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_PRIV_KEY, priv.get()) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) != 1) {
    return nullptr;
  }
  std::unique_ptr<OSSL_PARAM, decltype(&OSSL_PARAM_free)> params(OSSL_PARAM_BLD_to_param(bld.get()), OSSL_PARAM_free);
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr),
                                                                  EVP_PKEY_CTX_free);
  EVP_PKEY* raw = nullptr;
  if (params == nullptr || ctx == nullptr || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_KEYPAIR, params.get()) != 1) {
    return nullptr;
  }
  return PkeyPtr(raw);
}

constexpr char kAliceX[] = "gI0GAILBdu7T53akrFmMyGcsF3n5dO7MmwNBHKW5SV0";
constexpr char kAliceY[] = "SLW_xSffzlPWrHEVI30DHM_4egVwt3NQqeUD7nMFpps";
constexpr char kAliceD[] = "0_NxaRPUMQoAJt50Gz8YiTr8gRTwyEaCumd-MToTmIo";
constexpr char kBobX[] = "weNJy2HscCSM6AEDTDg04biOvhFhyyWvOHQfeF_PxMQ";
constexpr char kBobY[] = "e8lnCO-AlStT-NJVX-crhB7QRYhiix03illJOVAOyck";
constexpr char kBobD[] = "VEmDZpDXXK8p8N0Cndsxs924q6nS1RXFASRl6BfUqdw";

TEST(ConcatKdfTest, Rfc7518AppendixC) {
  PkeyPtr bob = ImportP256PrivateKey(UnB64(kBobD), UnB64(kBobX), UnB64(kBobY));
  PkeyPtr alice = ImportP256PrivateKey(UnB64(kAliceD), UnB64(kAliceX), UnB64(kAliceY));
  ASSERT_NE(bob, nullptr);
  ASSERT_NE(alice, nullptr);
  auto alice_public = jose_internal::ImportP256PublicKey(UnB64(kAliceX), UnB64(kAliceY));
  auto bob_public = jose_internal::ImportP256PublicKey(UnB64(kBobX), UnB64(kBobY));
  ASSERT_OK(alice_public);
  ASSERT_OK(bob_public);
  // Z as the appendix lists it, from both sides.
  const std::vector<uint8_t> expected_z = {158, 86,  217, 29,  129, 113, 53,  211, 114, 131, 66,
                                           131, 191, 132, 38,  156, 251, 49,  110, 163, 218, 128,
                                           106, 72,  246, 218, 167, 121, 140, 254, 144, 196};
  auto z = jose_internal::EcdhSharedSecret(bob.get(), alice_public->get());
  auto z_other_side = jose_internal::EcdhSharedSecret(alice.get(), bob_public->get());
  ASSERT_OK(z);
  ASSERT_OK(z_other_side);
  EXPECT_EQ(std::vector<uint8_t>(z->data(), z->data() + z->size()), expected_z);
  EXPECT_EQ(Str(*z_other_side), Str(*z));
  // apu "Alice", apv "Bob", AlgorithmID "A128GCM" (direct key agreement), 128 bits.
  auto key = jose_internal::ConcatKdfSha256(z->span(), "A128GCM", "Alice", "Bob", 128);
  ASSERT_OK(key);
  EXPECT_EQ(B64(Str(*key)), "VqqN6vgjbSBcIijNcacQGg");
}

TEST(ConcatKdfTest, MatchesTheKbsProtocolFormula) {
  // kbs-protocol.md: SHA256(00000001 || Z || u32be(len(alg)) || alg || u32be(0) || u32be(0) || u32be(256)).
  const std::string z(32, '\x5a');
  const std::string alg = "ECDH-ES+A256KW";
  const std::string input = std::string("\0\0\0\x01", 4) + z + std::string("\0\0\0\x0e", 4) + alg +
                            std::string(8, '\0') + std::string("\0\0\x01\x00", 4);
  unsigned char digest[32];
  unsigned int len = 0;
  ASSERT_EQ(EVP_Digest(input.data(), input.size(), digest, &len, EVP_sha256(), nullptr), 1);
  auto kek = jose_internal::ConcatKdfSha256(Span(z), alg, "", "", 256);
  ASSERT_OK(kek);
  EXPECT_EQ(HexEncode(Str(*kek)), HexEncode(std::string(reinterpret_cast<const char*>(digest), 32)));
  // More than one SHA-256 block: the counter goes on.
  auto longer = jose_internal::ConcatKdfSha256(Span(z), alg, "", "", 384);
  ASSERT_OK(longer);
  EXPECT_EQ(longer->size(), 48u);
  EXPECT_THAT(jose_internal::ConcatKdfSha256(Span(z), alg, "", "", 0), StatusIs(kInvalid));
  EXPECT_THAT(jose_internal::ConcatKdfSha256(Span(z), alg, "", "", 7), StatusIs(kInvalid));
}

// ---- P-256 point import ----

TEST(P256ImportTest, RefusesPointsOffTheCurve) {
  const std::string x = UnB64(kAliceX);
  const std::string y = UnB64(kAliceY);
  ASSERT_OK(jose_internal::ImportP256PublicKey(x, y));
  std::string y_off = y;
  y_off[31] = static_cast<char>(y_off[31] ^ 0x01);
  EXPECT_THAT(jose_internal::ImportP256PublicKey(x, y_off), StatusIs(kInvalid, HasSubstr("P-256")));
  EXPECT_THAT(jose_internal::ImportP256PublicKey(std::string(32, '\0'), std::string(32, '\0')), StatusIs(kInvalid));
  // Coordinates not below the field prime p.
  EXPECT_THAT(jose_internal::ImportP256PublicKey(std::string(32, '\xff'), y), StatusIs(kInvalid));
  EXPECT_THAT(jose_internal::ImportP256PublicKey(x.substr(1), y), StatusIs(kInvalid));
}

TEST(LeftPadTest, PadsToTheCoordinateWidth) {
  auto padded = jose_internal::LeftPad("\x01\x02", 4);
  ASSERT_OK(padded);
  EXPECT_EQ(*padded, std::string("\0\0\x01\x02", 4));
  auto empty = jose_internal::LeftPad("", 3);
  ASSERT_OK(empty);
  EXPECT_EQ(*empty, std::string(3, '\0'));
  const std::string full(32, '\x07');
  auto same = jose_internal::LeftPad(full, 32);
  ASSERT_OK(same);
  EXPECT_EQ(*same, full);
  EXPECT_THAT(jose_internal::LeftPad(std::string(33, '\x01'), 32), StatusIs(kInvalid));
}

// ---- TeeKeyPair ----

std::set<std::string> Members(const json& object) {
  std::set<std::string> names;
  for (auto it = object.begin(); it != object.end(); ++it) names.insert(it.key());
  return names;
}

TEST(KeyAlgorithmTest, NamesAndRefusals) {
  EXPECT_EQ(KeyAlgorithmName(KeyAlgorithm::kEcdhEsA256Kw), "ECDH-ES+A256KW");
  EXPECT_EQ(KeyAlgorithmName(KeyAlgorithm::kRsaOaep256), "RSA-OAEP-256");
  auto ec = ParseKeyAlgorithm("ECDH-ES+A256KW");
  ASSERT_OK(ec);
  EXPECT_EQ(*ec, KeyAlgorithm::kEcdhEsA256Kw);
  auto rsa = ParseKeyAlgorithm("RSA-OAEP-256");
  ASSERT_OK(rsa);
  EXPECT_EQ(*rsa, KeyAlgorithm::kRsaOaep256);
  for (const char* name : {"RSA1_5", "RSA-OAEP", "none", "dir", "ECDH-ES", "ECDH-ES+A128KW", "A256GCMKW", "A256KW",
                           "ecdh-es+a256kw", ""}) {
    EXPECT_THAT(ParseKeyAlgorithm(name), StatusIs(kInvalid)) << name;
  }
}

class JoseTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    for (auto* slot : {&ec_, &ec_other_}) {
      auto key = TeeKeyPair::Generate(KeyAlgorithm::kEcdhEsA256Kw);
      ASSERT_OK(key);
      *slot = std::make_unique<TeeKeyPair>(std::move(*key));
    }
    for (auto* slot : {&rsa_, &rsa_other_}) {
      auto key = TeeKeyPair::Generate(KeyAlgorithm::kRsaOaep256);
      ASSERT_OK(key);
      *slot = std::make_unique<TeeKeyPair>(std::move(*key));
    }
  }
  static void TearDownTestSuite() {
    ec_.reset();
    ec_other_.reset();
    rsa_.reset();
    rsa_other_.reset();
  }

  void SetUp() override {
    if (!kbs_testing::HavePython()) GTEST_SKIP() << kbs_testing::kPython << " is missing";
  }

  // A JWE from tests/kbs/kbs_jose.py (Python's cryptography) for `key`.
  static std::string Encrypt(const TeeKeyPair& key, const std::string& payload, const std::string& alg = "",
                             const std::string& enc = "") {
    auto out = kbs_testing::PythonJwe(key.PublicJwk(), payload, alg, enc);
    EXPECT_OK(out);
    return out.ok() ? *out : std::string();
  }

  static std::string RandomBytes(size_t n) {
    std::string out(n, '\0');
    EXPECT_OK(FillRandom({reinterpret_cast<uint8_t*>(out.data()), out.size()}));
    return out;
  }

  static std::vector<const TeeKeyPair*> Keys() { return {ec_.get(), rsa_.get()}; }

  static inline std::unique_ptr<TeeKeyPair> ec_, ec_other_, rsa_, rsa_other_;
};

// Applies `edit` to the parsed JWE object and serializes it again.
template <typename Edit>
std::string EditJwe(const std::string& jwe, Edit edit) {
  json j = json::parse(jwe);
  edit(j);
  return j.dump();
}

// Applies `edit` to the decoded protected header and re-encodes it.
template <typename Edit>
std::string EditHeader(const std::string& jwe, Edit edit) {
  return EditJwe(jwe, [&](json& j) {
    json header = json::parse(UnB64(j["protected"].get<std::string>()));
    edit(header);
    j["protected"] = B64(header.dump());
  });
}

// Flips one bit of the decoded member `name` and re-encodes it canonically.
std::string FlipBit(const std::string& jwe, const char* name, size_t byte, uint8_t bit = 0x01) {
  return EditJwe(jwe, [&](json& j) {
    std::string bytes = UnB64(j[name].get<std::string>());
    bytes[byte % bytes.size()] = static_cast<char>(bytes[byte % bytes.size()] ^ bit);
    j[name] = B64(bytes);
  });
}

TEST_F(JoseTest, EcPublicJwkIsExactlyWhatTrusteeBinds) {
  const json jwk = ec_->PublicJwk();
  EXPECT_EQ(Members(jwk), (std::set<std::string>{"kty", "crv", "alg", "x", "y"}));
  EXPECT_EQ(jwk["kty"], "EC");
  EXPECT_EQ(jwk["crv"], "P-256");
  EXPECT_EQ(jwk["alg"], "ECDH-ES+A256KW");
  const std::string x = UnB64(jwk["x"].get<std::string>());
  const std::string y = UnB64(jwk["y"].get<std::string>());
  EXPECT_EQ(x.size(), 32u);
  EXPECT_EQ(y.size(), 32u);
  EXPECT_OK(jose_internal::ImportP256PublicKey(x, y));  // the point is the key's, on the curve
  EXPECT_NE(ec_other_->PublicJwk()["x"], jwk["x"]);
}

TEST_F(JoseTest, RsaPublicJwkIsExactlyWhatTrusteeBinds) {
  const json jwk = rsa_->PublicJwk();
  EXPECT_EQ(Members(jwk), (std::set<std::string>{"kty", "alg", "n", "e"}));
  EXPECT_EQ(jwk["kty"], "RSA");
  EXPECT_EQ(jwk["alg"], "RSA-OAEP-256");
  EXPECT_EQ(jwk["e"], "AQAB");
  const std::string n = UnB64(jwk["n"].get<std::string>());
  ASSERT_EQ(n.size(), 384u);  // RSA-3072, minimal: no leading zero byte
  EXPECT_NE(n[0], '\0');
  EXPECT_NE(static_cast<unsigned char>(n[0]) & 0x80, 0);
  EXPECT_EQ(rsa_->algorithm(), KeyAlgorithm::kRsaOaep256);
  EXPECT_EQ(ec_->algorithm(), KeyAlgorithm::kEcdhEsA256Kw);
}

TEST_F(JoseTest, DecryptsWhatPythonEncrypts) {
  for (const TeeKeyPair* key : Keys()) {
    for (size_t size : {size_t{1}, size_t{32}, size_t{64}, size_t{1000}}) {
      const std::string payload = RandomBytes(size);
      auto plain = key->Decrypt(Encrypt(*key, payload));
      ASSERT_OK(plain) << KeyAlgorithmName(key->algorithm()) << " " << size;
      EXPECT_EQ(HexEncode(Str(*plain)), HexEncode(payload));
    }
    auto empty = key->Decrypt(Encrypt(*key, ""));
    ASSERT_OK(empty);
    EXPECT_EQ(empty->size(), 0u);
  }
}

TEST_F(JoseTest, AnotherKeyCannotDecrypt) {
  const std::string payload = RandomBytes(64);
  EXPECT_THAT(ec_other_->Decrypt(Encrypt(*ec_, payload)), StatusIs(kDenied));
  EXPECT_THAT(rsa_other_->Decrypt(Encrypt(*rsa_, payload)), StatusIs(kDenied));
}

TEST_F(JoseTest, TamperedMembersFailAuthentication) {
  for (const TeeKeyPair* key : Keys()) {
    const std::string jwe = Encrypt(*key, RandomBytes(64));
    ASSERT_OK(key->Decrypt(jwe));
    const std::string alg(KeyAlgorithmName(key->algorithm()));
    for (const char* name : {"ciphertext", "tag", "iv", "encrypted_key"}) {
      for (size_t byte : {size_t{0}, size_t{5}, size_t{1000}}) {
        EXPECT_THAT(key->Decrypt(FlipBit(jwe, name, byte)), StatusIs(kDenied)) << alg << " " << name << " " << byte;
      }
    }
    // A protected header that still parses but is not the one authenticated.
    EXPECT_THAT(key->Decrypt(EditHeader(jwe, [](json& h) { h["kid"] = "x"; })), StatusIs(kDenied)) << alg;
    // The same header, serialized differently: the AAD is the string as received.
    EXPECT_THAT(key->Decrypt(EditJwe(jwe,
                                     [](json& j) {
                                       std::string header = UnB64(j["protected"].get<std::string>());
                                       j["protected"] = B64(" " + header);
                                     })),
                StatusIs(kDenied))
        << alg;
  }
}

TEST_F(JoseTest, AnotherEphemeralKeyFailsTheUnwrap) {
  const std::string jwe = Encrypt(*ec_, RandomBytes(32));
  const json other = ec_other_->PublicJwk();
  EXPECT_THAT(ec_->Decrypt(EditHeader(jwe,
                                      [&](json& h) {
                                        h["epk"]["x"] = other["x"];
                                        h["epk"]["y"] = other["y"];
                                      })),
              StatusIs(kDenied));
  // apu / apv take part in the KDF when present; the sender used none.
  EXPECT_THAT(ec_->Decrypt(EditHeader(jwe, [](json& h) { h["apu"] = B64("Alice"); })), StatusIs(kDenied));
  EXPECT_THAT(ec_->Decrypt(EditHeader(jwe, [](json& h) { h["apv"] = B64("Bob"); })), StatusIs(kDenied));
  EXPECT_THAT(ec_->Decrypt(EditHeader(jwe, [](json& h) { h["apu"] = ""; })), StatusIs(kDenied));
}

TEST_F(JoseTest, RefusesOtherAlgorithms) {
  for (const TeeKeyPair* key : Keys()) {
    for (const char* alg : {"RSA1_5", "none", "dir", "ECDH-ES", "A256GCMKW", "A256KW", "RSA-OAEP", "ECDH-ES+A128KW"}) {
      EXPECT_THAT(key->Decrypt(Encrypt(*key, "x", alg)), StatusIs(kInvalid, HasSubstr("refused")))
          << KeyAlgorithmName(key->algorithm()) << " " << alg;
    }
  }
  EXPECT_THAT(ec_->Decrypt(Encrypt(*ec_, "x", "RSA-OAEP-256")), StatusIs(kInvalid, HasSubstr("does not match")));
  EXPECT_THAT(rsa_->Decrypt(Encrypt(*rsa_, "x", "ECDH-ES+A256KW")), StatusIs(kInvalid, HasSubstr("does not match")));
  // A JWE for the other kind of key.
  EXPECT_THAT(rsa_->Decrypt(Encrypt(*ec_, "x")), StatusIs(kInvalid, HasSubstr("does not match")));
  EXPECT_THAT(ec_->Decrypt(Encrypt(*rsa_, "x")), StatusIs(kInvalid, HasSubstr("does not match")));
}

TEST_F(JoseTest, RefusesOtherContentEncryption) {
  for (const TeeKeyPair* key : Keys()) {
    for (const char* enc : {"A128GCM", "A192GCM", "A256CBC-HS512", "a256gcm"}) {
      EXPECT_THAT(key->Decrypt(Encrypt(*key, "x", "", enc)), StatusIs(kInvalid, HasSubstr("enc"))) << enc;
    }
    const std::string jwe = Encrypt(*key, "x");
    EXPECT_THAT(key->Decrypt(EditHeader(jwe, [](json& h) { h.erase("enc"); })), StatusIs(kInvalid, HasSubstr("enc")));
    EXPECT_THAT(key->Decrypt(EditHeader(jwe, [](json& h) { h.erase("alg"); })), StatusIs(kInvalid, HasSubstr("alg")));
    EXPECT_THAT(key->Decrypt(EditHeader(jwe, [](json& h) { h["alg"] = 1; })), StatusIs(kInvalid, HasSubstr("alg")));
    EXPECT_THAT(key->Decrypt(EditHeader(jwe, [](json& h) { h["zip"] = "DEF"; })), StatusIs(kInvalid, HasSubstr("zip")));
    EXPECT_THAT(key->Decrypt(EditHeader(jwe,
                                        [](json& h) {
                                          h["crit"] = {"exp"};
                                          h["exp"] = 1;
                                        })),
                StatusIs(kInvalid, HasSubstr("crit")));
  }
}

TEST_F(JoseTest, RefusesBadEphemeralKeys) {
  const std::string jwe = Encrypt(*ec_, "x");
  auto decrypt_with = [&](auto edit) { return ec_->Decrypt(EditHeader(jwe, edit)); };
  EXPECT_THAT(decrypt_with([](json& h) {
                std::string y = UnB64(h["epk"]["y"].get<std::string>());
                y[31] = static_cast<char>(y[31] ^ 0x01);
                h["epk"]["y"] = B64(y);
              }),
              StatusIs(kInvalid, HasSubstr("P-256")));
  EXPECT_THAT(decrypt_with([](json& h) { h["epk"]["crv"] = "P-384"; }), StatusIs(kInvalid, HasSubstr("crv")));
  EXPECT_THAT(decrypt_with([](json& h) { h["epk"]["kty"] = "OKP"; }), StatusIs(kInvalid, HasSubstr("kty")));
  EXPECT_THAT(decrypt_with([](json& h) { h.erase("epk"); }), StatusIs(kInvalid, HasSubstr("epk")));
  EXPECT_THAT(decrypt_with([](json& h) { h["epk"] = "key"; }), StatusIs(kInvalid, HasSubstr("epk")));
  EXPECT_THAT(decrypt_with([](json& h) { h["epk"].erase("y"); }), StatusIs(kInvalid, HasSubstr("y")));
  EXPECT_THAT(decrypt_with([](json& h) { h["epk"]["d"] = B64(std::string(32, '\x01')); }),
              StatusIs(kInvalid, HasSubstr("d")));
  EXPECT_THAT(decrypt_with([](json& h) { h["epk"]["x"] = B64(std::string(31, '\x01')); }),
              StatusIs(kInvalid, HasSubstr("32 bytes")));
  EXPECT_THAT(decrypt_with([](json& h) { h["epk"]["x"] = 5; }), StatusIs(kInvalid, HasSubstr("x")));
  EXPECT_THAT(decrypt_with([](json& h) { h["apu"] = 5; }), StatusIs(kInvalid, HasSubstr("apu")));
  EXPECT_THAT(decrypt_with([](json& h) { h["apv"] = json::object(); }), StatusIs(kInvalid, HasSubstr("apv")));
  EXPECT_THAT(decrypt_with([](json& h) { h["apu"] = "QWxpY2U="; }), StatusIs(kInvalid, HasSubstr("apu")));
  // An RSA JWE carries no epk.
  const json epk = json::parse(UnB64(json::parse(jwe)["protected"].get<std::string>()))["epk"];
  EXPECT_THAT(rsa_->Decrypt(EditHeader(Encrypt(*rsa_, "x"), [&](json& h) { h["epk"] = epk; })),
              StatusIs(kInvalid, HasSubstr("epk")));
}

TEST_F(JoseTest, RefusesMalformedProtectedHeaders) {
  for (const TeeKeyPair* key : Keys()) {
    const std::string jwe = Encrypt(*key, "x");
    auto with_header_bytes = [&](const std::string& bytes) {
      return EditJwe(jwe, [&](json& j) { j["protected"] = B64(bytes); });
    };
    EXPECT_THAT(key->Decrypt(with_header_bytes("[1]")), StatusIs(kInvalid, HasSubstr("not a JSON object")));
    EXPECT_THAT(key->Decrypt(with_header_bytes("{\"alg\":")), StatusIs(kInvalid, HasSubstr("not valid JSON")));
    EXPECT_THAT(key->Decrypt(with_header_bytes("")), StatusIs(kInvalid));
    EXPECT_THAT(key->Decrypt(with_header_bytes("{\"enc\":\"A256GCM\",\"alg\":\"x\"\xff}")), StatusIs(kInvalid));
    // Duplicate names: nlohmann would keep the last one; refused instead.
    const std::string alg(KeyAlgorithmName(key->algorithm()));
    EXPECT_THAT(key->Decrypt(with_header_bytes("{\"alg\":\"RSA1_5\",\"alg\":\"" + alg + "\",\"enc\":\"A256GCM\"}")),
                StatusIs(kInvalid, HasSubstr("duplicate")));
  }
}

TEST_F(JoseTest, RefusesMalformedJweObjects) {
  for (const TeeKeyPair* key : Keys()) {
    const std::string jwe = Encrypt(*key, "x");
    const std::string alg(KeyAlgorithmName(key->algorithm()));
    for (const char* member : {"aad", "header", "unprotected", "recipients", "extra"}) {
      EXPECT_THAT(key->Decrypt(EditJwe(jwe, [&](json& j) { j[member] = B64("x"); })),
                  StatusIs(kInvalid, HasSubstr(member)))
          << alg << " " << member;
    }
    for (const char* member : {"protected", "encrypted_key", "iv", "ciphertext", "tag"}) {
      EXPECT_THAT(key->Decrypt(EditJwe(jwe, [&](json& j) { j.erase(member); })), StatusIs(kInvalid, HasSubstr(member)))
          << alg << " " << member;
      EXPECT_THAT(key->Decrypt(EditJwe(jwe, [&](json& j) { j[member] = 12; })), StatusIs(kInvalid, HasSubstr(member)))
          << alg << " " << member;
      // Padding, and the standard alphabet's characters.
      EXPECT_THAT(key->Decrypt(EditJwe(jwe, [&](json& j) { j[member] = j[member].get<std::string>() + "=="; })),
                  StatusIs(kInvalid, HasSubstr("base64url")))
          << alg << " " << member;
      EXPECT_THAT(key->Decrypt(EditJwe(jwe, [&](json& j) { j[member] = "+/" + j[member].get<std::string>(); })),
                  StatusIs(kInvalid, HasSubstr("base64url")))
          << alg << " " << member;
    }
    // A duplicate member.
    std::string duplicated = jwe;
    duplicated.insert(duplicated.rfind('}'), ", \"iv\": \"AAAAAAAAAAAAAAAA\"");
    EXPECT_THAT(key->Decrypt(duplicated), StatusIs(kInvalid, HasSubstr("duplicate")));
    // Wrong sizes.
    EXPECT_THAT(key->Decrypt(EditJwe(jwe, [](json& j) { j["iv"] = B64(std::string(11, 'i')); })),
                StatusIs(kInvalid, HasSubstr("iv")));
    EXPECT_THAT(key->Decrypt(EditJwe(jwe, [](json& j) { j["iv"] = B64(std::string(16, 'i')); })),
                StatusIs(kInvalid, HasSubstr("iv")));
    EXPECT_THAT(key->Decrypt(EditJwe(jwe, [](json& j) { j["tag"] = B64(std::string(15, 't')); })),
                StatusIs(kInvalid, HasSubstr("tag")));
    EXPECT_THAT(key->Decrypt(EditJwe(jwe, [](json& j) { j["tag"] = B64(std::string(17, 't')); })),
                StatusIs(kInvalid, HasSubstr("tag")));
    const size_t key_bytes = key->algorithm() == KeyAlgorithm::kEcdhEsA256Kw ? 40 : 384;
    for (size_t size : {key_bytes - 8, key_bytes - 1, key_bytes + 8, size_t{0}}) {
      EXPECT_THAT(key->Decrypt(EditJwe(jwe, [&](json& j) { j["encrypted_key"] = B64(std::string(size, 'k')); })),
                  StatusIs(kInvalid, HasSubstr("encrypted_key")))
          << alg << " " << size;
    }
  }
}

TEST_F(JoseTest, RefusesWhatIsNotAJweObject) {
  for (const char* text : {"", "{", "[]", "null", "42", "\"jwe\"", "{\"protected\":}", "{} {}", "{\"a\":1,}"}) {
    EXPECT_THAT(ec_->Decrypt(text), StatusIs(kInvalid)) << text;
  }
  const std::string jwe = Encrypt(*ec_, "x");
  EXPECT_THAT(ec_->Decrypt(jwe + "x"), StatusIs(kInvalid));
  EXPECT_THAT(ec_->Decrypt(std::string(jwe).insert(1, "\xff")), StatusIs(kInvalid));
}

TEST_F(JoseTest, RefusesOversizeInput) {
  const std::string jwe = Encrypt(*ec_, "x");
  // A valid JWE, then whitespace up to one byte over the limit.
  std::string padded = jwe + std::string(kMaxJweBytes - jwe.size(), ' ');
  EXPECT_OK(ec_->Decrypt(padded));
  padded.push_back(' ');
  EXPECT_THAT(ec_->Decrypt(padded), StatusIs(kInvalid, HasSubstr("limit")));
  // A real one: a 50 KB payload is about 67 KB of base64url.
  EXPECT_THAT(ec_->Decrypt(Encrypt(*ec_, RandomBytes(size_t{50} * 1024))), StatusIs(kInvalid, HasSubstr("limit")));
}

TEST_F(JoseTest, MovedFromKeyPairIsRefused) {
  auto key = TeeKeyPair::Generate(KeyAlgorithm::kEcdhEsA256Kw);
  ASSERT_OK(key);
  TeeKeyPair moved = std::move(*key);
  const std::string jwe = Encrypt(moved, "payload");
  auto plain = moved.Decrypt(jwe);
  ASSERT_OK(plain);
  EXPECT_EQ(Str(*plain), "payload");
  // NOLINTNEXTLINE(bugprone-use-after-move): the documented moved-from state
  EXPECT_THAT(key->Decrypt(jwe), StatusIs(absl::StatusCode::kFailedPrecondition));
}

}  // namespace
}  // namespace cocostorage::agent::kbs
