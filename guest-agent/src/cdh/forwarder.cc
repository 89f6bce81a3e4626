#include "cdh/forwarder.h"

#include <algorithm>

#include "cdh/secure_mount.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"

namespace cocostorage::agent {

namespace {
// Our ttrpc client refuses longer timeouts; no CDH call is that long.
constexpr std::chrono::nanoseconds kMaxForwardTimeout = std::chrono::hours(24);
}  // namespace

void CdhForwarder::Register(ttrpc::Server& server) {
  server.SetFallback([this](const ttrpc::CallContext& ctx, const std::string& request, std::string* response) {
    return Forward(ctx, request, response);
  });
}

Status CdhForwarder::Unreachable(const std::string& why) const {
  return absl::UnavailableError(
      Cat("no Confidential Data Hub behind cocostorage: ", why,
          " (cdh_upstream_socket in the agent config; the real CDH's cdh.toml must set socket = \"unix://",
          options_.upstream_socket.empty() ? kCdhUpstreamSocket : options_.upstream_socket, "\")"));
}

StatusOr<std::shared_ptr<ttrpc::Client>> CdhForwarder::Connection() {
  std::lock_guard<std::mutex> lock(mu_);
  if (client_ && !client_->Broken()) return client_;
  client_.reset();
  auto dialled = ttrpc::Client::ConnectUnix(options_.upstream_socket);
  if (!dialled.ok()) {
    log::Warn("cdh.upstream_unreachable",
              {{"socket", options_.upstream_socket}, {"error", std::string(dialled.status().message())}});
    return Unreachable(Cat(options_.upstream_socket, " is not reachable: ", dialled.status().message()));
  }
  client_ = std::move(*dialled);
  return client_;
}

void CdhForwarder::Drop(const std::shared_ptr<ttrpc::Client>& broken) {
  std::lock_guard<std::mutex> lock(mu_);
  if (client_ == broken) client_.reset();
}

Status CdhForwarder::Forward(const ttrpc::CallContext& ctx, const std::string& request, std::string* response) {
  // SecureMount is ours alone: the real CDH would format the disk its own way.
  if (ctx.service == kSecureMountService) {
    return absl::UnimplementedError(
        Cat("method ", ctx.method, " (", kSecureMountService, " is served by cocostorage)"));
  }
  if (options_.upstream_socket.empty()) {
    return Unreachable(Cat("forwarding is off, so ", ctx.service, "/", ctx.method, " cannot be served"));
  }
  std::chrono::nanoseconds timeout = options_.no_deadline_timeout;
  if (ctx.deadline != std::chrono::steady_clock::time_point::max()) {
    timeout = ctx.deadline - std::chrono::steady_clock::now();
    if (timeout <= std::chrono::nanoseconds::zero()) {
      return absl::DeadlineExceededError(Cat(ctx.service, "/", ctx.method, ": the deadline passed before forwarding"));
    }
  }
  timeout = std::min(timeout, kMaxForwardTimeout);

  // At most two attempts: a second one only when the first never left (the
  // cached connection had broken, e.g. the CDH restarted), so the upstream
  // can never see one call twice.
  for (int attempt = 0;; ++attempt) {
    COCO_ASSIGN_OR_RETURN(std::shared_ptr<ttrpc::Client> client, Connection());
    ttrpc::Client::Outcome outcome;
    auto reply = client->Call(ctx.service, ctx.method, request, timeout, ctx.metadata, &outcome);
    if (reply.ok()) {
      *response = std::move(*reply);
      return OkStatus();
    }
    if (outcome.answered) return reply.status();  // the CDH's own status, unchanged
    if (client->Broken()) Drop(client);
    if (!outcome.sent && attempt == 0) continue;
    if (reply.status().code() == absl::StatusCode::kDeadlineExceeded) return reply.status();
    return Unreachable(Cat("the connection to ", options_.upstream_socket, " failed during ", ctx.service, "/",
                           ctx.method, ": ", reply.status().message()));
  }
}

}  // namespace cocostorage::agent
