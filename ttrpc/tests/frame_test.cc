#include "cocostorage/ttrpc/frame.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include "cocostorage/common/unique_fd.h"
#include "cocostorage/testing/status_matchers.h"

namespace cocostorage::ttrpc {
namespace {

using ::cocostorage::testing::StatusIs;

// PROTOCOL.md: u32 BE length, u32 BE stream id, u8 type, u8 flags.
TEST(FrameTest, HeaderLayoutIsBigEndianAndRoundTrips) {
  FrameHeader h{0x01020304, 0x0a0b0c0d, kResponse, 0x02};
  auto b = EncodeHeader(h);
  const std::array<uint8_t, kHeaderSize> want = {1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d, 2, 2};
  EXPECT_EQ(b, want);
  EXPECT_EQ(DecodeHeader(b.data()), h);
}

class SocketPair : public ::testing::Test {
 protected:
  void SetUp() override {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    a_.Reset(sv[0]);
    b_.Reset(sv[1]);
  }
  UniqueFd a_, b_;
};

TEST_F(SocketPair, FramesTravelIntact) {
  ASSERT_OK(WriteFrame(a_.get(), 7, kRequest, std::string("\0payload\xff", 9)));
  ASSERT_OK(WriteFrame(a_.get(), 9, kRequest, ""));
  auto f = ReadFrame(b_.get());
  ASSERT_OK(f);
  EXPECT_EQ(f->header.stream_id, 7u);
  EXPECT_EQ(f->header.type, kRequest);
  EXPECT_EQ(f->payload, std::string("\0payload\xff", 9));
  f = ReadFrame(b_.get());
  ASSERT_OK(f);
  EXPECT_EQ(f->header.stream_id, 9u);
  EXPECT_TRUE(f->payload.empty());
}

// Over the 4 MiB limit: discarded, reported on its stream, the next frame
// is read correctly (the stream stays in sync).
TEST_F(SocketPair, OversizedFrameIsDiscardedAndTheStreamStaysInSync) {
  std::thread writer([&] {
    auto h = EncodeHeader({kMaxPayload + 1, 3, kRequest, 0});
    ASSERT_EQ(send(a_.get(), h.data(), h.size(), 0), static_cast<ssize_t>(h.size()));
    std::string big(kMaxPayload + 1, 'x');
    size_t done = 0;
    while (done < big.size()) {
      ssize_t n = send(a_.get(), big.data() + done, big.size() - done, 0);
      ASSERT_GT(n, 0);
      done += static_cast<size_t>(n);
    }
    ASSERT_OK(WriteFrame(a_.get(), 5, kRequest, "next"));
  });
  auto f = ReadFrame(b_.get());
  ASSERT_OK(f);
  EXPECT_EQ(f->header.stream_id, 3u);
  EXPECT_THAT(f->oversize, StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_TRUE(f->payload.empty());
  f = ReadFrame(b_.get());
  ASSERT_OK(f);
  EXPECT_EQ(f->payload, "next");
  writer.join();
  EXPECT_THAT(WriteFrame(a_.get(), 1, kRequest, std::string(kMaxPayload + 1, 'y')),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_F(SocketPair, PeerGoneIsUnavailable) {
  a_.Reset();
  EXPECT_THAT(ReadFrame(b_.get()), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(WriteFrame(b_.get(), 1, kRequest, "x"), StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(SocketPair, TruncatedFrameIsUnavailable) {
  auto h = EncodeHeader({100, 1, kRequest, 0});
  ASSERT_EQ(send(a_.get(), h.data(), h.size(), 0), static_cast<ssize_t>(h.size()));
  ASSERT_EQ(send(a_.get(), "short", 5, 0), 5);
  a_.Reset();
  EXPECT_THAT(ReadFrame(b_.get()), StatusIs(absl::StatusCode::kUnavailable));
}

}  // namespace
}  // namespace cocostorage::ttrpc
