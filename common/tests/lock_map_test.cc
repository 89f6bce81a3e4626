#include "cocostorage/common/lock_map.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace cocostorage {
namespace {

TEST(LockMapTest, MapDoesNotGrowWithKeysThatWereOnlyMentioned) {
  LockMap locks;
  for (int i = 0; i < 1000; ++i) {
    auto g = locks.Lock("volume-" + std::to_string(i));
  }
  EXPECT_EQ(locks.Size(), 0u);
}

TEST(LockMapTest, SameKeyIsExclusiveOtherKeysAreNot) {
  LockMap locks;
  auto a = locks.Lock("a");
  EXPECT_FALSE(locks.TryLock("a"));
  EXPECT_TRUE(locks.TryLock("b"));
  locks.Unlock("b");
  EXPECT_EQ(locks.Size(), 1u);
}

TEST(LockMapTest, ManyThreadsOneKeyNeverOverlap) {
  LockMap locks;
  std::atomic<int> inside{0};
  std::atomic<int> max_inside{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        auto g = locks.Lock("k");
        int now = ++inside;
        int seen = max_inside.load();
        while (now > seen && !max_inside.compare_exchange_weak(seen, now)) {
        }
        --inside;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(max_inside.load(), 1);
  EXPECT_EQ(locks.Size(), 0u);
}

}  // namespace
}  // namespace cocostorage
