#include "cocostorage/ttrpc/frame.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "cocostorage/common/strings.h"

namespace cocostorage::ttrpc {
namespace {

void PutU32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

uint32_t GetU32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Reads exactly n bytes (into `out` when not null, else discarded).
Status ReadFull(int fd, uint8_t* out, size_t n, bool* eof_at_start) {
  uint8_t scratch[8192];
  size_t done = 0;
  while (done < n) {
    uint8_t* dst = out != nullptr ? out + done : scratch;
    size_t want = out != nullptr ? n - done : std::min(n - done, sizeof(scratch));
    ssize_t r = read(fd, dst, want);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0 || (r < 0 && (errno == ECONNRESET || errno == EPIPE))) {
      if (eof_at_start != nullptr) *eof_at_start = done == 0;
      return absl::UnavailableError("ttrpc: the peer closed the connection");
    }
    if (r < 0) return ErrnoStatus(errno, "ttrpc: reading");
    done += static_cast<size_t>(r);
  }
  return OkStatus();
}

Status WriteAll(int fd, const uint8_t* p, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = send(fd, p + done, n - done, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      return absl::UnavailableError("ttrpc: the peer closed the connection");
    }
    if (w < 0) return ErrnoStatus(errno, "ttrpc: writing");
    done += static_cast<size_t>(w);
  }
  return OkStatus();
}

}  // namespace

std::array<uint8_t, kHeaderSize> EncodeHeader(const FrameHeader& h) {
  std::array<uint8_t, kHeaderSize> out{};
  PutU32(out.data(), h.length);
  PutU32(out.data() + 4, h.stream_id);
  out[8] = h.type;
  out[9] = h.flags;
  return out;
}

FrameHeader DecodeHeader(const uint8_t* b) { return {GetU32(b), GetU32(b + 4), b[8], b[9]}; }

StatusOr<Frame> ReadFrame(int fd) {
  uint8_t raw[kHeaderSize];
  COCO_RETURN_IF_ERROR(ReadFull(fd, raw, kHeaderSize, nullptr));
  Frame f;
  f.header = DecodeHeader(raw);
  if (f.header.length > kMaxPayload) {
    // Discard it to stay in sync (as the reference does) and report it on
    // its stream.
    COCO_RETURN_IF_ERROR(ReadFull(fd, nullptr, f.header.length, nullptr));
    f.oversize = absl::ResourceExhaustedError(
        Cat("message length ", f.header.length, " exceeds the maximum message size of ", kMaxPayload));
    return f;
  }
  f.payload.resize(f.header.length);
  COCO_RETURN_IF_ERROR(ReadFull(fd, reinterpret_cast<uint8_t*>(f.payload.data()), f.header.length, nullptr));
  return f;
}

Status WriteFrame(int fd, uint32_t stream_id, FrameType type, const std::string& payload, uint8_t flags) {
  if (payload.size() > kMaxPayload) {
    return absl::ResourceExhaustedError(
        Cat("ttrpc: message of ", payload.size(), " bytes exceeds the maximum of ", kMaxPayload));
  }
  auto header = EncodeHeader({static_cast<uint32_t>(payload.size()), stream_id, type, flags});
  // One buffer, one send: frames of concurrent writers never interleave
  // (callers also hold a write lock).
  std::string buf(reinterpret_cast<const char*>(header.data()), header.size());
  buf += payload;
  return WriteAll(fd, reinterpret_cast<const uint8_t*>(buf.data()), buf.size());
}

}  // namespace cocostorage::ttrpc
