// The CDH forwarder between two of our ttrpc servers: kata-agent's side (our
// cdh.sock, SecureMount ours, everything else to the fallback) and a fake
// real CDH on the upstream socket.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "cdh/forwarder.h"
#include "cdh/secure_mount.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/testing/status_matchers.h"
#include "cocostorage/testing/temp_dir.h"
#include "keys/remote_key_providers.h"

namespace cocostorage::agent {
namespace {

using ::cocostorage::testing::StatusIs;
using ::testing::HasSubstr;
using namespace std::chrono_literals;
using Metadata = std::vector<std::pair<std::string, std::string>>;

// Every byte value, NULs included, and more than one read's worth.
std::string AllBytes(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + 7) % 256);
  return s;
}

// The payload, or the error as text (so a failure shows what came back).
std::string Got(const StatusOr<std::string>& r) { return r.ok() ? *r : "error: " + r.status().ToString(); }

class CdhForwarderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = cocostorage::testing::TempDir::Make("/tmp", "cdhfwd");
    ASSERT_OK(d);
    dir_ = std::move(*d);
    upstream_path_ = dir_.path() + "/cdh-upstream.sock";
    front_path_ = dir_.path() + "/cdh.sock";
  }
  void TearDown() override {
    front_.Stop();
    if (upstream_) upstream_->Stop();
  }

  // The stand-in real CDH: echoes what it got (bytes, metadata, deadline)
  // and fails the way CDH does.
  void StartUpstream(const std::string& tag = "cdh") {
    upstream_ = std::make_unique<ttrpc::Server>();
    upstream_->Register("api.SealedSecretService", "UnsealSecret",
                        [this, tag](const ttrpc::CallContext& ctx, const std::string& in, std::string* out) {
                          std::lock_guard<std::mutex> l(mu_);
                          ++upstream_calls_;
                          seen_request_ = in;
                          seen_metadata_ = ctx.metadata;
                          seen_deadline_ = ctx.deadline;
                          *out = tag + ":" + in;
                          return OkStatus();
                        });
    upstream_->Register("api.GetResourceService", "GetResource",
                        [this](const ttrpc::CallContext&, const std::string&, std::string*) {
                          ++upstream_calls_;
                          return absl::InternalError("kbs: resource not found: default/key/1");
                        });
    upstream_->Register("keyprovider.KeyProviderService", "UnWrapKey",
                        [](const ttrpc::CallContext&, const std::string& in, std::string* out) {
                          // Answers out of order under load.
                          thread_local std::mt19937 rng(std::random_device{}());
                          std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 20));
                          *out = in;
                          return OkStatus();
                        });
    upstream_->Register("api.ImagePullService", "PullImage",
                        [this](const ttrpc::CallContext& ctx, const std::string&, std::string*) {
                          while (!ctx.cancelled()) std::this_thread::sleep_for(5ms);
                          upstream_cancelled_ = true;
                          return absl::DeadlineExceededError("image pull gave up");
                        });
    upstream_->Register(kSecureMountService, kSecureMountMethod,
                        [this](const ttrpc::CallContext&, const std::string&, std::string*) {
                          ++upstream_calls_;
                          return absl::InternalError("the real CDH must never see SecureMount");
                        });
    ASSERT_OK(upstream_->ListenUnix(upstream_path_));
    upstream_->Start();
  }

  // Our side, as main.cc builds it: SecureMount registered, the forwarder
  // as the fallback.
  void StartFront(std::string upstream) {
    forwarder_ = std::make_unique<CdhForwarder>(ForwarderOptions{std::move(upstream)});
    front_.Register(kSecureMountService, kSecureMountMethod,
                    [](const ttrpc::CallContext&, const std::string&, std::string*) { return OkStatus(); });
    forwarder_->Register(front_);
    ASSERT_OK(front_.ListenUnix(front_path_));
    front_.Start();
    auto c = ttrpc::Client::ConnectUnix(front_path_);
    ASSERT_OK(c);
    kata_ = std::move(*c);
  }

  cocostorage::testing::TempDir dir_;
  std::string upstream_path_, front_path_;
  std::unique_ptr<ttrpc::Server> upstream_;
  std::unique_ptr<CdhForwarder> forwarder_;
  ttrpc::Server front_;
  std::unique_ptr<ttrpc::Client> kata_;  // plays kata-agent: one connection
  std::mutex mu_;
  std::atomic<int> upstream_calls_{0};
  std::atomic<bool> upstream_cancelled_{false};
  std::string seen_request_;
  Metadata seen_metadata_;
  std::chrono::steady_clock::time_point seen_deadline_{};
};

TEST_F(CdhForwarderTest, BytesAndMetadataPassUnchangedBothWays) {
  StartUpstream();
  StartFront(upstream_path_);
  const std::string payload = AllBytes(300 * 1024);
  const Metadata md = {{"x-trace", "1"}, {"x-trace", "2"}, {"k", std::string("\0v", 2)}};
  auto r = kata_->Call("api.SealedSecretService", "UnsealSecret", payload, 5s, md);
  ASSERT_OK(r);
  EXPECT_TRUE(*r == "cdh:" + payload) << "response bytes changed";
  {
    std::lock_guard<std::mutex> l(mu_);
    EXPECT_TRUE(seen_request_ == payload) << "request bytes changed";
    EXPECT_EQ(seen_metadata_, md);
  }
  // An empty payload stays empty.
  EXPECT_EQ(Got(kata_->Call("api.SealedSecretService", "UnsealSecret", "", 5s)), "cdh:");
}

TEST_F(CdhForwarderTest, UpstreamStatusComesBackUnchanged) {
  StartUpstream();
  StartFront(upstream_path_);
  EXPECT_THAT(kata_->Call("api.GetResourceService", "GetResource", "x", 5s),
              StatusIs(absl::StatusCode::kInternal, "kbs: resource not found: default/key/1"));
  // What the real CDH does not serve, it refuses itself (our server's
  // reference codes here), and that answer is passed on too.
  EXPECT_THAT(kata_->Call("api.OverlayNetworkService", "InitOverlayNetwork", "", 5s),
              StatusIs(absl::StatusCode::kUnimplemented, "service api.OverlayNetworkService"));
  EXPECT_THAT(kata_->Call("api.GetResourceService", "Nope", "", 5s),
              StatusIs(absl::StatusCode::kUnimplemented, "method Nope"));
}

TEST_F(CdhForwarderTest, TheRemainingDeadlineGoesUpstream) {
  StartUpstream();
  StartFront(upstream_path_);
  const auto before = std::chrono::steady_clock::now();
  ASSERT_OK(kata_->Call("api.SealedSecretService", "UnsealSecret", "s", 2s));
  {
    std::lock_guard<std::mutex> l(mu_);
    // timeout_nano is relative: each hop counts it from its own receipt, so
    // the upstream's deadline is the caller's plus the time in transit.
    EXPECT_LE(seen_deadline_, before + 2s + 200ms) << "the upstream got more time than the caller had";
    EXPECT_GE(seen_deadline_, before + 1500ms);
  }
  // A call the upstream works on past the deadline ends in time, and the
  // upstream sees its own deadline pass.
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THAT(kata_->Call("api.ImagePullService", "PullImage", "", 300ms),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
  for (int i = 0; i < 200 && !upstream_cancelled_; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(upstream_cancelled_);
}

TEST_F(CdhForwarderTest, NoUpstreamIsUnavailableAtOnce) {
  StartFront(upstream_path_);  // nothing listens there
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THAT(kata_->Call("api.SealedSecretService", "UnsealSecret", "s", 50s),
              StatusIs(absl::StatusCode::kUnavailable,
                       ::testing::AllOf(HasSubstr("no Confidential Data Hub behind cocostorage"),
                                        HasSubstr(upstream_path_ + " is not reachable"))));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  // A socket file nobody accepts on (the CDH died) is the same.
  {
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    upstream_path_.copy(addr.sun_path, sizeof(addr.sun_path) - 1);
    ASSERT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  }
  EXPECT_THAT(kata_->Call("api.ImagePullService", "PullImage", "", 50s), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

TEST_F(CdhForwarderTest, ForwardingOffIsUnavailableWithTheReason) {
  StartUpstream();
  StartFront("");
  EXPECT_THAT(kata_->Call("api.GetResourceService", "GetResource", "", 5s),
              StatusIs(absl::StatusCode::kUnavailable,
                       ::testing::AllOf(HasSubstr("no Confidential Data Hub behind cocostorage"),
                                        HasSubstr("forwarding is off"))));
  EXPECT_EQ(upstream_calls_, 0);
}

TEST_F(CdhForwarderTest, SecureMountIsNeverForwarded) {
  StartUpstream();
  StartFront(upstream_path_);
  EXPECT_OK(kata_->Call(kSecureMountService, kSecureMountMethod, "", 5s));
  EXPECT_THAT(kata_->Call(kSecureMountService, "SecureUnmount", "", 5s), StatusIs(absl::StatusCode::kUnimplemented));
  // Even with the forwarder wired alone (no SecureMount handler in front).
  ttrpc::CallContext ctx;
  ctx.service = kSecureMountService;
  ctx.method = kSecureMountMethod;
  std::string out;
  EXPECT_THAT(forwarder_->Forward(ctx, "", &out), StatusIs(absl::StatusCode::kUnimplemented));
  EXPECT_EQ(upstream_calls_, 0);
}

// The CDH restarts (crash, upgrade): the broken connection is dropped and
// the next call dials again, with or without a failed call in between.
TEST_F(CdhForwarderTest, AnUpstreamRestartIsRedialled) {
  StartUpstream("first");
  StartFront(upstream_path_);
  EXPECT_EQ(Got(kata_->Call("api.SealedSecretService", "UnsealSecret", "a", 5s)), "first:a");
  upstream_->Stop();
  EXPECT_THAT(kata_->Call("api.SealedSecretService", "UnsealSecret", "a", 5s),
              StatusIs(absl::StatusCode::kUnavailable));
  StartUpstream("second");
  EXPECT_EQ(Got(kata_->Call("api.SealedSecretService", "UnsealSecret", "b", 5s)), "second:b");
  // Straight from one CDH to the next: the first call after the restart works.
  upstream_->Stop();
  StartUpstream("third");
  EXPECT_EQ(Got(kata_->Call("api.SealedSecretService", "UnsealSecret", "c", 5s)), "third:c");
}

TEST_F(CdhForwarderTest, ManyConcurrentCallsShareTheUpstream) {
  StartUpstream();
  StartFront(upstream_path_);
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      // Half the callers on kata-agent's connection, half on their own.
      std::unique_ptr<ttrpc::Client> own;
      ttrpc::Client* c = kata_.get();
      if (t % 2 == 1) {
        auto dialled = ttrpc::Client::ConnectUnix(front_path_);
        if (!dialled.ok()) return;
        own = std::move(*dialled);
        c = own.get();
      }
      for (int i = 0; i < 20; ++i) {
        const std::string want = Cat("caller ", t, " call ", i, AllBytes(t * 100 + i));
        auto r = c->Call("keyprovider.KeyProviderService", "UnWrapKey", want, 20s);
        if (r.ok() && *r == want) ++ok;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 16 * 20);
}

TEST(CdhForwarderConstants, TheUpstreamSocketIsTheKeyProvidersToo) {
  EXPECT_STREQ(kCdhUpstreamSocket, kCdhResourceSocket);
  EXPECT_STRNE(kCdhUpstreamSocket, kCdhSocket);
}

}  // namespace
}  // namespace cocostorage::agent
