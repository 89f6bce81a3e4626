// The agent's per-volume state records, read back at start: whatever the
// state directory holds (a torn write, a tampered file) must be DATA_LOSS,
// never a crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "state/state_store.h"

using namespace cocostorage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto rec = agent::VolumeRecordFromJson(text);
  if (rec.ok()) (void)rec->spec.ToJson().dump();
  return 0;
}
