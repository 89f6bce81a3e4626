#include "cocostorage/common/exec.h"

#include <gtest/gtest.h>

namespace cocostorage {
namespace {

TEST(ExecTest, CapturesOutputAndExitCode) {
  auto runner = NewSystemCommandRunner();
  auto r = runner->Run({{"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
}

TEST(ExecTest, ArgumentsAreNotShellInterpreted) {
  auto runner = NewSystemCommandRunner();
  auto r = runner->Run({{"echo", "$(id)", ";", "rm -rf /"}});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->out, "$(id) ; rm -rf /\n");
}

TEST(ExecTest, TimeoutKills) {
  auto runner = NewSystemCommandRunner();
  auto r = runner->Run({{"sleep", "5"}, std::chrono::milliseconds(100)});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(ExecTest, MissingProgramIsNotFound) {
  auto runner = NewSystemCommandRunner();
  auto r = runner->Run({{"/nonexistent/mkfs.foo"}});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
}

TEST(ExecTest, DescribeFailureUsesLastStderrLine) {
  CommandSpec spec{{"mkfs.ext4", "/dev/x"}};
  CommandResult res;
  res.exit_code = 1;
  res.err = "first\nmkfs.ext4: Device size reported to be zero\n";
  EXPECT_EQ(DescribeFailure(spec, res), "mkfs.ext4 exited 1: mkfs.ext4: Device size reported to be zero");
}

}  // namespace
}  // namespace cocostorage
