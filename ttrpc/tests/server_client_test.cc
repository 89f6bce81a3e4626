// Our ttrpc server and client against each other, and the server against a
// raw socket playing a misbehaving client. (The real Go client is the
// conformance peer in the SecureMount work.)
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "cocostorage/common/strings.h"
#include "cocostorage/testing/status_matchers.h"
#include "cocostorage/testing/temp_dir.h"
#include "cocostorage/ttrpc/client.h"
#include "cocostorage/ttrpc/frame.h"
#include "cocostorage/ttrpc/server.h"
#include "ttrpc/ttrpc.pb.h"

namespace cocostorage::ttrpc {
namespace {

using ::cocostorage::testing::StatusIs;
using namespace std::chrono_literals;

class TtrpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = cocostorage::testing::TempDir::Make("/tmp", "ttrpc");
    ASSERT_OK(d);
    dir_ = std::move(*d);
    path_ = dir_.path() + "/s.sock";
    server_.Register("test.Echo", "Echo", [](const CallContext&, const std::string& in, std::string* out) {
      *out = in;
      return OkStatus();
    });
    server_.Register("test.Echo", "Fail", [](const CallContext&, const std::string&, std::string*) {
      return absl::NotFoundError("no such thing");
    });
    server_.Register("test.Echo", "Slow", [](const CallContext& ctx, const std::string& in, std::string* out) {
      // Waits a little, at random, so that answers come back out of order.
      thread_local std::mt19937 rng(std::random_device{}());
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 30));
      *out = in;
      return ctx.cancelled() ? absl::CancelledError("cancelled") : OkStatus();
    });
    server_.Register("test.Echo", "WaitForCancel", [this](const CallContext& ctx, const std::string&, std::string*) {
      {
        std::lock_guard<std::mutex> l(mu_);
        ++waiting_;
        deadline_seen_ = ctx.deadline;
      }
      cv_.notify_all();
      while (!ctx.cancelled()) std::this_thread::sleep_for(5ms);
      {
        std::lock_guard<std::mutex> l(mu_);
        ++cancelled_;
      }
      cv_.notify_all();
      return absl::DeadlineExceededError("gave up");
    });
    server_.Register("test.Echo", "Metadata", [](const CallContext& ctx, const std::string&, std::string* out) {
      for (const auto& [k, v] : ctx.metadata) *out += k + "=" + v + ";";
      return OkStatus();
    });
  }
  void Start() {
    ASSERT_OK(server_.ListenUnix(path_));
    server_.Start();
  }
  void TearDown() override { server_.Stop(); }

  // A raw connection, to send what a well-behaved client would not.
  UniqueFd Raw() {
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    path_.copy(addr.sun_path, path_.size());
    EXPECT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    return fd;
  }
  static std::string RequestBytes(const std::string& service, const std::string& method, int64_t timeout_nano = 0) {
    ::ttrpc::Request r;
    r.set_service(service);
    r.set_method(method);
    r.set_timeout_nano(timeout_nano);
    std::string out;
    r.SerializeToString(&out);
    return out;
  }
  static ::ttrpc::Response ReadResponse(int fd, uint32_t* stream = nullptr) {
    auto f = ReadFrame(fd);
    EXPECT_TRUE(f.ok()) << f.status();
    ::ttrpc::Response r;
    if (f.ok()) {
      EXPECT_EQ(f->header.type, kResponse);
      if (stream) *stream = f->header.stream_id;
      EXPECT_TRUE(r.ParseFromString(f->payload));
    }
    return r;
  }

  cocostorage::testing::TempDir dir_;
  std::string path_;
  Server server_;
  std::mutex mu_;
  std::condition_variable cv_;
  int waiting_ = 0, cancelled_ = 0;
  std::chrono::steady_clock::time_point deadline_seen_{};
};

TEST_F(TtrpcTest, UnaryCallAndStatusMapping) {
  Start();
  auto c = Client::ConnectUnix(path_);
  ASSERT_OK(c);
  auto r = (*c)->Call("test.Echo", "Echo", std::string("\0bytes", 6), 5s);
  ASSERT_OK(r);
  EXPECT_EQ(*r, std::string("\0bytes", 6));
  EXPECT_THAT((*c)->Call("test.Echo", "Fail", "", 5s),
              StatusIs(absl::StatusCode::kNotFound, ::testing::HasSubstr("no such thing")));
  EXPECT_THAT((*c)->Call("test.Echo", "Nope", "", 5s),
              StatusIs(absl::StatusCode::kUnimplemented, ::testing::HasSubstr("method Nope")));
  EXPECT_THAT((*c)->Call("test.Other", "Echo", "", 5s),
              StatusIs(absl::StatusCode::kUnimplemented, ::testing::HasSubstr("service test.Other")));
  auto md = (*c)->Call("test.Echo", "Metadata", "", 5s, {{"a", "1"}, {"b", "2"}});
  ASSERT_OK(md);
  EXPECT_EQ(*md, "a=1;b=2;");
}

TEST_F(TtrpcTest, FallbackTakesUnknownServicesOnly) {
  server_.SetFallback([](const CallContext& ctx, const std::string& in, std::string* out) {
    *out = ctx.service + "/" + ctx.method + ":" + in;
    return OkStatus();
  });
  Start();
  auto c = Client::ConnectUnix(path_);
  ASSERT_OK(c);
  auto r = (*c)->Call("api.GetResourceService", "GetResource", "raw", 5s);
  ASSERT_OK(r);
  EXPECT_EQ(*r, "api.GetResourceService/GetResource:raw");
  EXPECT_THAT((*c)->Call("test.Echo", "Nope", "", 5s), StatusIs(absl::StatusCode::kUnimplemented));
}

// Many streams on one connection at once: every caller gets its own answer.
TEST_F(TtrpcTest, ManyConcurrentStreamsOnOneConnection) {
  Start();
  auto c = Client::ConnectUnix(path_);
  ASSERT_OK(c);
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        std::string want = Cat("caller ", t, " call ", i);
        auto r = (*c)->Call("test.Echo", "Slow", want, 10s);
        if (r.ok() && *r == want) ++ok;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), 16 * 20);
}

// timeout_nano is the handler's deadline; the call ends with the handler's
// DEADLINE_EXCEEDED (or the client's own) when it passes.
TEST_F(TtrpcTest, TimeoutNanoBecomesTheHandlersDeadline) {
  Start();
  auto c = Client::ConnectUnix(path_);
  ASSERT_OK(c);
  const auto before = std::chrono::steady_clock::now();
  auto r = (*c)->Call("test.Echo", "WaitForCancel", "", 300ms);
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kDeadlineExceeded));
  std::unique_lock<std::mutex> l(mu_);
  ASSERT_TRUE(cv_.wait_for(l, 5s, [&] { return cancelled_ == 1; }));
  EXPECT_GE(deadline_seen_, before + 250ms);
  EXPECT_LE(deadline_seen_, before + 2s);
}

// Found by fuzz/ttrpc_request_fuzz.cc: a timeout_nano near INT64_MAX
// overflowed now + timeout (signed overflow, a deadline in the past). It is no
// deadline; any timeout that fits is counted from `now`.
TEST(DecodeRequestTest, HugeTimeoutNanoIsNoDeadlineNotAnOverflow) {
  const auto now = std::chrono::steady_clock::time_point(24h);
  ::ttrpc::Request r;
  r.set_service("s");
  r.set_method("m");
  r.set_timeout_nano(INT64_MAX);
  r.set_payload("p");
  auto* kv = r.add_metadata();
  kv->set_key("k");
  kv->set_value("v");
  auto d = DecodeRequest(r.SerializeAsString(), now);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->ctx.deadline, std::chrono::steady_clock::time_point::max());
  EXPECT_EQ(d->ctx.service, "s");
  EXPECT_EQ(d->ctx.method, "m");
  EXPECT_EQ(d->payload, "p");
  EXPECT_EQ(d->ctx.metadata, (std::vector<std::pair<std::string, std::string>>{{"k", "v"}}));

  r.set_timeout_nano(1'000'000'000);
  d = DecodeRequest(r.SerializeAsString(), now);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->ctx.deadline, now + 1s);
  r.set_timeout_nano(-5);  // none
  d = DecodeRequest(r.SerializeAsString(), now);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->ctx.deadline, std::chrono::steady_clock::time_point::max());
  EXPECT_THAT(DecodeRequest("\x0a\xff", now), StatusIs(absl::StatusCode::kInvalidArgument));
}

// A client that disconnects mid-call: the handler sees cancelled().
TEST_F(TtrpcTest, ClientDisconnectMidCallCancelsTheHandler) {
  Start();
  {
    UniqueFd raw = Raw();
    ASSERT_OK(WriteFrame(raw.get(), 1, kRequest, RequestBytes("test.Echo", "WaitForCancel")));
    std::unique_lock<std::mutex> l(mu_);
    ASSERT_TRUE(cv_.wait_for(l, 5s, [&] { return waiting_ == 1; }));
  }  // closed here
  std::unique_lock<std::mutex> l(mu_);
  EXPECT_TRUE(cv_.wait_for(l, 5s, [&] { return cancelled_ == 1; }));
}

TEST_F(TtrpcTest, MisbehavingClientsGetTheReferenceCodesAndTheConnectionSurvives) {
  Start();
  UniqueFd raw = Raw();
  // Even stream id: client streams are odd.
  ASSERT_OK(WriteFrame(raw.get(), 2, kRequest, RequestBytes("test.Echo", "Echo")));
  uint32_t stream = 0;
  auto r = ReadResponse(raw.get(), &stream);
  EXPECT_EQ(stream, 2u);
  EXPECT_EQ(r.status().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  // Not a Request at all.
  ASSERT_OK(WriteFrame(raw.get(), 3, kRequest, "\xff\xff\xff garbage"));
  r = ReadResponse(raw.get(), &stream);
  EXPECT_EQ(stream, 3u);
  EXPECT_EQ(r.status().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  // Over 4 MiB.
  auto h = EncodeHeader({kMaxPayload + 10, 5, kRequest, 0});
  ASSERT_EQ(send(raw.get(), h.data(), h.size(), 0), static_cast<ssize_t>(h.size()));
  std::string big(kMaxPayload + 10, 'z');
  size_t done = 0;
  while (done < big.size()) {
    ssize_t n = send(raw.get(), big.data() + done, big.size() - done, 0);
    ASSERT_GT(n, 0);
    done += static_cast<size_t>(n);
  }
  r = ReadResponse(raw.get(), &stream);
  EXPECT_EQ(stream, 5u);
  EXPECT_EQ(r.status().code(), static_cast<int>(absl::StatusCode::kResourceExhausted));
  // A data frame is ignored; then a good call still works on this connection.
  ASSERT_OK(WriteFrame(raw.get(), 7, kData, "ignored"));
  ASSERT_OK(WriteFrame(raw.get(), 9, kRequest, RequestBytes("test.Echo", "Metadata")));
  r = ReadResponse(raw.get(), &stream);
  EXPECT_EQ(stream, 9u);
  EXPECT_EQ(r.status().code(), 0);
}

TEST_F(TtrpcTest, ServerGoneFailsCallsWithUnavailable) {
  Start();
  auto c = Client::ConnectUnix(path_);
  ASSERT_OK(c);
  ASSERT_OK((*c)->Call("test.Echo", "Echo", "x", 5s));
  server_.Stop();
  EXPECT_THAT((*c)->Call("test.Echo", "Echo", "x", 5s), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(Client::ConnectUnix(path_), StatusIs(absl::StatusCode::kUnavailable));
}

// What a forwarder needs to re-dial safely: whether the server answered (its
// own status, even an error) or the connection failed, and whether the
// request left at all (only then might the server have acted on it).
TEST_F(TtrpcTest, OutcomeTellsTheServersAnswerFromALostConnection) {
  Start();
  auto c = Client::ConnectUnix(path_);
  ASSERT_OK(c);
  Client::Outcome o;
  ASSERT_OK((*c)->Call("test.Echo", "Echo", "x", 5s, {}, &o));
  EXPECT_TRUE(o.sent && o.answered);
  EXPECT_THAT((*c)->Call("test.Echo", "Fail", "", 5s, {}, &o), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_TRUE(o.sent && o.answered) << "an error status is still the server's answer";
  EXPECT_FALSE((*c)->Broken());

  // The server goes away in the middle of a call: sent, not answered.
  std::thread stopper([&] {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, 5s, [&] { return waiting_ == 1; });
    l.unlock();
    server_.Stop();
  });
  EXPECT_THAT((*c)->Call("test.Echo", "WaitForCancel", "", 10s, {}, &o), StatusIs(absl::StatusCode::kUnavailable));
  stopper.join();
  EXPECT_TRUE(o.sent);
  EXPECT_FALSE(o.answered);
  EXPECT_TRUE((*c)->Broken());
  // Once broken, nothing more is sent.
  EXPECT_THAT((*c)->Call("test.Echo", "Echo", "x", 5s, {}, &o), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_FALSE(o.sent);
  EXPECT_FALSE(o.answered);
}

TEST_F(TtrpcTest, TooManyCallsInFlightAreResourceExhausted) {
  server_.SetMaxConcurrentCalls(2);
  Start();
  UniqueFd raw = Raw();
  for (uint32_t id : {1u, 3u, 5u}) {
    ASSERT_OK(WriteFrame(raw.get(), id, kRequest, RequestBytes("test.Echo", "WaitForCancel", 2'000'000'000)));
  }
  uint32_t stream = 0;
  auto r = ReadResponse(raw.get(), &stream);  // the third, at once
  EXPECT_EQ(stream, 5u);
  EXPECT_EQ(r.status().code(), static_cast<int>(absl::StatusCode::kResourceExhausted));
}

// A second server must not steal a live socket (a second agent once replaced
// the first one's CDH socket and, stopping, removed it); a stale one is fine.
TEST_F(TtrpcTest, ALiveSocketIsNeverReplacedAStaleOneIs) {
  Start();
  Server second;
  EXPECT_THAT(second.ListenUnix(path_), StatusIs(absl::StatusCode::kFailedPrecondition));
  second.Stop();
  auto c = Client::ConnectUnix(path_);
  ASSERT_OK(c);
  EXPECT_OK((*c)->Call("test.Echo", "Echo", "still here", 5s));
  // Stale: a socket file nobody listens on.
  const std::string stale = dir_.path() + "/stale.sock";
  {
    Server gone;
    ASSERT_OK(gone.ListenUnix(stale));
  }
  UniqueFd keep(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  stale.copy(addr.sun_path, stale.size());
  ASSERT_EQ(bind(keep.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);  // bound, not listening
  keep.Reset();
  Server third;
  EXPECT_OK(third.ListenUnix(stale));
}

}  // namespace
}  // namespace cocostorage::ttrpc
