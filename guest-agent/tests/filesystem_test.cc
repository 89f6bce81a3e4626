// The system filesystem's target handling on the host's own kernel: no
// symlink is ever followed at or above a target, and a mount point is never
// taken as one. (Mounting itself is proven in the VM suite.)
#include "fs/filesystem.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "cocostorage/common/exec.h"
#include "cocostorage/common/fs_util.h"
#include "cocostorage/testing/status_matchers.h"
#include "cocostorage/testing/temp_dir.h"

namespace cocostorage::agent {
namespace {

using ::cocostorage::testing::StatusIs;

class FilesystemTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = cocostorage::testing::TempDir::Make("/tmp", "coco-fs");
    ASSERT_OK(d);
    dir_ = std::move(*d);
    root_ = dir_.path() + "/storage";
    outside_ = dir_.path() + "/outside";
    ASSERT_EQ(mkdir(root_.c_str(), 0750), 0);
    ASSERT_EQ(mkdir(outside_.c_str(), 0700), 0);
    runner_ = NewSystemCommandRunner();
    fs_ = NewSystemFilesystem(runner_.get());
  }

  cocostorage::testing::TempDir dir_;
  std::string root_, outside_;
  std::unique_ptr<CommandRunner> runner_;
  std::unique_ptr<Filesystem> fs_;
};

TEST_F(FilesystemTest, MakeDirCreatesOneLevelAndIsIdempotent) {
  EXPECT_OK(fs_->MakeDir(root_ + "/vol", 0750));
  EXPECT_OK(fs_->MakeDir(root_ + "/vol", 0750));
  struct stat st {};
  ASSERT_EQ(lstat((root_ + "/vol").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_FALSE(fs_->MakeDir(root_ + "/missing/vol", 0750).ok());
}

// A symlink planted at the target (to the agent's state dir, say) is refused;
// nothing is created where it points.
TEST_F(FilesystemTest, SymlinkAtTheTargetIsRefused) {
  ASSERT_EQ(symlink(outside_.c_str(), (root_ + "/evil").c_str()), 0);
  EXPECT_THAT(fs_->MakeDir(root_ + "/evil", 0750), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(fs_->Mount("/dev/null", root_ + "/evil", "ext4", 0, ""), StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_FALSE(fs_->MakeBlockNode(root_ + "/evil", 7, 0, std::nullopt).ok());
  EXPECT_FALSE(fs_->ApplyFsGroup(root_ + "/evil", 2000).ok());
  struct stat st {};
  ASSERT_EQ(stat(outside_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);  // untouched
}

// A symlink above the target (the parent) is refused too.
TEST_F(FilesystemTest, SymlinkInTheParentIsRefused) {
  ASSERT_EQ(symlink(outside_.c_str(), (dir_.path() + "/link").c_str()), 0);
  EXPECT_FALSE(fs_->MakeDir(dir_.path() + "/link/vol", 0750).ok());
  EXPECT_FALSE(fs_->MakeBlockNode(dir_.path() + "/link/vol.blk", 7, 0, std::nullopt).ok());
  EXPECT_NE(access((outside_ + "/vol").c_str(), F_OK), 0);
  EXPECT_NE(access((outside_ + "/vol.blk").c_str(), F_OK), 0);
}

TEST_F(FilesystemTest, BlockNodesAreCreatedAtTheNameNeverThroughIt) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root for mknod";
  EXPECT_OK(fs_->MakeBlockNode(root_ + "/v.blk", 7, 0, 2000));
  EXPECT_OK(fs_->MakeBlockNode(root_ + "/v.blk", 7, 0, 2000));  // idempotent
  auto is = fs_->IsBlockNode(root_ + "/v.blk", 7, 0);
  ASSERT_OK(is);
  EXPECT_TRUE(*is);
  EXPECT_THAT(fs_->MakeBlockNode(root_ + "/v.blk", 7, 1, std::nullopt),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_OK(fs_->RemoveNode(root_ + "/v.blk"));
  EXPECT_NE(access((root_ + "/v.blk").c_str(), F_OK), 0);
  // RemoveNode never removes what is not a block node.
  ASSERT_EQ(symlink(outside_.c_str(), (root_ + "/l.blk").c_str()), 0);
  EXPECT_FALSE(fs_->RemoveNode(root_ + "/l.blk").ok());
  EXPECT_EQ(access(outside_.c_str(), F_OK), 0);
}

}  // namespace
}  // namespace cocostorage::agent

namespace cocostorage::agent {
namespace {

TEST(MountInfoTest, ParsesTheKernelsFormatWithLibmount) {
  const std::string text =
      "22 1 253:2 / / rw,relatime shared:1 - ext4 /dev/mapper/root rw\n"
      "35 22 253:7 / /run/kata-containers/sandbox/storage/MDIvMDA= rw,nosuid,nodev,noatime - ext4 "
      "/dev/mapper/coco-v1 rw\n"
      "36 22 0:45 / /run/with\\040space rw master:3 shared:7 - tmpfs none rw,size=1024k\n";
  auto m = ParseMountInfo(text);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[1].dev_number, "253:7");
  EXPECT_EQ(m[1].mount_point, "/run/kata-containers/sandbox/storage/MDIvMDA=");
  EXPECT_EQ(m[1].fs_type, "ext4");
  EXPECT_EQ(m[1].source, "/dev/mapper/coco-v1");
  EXPECT_EQ(m[2].mount_point, "/run/with space");  // octal escapes decoded
  EXPECT_EQ(m[2].dev_number, "0:45");
  EXPECT_TRUE(ParseMountInfo("").empty());
  for (const auto& e : m) EXPECT_FALSE(e.read_only) << e.mount_point;
}

// A read-only mount, and an ext4 that remounted itself read-only after I/O
// errors: only its super block options say so.
TEST(MountInfoTest, ReadOnlyMountOrSuperBlock) {
  const std::string text =
      "35 22 253:7 / /a ro,noatime - ext4 /dev/dm-7 ro\n"
      "36 22 253:8 / /b rw,noatime - ext4 /dev/dm-8 ro,errors=remount-ro\n"
      "37 22 253:9 / /c rw,noatime - ext4 /dev/dm-9 rw,errors=remount-ro\n";
  auto m = ParseMountInfo(text);
  ASSERT_EQ(m.size(), 3u);
  EXPECT_TRUE(m[0].read_only);
  EXPECT_TRUE(m[1].read_only);
  EXPECT_FALSE(m[2].read_only);
}

TEST(MountInfoTest, TheRealFileParses) {
  auto text = ReadFileToString("/proc/self/mountinfo");
  ASSERT_TRUE(text.ok());
  auto m = ParseMountInfo(*text);
  ASSERT_FALSE(m.empty());
  bool root = false;
  for (const auto& e : m) root = root || e.mount_point == "/";
  EXPECT_TRUE(root);
}

}  // namespace
}  // namespace cocostorage::agent
