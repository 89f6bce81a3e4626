#include "fs/options.h"

#include <gtest/gtest.h>
#include <sys/mount.h>

#include "cocostorage/common/strings.h"

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

std::vector<std::string> Argv(const std::string& fs, const std::vector<std::string>& opts, MkfsRules rules = {}) {
  auto argv = BuildMkfsArgv(fs, opts, "/dev/dm-3", rules);
  EXPECT_TRUE(argv.ok()) << argv.status();
  return argv.ok() ? *argv : std::vector<std::string>{};
}

std::string Joined(const std::vector<std::string>& v) { return Join(v, " "); }

TEST(MkfsArgvTest, GuardedExt4SkipsZeroingAndDeviceIsLast) {
  auto argv = Argv("ext4", {"-m", "0"});
  ASSERT_GE(argv.size(), 4u);
  EXPECT_EQ(argv.front(), "mkfs.ext4");
  EXPECT_EQ(argv.back(), "/dev/dm-3");
  EXPECT_EQ(Joined(argv),
            "mkfs.ext4 -F -q -m 0 -E nodiscard,lazy_itable_init=1,lazy_journal_init=1,packed_meta_blocks=1 /dev/dm-3");
  EXPECT_EQ(Joined(Argv("ext4", {}, MkfsRules{.guarded = false})), "mkfs.ext4 -F -q -E nodiscard /dev/dm-3");
  auto xfs = Argv("xfs", {});
  EXPECT_EQ(Joined(xfs), "mkfs.xfs -f -q -K -l size=64m /dev/dm-3");
}

// mke2fs keeps the last -E: a requested -E used to replace the agent's own
// (nodiscard,lazy_*) and made provisioning linear in size again.
TEST(MkfsArgvTest, RequestedExtendedOptionsAreMergedNeverReplaceTheAgents) {
  EXPECT_EQ(Joined(Argv("ext4", {"-E", "stride=8", "-E", "stripe_width=16"})),
            "mkfs.ext4 -F -q -E "
            "nodiscard,lazy_itable_init=1,lazy_journal_init=1,packed_meta_blocks=1,stride=8,stripe_width=16 /dev/dm-3");
  // kata-agent's /dev/trusted_store caller passes a bare lazy_journal_init: the same as ours.
  EXPECT_EQ(Joined(Argv("ext4", {"-E", "lazy_journal_init"})),
            "mkfs.ext4 -F -q -E nodiscard,lazy_itable_init=1,lazy_journal_init=1,packed_meta_blocks=1 /dev/dm-3");
  for (const char* bad : {"lazy_itable_init=0", "lazy_journal_init=0", "discard"}) {
    auto argv = BuildMkfsArgv("ext4", {"-E", bad}, "/dev/x", MkfsRules{});
    EXPECT_EQ(argv.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(BuildMkfsArgv("ext4", {"-E", "stride=8", "-E", "stride=16"}, "/dev/x", MkfsRules{}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Without the guard, lazy init is the request's business.
  EXPECT_TRUE(BuildMkfsArgv("ext4", {"-E", "lazy_itable_init=0"}, "/dev/x", MkfsRules{.guarded = false}).ok());
}

// With the guard each touched dm-thin block is zero-filled once, and blocks
// grow with the volume: metadata spread over every flex group made ext4
// provisioning write ~512 MiB at 1 TiB. Packing it is the agent's default,
// which a request may override (it is layout, not safety); unguarded volumes
// keep mke2fs's default layout.
TEST(MkfsArgvTest, GuardedExt4PacksMetadataUnlessTheRequestSaysOtherwise) {
  EXPECT_NE(Joined(Argv("ext4", {})).find(",packed_meta_blocks=1"), std::string::npos);
  EXPECT_EQ(Joined(Argv("ext4", {"-E", "packed_meta_blocks=0"})),
            "mkfs.ext4 -F -q -E nodiscard,lazy_itable_init=1,lazy_journal_init=1,packed_meta_blocks=0 /dev/dm-3");
  // A bare key is "=1" to mke2fs: the same as the default, given once.
  EXPECT_EQ(Joined(Argv("ext4", {"-E", "packed_meta_blocks"})),
            "mkfs.ext4 -F -q -E nodiscard,lazy_itable_init=1,lazy_journal_init=1,packed_meta_blocks=1 /dev/dm-3");
  EXPECT_EQ(Joined(Argv("ext4", {}, MkfsRules{.guarded = false})), "mkfs.ext4 -F -q -E nodiscard /dev/dm-3");
  EXPECT_EQ(
      BuildMkfsArgv("ext4", {"-E", "packed_meta_blocks=1,packed_meta_blocks=0"}, "/dev/x", MkfsRules{}).status().code(),
      absl::StatusCode::kInvalidArgument);
}

// mkfs.xfs zeroes its whole log, which grows with the volume above 128 GiB;
// through the guard that is real writing. Guarded volumes get mkfs.xfs's
// small-volume size unless the request sizes the log itself.
TEST(MkfsArgvTest, GuardedXfsLogIsCappedUnlessTheRequestSizesIt) {
  EXPECT_EQ(Joined(Argv("xfs", {"-L", "data"})), "mkfs.xfs -f -q -K -L data -l size=64m /dev/dm-3");
  EXPECT_EQ(Joined(Argv("xfs", {"-l", "lazy-count=1"})), "mkfs.xfs -f -q -K -l lazy-count=1,size=64m /dev/dm-3");
  EXPECT_EQ(Joined(Argv("xfs", {"-l", "size=256m"})), "mkfs.xfs -f -q -K -l size=256m /dev/dm-3");
  EXPECT_EQ(Joined(Argv("xfs", {}, MkfsRules{.guarded = false})), "mkfs.xfs -f -q -K /dev/dm-3");
  EXPECT_EQ(BuildMkfsArgv("xfs", {"-l", "size=64m", "-l", "size=32m"}, "/dev/x", MkfsRules{}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MkfsArgvTest, FeaturesComeFromAnAllowlistAndRequiredOnesStay) {
  // What kata-agent sends for an ephemeral block volume.
  EXPECT_EQ(Joined(Argv("ext4", {"-O", "^has_journal", "-m", "0", "-i", "163840", "-I", "128"})),
            "mkfs.ext4 -F -q -m 0 -i 163840 -I 128 -O ^has_journal -E "
            "nodiscard,lazy_itable_init=1,lazy_journal_init=1,packed_meta_blocks=1 /dev/dm-3");
  for (const char* bad : {"^metadata_csum", "^extent", "^64bit", "bogus_feature", "has_journal,^has_journal"}) {
    EXPECT_EQ(BuildMkfsArgv("ext4", {"-O", bad}, "/dev/x", MkfsRules{}).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  // A volume whose data outlives the VM keeps its journal.
  EXPECT_EQ(
      BuildMkfsArgv("ext4", {"-O", "^has_journal"}, "/dev/x", MkfsRules{.journal_removable = false}).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Joined(Argv("ext4", {"-O", "quota", "-O", "project,quota"})),
            "mkfs.ext4 -F -q -O quota,project -E nodiscard,lazy_itable_init=1,lazy_journal_init=1,packed_meta_blocks=1 "
            "/dev/dm-3");
}

TEST(MkfsArgvTest, RepeatedSingleFlagsAndXfsChecksumsAreRefused) {
  EXPECT_EQ(BuildMkfsArgv("ext4", {"-m", "0", "-m", "5"}, "/dev/x", MkfsRules{}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildMkfsArgv("xfs", {"-m", "crc=0"}, "/dev/x", MkfsRules{}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Joined(Argv("xfs", {"-m", "reflink=1"})), "mkfs.xfs -f -q -K -m reflink=1 -l size=64m /dev/dm-3");
}

TEST(MountOptionsTest, NosuidAndNodevAreForcedAndSuidIsRefused) {
  auto p = ParseMountOptions("ext4", {}, false);
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->flags & MS_NOSUID);
  EXPECT_TRUE(p->flags & MS_NODEV);
  EXPECT_FALSE(p->flags & MS_NOEXEC);  // exec stays allowed
  EXPECT_EQ(ParseMountOptions("ext4", {"suid"}, false).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseMountOptions("xfs", {"dev"}, false).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cocostorage::agent
