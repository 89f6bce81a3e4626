#include "cocostorage/common/record_dir.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "cocostorage/common/fs_util.h"

namespace cocostorage {
namespace {

TEST(RecordDirTest, WriteReadListRemove) {
  char tmpl[] = "/tmp/coco-records-XXXXXX";
  RecordDir dir(std::string(mkdtemp(tmpl)) + "/records");
  ASSERT_TRUE(dir.Init().ok());
  ASSERT_TRUE(dir.Write("b", "{\"x\":2}").ok());
  ASSERT_TRUE(dir.Write("a", "{\"x\":1}").ok());
  EXPECT_EQ(**dir.Read("a"), "{\"x\":1}");
  EXPECT_FALSE(dir.Read("zz")->has_value());
  EXPECT_EQ(*dir.ListIds(), (std::vector<std::string>{"a", "b"}));
  ASSERT_TRUE(dir.Remove("a").ok());
  ASSERT_TRUE(dir.Remove("a").ok());
  EXPECT_EQ(*dir.ListIds(), (std::vector<std::string>{"b"}));
}

TEST(RecordDirTest, InitRemovesTempFilesOfInterruptedWrites) {
  char tmpl[] = "/tmp/coco-records-XXXXXX";
  RecordDir dir(mkdtemp(tmpl));
  ASSERT_TRUE(AtomicWriteFile(dir.dir() + "/v1.json.tmp.4242", "torn").ok());
  ASSERT_TRUE(dir.Write("v1", "{}").ok());
  ASSERT_TRUE(dir.Init().ok());
  EXPECT_EQ(ReadFileToString(dir.dir() + "/v1.json.tmp.4242").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*dir.ListIds(), (std::vector<std::string>{"v1"}));
}

}  // namespace
}  // namespace cocostorage
