// Strict validation of the persistent volume's LUKS2 header image
// (pv/pv_header.h ValidateLuksImage, docs/design.md §4.4): the image
// libcryptsetup 2.6 writes passes (built by LuksImageBuilder, and a real one
// from Debian bookworm's libcryptsetup 2.6.1), every crafted variant is
// refused naming its item.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "pv/pv_header.h"
#include "pv_test_util.h"

namespace cocostorage::agent::pv {
namespace {

using ::testing::HasSubstr;
using testing::LuksImageBuilder;

LuksExpectations Want(IntegrityMode m = IntegrityMode::kHmacSha256) {
  LuksExpectations w;
  w.uuid = testing::FixedUuid();
  w.integrity = m;
  return w;
}

void ExpectRefused(const LuksImageBuilder& b, const std::string& item, const LuksExpectations& want = Want()) {
  Status s = ValidateLuksImage(b.Build(), want);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << item << ": " << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("header_invalid: " + item));
}

TEST(LuksImageTest, ValidImagePassesForEverySuite) {
  for (IntegrityMode m :
       {IntegrityMode::kHmacSha256, IntegrityMode::kNone, IntegrityMode::kAegis128, IntegrityMode::kAesGcm}) {
    LuksImageBuilder b = LuksImageBuilder::For(Want(m));
    EXPECT_TRUE(ValidateLuksImage(b.Build(), Want(m)).ok())
        << IntegrityName(m) << ": " << ValidateLuksImage(b.Build(), Want(m));
  }
  LuksImageBuilder b = LuksImageBuilder::For(Want());
  b.trailing_zero_bytes = 1 << 20;
  EXPECT_TRUE(ValidateLuksImage(b.Build(), Want()).ok());
}

TEST(LuksImageTest, RealCryptsetup261ImagePasses) {
  const std::string path =
      std::string(COCOSTORAGE_SOURCE_DIR) + "/guest-agent/tests/data/pv/luks2-cryptsetup-2.6.1-none.img";
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in) << path;
  std::vector<uint8_t> image((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_EQ(image.size(), 49152u);
  LuksExpectations want = Want(IntegrityMode::kNone);
  auto uuid = ParseUuidText(std::string(reinterpret_cast<const char*>(image.data()) + 168, 36));
  ASSERT_TRUE(uuid.ok()) << uuid.status();
  want.uuid = *uuid;
  // libcryptsetup fills the keyslots area with random bytes: as written, refused.
  EXPECT_THAT(std::string(ValidateLuksImage(image, want).message()), HasSubstr("keyslots area not zero"));
  // The agent zeroes it in its copy (no checksum covers it).
  std::fill(image.begin() + 32768, image.end(), 0);
  EXPECT_TRUE(ValidateLuksImage(image, want).ok()) << ValidateLuksImage(image, want);
  // It is not a hmac-sha256 image.
  want.integrity = IntegrityMode::kHmacSha256;
  EXPECT_THAT(std::string(ValidateLuksImage(image, want).message()), HasSubstr("segments.0.integrity missing"));
}

TEST(LuksImageTest, JsonVariantsAreRefusedNamingTheItem) {
  const LuksImageBuilder valid = LuksImageBuilder::For(Want());
  struct Case {
    std::string item;
    std::function<void(nlohmann::ordered_json&)> edit;
  };
  const std::vector<Case> cases = {
      {"segments.0.encryption cipher_null", [](auto& j) { j["segments"]["0"]["encryption"] = "cipher_null"; }},
      {"segments.0.encryption cipher_null-ecb", [](auto& j) { j["segments"]["0"]["encryption"] = "cipher_null-ecb"; }},
      {"keyslots not empty",
       [](auto& j) {
         j["keyslots"]["0"] = {{"type", "luks2"}};
       }},
      {"tokens not empty",
       [](auto& j) {
         j["tokens"]["0"] = {{"type", "systemd-tpm2"}, {"keyslots", {"0"}}};
       }},
      {"segments.0.offset 16781312", [](auto& j) { j["segments"]["0"]["offset"] = "16781312"; }},
      {"segments.0.offset 0", [](auto& j) { j["segments"]["0"]["offset"] = "0"; }},
      {"segments.0.flags not allowed", [](auto& j) { j["segments"]["0"]["flags"] = {"backup-final"}; }},
      {"segments.1 not allowed", [](auto& j) { j["segments"]["1"] = j["segments"]["0"]; }},
      {"segments.0.size 1048576", [](auto& j) { j["segments"]["0"]["size"] = "1048576"; }},
      {"segments.0.iv_tweak 8", [](auto& j) { j["segments"]["0"]["iv_tweak"] = "8"; }},
      {"segments.0.sector_size 512", [](auto& j) { j["segments"]["0"]["sector_size"] = 512; }},
      {"segments.0.sector_size \"4096\"", [](auto& j) { j["segments"]["0"]["sector_size"] = "4096"; }},
      {"segments.0.type linear", [](auto& j) { j["segments"]["0"]["type"] = "linear"; }},
      {"segments.0.integrity missing", [](auto& j) { j["segments"]["0"].erase("integrity"); }},
      {"segments.0.integrity.type hmac(sha1)", [](auto& j) { j["segments"]["0"]["integrity"]["type"] = "hmac(sha1)"; }},
      {"segments.0.integrity.journal_integrity hmac(sha256)",
       [](auto& j) { j["segments"]["0"]["integrity"]["journal_integrity"] = "hmac(sha256)"; }},
      {"segments.0.integrity.key_size not allowed", [](auto& j) { j["segments"]["0"]["integrity"]["key_size"] = 32; }},
      {"digests.0.iterations 100001", [](auto& j) { j["digests"]["0"]["iterations"] = 100001; }},
      {"digests.0.iterations 4294967296", [](auto& j) { j["digests"]["0"]["iterations"] = 4294967296ull; }},
      {"digests.0.iterations 999", [](auto& j) { j["digests"]["0"]["iterations"] = 999; }},
      {"digests.0.iterations -5", [](auto& j) { j["digests"]["0"]["iterations"] = -5; }},
      {"digests.0.iterations 1000.5", [](auto& j) { j["digests"]["0"]["iterations"] = 1000.5; }},
      {"digests.0.keyslots not empty", [](auto& j) { j["digests"]["0"]["keyslots"] = {"0"}; }},
      {"digests.0.segments is not", [](auto& j) { j["digests"]["0"]["segments"] = nlohmann::ordered_json::array(); }},
      {"digests.0.type argon2id", [](auto& j) { j["digests"]["0"]["type"] = "argon2id"; }},
      {"digests.0.hash sha1", [](auto& j) { j["digests"]["0"]["hash"] = "sha1"; }},
      {"digests.0.salt is not base64 of 32 bytes", [](auto& j) { j["digests"]["0"]["salt"] = "AAAA"; }},
      {"digests.0.digest is not base64 of 32 bytes",
       [](auto& j) { j["digests"]["0"]["digest"] = "0QuEDL1nRlJxnC5JFDp7XeQszjiTmZy4HJNm0ChebW9="; }},
      {"digests.1 not allowed", [](auto& j) { j["digests"]["1"] = j["digests"]["0"]; }},
      {"config.flags not allowed", [](auto& j) { j["config"]["flags"] = {"allow-discards"}; }},
      {"config.requirements not allowed",
       [](auto& j) {
         j["config"]["requirements"] = {{"mandatory", {"online-reencrypt-v2"}}};
       }},
      {"config.json_size 16384", [](auto& j) { j["config"]["json_size"] = "16384"; }},
      {"config.keyslots_size 16744448", [](auto& j) { j["config"]["keyslots_size"] = "16744448"; }},
      {"json.opal not allowed", [](auto& j) { j["opal"] = nlohmann::ordered_json::object(); }},
      {"json.tokens missing", [](auto& j) { j.erase("tokens"); }},
      {"json is not an object", [](auto& j) { j = nlohmann::ordered_json::array(); }},
  };
  for (const Case& c : cases) {
    LuksImageBuilder b = valid;
    c.edit(b.json);
    ExpectRefused(b, c.item);
  }
}

TEST(LuksImageTest, SuiteWithoutIntegrityHasNoIntegrityObject) {
  LuksImageBuilder b = LuksImageBuilder::For(Want(IntegrityMode::kHmacSha256));
  ExpectRefused(b, "segments.0.integrity not allowed", Want(IntegrityMode::kNone));
}

TEST(LuksImageTest, JsonTextVariants) {
  LuksImageBuilder b = LuksImageBuilder::For(Want());
  b.json_text = b.json.dump().substr(0, 200);  // truncated
  ExpectRefused(b, "json syntax");
  b = LuksImageBuilder::For(Want());
  std::string text = b.json.dump();
  b.json_text = "{\"tokens\":{\"0\":{}}," + text.substr(1);  // duplicate key: which one would json-c take?
  ExpectRefused(b, "json duplicate key");
  b = LuksImageBuilder::For(Want());
  b.json_text = std::string(12288, ' ');  // no NUL in the JSON area
  ExpectRefused(b, "primary header json not terminated");
  b = LuksImageBuilder::For(Want());
  b.edit_header = [](std::vector<uint8_t>& h, bool primary) {
    if (primary) h[16383] = 'x';  // after the NUL
  };
  ExpectRefused(b, "primary header json area padding");
}

TEST(LuksImageTest, BinaryHeaderVariantsAreRefused) {
  const LuksImageBuilder valid = LuksImageBuilder::For(Want());
  LuksImageBuilder b = valid;
  b.edit = [](std::vector<uint8_t>& img) { img[4100] ^= 1; };  // JSON byte after checksumming
  ExpectRefused(b, "primary header checksum");
  b = valid;
  b.edit = [](std::vector<uint8_t>& img) { img[448] ^= 1; };
  ExpectRefused(b, "primary header checksum");
  b = valid;
  b.edit = [](std::vector<uint8_t>& img) { img[16384 + 448 + 40] = 1; };  // unused half of the checksum field
  ExpectRefused(b, "secondary header checksum");
  b = valid;
  b.edit = [](std::vector<uint8_t>& img) { img[0] = 'X'; };
  ExpectRefused(b, "primary header magic");
  b = valid;
  b.edit = [](std::vector<uint8_t>& img) { img[16384] = 'L'; };
  ExpectRefused(b, "secondary header magic");
  b = valid;
  b.secondary_seqid = 3;
  ExpectRefused(b, "secondary header seqid differs");
  b = valid;
  b.secondary_json_text = b.json.dump(1);
  ExpectRefused(b, "secondary header json differs");
  b = valid;
  b.version = 1;
  ExpectRefused(b, "primary header version 1");
  b = valid;
  b.label = "other";
  ExpectRefused(b, "primary header label");
  b = valid;
  b.checksum_alg = "sha512";
  ExpectRefused(b, "primary header checksum_alg");
  b = valid;
  b.subsystem = "x";
  ExpectRefused(b, "primary header subsystem");
  b = valid;
  b.uuid_text = "00000000-0000-0000-0000-000000000001";
  ExpectRefused(b, "primary header uuid");
  b = valid;
  b.uuid_text = UuidText(testing::FixedUuid());
  for (char& c : b.uuid_text) c = static_cast<char>(std::toupper(c));
  ExpectRefused(b, "primary header uuid");
  b = valid;
  b.edit_header = [](std::vector<uint8_t>& h, bool primary) {
    if (!primary) h[300] = 1;
  };
  ExpectRefused(b, "secondary header padding");
  b = valid;
  b.edit_header = [](std::vector<uint8_t>& h, bool primary) {
    if (primary) h[4095] = 1;
  };
  ExpectRefused(b, "primary header padding");
}

TEST(LuksImageTest, GeometryVariantsAreRefused) {
  LuksImageBuilder b = LuksImageBuilder::For(Want());
  b.edit = [](std::vector<uint8_t>& img) { img[32768 + 100] = 1; };
  ExpectRefused(b, "keyslots area not zero");
  b = LuksImageBuilder::For(Want());
  b.trailing_zero_bytes = 4096;
  b.edit = [](std::vector<uint8_t>& img) { img.back() = 1; };
  ExpectRefused(b, "bytes after the keyslots area not zero");
  b = LuksImageBuilder::For(Want());
  b.edit = [](std::vector<uint8_t>& img) { img.resize(img.size() - 4096); };
  ExpectRefused(b, "image length 45056");
  b = LuksImageBuilder::For(Want());
  b.trailing_zero_bytes = (3 << 20) - 49152 + 4096;
  ExpectRefused(b, "image length");
  // hdr_size and the secondary's place.
  LuksExpectations want = Want();
  b = LuksImageBuilder::For(want);
  b.metadata_bytes = 32768;
  b.json["config"]["json_size"] = "28672";
  ExpectRefused(b, "primary header hdr_size 32768");
  // The layer below trusts these: an image for another uuid or geometry.
  want.uuid[0] ^= 1;
  ExpectRefused(LuksImageBuilder::For(Want()), "primary header uuid", want);
  want = Want();
  want.data_offset = 32 << 20;
  ExpectRefused(LuksImageBuilder::For(Want()), "segments.0.offset 16777216", want);
}

}  // namespace
}  // namespace cocostorage::agent::pv
