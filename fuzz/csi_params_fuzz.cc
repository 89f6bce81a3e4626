// CSI request input: StorageClass parameters / volume attributes (a map built
// from the fuzz bytes, keys biased towards the real ones), the kbsResourceUri
// template resolver, quantities, ids, and the target/staging path checks.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>

#include "kubelet_root.h"
#include "params.h"

using namespace cocostorage::csi;

namespace {

const char* const kKeys[] = {"keySource",
                             "kbsResourceUri",
                             "fsType",
                             "integrity",
                             "mkfsOptions",
                             "monitors",
                             "pool",
                             "size",
                             "csi.storage.k8s.io/pvc/name",
                             "csi.storage.k8s.io/pvc/namespace",
                             "csi.storage.k8s.io/pv/name",
                             "csi.storage.k8s.io/ephemeral"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  std::map<std::string, std::string> params;
  const size_t n = in.ConsumeIntegralInRange<size_t>(0, 10);
  for (size_t i = 0; i < n; ++i) {
    std::string key = in.ConsumeBool() ? kKeys[in.ConsumeIntegralInRange<size_t>(0, std::size(kKeys) - 1)]
                                       : in.ConsumeRandomLengthString(32);
    params[key] = in.ConsumeRandomLengthString(96);
  }
  const bool allow_size = in.ConsumeBool();
  auto parsed = ParseVolumeParams(params, allow_size);
  if (parsed.ok()) {
    (void)parsed->ToMap();
    VolumeParams p = *parsed;
    if (ResolveVolumeParams(&p, params).ok() && p.key_source == KeySource::kKbs) {
      if (!ValidateKbsResourceUri(p.kbs_resource_uri).ok()) abort();  // resolved means valid
    }
  }
  const std::string text = in.ConsumeRandomLengthString(256);
  if (IsKbsResourceUriTemplate(text)) (void)ValidateKbsResourceUriTemplate(text);
  auto uri = ResolveKbsResourceUri(text, params);
  if (uri.ok() && !ValidateKbsResourceUri(*uri).ok()) abort();
  (void)ParseQuantity(text);
  (void)ParseInlineSize(text);
  (void)ValidateVolumeId(text);
  (void)VolumeIdForName(text);
  // RBD ids: a pool read back from an id is always one the id was made from.
  if (const std::string pool = RbdPoolOfVolumeId(text); !pool.empty()) {
    if (!ValidateRbdPool(pool).ok() || RbdVolumeIdForName(pool, "x").rfind("rbd-" + pool + "-", 0) != 0) abort();
  }
  if (ValidateRbdPool(text).ok() && text.size() <= kMaxRbdPoolInVolumeId) {
    const std::string id = RbdVolumeIdForName(text, text);
    if (RbdPoolOfVolumeId(id) != text || !ValidateVolumeId(id).ok()) abort();  // round trip
  }
  (void)ValidateRbdMonitors(text);
  (void)ValidateFsGroup(text);
  (void)ValidateMountFlag(text);
  (void)Echo(text);
  // A CapacityRange is request input; the default and the granularity are
  // the plugin's own (configuration and backend), so positive.
  const int64_t required = in.ConsumeIntegral<int64_t>();
  const int64_t limit = in.ConsumeIntegral<int64_t>();
  const int64_t def = in.ConsumeIntegralInRange<int64_t>(1, int64_t{1} << 50);
  const int64_t gran = int64_t{1} << in.ConsumeIntegralInRange<int>(0, 30);
  auto cap = ResolveCapacity(required, limit, def, gran);
  if (cap.ok()) (void)CapacityFits(*cap, required, limit);

  const std::string path = in.ConsumeRemainingBytesAsString();
  if (ValidateRequestPath(path, "target_path").ok()) {
    (void)KataVolumeDirName(path);
    (void)KubeletRoot("/var/lib/kubelet").CheckWithin(path, "target_path");
  }
  return 0;
}
