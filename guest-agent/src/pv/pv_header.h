// The on-disk header of a persistent volume (docs/design.md, "Persistent
// volumes", §4.1, §4.3, §4.4): a 16 MiB prefix the agent alone writes, holding
// two 4 KiB superblock slots (A at 0, B at 4 KiB) MAC'd with a key derived
// from the volume key, and the volume's LUKS2 header image at 1 MiB (keyless:
// no keyslot, no token). Everything here is pure: parsing and validating bytes
// the host controls, and encoding what the agent writes. All multi-byte fields
// little-endian at fixed offsets.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cocostorage/common/secure_buffer.h"
#include "cocostorage/common/status.h"
#include "core/volume_spec.h"
#include "pv/pv_keys.h"

namespace cocostorage::agent::pv {

inline constexpr uint64_t kPrefixBytes = 16ull << 20;  // LUKS2 segment 0 starts here
inline constexpr uint64_t kSlotBytes = 4096;
inline constexpr uint64_t kSlotOffsets[2] = {0, 4096};
inline constexpr uint64_t kLuksImageOffset = 1ull << 20;
inline constexpr uint64_t kLuksImageMaxBytes = 3ull << 20;
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr uint32_t kSectorSize = 4096;
// What the agent formats with (crypt_set_metadata_size): 16 KiB per LUKS2
// header copy (12 KiB of JSON), and a keyslots area that stays all zero.
inline constexpr uint64_t kLuksMetadataBytes = 16384;
inline constexpr uint64_t kLuksKeyslotsBytes = 16384;

enum class State : uint32_t { kFormatting = 1, kReady = 2 };

// Stable numbering of IntegrityMode on disk (never reuse a number).
uint32_t SuiteId(IntegrityMode m);  // none 1, hmac-sha256 2, aegis128 3, aes-gcm 4
StatusOr<IntegrityMode> SuiteFromId(uint32_t id);

using Uuid = std::array<uint8_t, 16>;
using Sha256 = std::array<uint8_t, 32>;

struct Superblock {
  State state = State::kFormatting;
  uint64_t generation = 1;  // >= 1; of two valid slots the higher wins
  Uuid uuid{};              // == the LUKS2 header's uuid; non-zero
  std::string volume_id;    // ValidateVolumeId syntax (<= 64 bytes)
  std::string kbs_uri;      // ValidateKbsResourceUri syntax (<= 256 bytes)
  Kcv kcv{};
  IntegrityMode integrity = IntegrityMode::kHmacSha256;
  uint32_t sector_size = kSectorSize;
  uint64_t data_offset = kPrefixBytes;
  uint64_t provided_bytes = 0;  // size of the crypt mapping; > 0, multiple of sector_size
  uint64_t resize_target = 0;   // 0 = none (reserved for online resize)
  uint64_t guard_meta_bytes = 0;
  uint64_t guard_block_sectors = 0;
  uint64_t guard_volume_sectors = 0;
  uint32_t luks_image_length = 0;  // > 0, <= kLuksImageMaxBytes, multiple of 4096
  uint64_t luks_image_offset = kLuksImageOffset;
  Sha256 luks_image_sha256{};
  uint64_t epoch = 0;  // reserved (rollback witness); 0
  bool operator==(const Superblock&) const = default;
};

// 4096 bytes: the fields at their offsets, zero elsewhere, HMAC-SHA256 with
// `mac_key` over [0, 0xFE0) in [0xFE0, 0x1000). INVALID_ARGUMENT when a field
// would not pass ParseSlot (so the agent never writes what it would refuse).
StatusOr<std::vector<uint8_t>> EncodeSlot(const Superblock& sb, const SecureBuffer& mac_key);

// What one 4 KiB slot holds, judged without any key (Phase B needs the
// volume id before the key is fetched).
struct SlotView {
  enum class Kind { kZero, kOurs, kInvalid };
  Kind kind = Kind::kZero;
  Superblock sb;        // kOurs: parsed, fields syntactically valid, MAC NOT checked
  std::string problem;  // kInvalid: why ("bad magic", "format_version 2", "volume_id ...")
};
SlotView ParseSlot(std::span<const uint8_t> slot);

// Whether the MAC of a slot that parsed as kOurs is right (constant time).
bool SlotMacValid(std::span<const uint8_t> slot, const SecureBuffer& mac_key);

// What the first 8 KiB of a device say, before any key.
struct PrefixView {
  enum class Kind {
    kBlank,  // both slots all zero (blankness of the rest is checked separately)
    kOurs,   // at least one slot parses; `volume_id` is the one it names
    // A slot is neither zero nor ours with no slot of ours beside it (next to
    // one of ours it is a torn write: that slot is kInvalid, the prefix kOurs),
    // or the slots name different volumes.
    kInvalid,
  };
  Kind kind = Kind::kBlank;
  std::string volume_id;
  std::string problem;
  SlotView slots[2];
};
PrefixView ParsePrefix(std::span<const uint8_t> first_8k);

// After the key is known: picks the slot to trust.
//   no slot with the right KCV                    -> FAILED_PRECONDITION "wrong_key: ..."
//   KCV right but no slot with a valid MAC        -> DATA_LOSS "header_corrupt: ..."
//   the valid slots name another volume than `volume_id` -> FAILED_PRECONDITION "foreign_volume: ..."
//   two valid slots, equal generation, different bytes   -> DATA_LOSS "header_corrupt: ..."
// Otherwise the valid slot with the highest generation, and its index.
struct ChosenSlot {
  Superblock sb;
  int index = 0;
};
StatusOr<ChosenSlot> ChooseSlot(const PrefixView& prefix, std::span<const uint8_t> first_8k, const PersistentKeys& keys,
                                const std::string& volume_id);

// What the LUKS2 image must be: exactly what the agent formats (§4.4 table).
struct LuksExpectations {
  Uuid uuid{};
  IntegrityMode integrity = IntegrityMode::kHmacSha256;
  uint64_t data_offset = kPrefixBytes;
  uint32_t sector_size = kSectorSize;
  uint64_t metadata_bytes = kLuksMetadataBytes;
  uint64_t keyslots_bytes = kLuksKeyslotsBytes;
};
// Strict validation of a LUKS2 header image (both binary headers, checksums,
// JSON): anything not exactly our shape is DATA_LOSS "header_invalid: <item>"
// naming the offending item (e.g. "segments.0.encryption cipher_null",
// "keyslots not empty", "tokens not empty", "secondary header seqid differs").
Status ValidateLuksImage(std::span<const uint8_t> image, const LuksExpectations& want);

// The LUKS2 uuid text ("8-4-4-4-12" lowercase hex) <-> bytes.
std::string UuidText(const Uuid& u);
StatusOr<Uuid> ParseUuidText(std::string_view text);

Sha256 Sha256Of(std::span<const uint8_t> bytes);

}  // namespace cocostorage::agent::pv
