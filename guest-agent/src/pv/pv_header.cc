#include "pv/pv_header.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string_view>

#include "cocostorage/common/strings.h"
#include "core/key_source.h"

namespace cocostorage::agent::pv {
namespace {

// Superblock field offsets (docs/design.md §4.3). Everything between the
// fields, and after the last one up to the MAC, is reserved and zero.
constexpr size_t kOffMagic = 0x000;
constexpr size_t kOffVersion = 0x008;
constexpr size_t kOffState = 0x00C;
constexpr size_t kOffGeneration = 0x010;
constexpr size_t kOffUuid = 0x018;
constexpr size_t kOffIdLen = 0x028;
constexpr size_t kOffId = 0x029;
constexpr size_t kIdMax = 64;
constexpr size_t kOffUriLen = 0x070;
constexpr size_t kOffUri = 0x072;
constexpr size_t kUriMax = 256;
constexpr size_t kOffKcv = 0x180;
constexpr size_t kOffSuite = 0x190;
constexpr size_t kOffSectorSize = 0x194;
constexpr size_t kOffDataOffset = 0x198;
constexpr size_t kOffProvided = 0x1A0;
constexpr size_t kOffResizeTarget = 0x1A8;
constexpr size_t kOffGuardMeta = 0x1B0;
constexpr size_t kOffGuardBlockSectors = 0x1B8;
constexpr size_t kOffGuardVolumeSectors = 0x1C0;
constexpr size_t kOffLuksLength = 0x1C8;
constexpr size_t kOffLuksOffset = 0x1CC;
constexpr size_t kOffLuksSha = 0x1D4;
constexpr size_t kOffEpoch = 0x1F4;
constexpr size_t kOffMac = 0xFE0;
constexpr size_t kMacBytes = 32;
constexpr char kMagic[8] = {'C', 'O', 'C', 'O', 'P', 'V', '1', '\0'};
static_assert(kOffId + kIdMax <= kOffUriLen && kOffUri + kUriMax <= kOffKcv && kOffEpoch + 8 <= kOffMac);
static_assert(kOffMac + kMacBytes == kSlotBytes);

template <typename T>
T GetLe(std::span<const uint8_t> b, size_t off) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(b[off + i]) << (8 * i);
  return v;
}

template <typename T>
void PutLe(std::span<uint8_t> b, size_t off, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) b[off + i] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t GetBe64(std::span<const uint8_t> b, size_t off) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v = (v << 8) | b[off + i];
  return v;
}

bool AllZero(std::span<const uint8_t> b) {
  return std::all_of(b.begin(), b.end(), [](uint8_t c) { return c == 0; });
}

std::string Hex(uint64_t v) { return fmt::format("0x{:x}", v); }

// Host-controlled text inside an error message: bounded, printable ASCII.
std::string Printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 64)) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  if (s.size() > 64) out += "...";
  return out;
}

// Writes the fields (not the MAC) into a zeroed slot. Bounds of the two
// strings are the caller's to check.
void PutFields(const Superblock& sb, std::span<uint8_t> out) {
  std::memcpy(out.data() + kOffMagic, kMagic, sizeof(kMagic));
  PutLe<uint32_t>(out, kOffVersion, kFormatVersion);
  PutLe<uint32_t>(out, kOffState, static_cast<uint32_t>(sb.state));
  PutLe<uint64_t>(out, kOffGeneration, sb.generation);
  std::copy(sb.uuid.begin(), sb.uuid.end(), out.begin() + kOffUuid);
  out[kOffIdLen] = static_cast<uint8_t>(sb.volume_id.size());
  std::copy(sb.volume_id.begin(), sb.volume_id.end(), out.begin() + kOffId);
  PutLe<uint16_t>(out, kOffUriLen, static_cast<uint16_t>(sb.kbs_uri.size()));
  std::copy(sb.kbs_uri.begin(), sb.kbs_uri.end(), out.begin() + kOffUri);
  std::copy(sb.kcv.begin(), sb.kcv.end(), out.begin() + kOffKcv);
  PutLe<uint32_t>(out, kOffSuite, SuiteId(sb.integrity));
  PutLe<uint32_t>(out, kOffSectorSize, sb.sector_size);
  PutLe<uint64_t>(out, kOffDataOffset, sb.data_offset);
  PutLe<uint64_t>(out, kOffProvided, sb.provided_bytes);
  PutLe<uint64_t>(out, kOffResizeTarget, sb.resize_target);
  PutLe<uint64_t>(out, kOffGuardMeta, sb.guard_meta_bytes);
  PutLe<uint64_t>(out, kOffGuardBlockSectors, sb.guard_block_sectors);
  PutLe<uint64_t>(out, kOffGuardVolumeSectors, sb.guard_volume_sectors);
  PutLe<uint32_t>(out, kOffLuksLength, sb.luks_image_length);
  PutLe<uint64_t>(out, kOffLuksOffset, sb.luks_image_offset);
  std::copy(sb.luks_image_sha256.begin(), sb.luks_image_sha256.end(), out.begin() + kOffLuksSha);
  PutLe<uint64_t>(out, kOffEpoch, sb.epoch);
}

bool ComputeMac(std::span<const uint8_t> slot, const SecureBuffer& mac_key, uint8_t out[kMacBytes]) {
  if (slot.size() != kSlotBytes || mac_key.size() != kMacKeyBytes) return false;
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), mac_key.data(), static_cast<int>(mac_key.size()), slot.data(), kOffMac, out, &len) ==
          nullptr ||
      len != kMacBytes) {
    OPENSSL_cleanse(out, kMacBytes);
    return false;
  }
  return true;
}

// The syntax rules of a superblock's fields (shared by ParseSlot and
// EncodeSlot): empty when they hold, else the problem.
std::string FieldProblem(const Superblock& sb) {
  if (sb.state != State::kFormatting && sb.state != State::kReady) {
    return Cat("state ", static_cast<uint32_t>(sb.state));
  }
  if (sb.generation == 0) return "generation 0";
  if (AllZero(sb.uuid)) return "uuid is zero";
  if (sb.volume_id.size() > kIdMax) return Cat("volume_id length ", sb.volume_id.size());
  if (Status s = ValidateVolumeId(sb.volume_id); !s.ok()) return std::string(s.message());
  if (sb.kbs_uri.size() > kUriMax) return Cat("kbs_uri length ", sb.kbs_uri.size());
  if (Status s = ValidateKbsResourceUri(sb.kbs_uri); !s.ok()) return Cat("kbs_uri: ", s.message());
  if (!SuiteFromId(SuiteId(sb.integrity)).ok()) return "integrity mode";
  if (sb.sector_size != kSectorSize) return Cat("sector_size ", sb.sector_size);
  if (sb.data_offset != kPrefixBytes) return Cat("data_offset ", sb.data_offset);
  // FORMATTING is written before the crypt layer exists: what only the
  // finished creation knows (sizes, the LUKS2 image) may still be zero.
  const bool formatting = sb.state == State::kFormatting;
  if ((sb.provided_bytes == 0 && !formatting) || sb.provided_bytes % sb.sector_size != 0) {
    return Cat("provided_bytes ", sb.provided_bytes);
  }
  if (sb.resize_target != 0 && (sb.resize_target <= sb.provided_bytes || sb.resize_target % sb.sector_size != 0)) {
    return Cat("resize_target ", sb.resize_target);
  }
  if ((sb.luks_image_length == 0 && !formatting) || sb.luks_image_length > kLuksImageMaxBytes ||
      sb.luks_image_length % 4096 != 0) {
    return Cat("luks_image_length ", sb.luks_image_length);
  }
  if (sb.luks_image_offset != kLuksImageOffset) return Cat("luks_image_offset ", sb.luks_image_offset);
  if (sb.epoch != 0) return Cat("epoch ", sb.epoch);
  return "";
}

SlotView Invalid(std::string problem) {
  SlotView v;
  v.kind = SlotView::Kind::kInvalid;
  v.problem = std::move(problem);
  return v;
}

}  // namespace

uint32_t SuiteId(IntegrityMode m) {
  switch (m) {
    case IntegrityMode::kNone:
      return 1;
    case IntegrityMode::kHmacSha256:
      return 2;
    case IntegrityMode::kAegis128:
      return 3;
    case IntegrityMode::kAesGcm:
      return 4;
  }
  return 0;
}

StatusOr<IntegrityMode> SuiteFromId(uint32_t id) {
  switch (id) {
    case 1:
      return IntegrityMode::kNone;
    case 2:
      return IntegrityMode::kHmacSha256;
    case 3:
      return IntegrityMode::kAegis128;
    case 4:
      return IntegrityMode::kAesGcm;
    default:
      return absl::InvalidArgumentError(Cat("unknown suite id ", id));
  }
}

StatusOr<std::vector<uint8_t>> EncodeSlot(const Superblock& sb, const SecureBuffer& mac_key) {
  if (mac_key.size() != kMacKeyBytes) return absl::InvalidArgumentError("superblock MAC key must be 32 bytes");
  if (std::string problem = FieldProblem(sb); !problem.empty()) {
    return absl::InvalidArgumentError(Cat("superblock not encodable: ", problem));
  }
  std::vector<uint8_t> out(kSlotBytes, 0);
  PutFields(sb, out);
  if (!ComputeMac(out, mac_key, out.data() + kOffMac)) return absl::InternalError("HMAC-SHA256 failed");
  // The agent never writes what it would refuse to read.
  SlotView back = ParseSlot(out);
  if (back.kind != SlotView::Kind::kOurs || !(back.sb == sb)) {
    return absl::InternalError(Cat("encoded superblock does not parse back: ", back.problem));
  }
  return out;
}

SlotView ParseSlot(std::span<const uint8_t> slot) {
  if (slot.size() != kSlotBytes) return Invalid(Cat("slot of ", slot.size(), " bytes"));
  if (AllZero(slot)) return {};
  if (std::memcmp(slot.data() + kOffMagic, kMagic, sizeof(kMagic)) != 0) return Invalid("bad magic");
  const uint32_t version = GetLe<uint32_t>(slot, kOffVersion);
  if (version != kFormatVersion) return Invalid(Cat("format_version ", version));

  Superblock sb;
  const uint32_t state = GetLe<uint32_t>(slot, kOffState);
  if (state != static_cast<uint32_t>(State::kFormatting) && state != static_cast<uint32_t>(State::kReady)) {
    return Invalid(Cat("state ", state));
  }
  sb.state = static_cast<State>(state);
  sb.generation = GetLe<uint64_t>(slot, kOffGeneration);
  std::copy_n(slot.begin() + kOffUuid, sb.uuid.size(), sb.uuid.begin());
  const size_t id_len = slot[kOffIdLen];
  if (id_len > kIdMax) return Invalid(Cat("volume_id length ", id_len));
  sb.volume_id.assign(reinterpret_cast<const char*>(slot.data() + kOffId), id_len);
  const size_t uri_len = GetLe<uint16_t>(slot, kOffUriLen);
  if (uri_len > kUriMax) return Invalid(Cat("kbs_uri length ", uri_len));
  sb.kbs_uri.assign(reinterpret_cast<const char*>(slot.data() + kOffUri), uri_len);
  std::copy_n(slot.begin() + kOffKcv, sb.kcv.size(), sb.kcv.begin());
  const uint32_t suite = GetLe<uint32_t>(slot, kOffSuite);
  auto integrity = SuiteFromId(suite);
  if (!integrity.ok()) return Invalid(Cat("suite_id ", suite));
  sb.integrity = *integrity;
  sb.sector_size = GetLe<uint32_t>(slot, kOffSectorSize);
  sb.data_offset = GetLe<uint64_t>(slot, kOffDataOffset);
  sb.provided_bytes = GetLe<uint64_t>(slot, kOffProvided);
  sb.resize_target = GetLe<uint64_t>(slot, kOffResizeTarget);
  sb.guard_meta_bytes = GetLe<uint64_t>(slot, kOffGuardMeta);
  sb.guard_block_sectors = GetLe<uint64_t>(slot, kOffGuardBlockSectors);
  sb.guard_volume_sectors = GetLe<uint64_t>(slot, kOffGuardVolumeSectors);
  sb.luks_image_length = GetLe<uint32_t>(slot, kOffLuksLength);
  sb.luks_image_offset = GetLe<uint64_t>(slot, kOffLuksOffset);
  std::copy_n(slot.begin() + kOffLuksSha, sb.luks_image_sha256.size(), sb.luks_image_sha256.begin());
  sb.epoch = GetLe<uint64_t>(slot, kOffEpoch);
  if (std::string problem = FieldProblem(sb); !problem.empty()) return Invalid(problem);

  // Every byte the fields do not cover (padding after id and URI, reserved
  // ranges) is zero: re-encoding the parsed fields gives the same bytes.
  std::vector<uint8_t> again(kSlotBytes, 0);
  PutFields(sb, again);
  for (size_t i = 0; i < kOffMac; ++i) {
    if (again[i] != slot[i]) return Invalid(Cat("non-zero reserved byte at ", Hex(i)));
  }
  SlotView v;
  v.kind = SlotView::Kind::kOurs;
  v.sb = std::move(sb);
  return v;
}

bool SlotMacValid(std::span<const uint8_t> slot, const SecureBuffer& mac_key) {
  uint8_t mac[kMacBytes];
  if (!ComputeMac(slot, mac_key, mac)) return false;
  const bool ok = CRYPTO_memcmp(mac, slot.data() + kOffMac, kMacBytes) == 0;
  OPENSSL_cleanse(mac, sizeof(mac));
  return ok;
}

PrefixView ParsePrefix(std::span<const uint8_t> first_8k) {
  PrefixView p;
  if (first_8k.size() != 2 * kSlotBytes) {
    p.kind = PrefixView::Kind::kInvalid;
    p.problem = Cat("prefix of ", first_8k.size(), " bytes, want ", 2 * kSlotBytes);
    return p;
  }
  const char* names[2] = {"A", "B"};
  for (int i = 0; i < 2; ++i) p.slots[i] = ParseSlot(first_8k.subspan(kSlotOffsets[i], kSlotBytes));
  const bool ours[2] = {p.slots[0].kind == SlotView::Kind::kOurs, p.slots[1].kind == SlotView::Kind::kOurs};
  // A slot that is not ours next to one that is: the torn write the two
  // slots exist for (ChooseSlot trusts only a slot whose MAC holds). Without
  // an ours slot beside it, garbage is garbage.
  for (int i = 0; i < 2; ++i) {
    if (p.slots[i].kind == SlotView::Kind::kInvalid && !ours[1 - i]) {
      p.kind = PrefixView::Kind::kInvalid;
      p.problem = Cat("superblock slot ", names[i], ": ", p.slots[i].problem);
      return p;
    }
  }
  if (!ours[0] && !ours[1]) return p;  // kBlank
  if (ours[0] && ours[1] && p.slots[0].sb.volume_id != p.slots[1].sb.volume_id) {
    p.kind = PrefixView::Kind::kInvalid;
    p.problem =
        Cat("superblock slots name different volumes (", p.slots[0].sb.volume_id, ", ", p.slots[1].sb.volume_id, ")");
    return p;
  }
  p.kind = PrefixView::Kind::kOurs;
  p.volume_id = p.slots[ours[0] ? 0 : 1].sb.volume_id;
  return p;
}

StatusOr<ChosenSlot> ChooseSlot(const PrefixView& prefix, std::span<const uint8_t> first_8k, const PersistentKeys& keys,
                                const std::string& volume_id) {
  if (prefix.kind != PrefixView::Kind::kOurs || first_8k.size() != 2 * kSlotBytes) {
    return absl::InvalidArgumentError("ChooseSlot needs the 8 KiB prefix that ParsePrefix found ours");
  }
  bool kcv_ok[2] = {false, false};
  bool valid[2] = {false, false};
  for (int i = 0; i < 2; ++i) {
    const SlotView& s = prefix.slots[i];
    if (s.kind != SlotView::Kind::kOurs) continue;
    // Re-parse: the view must describe these bytes (not an older read).
    std::span<const uint8_t> bytes = first_8k.subspan(kSlotOffsets[i], kSlotBytes);
    SlotView again = ParseSlot(bytes);
    if (again.kind != SlotView::Kind::kOurs || !(again.sb == s.sb)) {
      return absl::InvalidArgumentError("ChooseSlot: the prefix view does not match the bytes");
    }
    kcv_ok[i] = CRYPTO_memcmp(s.sb.kcv.data(), keys.kcv.data(), kKcvBytes) == 0;
    valid[i] = kcv_ok[i] && SlotMacValid(bytes, keys.mac_key);
  }
  if (!kcv_ok[0] && !kcv_ok[1]) {
    return absl::FailedPreconditionError(
        Cat("wrong_key: no superblock slot matches the key check value of the key for volume ", volume_id));
  }
  if (!valid[0] && !valid[1]) {
    return absl::DataLossError("header_corrupt: the key check value matches but no superblock slot's MAC is valid");
  }
  for (int i = 0; i < 2; ++i) {
    if (valid[i] && prefix.slots[i].sb.volume_id != volume_id) {
      return absl::FailedPreconditionError(
          Cat("foreign_volume: device holds volume ", prefix.slots[i].sb.volume_id, ", request is for ", volume_id));
    }
  }
  int pick = valid[0] ? 0 : 1;
  if (valid[0] && valid[1]) {
    const uint64_t g0 = prefix.slots[0].sb.generation;
    const uint64_t g1 = prefix.slots[1].sb.generation;
    if (g0 == g1) {
      if (std::memcmp(first_8k.data(), first_8k.data() + kSlotBytes, kSlotBytes) != 0) {
        return absl::DataLossError(
            Cat("header_corrupt: both superblock slots hold generation ", g0, " with different contents"));
      }
      pick = 0;
    } else {
      pick = g1 > g0 ? 1 : 0;
    }
  }
  return ChosenSlot{prefix.slots[pick].sb, pick};
}

std::string UuidText(const Uuid& u) {
  std::string out;
  for (size_t i = 0; i < u.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out += fmt::format("{:02x}", u[i]);
  }
  return out;
}

StatusOr<Uuid> ParseUuidText(std::string_view text) {
  auto bad = [&] {
    return absl::InvalidArgumentError(Cat("uuid ", Printable(text), " is not 8-4-4-4-12 lowercase hex"));
  };
  if (text.size() != 36) return bad();
  Uuid u{};
  size_t n = 0;
  for (size_t i = 0; i < text.size();) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return bad();
      ++i;
      continue;
    }
    auto nibble = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    const int hi = nibble(text[i]);
    const int lo = nibble(text[i + 1]);
    if (hi < 0 || lo < 0) return bad();
    u[n++] = static_cast<uint8_t>(hi << 4 | lo);
    i += 2;
  }
  return u;
}

Sha256 Sha256Of(std::span<const uint8_t> bytes) {
  Sha256 out{};
  unsigned int len = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), out.data(), &len, EVP_sha256(), nullptr) != 1) out.fill(0);
  return out;
}

// ---------------------------------------------------------------------------
// LUKS2 header image (cryptsetup lib/luks2/luks2.h, struct luks2_hdr_disk;
// big-endian integers).

namespace {

constexpr size_t kLuksBinBytes = 4096;
constexpr size_t kLuksOffVersion = 6;
constexpr size_t kLuksOffHdrSize = 8;
constexpr size_t kLuksOffSeqid = 16;
constexpr size_t kLuksOffLabel = 24;
constexpr size_t kLuksLabelBytes = 48;
constexpr size_t kLuksOffCsumAlg = 72;
constexpr size_t kLuksCsumAlgBytes = 32;
// 104: salt, 64 random bytes per copy (only the checksum covers it).
constexpr size_t kLuksOffUuid = 168;
constexpr size_t kLuksUuidBytes = 40;
constexpr size_t kLuksOffSubsystem = 208;
constexpr size_t kLuksSubsystemBytes = 48;
constexpr size_t kLuksOffHdrOffset = 256;
constexpr size_t kLuksOffPadding = 264;
constexpr size_t kLuksOffCsum = 448;
constexpr size_t kLuksCsumBytes = 64;
constexpr size_t kLuksOffPadding4096 = 512;
constexpr std::string_view kLuksLabel = "cocostorage";
constexpr int64_t kMinDigestIterations = 1000;
constexpr int64_t kMaxDigestIterations = 100000;

Status Refuse(std::string_view item) { return absl::DataLossError(Cat("header_invalid: ", item)); }

// A NUL-terminated string field: exactly `want`, the rest zero.
bool FixedString(std::span<const uint8_t> field, std::string_view want) {
  if (want.size() >= field.size()) return false;
  if (std::memcmp(field.data(), want.data(), want.size()) != 0) return false;
  return AllZero(field.subspan(want.size()));
}

struct BinaryHeader {
  uint64_t seqid = 0;
  std::string json;  // the JSON text up to its NUL
};

StatusOr<BinaryHeader> CheckBinaryHeader(std::span<const uint8_t> hdr, bool primary, const LuksExpectations& want) {
  const std::string which = primary ? "primary header" : "secondary header";
  static constexpr uint8_t kMagicPrimary[6] = {'L', 'U', 'K', 'S', 0xba, 0xbe};
  static constexpr uint8_t kMagicSecondary[6] = {'S', 'K', 'U', 'L', 0xba, 0xbe};
  if (std::memcmp(hdr.data(), primary ? kMagicPrimary : kMagicSecondary, 6) != 0) return Refuse(Cat(which, " magic"));
  const uint16_t version = static_cast<uint16_t>(hdr[kLuksOffVersion] << 8 | hdr[kLuksOffVersion + 1]);
  if (version != 2) return Refuse(Cat(which, " version ", version));
  const uint64_t hdr_size = GetBe64(hdr, kLuksOffHdrSize);
  if (hdr_size != want.metadata_bytes) return Refuse(Cat(which, " hdr_size ", hdr_size));
  if (!FixedString(hdr.subspan(kLuksOffLabel, kLuksLabelBytes), kLuksLabel)) return Refuse(Cat(which, " label"));
  if (!FixedString(hdr.subspan(kLuksOffCsumAlg, kLuksCsumAlgBytes), "sha256")) {
    return Refuse(Cat(which, " checksum_alg"));
  }
  if (!FixedString(hdr.subspan(kLuksOffUuid, kLuksUuidBytes), UuidText(want.uuid))) {
    return Refuse(Cat(which, " uuid"));
  }
  if (!AllZero(hdr.subspan(kLuksOffSubsystem, kLuksSubsystemBytes))) return Refuse(Cat(which, " subsystem"));
  const uint64_t hdr_offset = GetBe64(hdr, kLuksOffHdrOffset);
  if (hdr_offset != (primary ? 0 : want.metadata_bytes)) return Refuse(Cat(which, " hdr_offset ", hdr_offset));
  if (!AllZero(hdr.subspan(kLuksOffPadding, kLuksOffCsum - kLuksOffPadding)) ||
      !AllZero(hdr.subspan(kLuksOffPadding4096, kLuksBinBytes - kLuksOffPadding4096))) {
    return Refuse(Cat(which, " padding"));
  }
  // cryptsetup (luks2_disk_metadata.c, hdr_checksum_calculate): the hash of
  // the whole hdr_size bytes, binary header and JSON area, with the checksum
  // field zeroed; a sha256 value fills 32 of the field's 64 bytes.
  if (!AllZero(hdr.subspan(kLuksOffCsum + 32, kLuksCsumBytes - 32))) return Refuse(Cat(which, " checksum"));
  std::vector<uint8_t> copy(hdr.begin(), hdr.end());
  std::fill_n(copy.begin() + kLuksOffCsum, kLuksCsumBytes, 0);
  const Sha256 sum = Sha256Of(copy);
  if (std::memcmp(sum.data(), hdr.data() + kLuksOffCsum, sum.size()) != 0) return Refuse(Cat(which, " checksum"));

  std::span<const uint8_t> area = hdr.subspan(kLuksBinBytes);
  auto nul = std::find(area.begin(), area.end(), 0);
  if (nul == area.end()) return Refuse(Cat(which, " json not terminated"));
  if (!AllZero({nul, area.end()})) return Refuse(Cat(which, " json area padding"));
  BinaryHeader out;
  out.seqid = GetBe64(hdr, kLuksOffSeqid);
  out.json.assign(area.begin(), nul);
  return out;
}

using nlohmann::json;

// Object `j` at `path` has exactly the keys `required` (+ any of `optional`).
Status ExactKeys(const json& j, std::string_view path, std::initializer_list<std::string_view> required,
                 std::initializer_list<std::string_view> optional = {}) {
  if (!j.is_object()) return Refuse(Cat(path, " is not an object"));
  for (const auto& [key, value] : j.items()) {
    const bool known = std::find(required.begin(), required.end(), key) != required.end() ||
                       std::find(optional.begin(), optional.end(), key) != optional.end();
    if (!known) return Refuse(Cat(path, ".", Printable(key), " not allowed"));
  }
  for (std::string_view key : required) {
    if (!j.contains(key)) return Refuse(Cat(path, ".", key, " missing"));
  }
  return OkStatus();
}

Status StringIs(const json& parent, std::string_view path, std::string_view key, std::string_view want) {
  const json& v = parent[std::string(key)];
  if (!v.is_string()) return Refuse(Cat(path, ".", key, " is not a string"));
  const auto& s = v.get_ref<const std::string&>();
  if (s != want) return Refuse(Cat(path, ".", key, " ", Printable(s)));
  return OkStatus();
}

// Strict standard base64 with padding, canonical; the decoded length.
std::optional<size_t> Base64Length(std::string_view s) {
  if (s.empty() || s.size() % 4 != 0) return std::nullopt;
  std::vector<uint8_t> out(s.size() / 4 * 3 + 1);
  const int n =
      EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(s.data()), static_cast<int>(s.size()));
  if (n < 0) return std::nullopt;
  size_t pad = 0;
  if (s.back() == '=') ++pad;
  if (s.size() >= 2 && s[s.size() - 2] == '=') ++pad;
  const size_t len = static_cast<size_t>(n) - pad;
  // Canonical: encoding the bytes back gives the same text (no stray bits,
  // no whitespace, '=' only as padding).
  std::vector<unsigned char> again((len + 2) / 3 * 4 + 1);
  EVP_EncodeBlock(again.data(), out.data(), static_cast<int>(len));
  if (std::string_view(reinterpret_cast<const char*>(again.data()), s.size()) != s) return std::nullopt;
  return len;
}

Status CheckJson(const std::string& text, const LuksExpectations& want) {
  // Duplicate keys are refused: json-c (libcryptsetup) and nlohmann might
  // not agree on which one counts.
  std::vector<std::vector<std::string>> seen;
  bool duplicate = false;
  json::parser_callback_t cb = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) seen.emplace_back();
    if (event == json::parse_event_t::object_end && !seen.empty()) seen.pop_back();
    if (event == json::parse_event_t::key && !seen.empty() && parsed.is_string()) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (std::find(seen.back().begin(), seen.back().end(), k) != seen.back().end()) duplicate = true;
      seen.back().push_back(k);
    }
    return true;
  };
  const json j = json::parse(text, cb, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Refuse("json syntax");
  if (duplicate) return Refuse("json duplicate key");

  COCO_RETURN_IF_ERROR(ExactKeys(j, "json", {"keyslots", "tokens", "segments", "digests", "config"}));
  if (!j["keyslots"].is_object() || !j["keyslots"].empty()) return Refuse("keyslots not empty");
  if (!j["tokens"].is_object() || !j["tokens"].empty()) return Refuse("tokens not empty");

  const CipherSuite suite = SuiteFor(want.integrity);
  const json& segments = j["segments"];
  COCO_RETURN_IF_ERROR(ExactKeys(segments, "segments", {"0"}));
  const json& seg = segments["0"];
  if (suite.integrity.empty()) {
    COCO_RETURN_IF_ERROR(
        ExactKeys(seg, "segments.0", {"type", "offset", "size", "iv_tweak", "encryption", "sector_size"}));
  } else {
    COCO_RETURN_IF_ERROR(
        ExactKeys(seg, "segments.0", {"type", "offset", "size", "iv_tweak", "encryption", "sector_size", "integrity"}));
  }
  COCO_RETURN_IF_ERROR(StringIs(seg, "segments.0", "type", "crypt"));
  COCO_RETURN_IF_ERROR(StringIs(seg, "segments.0", "offset", std::to_string(want.data_offset)));
  COCO_RETURN_IF_ERROR(StringIs(seg, "segments.0", "size", "dynamic"));
  COCO_RETURN_IF_ERROR(StringIs(seg, "segments.0", "iv_tweak", "0"));
  COCO_RETURN_IF_ERROR(StringIs(seg, "segments.0", "encryption", Cat(suite.cipher, "-", suite.cipher_mode)));
  const json& sector = seg["sector_size"];
  if (!sector.is_number_unsigned() || sector.get<uint64_t>() != want.sector_size) {
    return Refuse(Cat("segments.0.sector_size ", Printable(sector.dump())));
  }
  if (!suite.integrity.empty()) {
    const json& integrity = seg["integrity"];
    COCO_RETURN_IF_ERROR(
        ExactKeys(integrity, "segments.0.integrity", {"type", "journal_encryption", "journal_integrity"}));
    COCO_RETURN_IF_ERROR(StringIs(integrity, "segments.0.integrity", "type", suite.integrity));
    COCO_RETURN_IF_ERROR(StringIs(integrity, "segments.0.integrity", "journal_encryption", "none"));
    COCO_RETURN_IF_ERROR(StringIs(integrity, "segments.0.integrity", "journal_integrity", "none"));
  }

  const json& digests = j["digests"];
  COCO_RETURN_IF_ERROR(ExactKeys(digests, "digests", {"0"}));
  const json& dig = digests["0"];
  COCO_RETURN_IF_ERROR(
      ExactKeys(dig, "digests.0", {"type", "keyslots", "segments", "hash", "iterations", "salt", "digest"}));
  COCO_RETURN_IF_ERROR(StringIs(dig, "digests.0", "type", "pbkdf2"));
  if (dig["keyslots"] != json::array()) return Refuse("digests.0.keyslots not empty");
  if (dig["segments"] != json::array({"0"})) return Refuse("digests.0.segments is not [\"0\"]");
  COCO_RETURN_IF_ERROR(StringIs(dig, "digests.0", "hash", "sha256"));
  const json& iterations = dig["iterations"];
  if (!iterations.is_number_unsigned() || iterations.get<uint64_t>() < kMinDigestIterations ||
      iterations.get<uint64_t>() > kMaxDigestIterations) {
    return Refuse(Cat("digests.0.iterations ", Printable(iterations.dump())));
  }
  for (const char* key : {"salt", "digest"}) {
    const json& v = dig[key];
    if (!v.is_string() || Base64Length(v.get_ref<const std::string&>()) != std::optional<size_t>(32)) {
      return Refuse(Cat("digests.0.", key, " is not base64 of 32 bytes"));
    }
  }

  const json& config = j["config"];
  if (config.is_object() && config.contains("flags")) return Refuse("config.flags not allowed");
  if (config.is_object() && config.contains("requirements")) return Refuse("config.requirements not allowed");
  COCO_RETURN_IF_ERROR(ExactKeys(config, "config", {"json_size", "keyslots_size"}));
  COCO_RETURN_IF_ERROR(StringIs(config, "config", "json_size", std::to_string(want.metadata_bytes - kLuksBinBytes)));
  COCO_RETURN_IF_ERROR(StringIs(config, "config", "keyslots_size", std::to_string(want.keyslots_bytes)));
  return OkStatus();
}

}  // namespace

Status ValidateLuksImage(std::span<const uint8_t> image, const LuksExpectations& want) {
  if (want.metadata_bytes != kLuksMetadataBytes || want.keyslots_bytes % 4096 != 0 ||
      want.keyslots_bytes > kLuksImageMaxBytes) {
    return absl::InvalidArgumentError("ValidateLuksImage: unsupported expectations");
  }
  const uint64_t areas = 2 * want.metadata_bytes + want.keyslots_bytes;
  if (image.size() < areas || image.size() > kLuksImageMaxBytes) return Refuse(Cat("image length ", image.size()));
  COCO_ASSIGN_OR_RETURN(BinaryHeader primary, CheckBinaryHeader(image.subspan(0, want.metadata_bytes), true, want));
  COCO_ASSIGN_OR_RETURN(BinaryHeader secondary,
                        CheckBinaryHeader(image.subspan(want.metadata_bytes, want.metadata_bytes), false, want));
  // Nothing unlocks this volume from the header: the keyslots area (and
  // anything after it) holds no data. libcryptsetup fills it with random
  // bytes at format; the agent zeroes it in its copy (no checksum covers it).
  if (!AllZero(image.subspan(2 * want.metadata_bytes, want.keyslots_bytes))) return Refuse("keyslots area not zero");
  if (!AllZero(image.subspan(areas))) return Refuse("bytes after the keyslots area not zero");
  if (primary.seqid != secondary.seqid) return Refuse("secondary header seqid differs");
  if (primary.json != secondary.json) return Refuse("secondary header json differs");
  try {
    return CheckJson(primary.json, want);
  } catch (const json::exception& e) {  // not expected: every access is type-checked first
    return Refuse(Cat("json ", e.id));
  }
}

}  // namespace cocostorage::agent::pv
