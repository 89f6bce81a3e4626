// A Kata agent Storage (driver_options come from the host's mountInfo.json
// metadata): the struct built from the fuzz bytes, mapped and admitted; and
// SanitizeVolumeId on arbitrary strings.
#include <fuzzer/FuzzedDataProvider.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "kata/storage_mapping.h"
#include "request/admission.h"

using namespace cocostorage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  agent::KataStorage s;
  // Mostly well-formed skeletons, so the fuzzer gets past the first checks.
  s.driver = in.ConsumeBool() ? "blk" : in.ConsumeRandomLengthString(16);
  s.source = in.ConsumeRandomLengthString(32);
  s.fs_type = in.ConsumeRandomLengthString(16);
  if (in.ConsumeBool()) {
    s.mount_point = std::string(agent::kKataSandboxStorageDir) + "/" + in.ConsumeRandomLengthString(64);
  } else {
    s.mount_point = in.ConsumeRandomLengthString(128);
  }
  const size_t n_driver = in.ConsumeIntegralInRange<size_t>(0, 8);
  for (size_t i = 0; i < n_driver; ++i) s.driver_options.push_back(in.ConsumeRandomLengthString(64));
  const size_t n_opts = in.ConsumeIntegralInRange<size_t>(0, 8);
  for (size_t i = 0; i < n_opts; ++i) s.options.push_back(in.ConsumeRandomLengthString(32));

  const std::string id = agent::SanitizeVolumeId(s.source);
  if (!agent::ValidateVolumeId(id).ok()) abort();  // documented: any string becomes a valid id

  auto a = agent::ActivationFromKataStorage(s, std::chrono::milliseconds(5000));
  if (!a.ok()) return 0;
  agent::AdmissionConfig config;
  (void)agent::Admit(*a, config);
  return 0;
}
