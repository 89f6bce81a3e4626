// mkfs and mount options a request carries: the allowlist validation, the
// mount option parser and the mkfs argv builder, for each supported fs type.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fs/options.h"

using namespace cocostorage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const auto types = agent::SupportedFsTypes();
  std::string fs_type = in.ConsumeBool() && !types.empty()
                            ? types[in.ConsumeIntegralInRange<size_t>(0, types.size() - 1)]
                            : in.ConsumeRandomLengthString(16);
  const bool read_only = in.ConsumeBool();
  agent::MkfsRules rules;
  rules.guarded = in.ConsumeBool();
  rules.journal_removable = in.ConsumeBool();
  std::vector<std::string> mkfs, mount;
  const size_t n_mkfs = in.ConsumeIntegralInRange<size_t>(0, 16);
  for (size_t i = 0; i < n_mkfs; ++i) mkfs.push_back(in.ConsumeRandomLengthString(32));
  while (in.remaining_bytes() > 0 && mount.size() < 16) mount.push_back(in.ConsumeRandomLengthString(32));

  (void)agent::IsSupportedFsType(fs_type);
  if (agent::ValidateMkfsOptions(fs_type, mkfs).ok()) {
    (void)agent::BuildMkfsArgv(fs_type, mkfs, "/dev/mapper/fuzz", rules);
  }
  auto parsed = agent::ParseMountOptions(fs_type, mount, read_only);
  if (parsed.ok()) (void)agent::MountDataFor(fs_type, parsed->data, rules.guarded);
  return 0;
}
