// A ttrpc Request payload from a hostile client (kata-agent's side of the
// CDH socket): DecodeRequest, the server's first step of every call
// (protobuf decoding, metadata, timeout_nano → deadline).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "cocostorage/ttrpc/server.h"

using namespace cocostorage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  // A fixed "now" (an uptime of a day) and the real clock.
  const auto day = std::chrono::steady_clock::time_point(std::chrono::hours(24));
  for (auto now : {day, std::chrono::steady_clock::now()}) {
    auto r = ttrpc::DecodeRequest(bytes, now);
    if (r.ok() && r->ctx.deadline < now) __builtin_trap();  // a deadline before the call arrived
  }
  return 0;
}
