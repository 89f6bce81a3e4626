// cocostorage-csi: the host-side CSI plugin. The single composition root:
// parses flags, builds the backing store and the Driver, serves Identity,
// Controller and Node on one unix socket, drains on SIGTERM.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include <grpcpp/grpcpp.h>

#include "backend.h"
#include "cocostorage/common/flags.h"
#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"
#include "controller_service.h"
#include "driver.h"
#include "identity_service.h"
#include "node_service.h"

#ifndef COCOSTORAGE_VERSION
#define COCOSTORAGE_VERSION "0.0.0"
#endif

namespace cocostorage::csi {
namespace {

constexpr char kUsage[] =
    "usage: cocostorage-csi --endpoint unix:///path/csi.sock [--node-id ID] [--driver-name NAME]\n"
    "  [--backing-root DIR] [--state-dir DIR] [--kata-direct-volume-root DIR] [--kubelet-root DIR]\n"
    "  [--capacity-bytes N] [--max-volumes-per-node N] [--log-level debug|info|warn|error]\n";

StatusOr<std::string> SocketPath(const std::string& endpoint) {
  constexpr std::string_view kScheme = "unix://";
  if (endpoint.rfind(kScheme, 0) != 0) {
    return absl::InvalidArgumentError(Cat("--endpoint must be unix:///path, got \"", endpoint, "\""));
  }
  std::string path = endpoint.substr(kScheme.size());
  COCO_ASSIGN_OR_RETURN(std::string norm, NormalizeAbsolutePath(path));
  if (norm.size() > 107) return absl::InvalidArgumentError(Cat("socket path ", norm, " is too long"));
  return norm;
}

Status RemoveStaleSocket(const std::string& path) {
  struct stat st{};
  if (lstat(path.c_str(), &st) != 0) return OkStatus();
  if (!S_ISSOCK(st.st_mode)) return absl::FailedPreconditionError(Cat(path, " exists and is not a socket"));
  return RemoveFileIfExists(path);
}

StatusOr<DriverConfig> ParseConfig(int argc, char** argv, log::Level* level) {
  Flags flags({"endpoint", "node-id", "driver-name", "backing-root", "state-dir", "kata-direct-volume-root",
               "kubelet-root", "capacity-bytes", "max-volumes-per-node", "log-level"});
  COCO_RETURN_IF_ERROR(flags.Parse(argc, argv));
  if (!flags.positional().empty()) return absl::InvalidArgumentError("unexpected positional arguments");
  if (!flags.Has("endpoint")) return absl::InvalidArgumentError("--endpoint is required");
  DriverConfig c;
  c.vendor_version = COCOSTORAGE_VERSION;
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) return ErrnoStatus(errno, "gethostname");
  c.node_id = flags.Get("node-id", host);
  if (c.node_id.empty() || c.node_id.size() > 128) return absl::InvalidArgumentError("--node-id must be 1..128 bytes");
  c.driver_name = flags.Get("driver-name", c.driver_name);
  if (c.driver_name.empty() || c.driver_name.size() > 63) {
    return absl::InvalidArgumentError("--driver-name must be 1..63 characters");
  }
  for (auto [flag, field] :
       {std::pair{"backing-root", &c.backing_root}, std::pair{"state-dir", &c.state_dir},
        std::pair{"kata-direct-volume-root", &c.kata_root}, std::pair{"kubelet-root", &c.kubelet_root}}) {
    COCO_ASSIGN_OR_RETURN(*field, NormalizeAbsolutePath(flags.Get(flag, *field)));
  }
  COCO_ASSIGN_OR_RETURN(c.capacity_bytes, flags.GetInt("capacity-bytes", -1));
  if (flags.Has("capacity-bytes") && c.capacity_bytes <= 0) {
    return absl::InvalidArgumentError("--capacity-bytes must be positive");
  }
  COCO_ASSIGN_OR_RETURN(c.max_volumes_per_node, flags.GetInt("max-volumes-per-node", 64));
  if (c.max_volumes_per_node < 0) return absl::InvalidArgumentError("--max-volumes-per-node must be >= 0");
  if (!log::ParseLevel(flags.Get("log-level", "info"), level)) {
    return absl::InvalidArgumentError("--log-level wants debug, info, warn or error");
  }
  return c;
}

int Run(int argc, char** argv) {
  log::Level level = log::Level::kInfo;
  auto config = ParseConfig(argc, argv, &level);
  if (!config.ok()) {
    std::fprintf(stderr, "cocostorage-csi: %s\n%s", std::string(config.status().message()).c_str(), kUsage);
    return 2;
  }
  log::Init("csi", level);
  Flags endpoint_flags({"endpoint", "node-id", "driver-name", "backing-root", "state-dir", "kata-direct-volume-root",
                        "kubelet-root", "capacity-bytes", "max-volumes-per-node", "log-level"});
  (void)endpoint_flags.Parse(argc, argv);
  auto socket_path = SocketPath(endpoint_flags.Get("endpoint"));
  if (!socket_path.ok()) {
    log::Error("startup.failed", {{"error", std::string(socket_path.status().message())}});
    return 2;
  }

  // Signals are taken synchronously by this thread; block them before gRPC
  // starts its threads so they inherit the mask.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  Driver driver(*config, NewSparseFileBackend(config->backing_root));
  if (Status s = driver.Init(); !s.ok()) {
    log::Error("startup.failed", {{"error", std::string(s.message())}});
    return 1;
  }
  if (Status s = RemoveStaleSocket(*socket_path); !s.ok()) {
    log::Error("startup.failed", {{"error", std::string(s.message())}});
    return 1;
  }

  // Each service gets only what it may touch (see driver.h).
  IdentityService identity(driver.ForIdentity());
  ControllerService controller(driver.ForController());
  NodeService node(driver.ForNode());
  grpc::ServerBuilder builder;
  builder.AddListeningPort(Cat("unix://", *socket_path), grpc::InsecureServerCredentials());
  builder.RegisterService(&identity);
  builder.RegisterService(&controller);
  builder.RegisterService(&node);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    log::Error("startup.failed", {{"error", Cat("cannot listen on ", *socket_path)}});
    return 1;
  }
  chmod(socket_path->c_str(), 0600);
  log::Info("csi.serving", {{"endpoint", Cat("unix://", *socket_path)}, {"driver", config->driver_name},
                            {"node", config->node_id}, {"version", config->vendor_version}});

  int sig = 0;
  sigwait(&sigs, &sig);
  log::Info("csi.draining", {{"signal", sig}});
  // In-flight calls finish (each is short: metadata and small files); new
  // ones are refused; after the deadline the rest are cancelled.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(20));
  server->Wait();
  (void)RemoveFileIfExists(*socket_path);
  log::Info("csi.stopped");
  return 0;
}

}  // namespace
}  // namespace cocostorage::csi

int main(int argc, char** argv) { return cocostorage::csi::Run(argc, argv); }
