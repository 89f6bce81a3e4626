#include "fs/options.h"

#include <gtest/gtest.h>
#include <sys/mount.h>

namespace cocostorage::agent {
namespace {

TEST(MkfsOptionsTest, AcceptsAllowedExt4Options) {
  EXPECT_TRUE(ValidateMkfsOptions("ext4", {"-m", "0", "-i", "163840", "-I", "128", "-O", "^has_journal"}).ok());
  EXPECT_TRUE(ValidateMkfsOptions("ext4", {"-E", "lazy_itable_init=0,stride=8", "-L", "data", "-j"}).ok());
}

TEST(MkfsOptionsTest, RefusesOptionsThatReachBeyondTheVolume) {
  // -d copies a guest directory into the fs; -c reads the whole device.
  EXPECT_EQ(ValidateMkfsOptions("ext4", {"-d", "/etc"}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateMkfsOptions("ext4", {"-c"}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateMkfsOptions("xfs", {"-r", "rtdev=/dev/vda"}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateMkfsOptions("xfs", {"-l", "logdev=/dev/vda"}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateMkfsOptions("xfs", {"-p", "/etc/proto"}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(MkfsOptionsTest, RefusesBadValuesAndMissingValues) {
  EXPECT_EQ(ValidateMkfsOptions("ext4", {"-b", "3000"}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateMkfsOptions("ext4", {"-L", "a;rm -rf"}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateMkfsOptions("ext4", {"-m"}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateMkfsOptions("xfs", {"-d", "agcount=4,file=1"}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidateMkfsOptions("xfs", {"-d", "agcount=4", "-m", "reflink=1", "-b", "size=4096"}).ok());
  EXPECT_EQ(ValidateMkfsOptions("btrfs", {}).code(), absl::StatusCode::kInvalidArgument);
}

TEST(MountOptionsTest, MapsFlagsAndKeepsFsData) {
  auto p = ParseMountOptions("ext4", {"noatime", "nosuid", "data=ordered", "commit=30"}, false);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->flags & MS_NOATIME);
  EXPECT_TRUE(p->flags & MS_NOSUID);
  EXPECT_TRUE(p->flags & MS_NODEV);  // always
  EXPECT_FALSE(p->flags & MS_RDONLY);
  EXPECT_EQ(p->data, "data=ordered,commit=30");
}

TEST(MountOptionsTest, ReadOnlyAndRefusals) {
  auto ro = ParseMountOptions("xfs", {"inode64"}, true);
  ASSERT_TRUE(ro.ok());
  EXPECT_TRUE(ro->flags & MS_RDONLY);
  EXPECT_EQ(ParseMountOptions("ext4", {"nobarrier"}, false).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseMountOptions("ext4", {"ro", "rw"}, false).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseMountOptions("xfs", {"data=ordered"}, false).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseMountOptions("ext4", {"x-systemd.automount"}, false).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MountDataTest, GuardedExt4SkipsItableInitUnlessAsked) {
  EXPECT_EQ(MountDataFor("ext4", "", true), "noinit_itable");
  EXPECT_EQ(MountDataFor("ext4", "commit=30", true), "commit=30,noinit_itable");
  EXPECT_EQ(MountDataFor("ext4", "init_itable", true), "init_itable");
  EXPECT_EQ(MountDataFor("ext4", "commit=30", false), "commit=30");
  EXPECT_EQ(MountDataFor("xfs", "inode64", true), "inode64");
}

TEST(MkfsArgvTest, GuardedExt4SkipsZeroingAndDeviceIsLast) {
  auto argv = BuildMkfsArgv("ext4", {"-m", "0"}, "/dev/dm-3", true);
  ASSERT_GE(argv.size(), 4u);
  EXPECT_EQ(argv.front(), "mkfs.ext4");
  EXPECT_EQ(argv.back(), "/dev/dm-3");
  EXPECT_NE(std::find(argv.begin(), argv.end(), "nodiscard,lazy_itable_init=1,lazy_journal_init=1"), argv.end());
  auto xfs = BuildMkfsArgv("xfs", {}, "/dev/dm-4", true);
  EXPECT_EQ(xfs.front(), "mkfs.xfs");
  EXPECT_NE(std::find(xfs.begin(), xfs.end(), "-K"), xfs.end());
  EXPECT_EQ(xfs.back(), "/dev/dm-4");
}

}  // namespace
}  // namespace cocostorage::agent
