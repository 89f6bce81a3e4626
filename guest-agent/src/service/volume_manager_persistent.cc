// Persistent volumes: create on a provably blank device, open an existing one
// from its authenticated header (docs/design.md, "Persistent volumes", §4-5).
// Nothing is written to the device before the key is known, the header is
// authenticated and the decision is taken; the header bytes are read once and
// libcryptsetup sees only the validated copy.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <sstream>

#include "cocostorage/common/log.h"
#include "cocostorage/common/secure_buffer.h"
#include "cocostorage/common/strings.h"
#include "service/volume_manager.h"

namespace cocostorage::agent {
namespace {

constexpr uint64_t MiB = 1ull << 20;
// dm-thin's metadata block size; its superblock is block 0.
constexpr uint64_t kThinSuperblockBytes = 4096;

// memcmp of the buffer against itself shifted by one byte: libc's vectorised
// compare instead of a byte loop (the blank proofs read up to the whole disk).
bool AllZero(std::span<const uint8_t> bytes) {
  return bytes.empty() || (bytes[0] == 0 && std::memcmp(bytes.data(), bytes.data() + 1, bytes.size() - 1) == 0);
}

pv::LuksExpectations ExpectationsFor(const pv::Superblock& sb) {
  pv::LuksExpectations want;
  want.uuid = sb.uuid;
  want.integrity = sb.integrity;
  want.data_offset = sb.data_offset;
  want.sector_size = sb.sector_size;
  return want;
}

// Index of the slot a superblock of `generation` goes to: they alternate, so
// a torn write only ever breaks the slot that held the older state.
int SlotFor(uint64_t generation) { return static_cast<int>((generation + 1) % 2); }

Status NotBlank(const BlockDevice& dev, const std::string& what) {
  return absl::FailedPreconditionError(Cat("not_blank: ", dev.dev_path, " ", what,
                                           "; a persistent volume is created only on a provably blank device "
                                           "and nothing else is ever formatted"));
}

}  // namespace

Status VolumeManager::WriteSuperblock(const std::string& dev_path, const pv::Superblock& sb,
                                      const pv::PersistentKeys& keys) {
  COCO_ASSIGN_OR_RETURN(std::vector<uint8_t> slot, pv::EncodeSlot(sb, keys.mac_key));
  return deps_.io->Write(dev_path, pv::kSlotOffsets[SlotFor(sb.generation)], slot);
}

StatusOr<std::string> VolumeManager::WhyNotBlank(const BlockDevice& dev) {
  // The structural blank proof (design §4.5): the whole prefix, the first
  // and last MiB of the data area (where a dm-integrity superblock and
  // journal, thin metadata or a file system of an earlier volume would be)
  // and no signature libblkid knows.
  COCO_ASSIGN_OR_RETURN(std::vector<uint8_t> prefix_bytes, deps_.io->Read(dev.dev_path, 0, pv::kPrefixBytes));
  if (!AllZero(prefix_bytes)) return std::string("has non-zero bytes in its first 16 MiB");
  COCO_ASSIGN_OR_RETURN(std::vector<uint8_t> head, deps_.io->Read(dev.dev_path, pv::kPrefixBytes, MiB));
  const uint64_t tail_at = (dev.size_bytes - MiB) / 4096 * 4096;
  COCO_ASSIGN_OR_RETURN(std::vector<uint8_t> tail, deps_.io->Read(dev.dev_path, tail_at, MiB));
  if (!AllZero(head) || !AllZero(tail)) return std::string("has data at the start or end of its data area");
  COCO_ASSIGN_OR_RETURN(std::string signature, deps_.devices->ProbeSignature(dev));
  if (!signature.empty()) return Cat("holds a ", signature, " signature");
  return std::string();
}

Status VolumeManager::FullBlankProbe(const BlockDevice& dev, const CancelFn& cancelled, DeviceProbe* probe) {
  if (probe->first_8k.size() != 2 * pv::kSlotBytes) {
    COCO_ASSIGN_OR_RETURN(probe->first_8k, deps_.io->Read(dev.dev_path, 0, 2 * pv::kSlotBytes));
  }
  // A header of ours (or anything else) is the plan's to judge.
  if (pv::ParsePrefix(probe->first_8k).kind != pv::PrefixView::Kind::kBlank) return OkStatus();
  if (!probe->why_not_blank) {
    COCO_ASSIGN_OR_RETURN(std::string why, WhyNotBlank(dev));
    probe->why_not_blank = why;
  }
  if (!probe->why_not_blank->empty()) {
    probe->full = true;  // not blank already: nothing more to scan
    return OkStatus();
  }
  const auto start = std::chrono::steady_clock::now();
  constexpr uint64_t kChunk = 8 * MiB;
  const uint64_t end = dev.size_bytes / 4096 * 4096;
  for (uint64_t at = pv::kPrefixBytes; at < end; at += kChunk) {
    COCO_RETURN_IF_ERROR(CheckNotCancelled(cancelled, dev.dev_path, "during the full blank check"));
    COCO_ASSIGN_OR_RETURN(std::vector<uint8_t> chunk, deps_.io->Read(dev.dev_path, at, std::min(kChunk, end - at)));
    if (AllZero(chunk)) continue;
    auto nonzero = std::find_if(chunk.begin(), chunk.end(), [](uint8_t b) { return b != 0; });
    if (nonzero != chunk.end()) {
      probe->why_not_blank =
          Cat("has data at byte ", at + static_cast<uint64_t>(nonzero - chunk.begin()), " (blank_check = full)");
      break;
    }
  }
  probe->full = true;
  log::Info(
      "volume.full_blank_check",
      {{"device", dev.dev_path},
       {"bytes", std::to_string(end)},
       {"blank", probe->why_not_blank->empty() ? "true" : "false"},
       {"duration_ms",
        std::to_string(
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count())}});
  return OkStatus();
}

StatusOr<policy::DeviceFacts> VolumeManager::ReadDeviceFacts(const BlockDevice& dev, DeviceProbe* probe) {
  policy::DeviceFacts facts;
  if (dev.size_bytes < pv::kPrefixBytes + 2 * MiB) {
    facts.kind = policy::DeviceFacts::Kind::kOther;
    facts.detail = "is too small for a persistent volume";
    return facts;
  }
  COCO_ASSIGN_OR_RETURN(probe->first_8k, deps_.io->Read(dev.dev_path, 0, 2 * pv::kSlotBytes));
  pv::PrefixView prefix = pv::ParsePrefix(probe->first_8k);
  if (prefix.kind == pv::PrefixView::Kind::kOurs) {
    facts.kind = policy::DeviceFacts::Kind::kOurs;
    facts.volume_id = prefix.volume_id;
    return facts;
  }
  if (prefix.kind == pv::PrefixView::Kind::kInvalid) {
    facts.kind = policy::DeviceFacts::Kind::kOther;
    facts.detail = Cat("holds an unrecognized header (", prefix.problem, ")");
    return facts;
  }
  COCO_ASSIGN_OR_RETURN(facts.detail, WhyNotBlank(dev));
  probe->why_not_blank = facts.detail;
  facts.kind = facts.detail.empty() ? policy::DeviceFacts::Kind::kBlank : policy::DeviceFacts::Kind::kOther;
  return facts;
}

StatusOr<VolumeManager::PersistentPlan> VolumeManager::PlanPersistent(const VolumeSpec& spec, const BlockDevice& dev,
                                                                      const pv::PersistentKeys& keys,
                                                                      const DeviceProbe* probe) {
  PersistentPlan plan;
  if (dev.size_bytes < pv::kPrefixBytes + MinimumDeviceBytes(spec)) {
    return absl::FailedPreconditionError(Cat("device ", dev.dev_path, " has ", dev.size_bytes,
                                             " bytes; a persistent volume needs at least ",
                                             pv::kPrefixBytes + MinimumDeviceBytes(spec)));
  }
  if (probe != nullptr && probe->first_8k.size() == 2 * pv::kSlotBytes) {
    plan.first_8k = probe->first_8k;
  } else {
    COCO_ASSIGN_OR_RETURN(plan.first_8k, deps_.io->Read(dev.dev_path, 0, 2 * pv::kSlotBytes));
  }
  pv::PrefixView prefix = pv::ParsePrefix(plan.first_8k);
  if (prefix.kind == pv::PrefixView::Kind::kInvalid) {
    return NotBlank(dev, Cat("holds an unrecognized header (", prefix.problem, ")"));
  }
  if (prefix.kind == pv::PrefixView::Kind::kOurs) {
    // The id in clear first: another volume of the same root would otherwise
    // only show as a wrong key.
    if (prefix.volume_id != spec.PvId()) {
      return absl::FailedPreconditionError(
          Cat("foreign_volume: ", dev.dev_path, " holds persistent volume ", prefix.volume_id, ", not ", spec.PvId()));
    }
    COCO_ASSIGN_OR_RETURN(pv::ChosenSlot chosen, pv::ChooseSlot(prefix, plan.first_8k, keys, spec.PvId()));
    if (chosen.sb.kbs_uri != spec.key.kbs_uri()) {
      return absl::FailedPreconditionError(Cat("foreign_volume: volume ", spec.PvId(), " on ", dev.dev_path,
                                               " was created with key ", chosen.sb.kbs_uri, ", not ",
                                               spec.key.kbs_uri()));
    }
    if (chosen.sb.integrity != spec.integrity) {
      return absl::FailedPreconditionError(Cat("volume ", spec.PvId(), " was created with integrity ",
                                               IntegrityName(chosen.sb.integrity), ", the request asks for ",
                                               IntegrityName(spec.integrity)));
    }
    plan.generation = chosen.sb.generation + 1;
    if (chosen.sb.state == pv::State::kReady) {
      plan.action = PersistentPlan::Action::kOpen;
      plan.sb = chosen.sb;
      return plan;
    }
    // Creation was interrupted (or the host replays that state): the same
    // power as presenting a blank device, so the same rule.
    if (!spec.create_if_blank) {
      return absl::PermissionDeniedError(Cat("volume ", spec.PvId(), " on ", dev.dev_path,
                                             " was never completely created and the storage policy does not allow "
                                             "creating it (create = never)"));
    }
    log::Warn("volume.persistent_recreate", {{"volume", spec.id}, {"device", dev.dev_path}});
    plan.action = PersistentPlan::Action::kCreate;
    return plan;
  }
  if (spec.full_blank_check && (probe == nullptr || !probe->full)) {
    return absl::InternalError(Cat("volume ", spec.PvId(), ": the full blank check did not run before the plan"));
  }
  std::string not_blank;
  if (probe != nullptr && probe->why_not_blank) {
    not_blank = *probe->why_not_blank;
  } else {
    COCO_ASSIGN_OR_RETURN(not_blank, WhyNotBlank(dev));
  }
  if (!not_blank.empty()) return NotBlank(dev, not_blank);
  if (!spec.create_if_blank) {
    return absl::PermissionDeniedError(Cat("device ", dev.dev_path,
                                           " is blank and the storage policy does not allow "
                                           "creating volume ",
                                           spec.PvId(), " (create = never): refusing to format it"));
  }
  plan.action = PersistentPlan::Action::kCreate;
  return plan;
}

Status VolumeManager::CreatePersistent(const VolumeRecord& rec, const PersistentPlan& plan,
                                       const pv::PersistentKeys& keys, const CancelFn& cancelled, Created* created) {
  const VolumeSpec& spec = rec.spec;
  VolumeNames names = VolumeNames::For(spec.id, config_.state_dir, spec.uses_guard());
  const CipherSuite suite = SuiteFor(spec.integrity);

  pv::Superblock sb;
  sb.state = pv::State::kFormatting;
  sb.generation = plan.generation;
  COCO_RETURN_IF_ERROR(FillRandom(sb.uuid));
  sb.uuid[6] = static_cast<uint8_t>((sb.uuid[6] & 0x0f) | 0x40);  // RFC 4122 version 4
  sb.uuid[8] = static_cast<uint8_t>((sb.uuid[8] & 0x3f) | 0x80);
  sb.volume_id = spec.PvId();
  sb.kbs_uri = spec.key.kbs_uri();
  sb.kcv = keys.kcv;
  sb.integrity = spec.integrity;
  // First on the disk: from here on the device is this volume's, and a retry
  // after any failure recognises it (and finishes the creation) instead of
  // calling it "not blank".
  COCO_RETURN_IF_ERROR(WriteSuperblock(rec.device_path, sb, keys));
  Crash("pv-after-sb-formatting");

  // The header is built in guest memory; its bytes go to the prefix once
  // they pass the same validation every later open applies.
  COCO_RETURN_IF_ERROR(
      deps_.files->CreateSparse(names.header_file, 2 * pv::kLuksMetadataBytes + pv::kLuksKeyslotsBytes));
  created->header = true;
  CryptPersistentFormat req;
  req.data_device = rec.device_path;
  req.header_file = names.header_file;
  req.name = names.crypt;
  req.suite = suite;
  req.sector_size = pv::kSectorSize;
  req.data_offset_bytes = pv::kPrefixBytes;
  req.metadata_bytes = pv::kLuksMetadataBytes;
  req.keyslots_bytes = pv::kLuksKeyslotsBytes;
  req.uuid = pv::UuidText(sb.uuid);
  COCO_RETURN_IF_ERROR(deps_.crypt->FormatPersistent(req, keys.luks_key));
  created->crypt = true;
  Crash("pv-after-crypt-format");
  COCO_RETURN_IF_ERROR(CheckNotCancelled(cancelled, spec.id, "after the crypt format"));

  COCO_ASSIGN_OR_RETURN(std::vector<uint8_t> image, deps_.files->Read(names.header_file));
  // libcryptsetup fills the keyslots area with random bytes at format; with
  // no keyslot nothing refers to them, and stored as zeros they cannot carry
  // anything a later open would have to trust.
  if (image.size() > 2 * pv::kLuksMetadataBytes) {
    std::fill(image.begin() + 2 * pv::kLuksMetadataBytes, image.end(), 0);
    COCO_RETURN_IF_ERROR(deps_.files->Write(names.header_file, image));
  }
  COCO_RETURN_IF_ERROR(Annotate(pv::ValidateLuksImage(image, ExpectationsFor(sb)),
                                "the LUKS2 header libcryptsetup wrote fails our own validation"));
  COCO_RETURN_IF_ERROR(deps_.io->Write(rec.device_path, pv::kLuksImageOffset, image));
  sb.luks_image_length = static_cast<uint32_t>(image.size());
  sb.luks_image_sha256 = pv::Sha256Of(image);

  COCO_ASSIGN_OR_RETURN(CryptStatus cs, deps_.crypt->Query(names.crypt, names.header_file));
  sb.provided_bytes = cs.size_bytes;
  COCO_ASSIGN_OR_RETURN(std::optional<DmInfo> crypt_info, deps_.dm->Info(names.crypt));
  if (!crypt_info) return absl::InternalError(Cat("mapping ", names.crypt, " missing after activation"));
  if (spec.uses_guard()) {
    COCO_ASSIGN_OR_RETURN(GuardLayout layout, ComputePersistentGuardLayout(cs.size_bytes));
    // dm-thin formats its metadata when block 0 (the superblock) reads as
    // zeros, and from then on reads only blocks it has written (new blocks
    // are taken zero-filled in memory, never read). So zeroing that one 4 KiB
    // block, through the crypt mapping so it gets its integrity tags, is
    // enough for no sector nobody wrote to be read, and keeps creation flat:
    // zeroing the whole metadata area cost ~132 MiB (twice, with the journal)
    // at 64 GiB. The VM tests check that no integrity mismatch is ever logged.
    COCO_RETURN_IF_ERROR(deps_.io->Zero(crypt_info->DevPath(), 0, kThinSuperblockBytes));
    COCO_RETURN_IF_ERROR(OpenPersistentGuard(Guard(),
                                             {names.guard_meta_linear, names.guard_data_linear, names.pool, names.top},
                                             crypt_info->DevNumber(), layout, /*create=*/true));
    created->guard = true;
    sb.guard_meta_bytes = layout.meta_bytes;
    sb.guard_block_sectors = layout.block_sectors;
    sb.guard_volume_sectors = layout.volume_sectors;
  } else if (spec.integrity_enabled()) {
    COCO_RETURN_IF_ERROR(deps_.crypt->Wipe(names.crypt));
  }
  Crash("pv-after-guard");
  COCO_RETURN_IF_ERROR(CheckNotCancelled(cancelled, spec.id, "after the zero guard"));

  // READY only once the file system is on the device (mkfs flushes it): an
  // interrupted creation never looks like a volume that holds data.
  pv::Superblock ready = sb;
  ready.state = pv::State::kReady;
  ready.generation = sb.generation + 1;
  auto write_ready = [&]() -> Status {
    COCO_RETURN_IF_ERROR(WriteSuperblock(rec.device_path, ready, keys));
    Crash("pv-after-sb-ready");
    return OkStatus();
  };
  return ExposeToConsumer(spec, names, /*fresh=*/true, cancelled, created, write_ready);
}

Status VolumeManager::OpenPersistent(const VolumeRecord& rec, const PersistentPlan& plan,
                                     const pv::PersistentKeys& keys, const CancelFn& cancelled, Created* created) {
  const VolumeSpec& spec = rec.spec;
  const pv::Superblock& sb = plan.sb;
  VolumeNames names = VolumeNames::For(spec.id, config_.state_dir, spec.uses_guard());
  if (rec.device_size_bytes < sb.data_offset + sb.provided_bytes) {
    return absl::FailedPreconditionError(Cat("device_truncated: ", rec.device_path, " has ", rec.device_size_bytes,
                                             " bytes; volume ", spec.PvId(), " needs at least ",
                                             sb.data_offset + sb.provided_bytes));
  }
  const bool guarded = sb.guard_block_sectors != 0;
  if (guarded != spec.uses_guard()) {
    return absl::FailedPreconditionError(Cat("volume ", spec.PvId(), " was created ", guarded ? "with" : "without",
                                             " the zero guard; the request asks for ",
                                             spec.uses_guard() ? "it" : "a full wipe"));
  }
  COCO_ASSIGN_OR_RETURN(std::vector<uint8_t> image,
                        deps_.io->Read(rec.device_path, sb.luks_image_offset, sb.luks_image_length));
  if (pv::Sha256Of(image) != sb.luks_image_sha256) {
    return absl::DataLossError(Cat("header_corrupt: the LUKS2 header image of volume ", spec.PvId(),
                                   " does not match its authenticated digest"));
  }
  COCO_RETURN_IF_ERROR(pv::ValidateLuksImage(image, ExpectationsFor(sb)));
  // libcryptsetup reads the validated copy in guest memory, never the disk's.
  COCO_RETURN_IF_ERROR(deps_.files->Write(names.header_file, image));
  created->header = true;
  COCO_RETURN_IF_ERROR(deps_.crypt->OpenPersistent(rec.device_path, names.header_file, names.crypt, keys.luks_key));
  created->crypt = true;
  Crash("pv-after-open");

  // What the kernel runs, not what the disk says.
  COCO_ASSIGN_OR_RETURN(CryptStatus cs, deps_.crypt->Query(names.crypt, names.header_file));
  const CipherSuite suite = SuiteFor(spec.integrity);
  std::vector<std::string> wrong;
  if (cs.cipher != suite.Describe()) wrong.push_back(Cat("cipher ", cs.cipher));
  if (cs.integrity.empty() != suite.integrity.empty()) wrong.push_back(Cat("integrity \"", cs.integrity, "\""));
  if (cs.sector_size != sb.sector_size) wrong.push_back(Cat("sector size ", cs.sector_size));
  if (cs.size_bytes != sb.provided_bytes)
    wrong.push_back(Cat("size ", cs.size_bytes, " (recorded ", sb.provided_bytes, ")"));
  if (spec.integrity_enabled()) {
    // dm-crypt sits on the dm-integrity device, which holds the offset and
    // the mode: its table says where on the disk the volume starts and that
    // the journal is on (mode J).
    COCO_ASSIGN_OR_RETURN(std::vector<DmTarget> table, deps_.dm->Table(Cat(names.crypt, "_dif")));
    std::vector<std::string> f;
    if (table.size() == 1 && table[0].type == "integrity") {
      std::istringstream in(table[0].params);
      for (std::string w; in >> w;) f.push_back(w);
    }
    if (f.size() < 4) {
      wrong.push_back("an unexpected dm-integrity table");
    } else {
      if (f[0] != rec.device_number && f[0] != rec.device_path) wrong.push_back(Cat("integrity device ", f[0]));
      if (f[1] != Cat(sb.data_offset / 512)) wrong.push_back(Cat("integrity offset ", f[1], " sectors"));
      if (f[3] != "J") wrong.push_back(Cat("dm-integrity mode ", f[3], " (not the journal)"));
    }
  } else if (cs.offset_bytes != sb.data_offset) {
    wrong.push_back(Cat("data offset ", cs.offset_bytes));
  }
  if (!wrong.empty()) {
    return absl::DataLossError(Cat("integrity_geometry: volume ", spec.PvId(), " opened as ", Join(wrong, ", ")));
  }
  if (guarded) {
    COCO_ASSIGN_OR_RETURN(std::optional<DmInfo> crypt_info, deps_.dm->Info(names.crypt));
    if (!crypt_info) return absl::InternalError(Cat("mapping ", names.crypt, " missing after activation"));
    GuardLayout layout;
    layout.block_sectors = sb.guard_block_sectors;
    layout.volume_sectors = sb.guard_volume_sectors;
    layout.nr_blocks = sb.guard_volume_sectors / sb.guard_block_sectors;
    layout.meta_bytes = sb.guard_meta_bytes;
    if (layout.meta_bytes + layout.volume_sectors * 512 > sb.provided_bytes ||
        layout.volume_sectors % layout.block_sectors != 0) {
      return absl::DataLossError(Cat("header_invalid: guard layout does not fit volume ", spec.PvId()));
    }
    COCO_RETURN_IF_ERROR(OpenPersistentGuard(Guard(),
                                             {names.guard_meta_linear, names.guard_data_linear, names.pool, names.top},
                                             crypt_info->DevNumber(), layout, /*create=*/false));
    created->guard = true;
  }
  COCO_RETURN_IF_ERROR(CheckNotCancelled(cancelled, spec.id, "after opening"));
  return ExposeToConsumer(spec, names, /*fresh=*/false, cancelled, created);
}

}  // namespace cocostorage::agent
