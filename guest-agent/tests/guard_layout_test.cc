#include <gtest/gtest.h>

#include "dm/zero_guard.h"

namespace cocostorage::agent {
namespace {

constexpr uint64_t GiB = 1ull << 30;

TEST(GuardLayoutTest, SmallVolumesUse64KiBBlocks) {
  auto l = ComputeGuardLayout(1 * GiB);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->block_sectors, 128u);
  EXPECT_EQ(l->nr_blocks, 16384u);
  EXPECT_EQ(l->volume_sectors, 2 * 1024 * 1024u);
  EXPECT_EQ(l->meta_bytes % 4096, 0u);
}

TEST(GuardLayoutTest, BlockCountIsBoundedSoMetadataIsBounded) {
  for (uint64_t size : {8 * GiB, 64 * GiB, 1024 * GiB, 16 * 1024 * GiB}) {
    auto l = ComputeGuardLayout(size);
    ASSERT_TRUE(l.ok());
    EXPECT_LE(l->nr_blocks, 1u << 20) << size;
    EXPECT_LE(l->meta_bytes, (128u << 20) + (4u << 20)) << size;
    // At most one block of capacity is lost to rounding.
    EXPECT_GE(l->volume_sectors * 512 + l->block_sectors * 512, size) << size;
    // Power-of-two multiple of 64 KiB, as dm-thin requires.
    EXPECT_EQ(l->block_sectors % 128, 0u);
    EXPECT_EQ(l->block_sectors & (l->block_sectors - 1), 0u);
  }
  EXPECT_EQ(ComputeGuardLayout(1024 * GiB)->block_sectors, 2048u);  // 1 MiB blocks for 1 TiB
}

TEST(GuardLayoutTest, TooSmallIsRefused) {
  EXPECT_EQ(ComputeGuardLayout(512 * 1024).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace cocostorage::agent
