// ttrpc framing from a hostile peer: the 10-byte header decoder, and
// ReadFrame over a socketpair fed the fuzz bytes (oversize frames, truncated
// headers and payloads, EOF anywhere).
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "cocostorage/common/unique_fd.h"
#include "cocostorage/ttrpc/frame.h"

using namespace cocostorage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size >= ttrpc::kHeaderSize) {
    const ttrpc::FrameHeader h = ttrpc::DecodeHeader(data);
    const auto again = ttrpc::EncodeHeader(h);
    for (size_t i = 0; i < ttrpc::kHeaderSize; ++i) {
      if (again[i] != data[i]) abort();  // the header codec must round-trip
    }
  }
  // The whole input as a stream: read frames until the peer is gone.
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  UniqueFd reader(sv[0]);
  {
    UniqueFd writer(sv[1]);
    int buf = 1 << 20;
    setsockopt(writer.get(), SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    size_t done = 0;
    while (done < size) {
      ssize_t w = write(writer.get(), data + done, size - done);
      if (w <= 0) return 0;  // more than the socket holds: not this harness's point
      done += static_cast<size_t>(w);
    }
  }  // closed: EOF after the input
  for (int frames = 0; frames < 1024; ++frames) {
    auto f = ttrpc::ReadFrame(reader.get());
    if (!f.ok()) break;
    if (f->header.length <= ttrpc::kMaxPayload && f->oversize.ok() && f->payload.size() != f->header.length) abort();
  }
  return 0;
}
