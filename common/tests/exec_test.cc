#include "cocostorage/common/exec.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <thread>

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

// The agent blocks SIGTERM/SIGINT for sigwait(); mkfs and friends must not
// inherit that mask (nor an ignored SIGPIPE).
TEST(ExecTest, ChildStartsWithNoBlockedOrIgnoredSignals) {
  std::thread t([] {
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    struct sigaction ign {};
    struct sigaction old {};
    ign.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ign, &old);
    auto runner = NewSystemCommandRunner();
    auto r = runner->Run({{"/bin/sh", "-c", "grep -E '^Sig(Blk|Ign):' /proc/self/status"}});
    sigaction(SIGPIPE, &old, nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_NE(r->out.find("SigBlk:\t0000000000000000"), std::string::npos) << r->out;
    // Signal n is bit n-1 of the hex mask: SIGPIPE (13) must not be ignored.
    auto at = r->out.find("SigIgn:\t");
    ASSERT_NE(at, std::string::npos) << r->out;
    unsigned long long ignored = std::stoull(r->out.substr(at + 8, 16), nullptr, 16);
    EXPECT_EQ(ignored & (1ull << (SIGPIPE - 1)), 0u) << r->out;
    EXPECT_EQ(ignored & (1ull << (SIGTERM - 1)), 0u) << r->out;
  });
  t.join();
}

// A child killed by the parent's SIGTERM (as on a timeout escalation) dies of it.
TEST(ExecTest, ChildHonoursSigtermEvenWhenParentBlocksIt) {
  std::thread t([] {
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    auto runner = NewSystemCommandRunner();
    auto r = runner->Run({{"/bin/sh", "-c", "kill -TERM $$; sleep 10"}, std::chrono::seconds(3)});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->term_signal, SIGTERM);
  });
  t.join();
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
