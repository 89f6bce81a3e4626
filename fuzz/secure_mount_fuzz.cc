// CDH SecureMount from kata-agent: the request protobuf parsed from the fuzz
// bytes, mapped to an ActivationRequest and admitted (no device is touched).
#include <chrono>
#include <cstddef>
#include <cstdint>

#include "cdh/api.pb.h"
#include "cdh/secure_mount.h"
#include "request/admission.h"

using namespace cocostorage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  api::SecureMountRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  auto a = agent::ActivationFromSecureMount(req, std::chrono::milliseconds(5000));
  if (!a.ok()) return 0;
  agent::AdmissionConfig config;
  (void)agent::Admit(*a, config);
  config.allow_integrity_none = true;
  (void)agent::Admit(*a, config);
  return 0;
}
