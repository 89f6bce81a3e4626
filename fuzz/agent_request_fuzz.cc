// The agent API's ActivateVolume from the (untrusted) host: the protobuf
// parsed from the fuzz bytes, the transport mapping, then admission.
#include <cstddef>
#include <cstdint>

#include "cocostorage/storage/v1/agent.pb.h"
#include "request/admission.h"
#include "service/grpc_service.h"

using namespace cocostorage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  storage::v1::ActivateVolumeRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  auto a = agent::ActivationFromProto(req);
  if (!a.ok()) return 0;
  agent::AdmissionConfig config;
  auto v = agent::Admit(*a, config);
  if (v.ok()) (void)agent::ValidateVolumeId(v->spec.id);
  config.allow_integrity_none = true;
  (void)agent::Admit(*a, config);
  return 0;
}
