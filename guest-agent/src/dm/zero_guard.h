// The zero guard: keeps every read of a never-written sector away from
// dm-integrity, so the device needs no initial wipe.
//
// A dm-thin pool whose data device is the encrypted mapping and whose metadata
// lives in guest memory (a loop device over a tmpfs file). One thin volume
// spans the whole pool. dm-thin reads unprovisioned blocks as zeros without
// any I/O, and provisions a block only by writing all of it (the write covers
// the block, or the pool zero-fills the rest first: block zeroing, which must
// never be switched off). So a sector of the encrypted device is read only
// after it was written. Metadata in guest memory is trusted (the host cannot
// see or change it) and dies with the VM, which matches the ephemeral key's
// lifetime.
#pragma once

#include <cstdint>
#include <string>

#include "cocostorage/common/status.h"
#include "dm/dm_client.h"
#include "dm/loop_device.h"
#include "state/scratch_files.h"

namespace cocostorage::agent {

struct GuardLayout {
  uint64_t block_sectors = 0;  // dm-thin data block size, in 512-byte sectors
  uint64_t nr_blocks = 0;
  uint64_t volume_sectors = 0;  // thin volume size (data size rounded down to whole blocks)
  uint64_t meta_bytes = 0;      // metadata device size (sparse tmpfs file)
};

// Pure: blocks of 64 KiB, doubled until there are at most 2^20 of them, so
// the worst-case metadata (every block mapped) stays within ~64 MiB of guest
// memory for any volume size.
StatusOr<GuardLayout> ComputeGuardLayout(uint64_t data_bytes);

// Pure: the two device-mapper tables. The pool keeps block zeroing on (no
// skip_block_zeroing) and fails writes instead of queueing them when out of
// space (never expected: the pool is not overcommitted).
DmTarget ThinPoolTarget(const std::string& meta_dev, const std::string& data_dev, const GuardLayout& layout);
DmTarget ThinVolumeTarget(const std::string& pool_dev, const GuardLayout& layout);

struct GuardNames {
  std::string pool;
  std::string thin;
  std::string meta_file;
};

struct GuardDeps {
  DmClient* dm;
  LoopDevices* loops;
  ScratchFiles* files;
};

// Builds pool + thin volume over `data_dev` ("MAJ:MIN"). On failure removes
// whatever it created.
Status CreateZeroGuard(const GuardDeps& deps, const GuardNames& names, const std::string& data_dev,
                       const GuardLayout& layout);
// Pure: what is wrong with one of a volume's mappings judging by its status
// line (`status.params` as the kernel reports it), "" when nothing is.
// thin-pool: "Fail" (gave up after a metadata error: every I/O fails, for
// good), read-only (metadata transaction aborted), out_of_data_space,
// needs_check; thin: "Fail"; integrity: a non-zero mismatch count. Other
// targets report nothing we can judge.
std::string TargetStatusProblem(const DmTarget& status);

// Removes thin volume, pool and metadata file. Missing pieces are fine.
Status RemoveZeroGuard(const GuardDeps& deps, const GuardNames& names);

// Persistent volumes: the guard's state must outlive the VM, confidential and
// authenticated, so its metadata lives inside the encrypted device itself:
// [0, meta_bytes) of the crypt mapping is the pool's metadata device (zeroed
// once at creation, so dm-thin formats it and never reads an unwritten
// sector), the rest its data device. Pure: the layout for a crypt mapping of
// `crypt_bytes` (meta_bytes a multiple of 1 MiB).
StatusOr<GuardLayout> ComputePersistentGuardLayout(uint64_t crypt_bytes);

struct PersistentGuardNames {
  std::string meta_linear;
  std::string data_linear;
  std::string pool;
  std::string thin;
};

// Loads the two linear mappings over `crypt_dev` ("MAJ:MIN"), the pool and
// thin volume 0 (created first when `create` is set: a fresh volume). An
// existing pool whose metadata needs a check is refused (DATA_LOSS
// guard_metadata). On failure removes whatever it created.
Status OpenPersistentGuard(const GuardDeps& deps, const PersistentGuardNames& names, const std::string& crypt_dev,
                           const GuardLayout& layout, bool create);
// Missing pieces are fine.
Status RemovePersistentGuard(const GuardDeps& deps, const PersistentGuardNames& names);

}  // namespace cocostorage::agent
