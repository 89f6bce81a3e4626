#include "cdh/secure_mount_service.h"

#include "cdh/secure_mount.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"

namespace cocostorage::agent {

void SecureMountService::Register(ttrpc::Server& server) {
  server.Register(kSecureMountService, kSecureMountMethod,
                  [this](const ttrpc::CallContext& ctx, const std::string& request, std::string* response) {
                    return SecureMount(ctx, request, response);
                  });
}

Status SecureMountService::SecureMount(const ttrpc::CallContext& ctx, const std::string& request,
                                       std::string* response) {
  api::SecureMountRequest req;
  if (!req.ParseFromString(request)) return absl::InvalidArgumentError("SecureMount: undecodable request");
  // kata-agent gives the call cdh_api_timeout (50 s by default): wait for the
  // device within what is left of it.
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(ctx.deadline - std::chrono::steady_clock::now());
  const auto timeout = ctx.deadline == std::chrono::steady_clock::time_point::max()
                           ? admission_.default_device_timeout
                           : std::max(std::chrono::milliseconds(1), std::min(left, std::chrono::milliseconds(300000)));
  Status s = [&]() -> Status {
    COCO_ASSIGN_OR_RETURN(ActivationRequest a, ActivationFromSecureMount(req, timeout));
    COCO_ASSIGN_OR_RETURN(ValidatedActivate v, Admit(a, admission_));
    COCO_RETURN_IF_ERROR(manager_->Activate(v.spec, v.device_timeout, ctx.cancelled).status());
    return OkStatus();
  }();
  if (!s.ok()) {
    log::Warn("rpc.error", {{"rpc", "SecureMount"},
                            {"mount_point", req.mount_point().substr(0, 128)},
                            {"code", absl::StatusCodeToString(s.code())},
                            {"error", std::string(s.message())}});
    return s;
  }
  api::SecureMountResponse resp;
  resp.SerializeToString(response);
  return OkStatus();
}

}  // namespace cocostorage::agent
