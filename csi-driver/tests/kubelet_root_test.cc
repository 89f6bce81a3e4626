// KubeletRoot: which request paths are below the root (pure), and that the
// walk to a target's parent never follows a symlink.
#include "kubelet_root.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "plugin_harness.h"

namespace cocostorage::csi {
namespace {

TEST(KubeletRootTest, OnlyPathsStrictlyBelowTheRootPass) {
  KubeletRoot k("/var/lib/kubelet");
  EXPECT_TRUE(k.CheckWithin("/var/lib/kubelet/pods/u/volumes/x/mount", "target_path").ok());
  for (const char* bad : {"/var/lib/kubelet", "/var/lib/kubelet-evil/x", "/var/lib", "/etc/passwd", "/"}) {
    EXPECT_EQ(k.CheckWithin(bad, "target_path").code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  KubeletRoot slash("/");
  EXPECT_TRUE(slash.CheckWithin("/x", "p").ok());
  EXPECT_FALSE(slash.CheckWithin("/", "p").ok());
}

TEST(KubeletRootTest, OpenNeverFollowsASymlinkBelowTheRoot) {
  testing::TempDir tmp;
  const std::string root = tmp.path() + "/kubelet", outside = tmp.path() + "/outside";
  ASSERT_EQ(mkdir(root.c_str(), 0750), 0);
  ASSERT_EQ(mkdir(outside.c_str(), 0750), 0);
  ASSERT_EQ(mkdir((root + "/pods").c_str(), 0750), 0);
  ASSERT_EQ(symlink(outside.c_str(), (root + "/link").c_str()), 0);
  ASSERT_EQ(symlink(outside.c_str(), (root + "/pods/link").c_str()), 0);
  KubeletRoot k(root);
  auto ok = k.Open(root + "/pods/mount");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->name, "mount");
  struct stat st {};
  EXPECT_EQ(fstat(ok->parent.get(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(k.Open(root + "/link/mount").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(k.Open(root + "/pods/link/mount").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(k.Open(root + "/missing/mount").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(k.Open(outside + "/mount").status().code(), absl::StatusCode::kInvalidArgument);
  // The last component is not resolved by Open: callers use *at() with
  // AT_SYMLINK_NOFOLLOW on it.
  auto last = k.Open(root + "/link");
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(fstatat(last->parent.get(), last->name.c_str(), &st, AT_SYMLINK_NOFOLLOW), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
}

}  // namespace
}  // namespace cocostorage::csi
