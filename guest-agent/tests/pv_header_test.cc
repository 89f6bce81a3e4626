// The persistent volume's superblock slots (pv/pv_header.h, docs/design.md
// §4.3): golden bytes from pv_golden.py, the round trip, every strictness
// rule of ParseSlot, ParsePrefix's classification and ChooseSlot's table.
#include "pv/pv_header.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "pv_test_util.h"

namespace cocostorage::agent::pv {
namespace {

using testing::Buffer;
using testing::FixedRoot;
using testing::FromHex;
using testing::GoldenSuperblock;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing::ToHex;

PersistentKeys Keys(const std::string& id, uint8_t root_byte = 0) {
  SecureBuffer root = FixedRoot();
  if (root_byte != 0) root.data()[0] = root_byte;
  return std::move(DeriveKeys(root, id, IntegrityMode::kHmacSha256)).value();
}

std::vector<uint8_t> Encode(const Superblock& sb, const PersistentKeys& keys) {
  auto bytes = EncodeSlot(sb, keys.mac_key);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.ok() ? *bytes : std::vector<uint8_t>(kSlotBytes);
}

std::vector<uint8_t> Prefix(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  std::vector<uint8_t> out(a);
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

template <typename T>
void PutLe(std::vector<uint8_t>& b, size_t off, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) b[off + i] = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
}

class SuperblockTest : public ::testing::Test {
 protected:
  PersistentKeys keys_ = Keys("db-1");
  Superblock sb_ = GoldenSuperblock(keys_.kcv);
  std::vector<uint8_t> slot_ = Encode(sb_, keys_);
};

TEST_F(SuperblockTest, GoldenBytesMatchPythonImplementation) { EXPECT_EQ(ToHex(slot_), PV_GOLDEN_SLOT_HEX); }

TEST_F(SuperblockTest, RoundTrip) {
  SlotView v = ParseSlot(slot_);
  ASSERT_EQ(v.kind, SlotView::Kind::kOurs) << v.problem;
  EXPECT_EQ(v.sb, sb_);
  EXPECT_TRUE(SlotMacValid(slot_, keys_.mac_key));
  EXPECT_FALSE(SlotMacValid(slot_, Keys("db-2").mac_key));
  EXPECT_FALSE(SlotMacValid(std::span(slot_).first(4095), keys_.mac_key));

  Superblock other = sb_;
  other.state = State::kFormatting;
  other.generation = 1;
  other.integrity = IntegrityMode::kAesGcm;
  other.resize_target = 2ull << 30;
  other.volume_id = std::string(64, 'v');
  other.kbs_uri = "kbs:///" + std::string(80, 'r') + "/" + std::string(80, 't') + "/" + std::string(87, 'g');
  ASSERT_EQ(other.kbs_uri.size(), 256u);
  auto bytes = EncodeSlot(other, keys_.mac_key);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  SlotView w = ParseSlot(*bytes);
  ASSERT_EQ(w.kind, SlotView::Kind::kOurs) << w.problem;
  EXPECT_EQ(w.sb, other);
}

TEST_F(SuperblockTest, ZeroSlotIsZero) {
  EXPECT_EQ(ParseSlot(std::vector<uint8_t>(kSlotBytes, 0)).kind, SlotView::Kind::kZero);
}

struct Damage {
  std::string name;
  std::function<void(std::vector<uint8_t>&)> edit;
  std::string problem;
};

TEST_F(SuperblockTest, EveryStrictnessRuleRefuses) {
  const std::vector<Damage> cases = {
      {"magic", [](auto& b) { b[0] = 'X'; }, "bad magic"},
      {"magic nul", [](auto& b) { b[7] = '1'; }, "bad magic"},
      {"version", [](auto& b) { PutLe<uint32_t>(b, 0x8, 2); }, "format_version 2"},
      {"state", [](auto& b) { PutLe<uint32_t>(b, 0xC, 3); }, "state 3"},
      {"state 0", [](auto& b) { PutLe<uint32_t>(b, 0xC, 0); }, "state 0"},
      {"generation", [](auto& b) { PutLe<uint64_t>(b, 0x10, 0); }, "generation 0"},
      {"uuid", [](auto& b) { std::fill_n(b.begin() + 0x18, 16, 0); }, "uuid is zero"},
      {"id length", [](auto& b) { b[0x28] = 65; }, "volume_id length 65"},
      {"id empty", [](auto& b) { b[0x28] = 0; }, "volume_id is required"},
      {"id syntax", [](auto& b) { b[0x29 + 2] = '/'; }, "is not 1-64 characters"},
      {"id padding", [](auto& b) { b[0x29 + 4] = 'x'; }, "non-zero reserved byte at 0x2d"},
      {"after id", [](auto& b) { b[0x69] = 1; }, "non-zero reserved byte at 0x69"},
      {"uri length", [](auto& b) { PutLe<uint16_t>(b, 0x70, 257); }, "kbs_uri length 257"},
      {"uri syntax", [](auto& b) { b[0x72] = 'h'; }, "kbs_uri: "},
      {"uri padding", [](auto& b) { b[0x72 + 22] = 'x'; }, "non-zero reserved byte at 0x88"},
      {"after uri", [](auto& b) { b[0x17F] = 1; }, "non-zero reserved byte at 0x17f"},
      {"suite", [](auto& b) { PutLe<uint32_t>(b, 0x190, 9); }, "suite_id 9"},
      {"suite 0", [](auto& b) { PutLe<uint32_t>(b, 0x190, 0); }, "suite_id 0"},
      {"sector size", [](auto& b) { PutLe<uint32_t>(b, 0x194, 512); }, "sector_size 512"},
      {"data offset", [](auto& b) { PutLe<uint64_t>(b, 0x198, 0); }, "data_offset 0"},
      {"provided 0", [](auto& b) { PutLe<uint64_t>(b, 0x1A0, 0); }, "provided_bytes 0"},
      {"provided odd", [](auto& b) { PutLe<uint64_t>(b, 0x1A0, 4097); }, "provided_bytes 4097"},
      {"resize smaller", [](auto& b) { PutLe<uint64_t>(b, 0x1A8, 4096); }, "resize_target 4096"},
      {"resize odd", [](auto& b) { PutLe<uint64_t>(b, 0x1A8, (2ull << 30) + 1); }, "resize_target"},
      {"luks length 0", [](auto& b) { PutLe<uint32_t>(b, 0x1C8, 0); }, "luks_image_length 0"},
      {"luks length odd", [](auto& b) { PutLe<uint32_t>(b, 0x1C8, 49153); }, "luks_image_length 49153"},
      {"luks length big", [](auto& b) { PutLe<uint32_t>(b, 0x1C8, (3u << 20) + 4096); }, "luks_image_length"},
      {"luks offset", [](auto& b) { PutLe<uint64_t>(b, 0x1CC, 0); }, "luks_image_offset 0"},
      {"epoch", [](auto& b) { PutLe<uint64_t>(b, 0x1F4, 1); }, "epoch 1"},
      {"reserved after epoch", [](auto& b) { b[0x1FC] = 1; }, "non-zero reserved byte at 0x1fc"},
      {"reserved before mac", [](auto& b) { b[0xFDF] = 0x80; }, "non-zero reserved byte at 0xfdf"},
  };
  for (const Damage& d : cases) {
    std::vector<uint8_t> b = slot_;
    d.edit(b);
    SlotView v = ParseSlot(b);
    EXPECT_EQ(v.kind, SlotView::Kind::kInvalid) << d.name;
    EXPECT_THAT(v.problem, HasSubstr(d.problem)) << d.name;
  }
  EXPECT_THAT(ParseSlot(std::span(slot_).first(4095)).problem, HasSubstr("slot of 4095 bytes"));
  // Only the MAC changed: still parses (the MAC is ChooseSlot's to check).
  std::vector<uint8_t> b = slot_;
  b[0xFE0] ^= 1;
  EXPECT_EQ(ParseSlot(b).kind, SlotView::Kind::kOurs);
  EXPECT_FALSE(SlotMacValid(b, keys_.mac_key));
}

TEST_F(SuperblockTest, EncodeRefusesWhatParseWouldRefuse) {
  Superblock bad = sb_;
  bad.generation = 0;
  EXPECT_EQ(EncodeSlot(bad, keys_.mac_key).status().code(), absl::StatusCode::kInvalidArgument);
  bad = sb_;
  bad.volume_id = std::string(65, 'a');
  EXPECT_EQ(EncodeSlot(bad, keys_.mac_key).status().code(), absl::StatusCode::kInvalidArgument);
  bad = sb_;
  bad.kbs_uri = "https://kbs/x";
  EXPECT_EQ(EncodeSlot(bad, keys_.mac_key).status().code(), absl::StatusCode::kInvalidArgument);
  bad = sb_;
  bad.epoch = 3;
  EXPECT_EQ(EncodeSlot(bad, keys_.mac_key).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeSlot(sb_, keys_.luks_key).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SuperblockTest, ParsePrefixClassifies) {
  const std::vector<uint8_t> zero(kSlotBytes, 0);
  EXPECT_EQ(ParsePrefix(Prefix(zero, zero)).kind, PrefixView::Kind::kBlank);

  PrefixView a = ParsePrefix(Prefix(slot_, zero));
  EXPECT_EQ(a.kind, PrefixView::Kind::kOurs);
  EXPECT_EQ(a.volume_id, "db-1");
  EXPECT_EQ(a.slots[1].kind, SlotView::Kind::kZero);
  PrefixView b = ParsePrefix(Prefix(zero, slot_));
  EXPECT_EQ(b.kind, PrefixView::Kind::kOurs);
  EXPECT_EQ(b.volume_id, "db-1");

  std::vector<uint8_t> junk(kSlotBytes, 0);
  junk[100] = 1;
  // Garbage beside a slot of ours is a torn write: ours, judged by its MAC later.
  PrefixView j = ParsePrefix(Prefix(slot_, junk));
  EXPECT_EQ(j.kind, PrefixView::Kind::kOurs);
  EXPECT_EQ(j.slots[1].kind, SlotView::Kind::kInvalid);
  EXPECT_THAT(j.slots[1].problem, HasSubstr("bad magic"));
  // Garbage beside nothing, or on both sides, is not ours.
  PrefixView jz = ParsePrefix(Prefix(zero, junk));
  EXPECT_EQ(jz.kind, PrefixView::Kind::kInvalid);
  EXPECT_THAT(jz.problem, HasSubstr("slot B: bad magic"));
  EXPECT_EQ(ParsePrefix(Prefix(junk, junk)).kind, PrefixView::Kind::kInvalid);

  PersistentKeys other_keys = Keys("db-2");
  Superblock other = sb_;
  other.volume_id = "db-2";
  other.kcv = other_keys.kcv;
  PrefixView mixed = ParsePrefix(Prefix(slot_, Encode(other, other_keys)));
  EXPECT_EQ(mixed.kind, PrefixView::Kind::kInvalid);
  EXPECT_THAT(mixed.problem, HasSubstr("different volumes"));

  EXPECT_EQ(ParsePrefix(slot_).kind, PrefixView::Kind::kInvalid);
}

class ChooseSlotTest : public SuperblockTest {
 protected:
  StatusOr<ChosenSlot> Choose(const std::vector<uint8_t>& prefix, const PersistentKeys& keys,
                              const std::string& id = "db-1") {
    PrefixView view = ParsePrefix(prefix);
    EXPECT_EQ(view.kind, PrefixView::Kind::kOurs) << view.problem;
    return ChooseSlot(view, prefix, keys, id);
  }
  std::vector<uint8_t> Generation(uint64_t gen, uint64_t provided = 1ull << 30) {
    Superblock sb = sb_;
    sb.generation = gen;
    sb.provided_bytes = provided;
    return Encode(sb, keys_);
  }
  void ExpectNoKeyBytes(const Status& s) {
    for (const std::string& secret : {ToHex(keys_.mac_key.span()), ToHex(keys_.luks_key.span()), ToHex(keys_.kcv)}) {
      EXPECT_THAT(std::string(s.message()), ::testing::Not(HasSubstr(secret.substr(0, 8))));
    }
  }
};

TEST_F(ChooseSlotTest, HighestValidGenerationWins) {
  auto c = Choose(Prefix(Generation(7), Generation(8)), keys_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->index, 1);
  EXPECT_EQ(c->sb.generation, 8u);
  c = Choose(Prefix(Generation(9), Generation(8)), keys_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->index, 0);
  c = Choose(Prefix(std::vector<uint8_t>(kSlotBytes, 0), Generation(3)), keys_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->index, 1);
}

TEST_F(ChooseSlotTest, TornSlotLosesToTheOther) {
  // A torn write of slot B: its first sector is new, the rest (MAC) old.
  std::vector<uint8_t> b = Generation(8, 2ull << 30);
  const std::vector<uint8_t> old = Generation(6);
  std::copy(old.begin() + 512, old.end(), b.begin() + 512);
  auto c = Choose(Prefix(Generation(7), b), keys_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->index, 0);
  EXPECT_EQ(c->sb.generation, 7u);
  // MAC itself damaged.
  b = Generation(8);
  b[0xFFF] ^= 0x40;
  c = Choose(Prefix(Generation(7), b), keys_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->index, 0);
}

TEST_F(ChooseSlotTest, EqualGenerationsWithDifferentBytesAreCorrupt) {
  auto c = Choose(Prefix(Generation(7), Generation(7, 2ull << 30)), keys_);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(c.status().message()), StartsWith("header_corrupt: "));
  c = Choose(Prefix(Generation(7), Generation(7)), keys_);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->index, 0);
}

TEST_F(ChooseSlotTest, WrongKeyIsToldFromCorruption) {
  auto c = Choose(Prefix(Generation(7), Generation(8)), Keys("db-1", 0xff));
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(c.status().message()), StartsWith("wrong_key: "));
  ExpectNoKeyBytes(c.status());

  std::vector<uint8_t> a = Generation(7);
  std::vector<uint8_t> b = Generation(8);
  a[0x1A2] ^= 0x10;  // provided bytes 1 GiB + 1 MiB: still parses, MAC broken
  b[0xFE0] ^= 1;
  c = Choose(Prefix(a, b), keys_);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(c.status().message()), StartsWith("header_corrupt: "));
  ExpectNoKeyBytes(c.status());
}

TEST_F(ChooseSlotTest, ForeignVolumeIsNamed) {
  PersistentKeys other_keys = Keys("db-2");
  Superblock other = sb_;
  other.volume_id = "db-2";
  other.kcv = other_keys.kcv;
  const std::vector<uint8_t> slot = Encode(other, other_keys);
  auto c = Choose(Prefix(slot, std::vector<uint8_t>(kSlotBytes, 0)), other_keys, "db-1");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(c.status().message(), "foreign_volume: device holds volume db-2, request is for db-1");
  // With db-1's keys the KCV cannot match: wrong key, never a silent success.
  c = Choose(Prefix(slot, std::vector<uint8_t>(kSlotBytes, 0)), keys_, "db-1");
  EXPECT_THAT(std::string(c.status().message()), StartsWith("wrong_key: "));
}

TEST_F(ChooseSlotTest, RefusesAViewThatIsNotOurs) {
  const std::vector<uint8_t> zero(2 * kSlotBytes, 0);
  EXPECT_EQ(ChooseSlot(ParsePrefix(zero), zero, keys_, "db-1").status().code(), absl::StatusCode::kInvalidArgument);
  // A view of other bytes than those passed.
  const std::vector<uint8_t> prefix = Prefix(Generation(7), Generation(8));
  PrefixView view = ParsePrefix(prefix);
  const std::vector<uint8_t> swapped = Prefix(Generation(8), Generation(7));
  EXPECT_EQ(ChooseSlot(view, swapped, keys_, "db-1").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(UuidTest, TextRoundTrip) {
  Uuid u = testing::FixedUuid();
  EXPECT_EQ(UuidText(u), "10111213-1415-1617-1819-1a1b1c1d1e1f");
  auto back = ParseUuidText(UuidText(u));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, u);
  for (const char* bad : {"10111213-1415-1617-1819-1A1B1C1D1E1F", "101112131415-1617-1819-1a1b1c1d1e1f",
                          "10111213-1415-1617-1819-1a1b1c1d1e1", "10111213-1415-1617-1819-1a1b1c1d1e1fx",
                          "1011121g-1415-1617-1819-1a1b1c1d1e1f", ""}) {
    EXPECT_FALSE(ParseUuidText(bad).ok()) << bad;
  }
}

TEST(SuiteIdTest, StableNumbering) {
  EXPECT_EQ(SuiteId(IntegrityMode::kNone), 1u);
  EXPECT_EQ(SuiteId(IntegrityMode::kHmacSha256), 2u);
  EXPECT_EQ(SuiteId(IntegrityMode::kAegis128), 3u);
  EXPECT_EQ(SuiteId(IntegrityMode::kAesGcm), 4u);
  for (uint32_t id = 1; id <= 4; ++id) EXPECT_EQ(SuiteId(*SuiteFromId(id)), id);
  EXPECT_FALSE(SuiteFromId(0).ok());
  EXPECT_FALSE(SuiteFromId(5).ok());
}

}  // namespace
}  // namespace cocostorage::agent::pv
