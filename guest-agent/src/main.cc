// cocostorage-agent: the in-guest storage agent. Composition root only.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <optional>

#include "cdh/forwarder.h"
#include "cdh/secure_mount.h"
#include "cdh/secure_mount_service.h"
#include "cocostorage/common/cli.h"
#include "cocostorage/common/exec.h"
#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"
#include "crypt/crypt_engine.h"
#include "device/raw_io.h"
#include "device/resolver.h"
#include "dm/dm_client.h"
#include "dm/loop_device.h"
#include "fs/filesystem.h"
#include "fs/mount_watcher.h"
#include "keys/key_config.h"
#include "keys/key_provider.h"
#include "policy/launch_field.h"
#include "policy/matcher.h"
#include "policy/policy_gate.h"
#include "policy/policy_source.h"
#include "server/listeners.h"
#include "service/grpc_service.h"
#include "service/volume_manager.h"
#include "state/scratch_files.h"
#include "state/state_store.h"

namespace cocostorage::agent {
namespace {

struct Settings {
  // Guest-local only by default: over vsock the untrusted host could call the
  // management API directly. kata-agent's way in is SecureMount on cdh.sock.
  std::vector<std::string> listen{"unix:///run/cocostorage/agent.sock"};
  AgentConfig agent;
  bool allow_integrity_none = false;
  int max_activations = 16;
  // Where kata-agent calls the Confidential Data Hub; "" = do not serve it.
  std::string cdh_socket = kCdhSocket;
  // The real CDH, which gets every other call on cdh_socket; "" = none.
  std::string cdh_upstream_socket = kCdhUpstreamSocket;
  std::string log_level = "info";
  KeyConfig keys;
  policy::PolicySourceConfig policy;
};

// What the command line said; std::nullopt = not given (the file or the
// default applies).
struct CommandLine {
  std::optional<std::string> listen, storage_root, state_dir, config, log_level, cdh_socket;
  std::optional<std::string> cdh_upstream_socket;
  std::optional<std::string> key_provider, kbs_url, kbs_ca_bundle, attester, tee, init_data, init_data_digest;
  bool insecure_test_build = false;
  bool insecure_no_storage_policy = false;
  std::optional<std::string> policy_verifier;
  std::optional<long long> device_timeout_ms;
  bool allow_integrity_none = false;
  bool allow_format_non_blank = false;
};

Status LoadSettings(const CommandLine& flags, Settings* out) {
  if (flags.config) {
    COCO_ASSIGN_OR_RETURN(std::string text, ReadFileToString(*flags.config));
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
      else if (key == "cdh_socket" && value.is_string())
        out->cdh_socket = value.get<std::string>() == "off" ? "" : value.get<std::string>();
      else if (key == "cdh_upstream_socket" && value.is_string())
        out->cdh_upstream_socket = value.get<std::string>() == "off" ? "" : value.get<std::string>();
      else if (key == "allow_format_non_blank" && value.is_boolean())
        out->agent.allow_format_non_blank = value.get<bool>();
      else if (key == "allow_integrity_none" && value.is_boolean())
        out->allow_integrity_none = value.get<bool>();
      else if (key == "keys")
        COCO_RETURN_IF_ERROR(ApplyKeyConfigJson(value, &out->keys));
      else if (key == "policy")
        COCO_RETURN_IF_ERROR(policy::ApplyPolicyConfigJson(value, &out->policy));
      else if (key == "device_timeout_ms" && value.is_number_unsigned())
        out->agent.default_device_timeout = std::chrono::milliseconds(value.get<uint64_t>());
      else
        return absl::InvalidArgumentError(Cat("config file: unknown or mistyped key \"", key, "\""));
    }
  }
  // Flags override the file.
  if (flags.listen) out->listen = Split(*flags.listen, ',');
  if (flags.storage_root) out->agent.storage_root = *flags.storage_root;
  if (flags.state_dir) out->agent.state_dir = *flags.state_dir;
  if (flags.log_level) out->log_level = *flags.log_level;
  if (flags.cdh_socket) out->cdh_socket = *flags.cdh_socket == "off" ? "" : *flags.cdh_socket;
  if (flags.cdh_upstream_socket)
    out->cdh_upstream_socket = *flags.cdh_upstream_socket == "off" ? "" : *flags.cdh_upstream_socket;
  if (!out->cdh_upstream_socket.empty() && out->cdh_upstream_socket.front() != '/')
    return absl::InvalidArgumentError("cdh_upstream_socket must be an absolute path or \"off\"");
  // Forwarding to our own socket would send every call round in a circle.
  if (!out->cdh_upstream_socket.empty() && out->cdh_upstream_socket == out->cdh_socket)
    return absl::InvalidArgumentError("cdh_upstream_socket must be the real CDH's socket, not cdh_socket");
  if (flags.allow_integrity_none) out->allow_integrity_none = true;
  if (flags.key_provider) out->keys.provider = *flags.key_provider;
  if (flags.kbs_url) out->keys.kbs_url = *flags.kbs_url;
  if (flags.kbs_ca_bundle) out->keys.kbs_ca_bundle = *flags.kbs_ca_bundle;
  if (flags.attester) out->keys.attester = *flags.attester;
  if (flags.tee) out->keys.tee = *flags.tee;
  if (flags.init_data) out->keys.init_data_path = *flags.init_data;
  if (flags.init_data_digest) out->keys.init_data_digest = *flags.init_data_digest;
  if (flags.insecure_test_build) out->keys.insecure_test_build = true;
  if (flags.allow_format_non_blank) out->agent.allow_format_non_blank = true;
  if (flags.policy_verifier) out->policy.verifier = *flags.policy_verifier;
  if (flags.insecure_no_storage_policy) {
    out->policy.required = false;
    out->policy.insecure_test_build = true;  // the flag's name is the acknowledgement
  }
  if (flags.insecure_test_build) out->policy.insecure_test_build = true;
  // One init-data document: the one the KBS sees is the one the policy comes
  // from (unless the config file names another for the policy).
  if (flags.init_data) out->policy.init_data_path = *flags.init_data;
  if (flags.init_data_digest && out->policy.verifier == "configured-digest")
    out->policy.configured_digest_hex = *flags.init_data_digest;
  COCO_RETURN_IF_ERROR(policy::ValidatePolicySourceConfig(out->policy));
  if (flags.device_timeout_ms) {
    if (*flags.device_timeout_ms < 0) return absl::InvalidArgumentError("--device-timeout-ms must not be negative");
    out->agent.default_device_timeout = std::chrono::milliseconds(*flags.device_timeout_ms);
  }
  COCO_ASSIGN_OR_RETURN(out->agent.storage_root, NormalizeAbsolutePath(out->agent.storage_root));
  COCO_ASSIGN_OR_RETURN(out->agent.state_dir, NormalizeAbsolutePath(out->agent.state_dir));
  return OkStatus();
}

int Run(int argc, char** argv) {
  CommandLine flags;
  CLI::App app{"cocostorage-agent: the in-guest storage agent (docs/design.md)", "cocostorage-agent"};
  app.add_option("--listen", flags.listen,
                 "URI[,URI...]: unix:///PATH (default unix:///run/cocostorage/agent.sock, root only), vsock://PORT "
                 "(reachable by the host: development only), tcp://HOST:PORT (tests)");
  app.add_option("--storage-root", flags.storage_root, "where volumes are mounted (one level below it)");
  app.add_option("--state-dir", flags.state_dir, "records, headers, guard metadata (guest tmpfs)");
  app.add_option("--config", flags.config, "JSON config file (deploy/guest/agent.schema.json); flags override it");
  app.add_option("--device-timeout-ms", flags.device_timeout_ms, "default wait for a hot-plugged disk");
  app.add_option("--log-level", flags.log_level, "debug, info, warn, error");
  app.add_option("--cdh-socket", flags.cdh_socket,
                 "serve api.SecureMountService (ttrpc) here, in the CDH's place; \"\" = off (default "
                 "/run/confidential-containers/cdh.sock)");
  app.add_option("--cdh-upstream-socket", flags.cdh_upstream_socket,
                 "forward every other CDH service on --cdh-socket to the real CDH here; \"off\" = refuse them "
                 "UNAVAILABLE (default /run/confidential-containers/cdh-upstream.sock)");
  app.add_flag("--allow-integrity-none", flags.allow_integrity_none, "accept INTEGRITY_NONE requests");
  app.add_flag("--allow-format-non-blank", flags.allow_format_non_blank,
               "format ephemeral volumes over disks that hold a signature");
  app.add_option("--key-provider", flags.key_provider,
                 "who releases KBS keys: cdh (default; the Confidential Data Hub's GetResource), kbs (our own "
                 "trustee client), none");
  app.add_option("--kbs-url", flags.kbs_url, "trustee KBS, https://HOST:PORT (key provider kbs)");
  app.add_option("--kbs-ca-bundle", flags.kbs_ca_bundle, "PEM CA bundle the KBS certificate must chain to");
  app.add_option("--attester", flags.attester, "evidence source for the kbs provider: aa (default) or sample");
  app.add_option("--tee", flags.tee, "TEE the Attestation Agent attests: snp, tdx, ...");
  app.add_option("--init-data", flags.init_data, "init-data TOML sent to the KBS (default kata-agent's copy)");
  app.add_option("--init-data-digest", flags.init_data_digest, "expected init-data digest (hex; sample attester)");
  app.add_flag("--insecure-test-build", flags.insecure_test_build,
               "TESTS ONLY: allow the sample attester and plain-HTTP KBS URLs");
  app.add_option("--policy-verifier", flags.policy_verifier,
                 "how the init-data digest is checked: auto (default), tsm (SNP, configfs-tsm), aa (Attestation "
                 "Agent), configured-digest (tests: --init-data-digest)");
  app.add_flag("--insecure-no-storage-policy", flags.insecure_no_storage_policy,
               "TESTS ONLY: serve without an attested storage policy (built-in rules only)");
  if (auto code = ParseCommandLine(app, argc, argv)) return *code;
  Settings settings;
  if (Status s = LoadSettings(flags, &settings); !s.ok()) {
    std::cerr << "cocostorage-agent: " << s.message() << "\n";
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
  auto remote_keys = NewRemoteKeyProvider(settings.keys);
  if (!remote_keys.ok()) {
    log::Error("agent.key_provider_failed",
               {{"provider", settings.keys.provider}, {"error", std::string(remote_keys.status().message())}});
    return 2;
  }
  if (settings.keys.insecure_test_build)
    log::Warn("agent.insecure_test_build", {{"attester", settings.keys.attester}, {"kbs", settings.keys.kbs_url}});
  KeyProviderRouter keys(std::make_unique<EphemeralKeyProvider>(), std::move(*remote_keys));
  // The attested storage policy, verified before anything is served.
  std::unique_ptr<policy::PolicyGate> policy_gate;
  std::unique_ptr<policy::LaunchFieldVerifier> verifier;
  if (settings.policy.required) {
    auto v = policy::NewLaunchFieldVerifier(settings.policy);
    if (v.ok()) verifier = std::move(*v);
    const policy::PolicySourceConfig policy_config = settings.policy;
    const std::string verifier_error = v.ok() ? "" : std::string(v.status().message());
    policy::LaunchFieldVerifier* verifier_ptr = verifier.get();
    policy_gate = std::make_unique<policy::PolicyGate>([policy_config, verifier_ptr, verifier_error] {
      if (verifier_ptr == nullptr) {
        policy::PolicyState s;
        s.unverified_reason = verifier_error;
        return s;
      }
      return policy::LoadPolicyState(policy_config, *verifier_ptr);
    });
  } else {
    log::Warn("agent.insecure_no_storage_policy", {{"note", "no attested storage policy: built-in rules only"}});
  }
  Deps deps{&resolver, crypt.get(), dm.get(), loops.get(), fs.get(), files.get(), &state, &keys, nullptr, nullptr};
  std::unique_ptr<RawDiskIo> disk_io = NewDirectDiskIo();
  deps.io = disk_io.get();
  if (policy_gate) {
    deps.claim_check = [gate = policy_gate.get()](const VolumeSpec& spec, uint64_t device_bytes,
                                                  const std::vector<VolumeSpec>& others) -> Status {
      COCO_ASSIGN_OR_RETURN(std::shared_ptr<const policy::StoragePolicy> p, gate->Current());
      auto rule = policy::CheckClaim(*p, spec, device_bytes, others);
      if (!rule.ok()) {
        log::Warn("policy.denied", {{"volume", spec.id}, {"error", std::string(rule.status().message())}});
        return rule.status();
      }
      log::Info("policy.admitted", {{"volume", spec.id}, {"rule", *rule}, {"policy_version", p->policy_version}});
      return OkStatus();
    };
  }
  if (policy_gate) {
    deps.route = [gate = policy_gate.get()](
                     const VolumeSpec& spec, const policy::DeviceFacts& facts,
                     const std::vector<VolumeSpec>& others) -> StatusOr<std::optional<VolumeSpec>> {
      COCO_ASSIGN_OR_RETURN(std::shared_ptr<const policy::StoragePolicy> p, gate->Current());
      auto rule_id = policy::RouteSecureMount(*p, spec, facts, others);
      if (!rule_id.ok()) {
        log::Warn("policy.denied", {{"volume", spec.id}, {"error", std::string(rule_id.status().message())}});
        return rule_id.status();
      }
      if (rule_id->empty()) return std::optional<VolumeSpec>();
      const policy::VolumeRule* rule = p->Find(*rule_id);
      if (rule == nullptr) return absl::InternalError(Cat("routed to unknown rule ", *rule_id));
      return std::optional<VolumeSpec>(policy::PersistentSpecFromRule(spec, *rule));
    };
  }
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
  // kata-agent unmounts a SecureMount volume and says nothing more: close the
  // rest when its mount goes away (also for what vanished while we were down).
  manager.ReapUnmounted();
  MountWatcher mount_watcher;
  if (Status s = mount_watcher.Start([&manager] { manager.ReapUnmounted(); }); !s.ok()) {
    log::Error("agent.mount_watcher_failed", {{"error", std::string(s.message())}});
    return 1;
  }

  AdmissionConfig admission{settings.agent.storage_root, settings.agent.default_device_timeout,
                            settings.allow_integrity_none};
  admission.policy = policy_gate.get();
  StorageAgentService service(&manager, admission, settings.max_activations);
  // kata-agent's way in: SecureMount over ttrpc, through the same pipeline;
  // the rest of the CDH's services go on to the real CDH. (Declared before
  // the server, which calls it until it stops.)
  CdhForwarder cdh_forwarder(ForwarderOptions{settings.cdh_upstream_socket});
  ttrpc::Server ttrpc_server;
  SecureMountService secure_mount(&manager, admission);
  if (!settings.cdh_socket.empty()) {
    secure_mount.Register(ttrpc_server);
    cdh_forwarder.Register(ttrpc_server);
    Status s = MakeDirs(ParentDir(settings.cdh_socket), 0755);
    if (s.ok()) s = ttrpc_server.ListenUnix(settings.cdh_socket, 0600);
    if (!s.ok()) {
      log::Error("agent.listen_failed", {{"cdh_socket", settings.cdh_socket}, {"error", std::string(s.message())}});
      return 1;
    }
    ttrpc_server.Start();
  }
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  std::vector<unsigned> vsock_ports;
  std::vector<std::string> unix_sockets;
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
      if (Status s = MakeDirs(ParentDir(addr->address), 0700); !s.ok()) {
        log::Error("agent.listen_failed", {{"listen", uri}, {"error", std::string(s.message())}});
        return 1;
      }
      builder.AddListeningPort(Cat("unix:", addr->address), grpc::InsecureServerCredentials());
      unix_sockets.push_back(addr->address);
    } else
      vsock_ports.push_back(addr->vsock_port);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    log::Error("agent.listen_failed", {{"listen", Join(settings.listen, ",")}});
    return 1;
  }
  // The management API is root's alone (gRPC creates the socket with the umask).
  for (const auto& path : unix_sockets) {
    if (chmod(path.c_str(), 0600) != 0) {
      log::Error("agent.listen_failed", {{"listen", path}, {"error", "chmod 0600 failed"}});
      return 1;
    }
  }
  if (!vsock_ports.empty())
    log::Warn("agent.vsock_listener", {{"note", "the management API is reachable by the host over vsock"}});
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
  log::Info("agent.started",
            {{"listen", Join(settings.listen, ",")},
             {"storage_root", settings.agent.storage_root},
             {"state_dir", settings.agent.state_dir},
             {"cdh_socket", settings.cdh_socket},
             {"cdh_upstream_socket", settings.cdh_upstream_socket},
             {"key_provider", settings.keys.provider},
             {"storage_policy",
              policy_gate ? (policy_gate->Snapshot().verified() ? "verified" : "unverified") : "off (insecure)"},
             {"version", COCOSTORAGE_VERSION}});
  int sig = 0;
  sigwait(&sigs, &sig);
  log::Info("agent.stopping", {{"signal", sig}});
  for (auto& a : acceptors) a->Stop();
  ttrpc_server.Stop();
  mount_watcher.Stop();
  // Volumes stay active across an agent restart: only the API goes away.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
  return 0;
}

}  // namespace
}  // namespace cocostorage::agent

int main(int argc, char** argv) { return cocostorage::agent::Run(argc, argv); }
