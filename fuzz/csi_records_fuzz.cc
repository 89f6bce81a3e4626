// What the CSI plugin reads back from disk: its per-volume records (state
// directory) and the mountInfo.json descriptors it wrote for Kata. A record
// that parses must survive a write/read round trip.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "mount_info.h"
#include "volume_state.h"

using namespace cocostorage::csi;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto info = MountInfoFromJson(text);
  if (info.ok()) {
    auto back = MountInfoFromJson(MountInfoToJson(*info));
    if (!back.ok() || !(*back == *info)) abort();
  }
  auto rec = RecordFromJson(text);
  if (rec.ok()) {
    auto back = RecordFromJson(RecordToJson(*rec));
    if (!back.ok()) abort();
  }
  return 0;
}
