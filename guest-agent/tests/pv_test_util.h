// Test helpers for the persistent volume's header (pv_*_test.cc, the fuzzer's
// seeds): hex, fixed keys, a valid superblock, and a LUKS2 header image built
// the way libcryptsetup 2.6 (Debian bookworm) writes it for the agent's
// crypt_format, so a crafted variant is a one-line edit of the builder.
#pragma once

#include <openssl/evp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cocostorage/common/secure_buffer.h"
#include "pv/pv_header.h"

namespace cocostorage::agent::pv::testing {

inline std::vector<uint8_t> FromHex(std::string_view hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

inline std::string ToHex(std::span<const uint8_t> b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (uint8_t c : b) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

inline SecureBuffer Buffer(std::span<const uint8_t> bytes) {
  if (bytes.empty()) return SecureBuffer();
  SecureBuffer b = std::move(SecureBuffer::Allocate(bytes.size())).value();
  std::copy(bytes.begin(), bytes.end(), b.data());
  return b;
}

inline SecureBuffer FixedRoot() {
  std::vector<uint8_t> r(kRootKeyBytes);
  for (size_t i = 0; i < r.size(); ++i) r[i] = static_cast<uint8_t>(i);
  return Buffer(r);
}

inline Uuid FixedUuid() {
  Uuid u{};
  for (size_t i = 0; i < u.size(); ++i) u[i] = static_cast<uint8_t>(0x10 + i);
  return u;
}

// pv_golden.py's vectors: DeriveKeys(FixedRoot(), volume_id, suite), and
// PV_GOLDEN_SLOT_HEX, GoldenSuperblock encoded with the "db-1" MAC key.
struct GoldenKeys {
  const char* volume_id;
  const char* suite;
  const char* luks;
  const char* mac;
  const char* kcv;
};
inline constexpr GoldenKeys kGoldenKeys[] = {
#include "pv_golden.inc"
};

// The superblock of pv_golden.py (READY, generation 7, volume "db-1").
inline Superblock GoldenSuperblock(const Kcv& kcv) {
  Superblock sb;
  sb.state = State::kReady;
  sb.generation = 7;
  sb.uuid = FixedUuid();
  sb.volume_id = "db-1";
  sb.kbs_uri = "kbs:///default/pv/db-1";
  sb.kcv = kcv;
  sb.integrity = IntegrityMode::kHmacSha256;
  sb.provided_bytes = 1ull << 30;
  sb.guard_meta_bytes = 4ull << 20;
  sb.guard_block_sectors = 128;
  sb.guard_volume_sectors = 2ull << 20;
  sb.luks_image_length = 49152;
  const std::string_view luks = "luks";
  sb.luks_image_sha256 = Sha256Of({reinterpret_cast<const uint8_t*>(luks.data()), luks.size()});
  return sb;
}

// A LUKS2 header image: two binary headers with their JSON areas, then the
// keyslots area. Build() fills in the checksums; `edit` runs after that, for
// damage the checksum must not repair.
struct LuksImageBuilder {
  nlohmann::ordered_json json;
  std::optional<std::string> secondary_json_text;  // instead of json.dump()
  std::optional<std::string> json_text;            // instead of json.dump(), both copies
  uint64_t metadata_bytes = kLuksMetadataBytes;
  uint64_t keyslots_bytes = kLuksKeyslotsBytes;
  uint64_t seqid = 2;
  uint64_t secondary_seqid = 2;
  uint16_t version = 2;
  std::string label = "cocostorage";
  std::string checksum_alg = "sha256";
  std::string uuid_text;
  std::string subsystem;
  uint64_t trailing_zero_bytes = 0;  // image longer than the three areas
  std::function<void(std::vector<uint8_t>&)> edit;
  // Runs on each binary header copy before its checksum is computed.
  std::function<void(std::vector<uint8_t>& hdr, bool primary)> edit_header;

  // What libcryptsetup 2.6 writes for crypt_format(LUKS2, cipher, mode, volume
  // key, {sector_size 4096, integrity, label "cocostorage"}) after
  // crypt_set_metadata_size(16384, 16384), crypt_set_data_offset(32768) and a
  // pbkdf type with CRYPT_PBKDF_NO_BENCHMARK (digest iterations = 1000).
  static LuksImageBuilder For(const LuksExpectations& want) {
    LuksImageBuilder b;
    b.metadata_bytes = want.metadata_bytes;
    b.keyslots_bytes = want.keyslots_bytes;
    b.uuid_text = UuidText(want.uuid);
    const CipherSuite suite = SuiteFor(want.integrity);
    nlohmann::ordered_json seg = {
        {"type", "crypt"}, {"offset", std::to_string(want.data_offset)},           {"size", "dynamic"},
        {"iv_tweak", "0"}, {"encryption", suite.cipher + "-" + suite.cipher_mode}, {"sector_size", want.sector_size}};
    if (!suite.integrity.empty()) {
      seg["integrity"] = {{"type", suite.integrity}, {"journal_encryption", "none"}, {"journal_integrity", "none"}};
    }
    b.json = {{"keyslots", nlohmann::ordered_json::object()},
              {"tokens", nlohmann::ordered_json::object()},
              {"segments", {{"0", seg}}},
              {"digests",
               {{"0",
                 {{"type", "pbkdf2"},
                  {"keyslots", nlohmann::ordered_json::array()},
                  {"segments", {"0"}},
                  {"hash", "sha256"},
                  {"iterations", 1000},
                  {"salt", "IwIfVn+r6aZ3zCEVulq5shL8xjUhPyRlMuVuKPOpRgA="},
                  {"digest", "0QuEDL1nRlJxnC5JFDp7XeQszjiTmZy4HJNm0ChebW8="}}}}},
              {"config",
               {{"json_size", std::to_string(want.metadata_bytes - 4096)},
                {"keyslots_size", std::to_string(want.keyslots_bytes)}}}};
    return b;
  }

  std::vector<uint8_t> Build() const {
    std::vector<uint8_t> image(2 * metadata_bytes + keyslots_bytes + trailing_zero_bytes, 0);
    const std::string text = json_text.value_or(json.dump());
    WriteHeader(image, 0, true, seqid, text);
    WriteHeader(image, metadata_bytes, false, secondary_seqid, secondary_json_text.value_or(text));
    if (edit) edit(image);
    return image;
  }

  static void PutBe(std::vector<uint8_t>& b, size_t off, uint64_t v, size_t n) {
    for (size_t i = 0; i < n; ++i) b[off + i] = static_cast<uint8_t>(v >> (8 * (n - 1 - i)));
  }
  static void PutString(std::vector<uint8_t>& b, size_t off, const std::string& s, size_t field) {
    std::memcpy(b.data() + off, s.data(), std::min(s.size(), field));
  }

  void WriteHeader(std::vector<uint8_t>& image, size_t off, bool primary, uint64_t seq, const std::string& text) const {
    std::vector<uint8_t> h(metadata_bytes, 0);
    const uint8_t magic[6] = {primary ? uint8_t('L') : uint8_t('S'),
                              primary ? uint8_t('U') : uint8_t('K'),
                              primary ? uint8_t('K') : uint8_t('U'),
                              primary ? uint8_t('S') : uint8_t('L'),
                              0xba,
                              0xbe};
    std::memcpy(h.data(), magic, 6);
    PutBe(h, 6, version, 2);
    PutBe(h, 8, metadata_bytes, 8);
    PutBe(h, 16, seq, 8);
    PutString(h, 24, label, 48);
    PutString(h, 72, checksum_alg, 32);
    for (size_t i = 0; i < 64; ++i) h[104 + i] = static_cast<uint8_t>(primary ? 0xa0 + i : 0x30 + i);  // salt
    PutString(h, 168, uuid_text, 40);
    PutString(h, 208, subsystem, 48);
    PutBe(h, 256, primary ? 0 : metadata_bytes, 8);
    std::memcpy(h.data() + 4096, text.data(), std::min<size_t>(text.size(), metadata_bytes - 4096));
    if (edit_header) edit_header(h, primary);
    const Sha256 sum = Sha256Of(h);
    std::memcpy(h.data() + 448, sum.data(), sum.size());
    std::copy(h.begin(), h.end(), image.begin() + static_cast<std::ptrdiff_t>(off));
  }
};

}  // namespace cocostorage::agent::pv::testing
