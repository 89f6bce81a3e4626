// A client of the guest agent's API. Every RPC is idempotent, so a call that
// meets UNAVAILABLE (typically the first one after an agent restart, on the
// dead connection) is retried, and calls wait for the channel to be ready
// within their deadline.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "cocostorage/storage/v1/agent.grpc.pb.h"

namespace cocostorage::agent {

struct RetryPolicy {
  int attempts = 5;                                              // 1 = no retry
  std::chrono::milliseconds deadline{std::chrono::minutes(10)};  // per attempt
  std::chrono::milliseconds backoff{300};
};

class AgentClient {
 public:
  explicit AgentClient(const std::string& target, RetryPolicy policy = {});
  grpc::Status Activate(const storage::v1::ActivateVolumeRequest& req, storage::v1::Volume* out = nullptr);
  grpc::Status Deactivate(const std::string& id, bool* was_active = nullptr);
  grpc::Status Get(const std::string& id, storage::v1::Volume* out);
  grpc::Status List(std::vector<storage::v1::Volume>* out);
  grpc::Status Info(storage::v1::AgentInfo* out);

 private:
  template <typename Fn>
  grpc::Status Call(Fn fn);
  std::unique_ptr<storage::v1::StorageAgent::Stub> stub_;
  RetryPolicy policy_;
};

}  // namespace cocostorage::agent
