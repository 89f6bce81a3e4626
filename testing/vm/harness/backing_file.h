// The host's view of a guest volume's backing file: what an untrusted host
// can see and change. Used by the agent VM suite, the e2e flow and the demo.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cocostorage/common/status.h"

namespace cocostorage::vmtest {

// Offsets (4 KiB aligned) of the file's non-zero blocks with a hash of each,
// read with SEEK_DATA so sparse regions cost nothing.
std::map<uint64_t, uint64_t> BlockHashes(const std::string& path);
// Blocks whose hash differs between two BlockHashes snapshots (or are new).
std::vector<uint64_t> ChangedBlocks(const std::map<uint64_t, uint64_t>& before,
                                    const std::map<uint64_t, uint64_t>& after);
// True when `needle` occurs anywhere in the file's data, across block edges.
bool FileContains(const std::string& path, const std::string& needle);
// XORs one byte at offset 1000 of each given 4 KiB block, then fsyncs.
Status FlipBytes(const std::string& path, const std::vector<uint64_t>& block_offsets);

}  // namespace cocostorage::vmtest
