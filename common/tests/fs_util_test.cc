#include "cocostorage/common/fs_util.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace cocostorage {
namespace {

std::string TempDir() {
  char tmpl[] = "/tmp/coco-fs-XXXXXX";
  return mkdtemp(tmpl);
}

TEST(NormalizeTest, CollapsesDotsAndSlashes) {
  EXPECT_EQ(*NormalizeAbsolutePath("/a/./b//c/../d"), "/a/b/d");
  EXPECT_EQ(*NormalizeAbsolutePath("/"), "/");
  EXPECT_EQ(*NormalizeAbsolutePath("/a/b/.."), "/a");
}

TEST(NormalizeTest, RejectsRelativeAndEscapes) {
  EXPECT_EQ(NormalizeAbsolutePath("a/b").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NormalizeAbsolutePath("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NormalizeAbsolutePath("/../etc").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NormalizeAbsolutePath(std::string("/a\0b", 4)).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(WithinTest, PrefixMustEndAtComponent) {
  EXPECT_TRUE(IsPathWithin("/run/storage", "/run/storage"));
  EXPECT_TRUE(IsPathWithin("/run/storage", "/run/storage/v1"));
  EXPECT_FALSE(IsPathWithin("/run/storage", "/run/storage2"));
  EXPECT_FALSE(IsPathWithin("/run/storage", "/run"));
  EXPECT_TRUE(IsPathWithin("/", "/anything"));
}

TEST(AtomicWriteTest, WritesWithModeAndReplaces) {
  std::string dir = TempDir();
  std::string path = dir + "/state.json";
  ASSERT_TRUE(AtomicWriteFile(path, "one", 0600).ok());
  ASSERT_TRUE(AtomicWriteFile(path, "two", 0600).ok());
  EXPECT_EQ(*ReadFileToString(path), "two");
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_TRUE(RemoveFileIfExists(path).ok());
  EXPECT_TRUE(RemoveFileIfExists(path).ok());
  EXPECT_EQ(ReadFileToString(path).status().code(), absl::StatusCode::kNotFound);
}

TEST(AtomicWriteTest, TempNamesAreUniquePerCallAndKeepTheCleanupInfix) {
  std::set<std::string> names;
  for (int i = 0; i < 100; ++i) {
    std::string n = AtomicWriteTempPath("/d/x.json");
    EXPECT_EQ(n.rfind("/d/x.json.tmp.", 0), 0u) << n;
    names.insert(n);
  }
  EXPECT_EQ(names.size(), 100u);
}

TEST(AtomicWriteTest, ConcurrentWritersOfOnePathAllSucceedWithoutLeftovers) {
  const std::string dir = TempDir();
  const std::string path = dir + "/r.json";
  constexpr int kThreads = 8, kWrites = 50;
  std::vector<std::thread> threads;
  std::vector<int> failures(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string content(4096, static_cast<char>('a' + t));
      for (int i = 0; i < kWrites; ++i) failures[t] += !AtomicWriteFile(path, content).ok();
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
  // Whole content of one writer, never a mix.
  auto text = ReadFileToString(path);
  ASSERT_TRUE(text.ok());
  ASSERT_EQ(text->size(), 4096u);
  EXPECT_EQ(text->find_first_not_of((*text)[0]), std::string::npos);
  DIR* d = opendir(dir.c_str());
  ASSERT_NE(d, nullptr);
  int entries = 0;
  while (dirent* e = readdir(d)) entries += e->d_name[0] != '.';
  closedir(d);
  EXPECT_EQ(entries, 1);  // no temp file left behind
  ASSERT_TRUE(RemoveFileIfExists(path).ok());
  rmdir(dir.c_str());
}

TEST(MakeDirsTest, CreatesNestedAndRejectsFile) {
  std::string dir = TempDir();
  EXPECT_TRUE(MakeDirs(dir + "/a/b/c").ok());
  ASSERT_TRUE(AtomicWriteFile(dir + "/f", "x").ok());
  EXPECT_EQ(MakeDirs(dir + "/f").code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ParentDirTest, DirectoryPartOfAPath) {
  EXPECT_EQ(ParentDir("/run/cocostorage/agent.sock"), "/run/cocostorage");
  EXPECT_EQ(ParentDir("/agent.sock"), "/");
  EXPECT_EQ(ParentDir("agent.sock"), ".");
}

}  // namespace
}  // namespace cocostorage
