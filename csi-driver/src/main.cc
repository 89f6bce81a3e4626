// cocostorage-csi: the host-side CSI plugin. The single composition root:
// parses flags, builds the backing store and the Driver, serves Identity,
// Controller and Node on one unix socket, drains on SIGTERM.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <thread>

#include "backend.h"
#include "cocostorage/common/cli.h"
#include "cocostorage/common/exec.h"
#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"
#include "controller_service.h"
#include "driver.h"
#include "identity_service.h"
#include "node_service.h"
#include "rbd_backend.h"
#include "rbd_mapper.h"

#ifndef COCOSTORAGE_VERSION
#define COCOSTORAGE_VERSION "0.0.0"
#endif

namespace cocostorage::csi {
namespace {

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
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) return OkStatus();
  if (!S_ISSOCK(st.st_mode)) return absl::FailedPreconditionError(Cat(path, " exists and is not a socket"));
  return RemoveFileIfExists(path);
}

// What the command line said (CLI11); std::nullopt = not given.
struct CommandLine {
  std::string endpoint;
  std::optional<std::string> node_id, driver_name, backing_root, state_dir, kata_root, kubelet_root;
  std::optional<int64_t> capacity_bytes, max_volumes_per_node;
  std::string log_level = "info";
  std::string backend = "sparse-file";
  std::optional<std::string> rbd_secret_dir, rbd_monitors;
  int rbd_timeout_seconds = 10;
};

StatusOr<DriverConfig> ConfigFrom(const CommandLine& flags, log::Level* level) {
  DriverConfig c;
  c.vendor_version = COCOSTORAGE_VERSION;
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) return ErrnoStatus(errno, "gethostname");
  c.node_id = flags.node_id.value_or(host);
  if (c.node_id.empty() || c.node_id.size() > 128) return absl::InvalidArgumentError("--node-id must be 1..128 bytes");
  c.driver_name = flags.driver_name.value_or(c.driver_name);
  if (c.driver_name.empty() || c.driver_name.size() > 63) {
    return absl::InvalidArgumentError("--driver-name must be 1..63 characters");
  }
  for (auto [given, field] :
       {std::pair{&flags.backing_root, &c.backing_root}, std::pair{&flags.state_dir, &c.state_dir},
        std::pair{&flags.kata_root, &c.kata_root}, std::pair{&flags.kubelet_root, &c.kubelet_root}}) {
    COCO_ASSIGN_OR_RETURN(*field, NormalizeAbsolutePath(given->value_or(*field)));
  }
  c.capacity_bytes = flags.capacity_bytes.value_or(-1);
  if (flags.capacity_bytes && c.capacity_bytes <= 0) {
    return absl::InvalidArgumentError("--capacity-bytes must be positive");
  }
  c.max_volumes_per_node = flags.max_volumes_per_node.value_or(64);
  if (c.max_volumes_per_node < 0) return absl::InvalidArgumentError("--max-volumes-per-node must be >= 0");
  if (flags.backend != "sparse-file" && flags.backend != "rbd") {
    return absl::InvalidArgumentError("--backend wants sparse-file or rbd");
  }
  if (flags.rbd_timeout_seconds <= 0 || flags.rbd_timeout_seconds > 300) {
    return absl::InvalidArgumentError("--rbd-timeout-seconds must be 1..300");
  }
  if (flags.backend == "rbd") {
    if (!flags.rbd_monitors) return absl::InvalidArgumentError("--backend=rbd needs --rbd-monitors");
    COCO_RETURN_IF_ERROR(ValidateRbdMonitors(*flags.rbd_monitors));
    c.rbd_monitors = *flags.rbd_monitors;
  } else if (flags.rbd_monitors) {
    return absl::InvalidArgumentError("--rbd-monitors needs --backend=rbd");
  }
  c.rbd_timeout = std::chrono::seconds(flags.rbd_timeout_seconds);
  if (flags.rbd_secret_dir) {
    if (flags.backend != "rbd") return absl::InvalidArgumentError("--rbd-secret-dir needs --backend=rbd");
    COCO_ASSIGN_OR_RETURN(c.rbd_credentials, ReadRbdSecretDir(*flags.rbd_secret_dir));
  }
  if (!log::ParseLevel(flags.log_level, level)) {
    return absl::InvalidArgumentError("--log-level wants debug, info, warn or error");
  }
  return c;
}

int Run(int argc, char** argv) {
  CommandLine flags;
  CLI::App app{"cocostorage-csi: the host-side CSI plugin (docs/csi.md)", "cocostorage-csi"};
  app.add_option("--endpoint", flags.endpoint, "unix:///path/csi.sock")->required();
  app.add_option("--node-id", flags.node_id, "node id and topology value (default: hostname)");
  app.add_option("--driver-name", flags.driver_name, "CSI driver name (default csi.cocostorage.dev)");
  app.add_option("--backing-root", flags.backing_root, "sparse files <volume id>.img");
  app.add_option("--state-dir", flags.state_dir, "one record per volume");
  app.add_option("--kata-direct-volume-root", flags.kata_root, "where mountInfo.json descriptors go");
  app.add_option("--kubelet-root", flags.kubelet_root, "request paths must lie below it");
  app.add_option("--capacity-bytes", flags.capacity_bytes, "total the node offers (default: free space)");
  app.add_option("--max-volumes-per-node", flags.max_volumes_per_node, "0 = unlimited (default 64)");
  app.add_option("--log-level", flags.log_level, "debug, info, warn, error");
  app.add_option("--backend", flags.backend, "sparse-file (node-local, default) or rbd (Ceph; docs/deploy.md)");
  app.add_option("--rbd-monitors", flags.rbd_monitors,
                 "the Ceph cluster's monitors (`ceph mon dump`), comma-separated");
  app.add_option("--rbd-secret-dir", flags.rbd_secret_dir,
                 "mounted Secret with userID and userKey: the plugin's own cephx credentials (GetCapacity, stats)");
  app.add_option("--rbd-timeout-seconds", flags.rbd_timeout_seconds, "bound of every Ceph call (default 10)");
  if (auto code = ParseCommandLine(app, argc, argv)) return *code;
  log::Level level = log::Level::kInfo;
  auto config = ConfigFrom(flags, &level);
  if (!config.ok()) {
    std::fprintf(stderr, "cocostorage-csi: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  log::Init("csi", level);
  auto socket_path = SocketPath(flags.endpoint);
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

  VolumeBackendPtr backend;
  std::unique_ptr<RbdMapper> mapper;
  if (flags.backend == "rbd") {
    const std::chrono::seconds timeout(flags.rbd_timeout_seconds);
    backend = NewRbdClusterBackend(config->rbd_monitors, config->rbd_credentials, timeout);
    auto krbd = NewKrbdMapper(std::shared_ptr<CommandRunner>(NewSystemCommandRunner()), timeout);
    if (!krbd.ok()) {
      log::Error("startup.failed", {{"error", std::string(krbd.status().message())}});
      return 1;
    }
    mapper = std::move(*krbd);
  } else {
    backend = NewSparseFileBackend(config->backing_root);
  }
  Driver driver(*config, std::move(backend), std::move(mapper));
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
  log::Info("csi.serving", {{"endpoint", Cat("unix://", *socket_path)},
                            {"driver", config->driver_name},
                            {"node", config->node_id},
                            {"backend", driver.backend->Name()},
                            {"version", config->vendor_version}});

  std::thread remap([&driver] { driver.RemapStagedVolumes(); });

  int sig = 0;
  sigwait(&sigs, &sig);
  log::Info("csi.draining", {{"signal", sig}});
  // In-flight calls finish (each is short: metadata and small files); new
  // ones are refused; after the deadline the rest are cancelled.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(20));
  server->Wait();
  remap.join();  // bounded: each rbd call is (--rbd-timeout-seconds)
  (void)RemoveFileIfExists(*socket_path);
  log::Info("csi.stopped");
  return 0;
}

}  // namespace
}  // namespace cocostorage::csi

int main(int argc, char** argv) { return cocostorage::csi::Run(argc, argv); }
