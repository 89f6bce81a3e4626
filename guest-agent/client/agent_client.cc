#include "agent_client.h"

#include <thread>

namespace cocostorage::agent {

namespace pb = cocostorage::storage::v1;

AgentClient::AgentClient(const std::string& target, RetryPolicy policy)
    : stub_(pb::StorageAgent::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()))),
      policy_(policy) {}

template <typename Fn>
grpc::Status AgentClient::Call(Fn fn) {
  grpc::Status s;
  for (int attempt = 0; attempt < policy_.attempts; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(policy_.backoff);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + policy_.deadline);
    ctx.set_wait_for_ready(true);
    s = fn(&ctx);
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) break;
  }
  return s;
}

grpc::Status AgentClient::Activate(const pb::ActivateVolumeRequest& req, pb::Volume* out) {
  pb::ActivateVolumeResponse resp;
  grpc::Status s = Call([&](grpc::ClientContext* ctx) { return stub_->ActivateVolume(ctx, req, &resp); });
  if (out) *out = resp.volume();
  return s;
}

grpc::Status AgentClient::Deactivate(const std::string& id, bool* was_active) {
  pb::DeactivateVolumeRequest req;
  req.set_volume_id(id);
  pb::DeactivateVolumeResponse resp;
  grpc::Status s = Call([&](grpc::ClientContext* ctx) { return stub_->DeactivateVolume(ctx, req, &resp); });
  if (was_active) *was_active = resp.was_active();
  return s;
}

grpc::Status AgentClient::Get(const std::string& id, pb::Volume* out) {
  pb::GetVolumeRequest req;
  req.set_volume_id(id);
  return Call([&](grpc::ClientContext* ctx) { return stub_->GetVolume(ctx, req, out); });
}

grpc::Status AgentClient::List(std::vector<pb::Volume>* out) {
  pb::ListVolumesResponse resp;
  grpc::Status s = Call([&](grpc::ClientContext* ctx) { return stub_->ListVolumes(ctx, {}, &resp); });
  out->assign(resp.volumes().begin(), resp.volumes().end());
  return s;
}

grpc::Status AgentClient::Info(pb::AgentInfo* out) {
  return Call([&](grpc::ClientContext* ctx) { return stub_->GetAgentInfo(ctx, {}, out); });
}

}  // namespace cocostorage::agent
