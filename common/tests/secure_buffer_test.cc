#include "cocostorage/common/secure_buffer.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace cocostorage {
namespace {

TEST(SecureBufferTest, RandomIsFilledAndDistinct) {
  auto a = SecureBuffer::Random(64);
  auto b = SecureBuffer::Random(64);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a->size(), 64u);
  EXPECT_FALSE(std::equal(a->data(), a->data() + 64, b->data()));
  EXPECT_TRUE(std::any_of(a->data(), a->data() + 64, [](uint8_t c) { return c != 0; }));
}

TEST(SecureBufferTest, MoveTransfersOwnershipAndWipeEmpties) {
  auto a = SecureBuffer::Random(32);
  ASSERT_TRUE(a.ok());
  SecureBuffer moved = std::move(*a);
  EXPECT_EQ(a->size(), 0u);
  EXPECT_EQ(a->data(), nullptr);
  EXPECT_EQ(moved.size(), 32u);
  moved.Wipe();
  EXPECT_TRUE(moved.empty());
}

TEST(SecureBufferTest, ZeroSizeIsRejected) {
  EXPECT_EQ(SecureBuffer::Allocate(0).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cocostorage
