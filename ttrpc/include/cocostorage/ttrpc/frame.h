// ttrpc framing (containerd/ttrpc PROTOCOL.md): a 10-byte header, u32
// big-endian payload length, u32 big-endian stream id (client streams odd),
// u8 type, u8 flags, then the payload. Pure functions plus blocking fd I/O.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "cocostorage/common/status.h"

namespace cocostorage::ttrpc {

inline constexpr size_t kHeaderSize = 10;
inline constexpr uint32_t kMaxPayload = 4u << 20;  // the reference implementation's limit

enum FrameType : uint8_t { kRequest = 1, kResponse = 2, kData = 3 };

struct FrameHeader {
  uint32_t length = 0;
  uint32_t stream_id = 0;
  uint8_t type = 0;
  uint8_t flags = 0;
  bool operator==(const FrameHeader&) const = default;
};

std::array<uint8_t, kHeaderSize> EncodeHeader(const FrameHeader& h);
FrameHeader DecodeHeader(const uint8_t* bytes);  // exactly kHeaderSize bytes

// One frame read from a stream socket.
struct Frame {
  FrameHeader header;
  std::string payload;
  // RESOURCE_EXHAUSTED when the payload was larger than kMaxPayload: it was
  // read and discarded, the stream stays in sync, `payload` is empty.
  Status oversize;
};

// Blocking read of one frame. UNAVAILABLE on EOF/reset (the peer left),
// another error on a broken stream. An oversized frame is not an error of
// the stream (see Frame::oversize).
StatusOr<Frame> ReadFrame(int fd);
// Blocking write of one frame (the caller serialises writers).
Status WriteFrame(int fd, uint32_t stream_id, FrameType type, const std::string& payload, uint8_t flags = 0);

}  // namespace cocostorage::ttrpc
