// cocostorage-agent: the in-guest storage agent. Composition root only.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <iostream>

#include "cocostorage/common/exec.h"
#include "cocostorage/common/flags.h"
#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"
#include "crypt/crypt_engine.h"
#include "device/resolver.h"
#include "dm/dm_client.h"
#include "dm/loop_device.h"
#include "fs/filesystem.h"
#include "keys/key_provider.h"
#include "server/listeners.h"
#include "service/grpc_service.h"
#include "service/volume_manager.h"
#include "state/scratch_files.h"
#include "state/state_store.h"

namespace cocostorage::agent {
namespace {

const char* kUsage =
    "usage: cocostorage-agent [--listen=URI[,URI...]] [--storage-root=DIR] [--state-dir=DIR]\n"
    "                         [--config=FILE.json] [--device-timeout-ms=N] [--log-level=info]\n"
    "                         [--allow-integrity-none] [--allow-format-non-blank]\n"
    "  URI: vsock://PORT (production), unix:///PATH, tcp://HOST:PORT (tests)\n";

struct Settings {
  std::vector<std::string> listen{"vsock://7100"};
  AgentConfig agent;
  bool allow_integrity_none = false;
  int max_activations = 16;
  std::string log_level = "info";
};

Status LoadSettings(const Flags& flags, Settings* out) {
  if (flags.Has("config")) {
    COCO_ASSIGN_OR_RETURN(std::string text, ReadFileToString(flags.Get("config")));
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("config file is not a JSON object");
    for (const auto& [key, value] : j.items()) {
      if (key == "listen" && value.is_string())
        out->listen = Split(value.get<std::string>(), ',');
      else if (key == "listen" && value.is_array())
        out->listen = value.get<std::vector<std::string>>();
      else if (key == "storage_root" && value.is_string())
        out->agent.storage_root = value.get<std::string>();
      else if (key == "state_dir" && value.is_string())
        out->agent.state_dir = value.get<std::string>();
      else if (key == "log_level" && value.is_string())
        out->log_level = value.get<std::string>();
      else if (key == "max_concurrent_activations" && value.is_number_unsigned() && value.get<uint64_t>() > 0 &&
               value.get<uint64_t>() <= 1024)
        out->max_activations = value.get<int>();
      else if (key == "allow_format_non_blank" && value.is_boolean())
        out->agent.allow_format_non_blank = value.get<bool>();
      else if (key == "allow_integrity_none" && value.is_boolean())
        out->allow_integrity_none = value.get<bool>();
      else if (key == "device_timeout_ms" && value.is_number_unsigned())
        out->agent.default_device_timeout = std::chrono::milliseconds(value.get<uint64_t>());
      else
        return absl::InvalidArgumentError(Cat("config file: unknown or mistyped key \"", key, "\""));
    }
  }
  // Flags override the file.
  if (flags.Has("listen")) out->listen = Split(flags.Get("listen"), ',');
  if (flags.Has("storage-root")) out->agent.storage_root = flags.Get("storage-root");
  if (flags.Has("state-dir")) out->agent.state_dir = flags.Get("state-dir");
  if (flags.Has("log-level")) out->log_level = flags.Get("log-level");
  if (flags.Has("allow-integrity-none")) out->allow_integrity_none = flags.GetBool("allow-integrity-none");
  if (flags.Has("allow-format-non-blank")) out->agent.allow_format_non_blank = flags.GetBool("allow-format-non-blank");
  COCO_ASSIGN_OR_RETURN(long long timeout,
                        flags.GetInt("device-timeout-ms", out->agent.default_device_timeout.count()));
  out->agent.default_device_timeout = std::chrono::milliseconds(timeout);
  COCO_ASSIGN_OR_RETURN(out->agent.storage_root, NormalizeAbsolutePath(out->agent.storage_root));
  COCO_ASSIGN_OR_RETURN(out->agent.state_dir, NormalizeAbsolutePath(out->agent.state_dir));
  return OkStatus();
}

int Run(int argc, char** argv) {
  Flags flags({"listen", "storage-root", "state-dir", "config", "device-timeout-ms", "log-level"},
              {"help", "allow-integrity-none", "allow-format-non-blank"});
  if (Status s = flags.Parse(argc, argv); !s.ok() || flags.GetBool("help")) {
    std::cerr << (s.ok() ? "" : std::string(s.message()) + "\n") << kUsage;
    return s.ok() ? 0 : 2;
  }
  Settings settings;
  if (Status s = LoadSettings(flags, &settings); !s.ok()) {
    std::cerr << "cocostorage-agent: " << s.message() << "\n" << kUsage;
    return 2;
  }
  log::Level level;
  if (!log::ParseLevel(settings.log_level, &level)) {
    std::cerr << "cocostorage-agent: bad log level " << settings.log_level << "\n";
    return 2;
  }
  log::Init("agent", level);

  // The process briefly holds keys: no core dumps, no ptrace by non-root peers.
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

  // Block termination signals before any thread starts; a dedicated wait below.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  auto runner = NewSystemCommandRunner();
  SysfsDeviceResolver resolver(settings.agent.sysfs_root, "/dev");
  auto crypt = NewLibCryptsetupEngine();
  auto dm = NewLibDevmapperClient();
  auto loops = NewKernelLoopDevices();
  auto fs = NewSystemFilesystem(runner.get());
  auto files = NewTmpfsScratchFiles();
  StateStore state(settings.agent.state_dir);
  // Ephemeral keys only in this version: KBS sources are refused (UNIMPLEMENTED).
  KeyProviderRouter keys(std::make_unique<EphemeralKeyProvider>());
  Deps deps{&resolver, crypt.get(), dm.get(), loops.get(), fs.get(), files.get(), &state, &keys, nullptr};
  // Test-only crash points (see tests/vm): the VM harness sets this variable
  // in the guest; nothing in production does.
  if (const char* point = std::getenv("COCOSTORAGE_CRASH_POINT"); point != nullptr && *point != '\0') {
    std::string wanted = point;
    deps.crash_hook = [wanted](const char* at) {
      if (wanted == at) {
        log::Warn("agent.crash_point", {{"point", at}});
        raise(SIGKILL);
      }
    };
  }
  VolumeManager manager(settings.agent, deps);
  if (Status s = manager.Recover(); !s.ok()) {
    log::Error("agent.recovery_failed", {{"error", std::string(s.message())}});
    return 1;
  }

  StorageAgentService service(&manager,
                              AdmissionConfig{settings.agent.storage_root, settings.agent.default_device_timeout,
                                              settings.allow_integrity_none},
                              settings.max_activations);
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  std::vector<unsigned> vsock_ports;
  for (const auto& uri : settings.listen) {
    auto addr = ParseListenAddress(uri);
    if (!addr.ok()) {
      log::Error("agent.bad_listen_address", {{"error", std::string(addr.status().message())}});
      return 2;
    }
    if (addr->kind == ListenAddress::Kind::kTcp)
      builder.AddListeningPort(addr->address, grpc::InsecureServerCredentials());
    else if (addr->kind == ListenAddress::Kind::kUnix) {
      unlink(addr->address.c_str());
      builder.AddListeningPort(Cat("unix:", addr->address), grpc::InsecureServerCredentials());
    } else
      vsock_ports.push_back(addr->vsock_port);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    log::Error("agent.listen_failed", {{"listen", Join(settings.listen, ",")}});
    return 1;
  }
  std::vector<std::unique_ptr<VsockAcceptor>> acceptors;
  for (unsigned port : vsock_ports) {
    auto acc = VsockAcceptor::Listen(port);
    if (!acc.ok()) {
      log::Error("agent.listen_failed", {{"error", std::string(acc.status().message())}});
      return 1;
    }
    (*acc)->Start(server.get());
    acceptors.push_back(std::move(*acc));
  }
  log::Info("agent.started", {{"listen", Join(settings.listen, ",")},
                              {"storage_root", settings.agent.storage_root},
                              {"state_dir", settings.agent.state_dir},
                              {"version", COCOSTORAGE_VERSION}});
  int sig = 0;
  sigwait(&sigs, &sig);
  log::Info("agent.stopping", {{"signal", sig}});
  for (auto& a : acceptors) a->Stop();
  // Volumes stay active across an agent restart: only the API goes away.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return 0;
}

}  // namespace
}  // namespace cocostorage::agent

int main(int argc, char** argv) { return cocostorage::agent::Run(argc, argv); }
