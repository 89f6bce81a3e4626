#include "cocostorage/common/fs_util.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <string>

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

TEST(MakeDirsTest, CreatesNestedAndRejectsFile) {
  std::string dir = TempDir();
  EXPECT_TRUE(MakeDirs(dir + "/a/b/c").ok());
  ASSERT_TRUE(AtomicWriteFile(dir + "/f", "x").ok());
  EXPECT_EQ(MakeDirs(dir + "/f").code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace cocostorage
