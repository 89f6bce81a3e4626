// Our ttrpc server against the real Go implementation's client (built here,
// offline, from Debian's packages in GOPATH mode): framing, the envelope,
// timeout_nano, metadata, status codes and concurrent streams must agree
// with containerd/ttrpc, not only with our own client.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>

#include "cocostorage/common/exec.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/testing/status_matchers.h"
#include "cocostorage/testing/temp_dir.h"
#include "cocostorage/ttrpc/server.h"

#ifndef COCO_GOCLIENT_DIR
#define COCO_GOCLIENT_DIR ""
#endif

namespace cocostorage::ttrpc {
namespace {

using namespace std::chrono_literals;

TEST(TtrpcGoConformance, RealGoClientTalksToOurServer) {
  auto dir = cocostorage::testing::TempDir::Make("/tmp", "ttrpcgo");
  ASSERT_OK(dir);
  auto runner = NewSystemCommandRunner();
  const std::string bin = dir->path() + "/goclient";
  auto build = runner->Run({{"go", "build", "-o", bin, "."},
                            std::chrono::minutes(5),
                            {"GO111MODULE=off", "GOPATH=/usr/share/gocode", "GOFLAGS=", "CGO_ENABLED=0",
                             "GOCACHE=" + dir->path() + "/gocache"}});
  ASSERT_OK(build);
  ASSERT_EQ(build->exit_code, 0) << "go build in " << COCO_GOCLIENT_DIR << " failed:\n" << build->err;

  Server server;
  server.Register("test.Echo", "Echo", [](const CallContext&, const std::string& in, std::string* out) {
    *out = in;
    return OkStatus();
  });
  server.Register("test.Echo", "Fail",
                  [](const CallContext&, const std::string&, std::string*) { return absl::NotFoundError("nope"); });
  server.Register("test.Echo", "Metadata", [](const CallContext& ctx, const std::string&, std::string* out) {
    std::string text;
    for (const auto& [k, v] : ctx.metadata) text += k + "=" + v + ";";
    // A StringValue: field 1, wire type 2, length, bytes.
    *out = std::string(1, '\x0a') + static_cast<char>(text.size()) + text;
    return OkStatus();
  });
  server.Register("test.Echo", "Deadline", [](const CallContext& ctx, const std::string&, std::string* out) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(ctx.deadline - std::chrono::steady_clock::now());
    const std::string text = std::to_string(left.count());
    *out = std::string(1, '\x0a') + static_cast<char>(text.size()) + text;
    return OkStatus();
  });
  server.Register("test.Echo", "WaitForCancel", [](const CallContext& ctx, const std::string&, std::string*) {
    while (!ctx.cancelled()) std::this_thread::sleep_for(5ms);
    return absl::DeadlineExceededError("deadline");
  });
  server.Register("test.Echo", "Slow", [](const CallContext&, const std::string& in, std::string* out) {
    thread_local std::mt19937 rng(std::random_device{}());
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 40));
    *out = in;
    return OkStatus();
  });
  const std::string sock = dir->path() + "/s.sock";
  ASSERT_OK(server.ListenUnix(sock));
  server.Start();
  auto run = runner->Run({{bin, sock}, std::chrono::minutes(2)});
  server.Stop();
  ASSERT_OK(run);
  EXPECT_EQ(run->exit_code, 0) << run->out << run->err;
  EXPECT_NE(run->out.find("PASS"), std::string::npos) << run->out << run->err;
}

}  // namespace
}  // namespace cocostorage::ttrpc
