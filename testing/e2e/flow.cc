#include "flow.h"

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string_view>
#include <thread>

#include "cocostorage/common/base64.h"
#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/common/unique_fd.h"
#include "init_data_writer.h"
#include "k8s_input.h"
#include "request/admission.h"

extern char** environ;

#ifndef COCO_CSI_BINARY
#define COCO_CSI_BINARY ""
#endif

namespace cocostorage::e2e {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

double MsSince(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

std::unique_ptr<grpc::ClientContext> Ctx(std::chrono::seconds s = std::chrono::seconds(30)) {
  auto c = std::make_unique<grpc::ClientContext>();
  c->set_deadline(std::chrono::system_clock::now() + s);
  return c;
}

Status FromGrpc(const grpc::Status& s, std::string_view what) {
  if (s.ok()) return OkStatus();
  return Status(static_cast<absl::StatusCode>(s.error_code()), Cat(what, ": ", s.error_message()));
}

std::string RandomUuid() {
  std::random_device rd;
  std::uniform_int_distribution<int> hex(0, 15);
  std::string s;
  for (int i = 0; i < 32; ++i) {
    if (i == 8 || i == 12 || i == 16 || i == 20) s.push_back('-');
    int v = hex(rd);
    if (i == 12) v = 4;            // version 4
    if (i == 16) v = 8 | (v & 3);  // variant 10xx
    s.push_back("0123456789abcdef"[v]);
  }
  return s;
}

// A validated activation as a request over the agent's gRPC API.
agentpb::ActivateVolumeRequest RequestFor(const agent::ValidatedActivate& v) {
  const agent::VolumeSpec& s = v.spec;
  agentpb::ActivateVolumeRequest r;
  r.set_volume_id(s.id);
  switch (s.device.kind) {
    case agent::DeviceIdKind::kPciPath:
      r.mutable_device()->set_pci_path(s.device.value);
      break;
    case agent::DeviceIdKind::kSerial:
      r.mutable_device()->set_serial(s.device.value);
      break;
    case agent::DeviceIdKind::kDevNumber:
      r.mutable_device()->set_dev_number(s.device.value);
      break;
  }
  if (s.key.ephemeral()) {
    r.mutable_key()->mutable_ephemeral();
  } else {
    r.mutable_key()->set_kbs_resource_uri(s.key.kbs_uri());
  }
  switch (s.integrity) {
    case agent::IntegrityMode::kNone:
      r.set_integrity(agentpb::INTEGRITY_NONE);
      break;
    case agent::IntegrityMode::kHmacSha256:
      r.set_integrity(agentpb::INTEGRITY_HMAC_SHA256);
      break;
    case agent::IntegrityMode::kAegis128:
      r.set_integrity(agentpb::INTEGRITY_AEGIS128);
      break;
    case agent::IntegrityMode::kAesGcm:
      r.set_integrity(agentpb::INTEGRITY_AES_GCM);
      break;
  }
  r.set_init_mode(s.init_mode == agent::InitMode::kFullWipe ? agentpb::INIT_MODE_FULL_WIPE
                                                            : agentpb::INIT_MODE_ZERO_GUARD);
  r.set_mode(s.block_mode ? agentpb::VOLUME_MODE_BLOCK : agentpb::VOLUME_MODE_FILESYSTEM);
  if (!s.block_mode) {
    auto* fs = r.mutable_filesystem();
    fs->set_fs_type(s.fs_type);
    for (const auto& o : s.mkfs_options) fs->add_mkfs_options(o);
    for (const auto& o : s.mount_options) fs->add_mount_options(o);
  }
  if (s.fs_group) r.mutable_filesystem()->set_fs_group(*s.fs_group);
  r.set_target_path(s.target_path);
  r.set_read_only(s.read_only);
  r.set_device_timeout_ms(static_cast<uint32_t>(v.device_timeout.count()));
  return r;
}

bool IsExecutable(const std::string& path) { return !path.empty() && access(path.c_str(), X_OK) == 0; }

bool OnPath(const std::string& name) {
  if (name.find('/') != std::string::npos) return IsExecutable(name);
  const char* path = std::getenv("PATH");
  for (const auto& dir : Split(path ? path : "/usr/bin:/bin", ':')) {
    if (IsExecutable(Cat(dir, "/", name))) return true;
  }
  return false;
}

bool PathExists(const std::string& p) {
  struct stat st {};
  return lstat(p.c_str(), &st) == 0;
}

std::string Tail(const std::string& s, size_t n) { return s.size() > n ? s.substr(s.size() - n) : s; }

// What kubelet sends for a ReadWriteOncePod PVC: a mount capability (fsGroup
// as volume_mount_group, CSIDriver fsGroupPolicy File) or a raw block one.
csipb::VolumeCapability Capability(const PodVolume& pod, bool with_group) {
  csipb::VolumeCapability c;
  if (pod.block) {
    c.mutable_block();
  } else {
    c.mutable_mount()->set_fs_type(pod.fs_type);
    if (with_group) c.mutable_mount()->set_volume_mount_group(std::to_string(pod.fs_group));
  }
  c.mutable_access_mode()->set_mode(csipb::VolumeCapability::AccessMode::SINGLE_NODE_SINGLE_WRITER);
  return c;
}

std::string HumanBytes(uint64_t b) {
  if (b >= kGiB) return fmt::format("{:.1f} GiB", static_cast<double>(b) / static_cast<double>(kGiB));
  if (b >= kMiB) return fmt::format("{:.1f} MiB", static_cast<double>(b) / static_cast<double>(kMiB));
  if (b >= 1024) return fmt::format("{:.1f} KiB", static_cast<double>(b) / 1024.0);
  return Cat(b, " B");
}

}  // namespace

// ---------------------------------------------------------------- CsiPlugin

CsiPlugin::CsiPlugin(std::string binary, std::string root, std::string node_id)
    : binary_(std::move(binary)), root_(std::move(root)), node_id_(std::move(node_id)) {}

CsiPlugin::~CsiPlugin() {
  identity_.reset();
  controller_.reset();
  node_.reset();
  channel_.reset();
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    int st = 0;
    while (waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
  }
}

bool CsiPlugin::Running() {
  if (pid_ <= 0) return false;
  int st = 0;
  if (waitpid(pid_, &st, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

std::string CsiPlugin::LogTail(size_t bytes) const {
  auto s = ReadFileToString(log_path());
  return s.ok() ? Tail(*s, bytes) : "";
}

Status CsiPlugin::Start(milliseconds timeout) {
  if (pid_ > 0) return absl::FailedPreconditionError("the CSI plugin is already running");
  std::vector<std::string> args = {binary_,
                                   Cat("--endpoint=unix://", socket()),
                                   Cat("--node-id=", node_id_),
                                   Cat("--backing-root=", backing_root()),
                                   Cat("--state-dir=", state_dir()),
                                   Cat("--kata-direct-volume-root=", kata_root()),
                                   Cat("--kubelet-root=", root_, "/kubelet"),
                                   "--capacity-bytes=107374182400",  // 100 GiB: sparse, nothing is reserved
                                   "--log-level=debug"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // fork + exec rather than posix_spawn, for PR_SET_PDEATHSIG: the plugin
  // dies with the thread that started it (a Ctrl-C'd demo, a crashed test),
  // like QEMU does. The child only makes async-signal-safe calls.
  UniqueFd log_fd(open(log_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  UniqueFd null_fd(open("/dev/null", O_WRONLY | O_CLOEXEC));
  if (!log_fd.valid() || !null_fd.valid()) return ErrnoStatus(errno, Cat("opening ", log_path()));
  const pid_t parent = getpid();
  pid_ = fork();
  if (pid_ < 0) return ErrnoStatus(errno, "fork");
  if (pid_ == 0) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
    sigset_t none;  // a parent waiting for signals in sigwait() has them blocked
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (dup2(null_fd.get(), 1) < 0 || dup2(log_fd.get(), 2) < 0) _exit(127);
    execve(argv[0], argv.data(), environ);
    _exit(127);
  }
  const auto deadline = Clock::now() + timeout;
  auto died = [&]() -> Status {
    return absl::InternalError(Cat("cocostorage-csi exited during start-up; log tail:\n", LogTail()));
  };
  // Connect only once the socket exists: a refused first connection puts the
  // channel into reconnect backoff.
  struct stat st {};
  while (lstat(socket().c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) {
    if (!Running()) return died();
    if (Clock::now() > deadline) return absl::DeadlineExceededError("cocostorage-csi did not create its socket");
    std::this_thread::sleep_for(milliseconds(5));
  }
  channel_ = grpc::CreateChannel(Cat("unix://", socket()), grpc::InsecureChannelCredentials());
  identity_ = csipb::Identity::NewStub(channel_);
  controller_ = csipb::Controller::NewStub(channel_);
  node_ = csipb::Node::NewStub(channel_);
  while (Clock::now() < deadline) {
    if (!Running()) return died();
    grpc::ClientContext ctx;
    ctx.set_wait_for_ready(true);
    ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(500));
    csipb::ProbeResponse resp;
    if (identity_->Probe(&ctx, csipb::ProbeRequest(), &resp).ok() && resp.ready().value()) return OkStatus();
    std::this_thread::sleep_for(milliseconds(20));
  }
  return absl::DeadlineExceededError("cocostorage-csi did not answer Probe");
}

StatusOr<int> CsiPlugin::Stop(int sig, milliseconds timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("the CSI plugin is not running");
  // Drop our connection first: an idle client connection is only serviced by
  // gRPC's backup poller, which would delay the server's graceful close.
  identity_.reset();
  controller_.reset();
  node_.reset();
  channel_.reset();
  kill(pid_, sig);
  const auto deadline = Clock::now() + timeout;
  int st = 0;
  while (true) {
    pid_t r = waitpid(pid_, &st, WNOHANG);
    if (r == pid_) break;
    if (Clock::now() > deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &st, 0);
      pid_ = -1;
      return absl::DeadlineExceededError(
          Cat("cocostorage-csi did not exit within ", timeout.count(), " ms of signal ", sig));
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
  pid_ = -1;
  if (WIFSIGNALED(st)) return absl::InternalError(Cat("cocostorage-csi was killed by signal ", WTERMSIG(st)));
  return WEXITSTATUS(st);
}

// ---------------------------------------------------------------- AgentRpc

// Up to 6 attempts of at most 5 minutes each.
AgentRpc::AgentRpc(const std::string& target)
    : client_(target, agent::RetryPolicy{.attempts = 6, .deadline = std::chrono::minutes(5)}) {}

Status AgentRpc::Activate(const agentpb::ActivateVolumeRequest& req, agentpb::Volume* out) {
  return FromGrpc(client_.Activate(req, out), "agent ActivateVolume");
}

Status AgentRpc::Deactivate(const std::string& id, bool* was_active) {
  return FromGrpc(client_.Deactivate(id, was_active), "agent DeactivateVolume");
}

Status AgentRpc::Get(const std::string& id, agentpb::Volume* out) {
  return FromGrpc(client_.Get(id, out), "agent GetVolume");
}

Status AgentRpc::List(std::vector<agentpb::Volume>* out) { return FromGrpc(client_.List(out), "agent ListVolumes"); }

Status AgentRpc::Info(agentpb::AgentInfo* out) { return FromGrpc(client_.Info(out), "agent GetAgentInfo"); }

// ---------------------------------------------------------------- Progress

Status Progress::Step(const std::string& label, const std::function<Status(std::string* note)>& fn) {
  ++n_;
  if (out_) {
    std::string head = fmt::format("[{:2}/{:2}] {} ", n_, total_, label);
    if (head.size() < 62) head.append(62 - head.size(), '.');
    std::fputs(head.c_str(), out_);
    std::fflush(out_);
  }
  std::string note;
  auto t0 = Clock::now();
  Status s = fn(&note);
  double ms = MsSince(t0);
  entries_.push_back({label, ms, s.ok()});
  if (out_) {
    std::string when = ms >= 10000 ? fmt::format("{:.1f} s", ms / 1000) : fmt::format("{:.0f} ms", ms);
    if (s.ok()) {
      std::fprintf(out_, " ok  %8s%s%s\n", when.c_str(), note.empty() ? "" : "   ", note.c_str());
    } else {
      std::fprintf(out_, " FAILED  %s\n        %s\n", when.c_str(), std::string(s.message()).c_str());
    }
    std::fflush(out_);
  }
  return s.ok() ? s : Annotate(s, label);
}

double Progress::TotalMs() const {
  double t = 0;
  for (const auto& e : entries_) t += e.ms;
  return t;
}

// ---------------------------------------------------------------- host view

StatusOr<HostView> InspectBackingFile(const std::string& path, const std::string& secret) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return ErrnoStatus(errno, Cat("stat ", path));
  HostView v;
  v.apparent_bytes = static_cast<uint64_t>(st.st_size);
  v.allocated_bytes = static_cast<uint64_t>(st.st_blocks) * 512;
  v.data_blocks = BlockHashes(path).size();
  v.secret_found = FileContains(path, secret);
  v.luks_magic_found = FileContains(path, "LUKS\xba\xbe") || FileContains(path, "SKUL\xba\xbe");
  return v;
}

// ---------------------------------------------------------------- Flow

StatusOr<std::unique_ptr<Flow>> Flow::Create(const FlowOptions& options) {
  std::unique_ptr<Flow> f(new Flow(options));
  FlowOptions& o = f->options_;
  if (o.csi_binary.empty()) {
    const char* env = std::getenv("COCOSTORAGE_CSI_BINARY");
    o.csi_binary = env && *env ? env : COCO_CSI_BINARY;
  }
  if (!IsExecutable(o.csi_binary)) {
    return absl::FailedPreconditionError(
        Cat("missing prerequisite: the CSI plugin binary \"", o.csi_binary,
            "\" is not an executable file (build target cocostorage-csi, or set COCOSTORAGE_CSI_BINARY)"));
  }
  if (!OnPath(o.qemu_binary)) {
    return absl::FailedPreconditionError(
        Cat("missing prerequisite: ", o.qemu_binary, " is not on PATH (Debian: apt-get install qemu-system-x86)"));
  }
  if (o.image_dir.empty()) {
    f->image_ = vmtest::DefaultGuestImage();
  } else {
    f->image_ = {Cat(o.image_dir, "/vmlinuz"), Cat(o.image_dir, "/initrd.gz")};
  }
  for (const auto& [what, p] :
       {std::pair{"guest kernel", f->image_.kernel}, std::pair{"guest initrd", f->image_.initrd}}) {
    if (!PathExists(p)) {
      return absl::FailedPreconditionError(
          Cat("missing prerequisite: the ", what, " ", p,
              " does not exist (build target vm_guest_image, or set COCOSTORAGE_VM_IMAGE_DIR)"));
    }
  }
  COCO_ASSIGN_OR_RETURN(f->root_, TempDir::Make(o.temp_parent, "cocoE2E"));
  f->plugin_ = std::make_unique<CsiPlugin>(o.csi_binary, f->root_.path(), o.node_id);
  COCO_RETURN_IF_ERROR(MakeDirs(Cat(f->root_.path(), "/kubelet/pods"), 0750));
  return f;
}

Flow::~Flow() {
  agent_.reset();
  vm_.reset();      // kills QEMU if still running
  plugin_.reset();  // SIGKILL if still running
}

Status Flow::StartPlugin() { return plugin_->Start(); }

StatusOr<int> Flow::StopPlugin(int sig) { return plugin_->Stop(sig); }

Status Flow::RestartPlugin() {
  COCO_ASSIGN_OR_RETURN(int code, plugin_->Stop(SIGTERM));
  if (code != 0) return absl::InternalError(Cat("cocostorage-csi exited with ", code, " on SIGTERM"));
  return plugin_->Start();
}

Status Flow::Identify(std::string* note) {
  csipb::GetPluginInfoResponse info;
  COCO_RETURN_IF_ERROR(FromGrpc(plugin_->identity().GetPluginInfo(Ctx().get(), {}, &info), "GetPluginInfo"));
  if (info.name() != kDriverName) {
    return absl::InternalError(Cat("GetPluginInfo name is \"", info.name(), "\", want ", kDriverName));
  }
  csipb::ProbeResponse probe;
  COCO_RETURN_IF_ERROR(FromGrpc(plugin_->identity().Probe(Ctx().get(), {}, &probe), "Probe"));
  if (!probe.ready().value()) return absl::UnavailableError("Probe: not ready");
  csipb::GetPluginCapabilitiesResponse caps;
  COCO_RETURN_IF_ERROR(
      FromGrpc(plugin_->identity().GetPluginCapabilities(Ctx().get(), {}, &caps), "GetPluginCapabilities"));
  csipb::NodeGetInfoResponse node;
  COCO_RETURN_IF_ERROR(FromGrpc(plugin_->node().NodeGetInfo(Ctx().get(), {}, &node), "NodeGetInfo"));
  if (node.node_id() != options_.node_id) {
    return absl::InternalError(Cat("NodeGetInfo node_id \"", node.node_id(), "\", want ", options_.node_id));
  }
  topology_.clear();
  for (const auto& [k, v] : node.accessible_topology().segments()) topology_[k] = v;
  if (topology_.count(kTopologyKey) == 0) return absl::InternalError("NodeGetInfo has no topology segment");
  if (note) *note = Cat(info.name(), " ", info.vendor_version(), ", node ", node.node_id());
  return OkStatus();
}

PodVolume Flow::NewPod(const std::string& pod_name, uint64_t bytes) {
  PodVolume p;
  p.pod_name = pod_name;
  p.pod_uid = RandomUuid();
  p.pvc_name = Cat(pod_name, "-encrypted");  // generic ephemeral: <pod>-<volume name>
  p.pv_name = Cat("pvc-", RandomUuid());     // what external-provisioner passes as name
  p.size_bytes = bytes;
  p.fs_group = 1000;  // the example pod's securityContext.fsGroup
  int n = next_pod_++;
  p.qemu_id = Cat("e2evol", n);
  p.serial = Cat("coco-e2e-", n);
  return p;
}

PodVolume Flow::NewPodOnClaim(const PodVolume& earlier, const std::string& pod_name) {
  PodVolume p = NewPod(pod_name, earlier.size_bytes);
  p.pod_namespace = earlier.pod_namespace;
  p.pvc_name = earlier.pvc_name;
  p.pv_name = earlier.pv_name;
  p.class_parameters = earlier.class_parameters;
  p.fs_type = earlier.fs_type;
  p.block = earlier.block;
  p.integrity = earlier.integrity;
  p.fs_group = earlier.fs_group;
  p.volume_id = earlier.volume_id;
  p.volume_context = earlier.volume_context;
  p.volume_context["csi.storage.k8s.io/pod.name"] = p.pod_name;
  p.volume_context["csi.storage.k8s.io/pod.uid"] = p.pod_uid;
  SetKubeletPaths(p);
  return p;
}

void Flow::SetKubeletPaths(PodVolume& pod) {
  std::string kubelet = Cat(root_.path(), "/kubelet");
  pod.staging_path =
      Cat(kubelet, "/plugins/kubernetes.io/csi/", kDriverName, "/",
          pod.volume_id.substr(pod.volume_id.size() > 16 ? pod.volume_id.size() - 16 : 0), "/globalmount");
  pod.target_path = Cat(kubelet, "/pods/", pod.pod_uid, "/volumes/kubernetes.io~csi/", pod.pv_name, "/mount");
}

Status Flow::CreateVolume(PodVolume& pod) {
  csipb::CreateVolumeRequest req;
  req.set_name(pod.pv_name);
  req.mutable_capacity_range()->set_required_bytes(static_cast<int64_t>(pod.size_bytes));
  *req.add_volume_capabilities() = Capability(pod, false);
  auto& params = *req.mutable_parameters();
  if (pod.class_parameters.empty()) {
    params["keySource"] = "ephemeral";  // StorageClass cocostorage-ephemeral
    if (!pod.block) params["fsType"] = pod.fs_type;
    params["integrity"] = pod.integrity;
  } else {
    for (const auto& [k, v] : pod.class_parameters) params[k] = v;
  }
  params["csi.storage.k8s.io/pvc/name"] = pod.pvc_name;  // --extra-create-metadata
  params["csi.storage.k8s.io/pvc/namespace"] = pod.pod_namespace;
  params["csi.storage.k8s.io/pv/name"] = pod.pv_name;
  // WaitForFirstConsumer + distributed provisioning: the selected node.
  csipb::Topology topo;
  for (const auto& [k, v] : topology_) (*topo.mutable_segments())[k] = v;
  *req.mutable_accessibility_requirements()->add_requisite() = topo;
  *req.mutable_accessibility_requirements()->add_preferred() = topo;
  csipb::CreateVolumeResponse resp;
  COCO_RETURN_IF_ERROR(FromGrpc(plugin_->controller().CreateVolume(Ctx().get(), req, &resp), "CreateVolume"));
  const auto& v = resp.volume();
  if (v.volume_id().empty()) return absl::InternalError("CreateVolume returned no volume_id");
  if (v.capacity_bytes() < static_cast<int64_t>(pod.size_bytes)) {
    return absl::InternalError(Cat("CreateVolume capacity ", v.capacity_bytes(), " < requested ", pod.size_bytes));
  }
  pod.volume_id = v.volume_id();
  pod.volume_context.clear();
  for (const auto& [k, val] : v.volume_context()) pod.volume_context[k] = val;
  // kubelet adds the pod info (CSIDriver podInfoOnMount: true); a generic
  // ephemeral volume is a PVC, so ephemeral is "false".
  pod.volume_context["csi.storage.k8s.io/pod.name"] = pod.pod_name;
  pod.volume_context["csi.storage.k8s.io/pod.namespace"] = pod.pod_namespace;
  pod.volume_context["csi.storage.k8s.io/pod.uid"] = pod.pod_uid;
  pod.volume_context["csi.storage.k8s.io/serviceAccount.name"] = "default";
  pod.volume_context["csi.storage.k8s.io/ephemeral"] = "false";
  SetKubeletPaths(pod);  // under our fake kubelet root
  return OkStatus();
}

Status Flow::StageVolume(PodVolume& pod) {
  COCO_RETURN_IF_ERROR(MakeDirs(pod.staging_path, 0750));  // kubelet creates the staging dir
  csipb::NodeStageVolumeRequest req;
  req.set_volume_id(pod.volume_id);
  req.set_staging_target_path(pod.staging_path);
  *req.mutable_volume_capability() = Capability(pod, true);
  for (const auto& [k, v] : pod.volume_context) (*req.mutable_volume_context())[k] = v;
  csipb::NodeStageVolumeResponse resp;
  return FromGrpc(plugin_->node().NodeStageVolume(Ctx().get(), req, &resp), "NodeStageVolume");
}

Status Flow::PublishVolume(PodVolume& pod) {
  std::string parent = pod.target_path.substr(0, pod.target_path.rfind('/'));
  COCO_RETURN_IF_ERROR(MakeDirs(parent, 0750));  // kubelet creates the parent, the plugin the target
  csipb::NodePublishVolumeRequest req;
  req.set_volume_id(pod.volume_id);
  req.set_staging_target_path(pod.staging_path);
  req.set_target_path(pod.target_path);
  *req.mutable_volume_capability() = Capability(pod, true);
  req.set_readonly(false);
  for (const auto& [k, v] : pod.volume_context) (*req.mutable_volume_context())[k] = v;
  csipb::NodePublishVolumeResponse resp;
  return FromGrpc(plugin_->node().NodePublishVolume(Ctx().get(), req, &resp), "NodePublishVolume");
}

Status Flow::UnpublishVolume(PodVolume& pod) {
  csipb::NodeUnpublishVolumeRequest req;
  req.set_volume_id(pod.volume_id);
  req.set_target_path(pod.target_path);
  csipb::NodeUnpublishVolumeResponse resp;
  return FromGrpc(plugin_->node().NodeUnpublishVolume(Ctx().get(), req, &resp), "NodeUnpublishVolume");
}

Status Flow::UnstageVolume(PodVolume& pod) {
  csipb::NodeUnstageVolumeRequest req;
  req.set_volume_id(pod.volume_id);
  req.set_staging_target_path(pod.staging_path);
  csipb::NodeUnstageVolumeResponse resp;
  COCO_RETURN_IF_ERROR(FromGrpc(plugin_->node().NodeUnstageVolume(Ctx().get(), req, &resp), "NodeUnstageVolume"));
  // kubelet removes the staging dir it made.
  rmdir(pod.staging_path.c_str());
  return OkStatus();
}

Status Flow::DeleteVolume(PodVolume& pod) {
  csipb::DeleteVolumeRequest req;
  req.set_volume_id(pod.volume_id);
  csipb::DeleteVolumeResponse resp;
  return FromGrpc(plugin_->controller().DeleteVolume(Ctx().get(), req, &resp), "DeleteVolume");
}

Status Flow::ReadMountInfo(PodVolume& pod) {
  pod.mount_info_dir = Cat(plugin_->kata_root(), "/", DirectVolumeDirName(pod.target_path));
  const std::string file = Cat(pod.mount_info_dir, "/mountInfo.json");
  struct stat st {};
  if (stat(pod.mount_info_dir.c_str(), &st) != 0) {
    return ErrnoStatus(errno, Cat("no direct-volume dir for ", pod.target_path, " at ", pod.mount_info_dir));
  }
  if ((st.st_mode & 0777) != 0700) {
    return absl::InternalError(
        Cat(pod.mount_info_dir, " has mode ", fmt::format("{:o}", st.st_mode & 0777), ", want 700"));
  }
  if (stat(file.c_str(), &st) != 0) return ErrnoStatus(errno, Cat("stat ", file));
  if ((st.st_mode & 0777) != 0600) {
    return absl::InternalError(Cat(file, " has mode ", fmt::format("{:o}", st.st_mode & 0777), ", want 600"));
  }
  COCO_ASSIGN_OR_RETURN(pod.mount_info_json, ReadFileToString(file, 1 << 20));
  COCO_ASSIGN_OR_RETURN(pod.mount_info, ParseMountInfo(pod.mount_info_json));
  if (!PathExists(pod.mount_info.device)) {
    return absl::NotFoundError(Cat("mountInfo.json names device ", pod.mount_info.device, ", which does not exist"));
  }
  // The runtime drops an empty file named after the sandbox next to
  // mountInfo.json; NodeUnpublishVolume must clean it up too.
  if (pod.sandbox_id.empty()) pod.sandbox_id = Cat(RandomUuid(), RandomUuid()).substr(0, 64);
  COCO_RETURN_IF_ERROR(AtomicWriteFile(Cat(pod.mount_info_dir, "/", pod.sandbox_id), "", 0600));
  return OkStatus();
}

Status Flow::BootVm() {
  vmtest::GuestVmOptions o;
  o.kernel = image_.kernel;
  o.initrd = image_.initrd;
  o.memory_mib = options_.vm_memory_mib;
  o.root_ports = options_.vm_root_ports;
  o.qemu_binary = options_.qemu_binary;
  COCO_ASSIGN_OR_RETURN(vm_, vmtest::GuestVm::Start(o));
  COCO_RETURN_IF_ERROR(vm_->WaitAgentListening());
  if (kbs_) COCO_RETURN_IF_ERROR(ConfigureKbsAgent());
  agent_ = std::make_unique<AgentRpc>(vm_->AgentTarget());
  agentpb::AgentInfo info;
  COCO_RETURN_IF_ERROR(agent_->Info(&info));
  if (info.storage_root() != kKataSandboxStorageDir) {
    return absl::InternalError(Cat("agent storage root is ", info.storage_root(), ", want ", kKataSandboxStorageDir));
  }
  (void)NewKernelErrors();  // boot messages are nobody's fault
  return OkStatus();
}

Status Flow::ConfigureKbsAgent() {
  constexpr char kCa[] = "/run/kbs/ca.pem";
  constexpr char kInitData[] = "/run/confidential-containers/initdata/initdata.toml";
  COCO_ASSIGN_OR_RETURN(std::string ca, ReadFileToString(kbs_->ca_bundle()));
  COCO_RETURN_IF_ERROR(Guest(Cat("mkdir -p /run/kbs && echo ", Base64Encode(ca), " | base64 -d > ", kCa)).status());
  // The image's default arguments (testing/vm/guest/init.sh), as a KBS client.
  std::vector<std::string> args = {"--listen=tcp://0.0.0.0:7001",
                                   Cat("--storage-root=", kKataSandboxStorageDir),
                                   "--state-dir=/run/cocostorage",
                                   "--key-provider=kbs",
                                   Cat("--kbs-url=", kbs_->url("10.0.2.2")),  // the host's loopback
                                   Cat("--kbs-ca-bundle=", kCa),
                                   "--attester=sample",
                                   "--insecure-test-build"};
  if (init_data_.empty()) {
    args.push_back("--insecure-no-storage-policy");
  } else {
    // Where kata-agent leaves the init-data; the configured digest stands in
    // for the TEE's HOST_DATA (no SNP here).
    COCO_RETURN_IF_ERROR(Guest(Cat("mkdir -p /run/confidential-containers/initdata && echo ", Base64Encode(init_data_),
                                   " | base64 -d > ", kInitData))
                             .status());
    args.insert(args.end(), {"--policy-verifier=configured-digest", Cat("--init-data=", kInitData),
                             Cat("--init-data-digest=", init_data_digest_)});
  }
  COCO_RETURN_IF_ERROR(vm_->StopAgent());
  COCO_RETURN_IF_ERROR(vm_->SetAgentCommandLine(args, {}));
  COCO_RETURN_IF_ERROR(vm_->StartAgent());
  return vm_->WaitAgentListening();
}

Status Flow::StartKbs(const std::map<std::string, std::string>& keys) {
  if (kbs_) return absl::FailedPreconditionError("the KBS is already running");
  const std::string dir = Cat(root_.path(), "/kbs");
  COCO_RETURN_IF_ERROR(MakeDirs(dir, 0700));
  auto kbs =
      std::make_unique<::cocostorage::testing::TestKbsProcess>(dir, std::vector<std::string>{"10.0.2.2", "127.0.0.1"});
  nlohmann::json resources = nlohmann::json::object();
  for (const auto& [path, hex] : keys) resources[path] = {{"hex", hex}};
  nlohmann::json config = {{"resources", resources}, {"allowed_tees", {"sample"}}, {"policy", {{"default", "allow"}}}};
  if (!kbs->Start(config, 0)) {
    return absl::UnavailableError(Cat("the test KBS (", ::cocostorage::testing::TestKbsProcess::Script(),
                                      ") did not start; see ", dir, "/server.stderr"));
  }
  kbs_ = std::move(kbs);
  return OkStatus();
}

Status Flow::GeneratePolicy(const std::vector<std::string>& yaml_files, const policygen::GeneratorOptions& options,
                            std::string* note) {
  policygen::K8sInputs k8s;
  for (const std::string& path : yaml_files) {
    COCO_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path, 16 << 20));
    COCO_RETURN_IF_ERROR(policygen::ParseK8sYaml(text, path, &k8s));
  }
  COCO_ASSIGN_OR_RETURN(policygen::GeneratedPolicy g, policygen::BuildStoragePolicy(k8s, options));
  COCO_ASSIGN_OR_RETURN(std::string algorithm, policygen::AlgorithmForTee("snp"));
  COCO_ASSIGN_OR_RETURN(init_data_,
                        policygen::BuildInitData(agent::policy::SerializeStoragePolicy(g.policy), algorithm));
  COCO_ASSIGN_OR_RETURN(init_data_digest_, policygen::InitDataDigestHex(init_data_));
  if (note)
    *note = Cat(g.policy.volumes.size(), " volume rule(s), init-data sha256 ", init_data_digest_.substr(0, 16), "...");
  return OkStatus();
}

std::string Flow::LastAgentAction(const PodVolume& pod) {
  if (!vm_) return "";
  auto log = vm_->AgentLog();
  if (!log.ok()) return "";
  std::string action;
  std::istringstream in(*log);
  for (std::string line; std::getline(in, line);) {
    if (line.find("volume.activated") == std::string::npos) continue;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("volume", "") == pod.agent_volume_id && j.contains("action")) {
      action = j["action"].get<std::string>();
    }
  }
  return action;
}

Status Flow::BringUpPod(PodVolume& pod) {
  COCO_RETURN_IF_ERROR(StageVolume(pod));
  COCO_RETURN_IF_ERROR(PublishVolume(pod));
  COCO_RETURN_IF_ERROR(ReadMountInfo(pod));
  COCO_RETURN_IF_ERROR(HotplugDevice(pod));
  COCO_RETURN_IF_ERROR(BuildStorage(pod));
  COCO_RETURN_IF_ERROR(KataAgentResolve(pod));
  COCO_RETURN_IF_ERROR(KataAgentSecureMount(pod));
  return VerifyAgentVolume(pod);
}

Status Flow::EndPod(PodVolume& pod) {
  COCO_RETURN_IF_ERROR(KataAgentUnmount(pod));
  COCO_RETURN_IF_ERROR(WaitForAgentCleanup(pod));
  COCO_RETURN_IF_ERROR(UnplugDevice(pod));
  COCO_RETURN_IF_ERROR(UnpublishVolume(pod));
  return UnstageVolume(pod);
}

Status Flow::HotplugDevice(PodVolume& pod) {
  if (!vm_) return absl::FailedPreconditionError("the VM is not running");
  // QEMU opens the backing file named by the descriptor, like Kata's
  // hypervisor does for a direct-assigned block volume.
  COCO_ASSIGN_OR_RETURN(pod.pci_path, vm_->Hotplug(pod.mount_info.device, pod.qemu_id, pod.serial));
  return OkStatus();
}

Status Flow::BuildStorage(PodVolume& pod) {
  COCO_ASSIGN_OR_RETURN(pod.storage, BuildKataStorage(pod.mount_info, pod.pci_path));
  return OkStatus();
}

Status Flow::MapToAgentRequest(PodVolume& pod) {
  COCO_RETURN_IF_ERROR(BuildStorage(pod));
  // The Storage through the agent's own adapter and admission layer (the
  // rules the guest applies), then as a request over the agent's API.
  COCO_ASSIGN_OR_RETURN(agent::ActivationRequest a,
                        agent::ActivationFromKataStorage(pod.storage, std::chrono::seconds(30)));
  COCO_ASSIGN_OR_RETURN(agent::ValidatedActivate v,
                        agent::Admit(a, agent::AdmissionConfig{kKataSandboxStorageDir, std::chrono::seconds(30)}));
  pod.request = RequestFor(v);
  pod.agent_volume_id = pod.request.volume_id();
  return OkStatus();
}

Status Flow::KataAgentResolve(PodVolume& pod) {
  if (!vm_) return absl::FailedPreconditionError("the VM is not running");
  // kata-agent decides before it touches the device.
  COCO_RETURN_IF_ERROR(KataAgentRoute(pod.storage));
  COCO_ASSIGN_OR_RETURN(std::string script, PciPathToDevNumberScript(pod.storage.source));
  COCO_ASSIGN_OR_RETURN(std::string out, Guest(script, std::chrono::seconds(60)));
  pod.dev_number = std::string(TrimWhitespace(out));
  COCO_ASSIGN_OR_RETURN(pod.secure_mount, SecureMountCallFor(pod.storage, pod.dev_number));
  pod.agent_volume_id = SecureMountVolumeId(pod.storage.mount_point);
  return OkStatus();
}

Status Flow::KataAgentSecureMount(PodVolume& pod) {
  if (!vm_) return absl::FailedPreconditionError("the VM is not running");
  if (pod.secure_mount.device_id.empty()) return absl::FailedPreconditionError("KataAgentResolve has not run");
  // kata-agent's cdh_api_timeout is 50 s; TCG is slower than a real node.
  COCO_ASSIGN_OR_RETURN(vmtest::ExecResult r,
                        vm_->Exec(pod.secure_mount.GuestCommand(), std::chrono::minutes(3), {.merge_output = true}));
  COCO_RETURN_IF_ERROR(SecureMountOutputToStatus(r.out, r.exit_code));
  // After the call kata-agent applies the pod's fsGroup itself (the request
  // carries none): the group on everything, group rw, setgid on the root.
  for (const auto& o : pod.storage.driver_options) {
    if (o.rfind("fsGroup=", 0) != 0) continue;
    const std::string gid = o.substr(8);
    const std::string mp = pod.secure_mount.mount_point;
    COCO_RETURN_IF_ERROR(
        Guest(Cat("chgrp -R ", gid, " '", mp, "' && chmod -R g+rwX '", mp, "' && chmod g+s '", mp, "'")).status());
  }
  return OkStatus();
}

Status Flow::VerifyAgentVolume(PodVolume& pod) {
  COCO_RETURN_IF_ERROR(agent_->Get(pod.agent_volume_id, &pod.volume));
  if (pod.volume.state() != agentpb::VOLUME_STATE_ACTIVE) {
    return absl::InternalError(Cat("volume ", pod.agent_volume_id, " is not ACTIVE: ", pod.volume.message()));
  }
  if (pod.volume.target_path() != pod.storage.mount_point) {
    return absl::InternalError(Cat("volume ", pod.agent_volume_id, " is at ", pod.volume.target_path(),
                                   ", the Storage's mount point is ", pod.storage.mount_point));
  }
  return OkStatus();
}

Status Flow::KataAgentUnmount(PodVolume& pod) {
  const std::string& mp = pod.storage.mount_point;
  COCO_RETURN_IF_ERROR(Guest(Cat("umount '", mp, "'")).status());
  // The agent may remove the directory itself while it tears down.
  return Guest(Cat("rmdir '", mp, "' 2>/dev/null || ! test -e '", mp, "'")).status();
}

Status Flow::WaitForAgentCleanup(PodVolume& pod, milliseconds timeout, double* seconds) {
  const auto t0 = Clock::now();
  agentpb::Volume v;
  while (true) {
    Status s = agent_->Get(pod.agent_volume_id, &v);
    if (s.code() == absl::StatusCode::kNotFound) break;
    if (!s.ok()) return s;
    if (Clock::now() - t0 > timeout) {
      return absl::DeadlineExceededError(Cat("the agent still has ", pod.agent_volume_id, " (", v.message(), ") ",
                                             timeout.count(), " ms after the unmount"));
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
  if (seconds) *seconds = MsSince(t0) / 1000;
  // The record goes last (after the mappings), so nothing may be left now.
  COCO_ASSIGN_OR_RETURN(std::string dm, Guest(Cat("dmsetup ls 2>/dev/null | grep '^coco-", pod.agent_volume_id,
                                                  "[:[:space:]]' || true")));
  if (!TrimWhitespace(dm).empty()) {
    return absl::InternalError(
        Cat("the agent forgot ", pod.agent_volume_id, " but left mappings: ", TrimWhitespace(dm)));
  }
  return OkStatus();
}

Status Flow::Activate(PodVolume& pod) {
  pod.agent_volume_id = pod.request.volume_id();
  COCO_RETURN_IF_ERROR(agent_->Activate(pod.request, &pod.volume));
  if (pod.volume.state() != agentpb::VOLUME_STATE_ACTIVE) {
    return absl::InternalError(Cat("volume ", pod.volume.volume_id(), " is not ACTIVE: ", pod.volume.message()));
  }
  return OkStatus();
}

Status Flow::Deactivate(PodVolume& pod) {
  bool was_active = false;
  COCO_RETURN_IF_ERROR(agent_->Deactivate(pod.request.volume_id(), &was_active));
  if (!was_active) return absl::InternalError(Cat("DeactivateVolume: ", pod.request.volume_id(), " was not active"));
  return OkStatus();
}

Status Flow::UnplugDevice(PodVolume& pod) {
  COCO_RETURN_IF_ERROR(vm_->Unplug(pod.qemu_id));
  return vm_->WaitForDiskGone(pod.serial);
}

Status Flow::ShutdownVm(std::string* note) {
  if (!vm_) return OkStatus();
  agent_.reset();
  pid_t pid = vm_->QemuPid();
  // busybox poweroff -f: QEMU exits when the guest powers off.
  (void)vm_->Exec("(sleep 0.3; sync; poweroff -f) >/dev/null 2>&1 &", std::chrono::seconds(10));
  bool clean = false;
  for (auto deadline = Clock::now() + std::chrono::seconds(30); Clock::now() < deadline;) {
    if (!vm_->Alive()) {
      clean = true;
      break;
    }
    std::this_thread::sleep_for(milliseconds(50));
  }
  vm_.reset();  // kills QEMU if it did not power off; removes the VM's temp dir
  if (pid > 0 && (kill(pid, 0) == 0 || errno != ESRCH)) {
    return absl::InternalError(Cat("QEMU pid ", pid, " is still there after shutdown"));
  }
  if (note) *note = clean ? Cat("guest powered off, QEMU pid ", pid, " gone") : Cat("QEMU pid ", pid, " killed, gone");
  return OkStatus();
}

StatusOr<std::string> Flow::Guest(const std::string& cmd, milliseconds timeout) {
  if (!vm_) return absl::FailedPreconditionError("the VM is not running");
  COCO_ASSIGN_OR_RETURN(vmtest::ExecResult r, vm_->Exec(cmd, timeout, {.merge_output = true}));
  if (r.exit_code != 0) {
    return absl::InternalError(Cat("guest command failed (exit ", r.exit_code, "): ", cmd, "\n", Tail(r.out, 2000)));
  }
  return r.out;
}

Status Flow::WriteAndReadBackSecret(const PodVolume& pod, const std::string& secret, int lines) {
  if (pod.block) {
    // Raw block: the text at offset 0 of the device node the agent made at
    // the mount point, read back with O_DIRECT (no page cache involved).
    const std::string dev = pod.volume.target_path();
    COCO_RETURN_IF_ERROR(Guest(Cat("test -b ", dev, " && for i in $(seq 1 ", lines, "); do echo ", secret,
                                   "; done > /tmp/block-secret && dd if=/tmp/block-secret of=", dev,
                                   " bs=4096 conv=fsync 2>/dev/null && sync"))
                             .status());
    COCO_ASSIGN_OR_RETURN(std::string count,
                          Guest(Cat("echo 3 > /proc/sys/vm/drop_caches && dd if=", dev,
                                    " bs=4096 iflag=direct count=$(( ($(wc -c < /tmp/block-secret) + 4095) / 4096 ))"
                                    " 2>/dev/null | grep -c ",
                                    secret, "; rm -f /tmp/block-secret")));
    if (std::string(TrimWhitespace(count)) != std::to_string(lines)) {
      return absl::DataLossError(
          Cat("read back ", TrimWhitespace(count), " secret lines from the block device, wrote ", lines));
    }
    return OkStatus();
  }
  const std::string file = Cat(pod.volume.target_path(), "/secret.txt");
  COCO_RETURN_IF_ERROR(Guest(Cat("for i in $(seq 1 ", lines, "); do echo ", secret, "; done > ", file,
                                 " && chown 1000:", pod.fs_group, " ", file, " && sync"))
                           .status());
  COCO_ASSIGN_OR_RETURN(std::string count,
                        Guest(Cat("echo 3 > /proc/sys/vm/drop_caches && grep -c ", secret, " ", file)));
  if (std::string(TrimWhitespace(count)) != std::to_string(lines)) {
    return absl::DataLossError(Cat("read back ", TrimWhitespace(count), " secret lines, wrote ", lines));
  }
  return OkStatus();
}

Status Flow::TamperAndExpectEio(const PodVolume& pod, const std::map<uint64_t, uint64_t>& before, std::string* note) {
  const std::string& backing = pod.mount_info.device;
  auto after = BlockHashes(backing);
  std::vector<uint64_t> changed = ChangedBlocks(before, after);
  if (changed.empty()) return absl::InternalError("no block of the backing file changed; nothing to tamper with");
  COCO_RETURN_IF_ERROR(FlipBytes(backing, changed));
  const std::string file = Cat(pod.volume.target_path(), "/secret.txt");
  COCO_ASSIGN_OR_RETURN(vmtest::ExecResult r,
                        vm_->Exec(Cat("echo 3 > /proc/sys/vm/drop_caches; cat ", file, " > /dev/null"),
                                  std::chrono::minutes(2), {.merge_output = true}));
  if (r.exit_code == 0) return absl::DataLossError("the guest read the tampered file without an error");
  if (r.out.find("Input/output error") == std::string::npos) {
    return absl::InternalError(Cat("the tampered read failed, but not with EIO: ", Tail(r.out, 500)));
  }
  COCO_ASSIGN_OR_RETURN(std::vector<std::string> errors, NewKernelErrors());
  bool integrity = false;
  for (const auto& e : errors) {
    integrity = integrity || e.find("INTEGRITY AEAD ERROR") != std::string::npos ||
                e.find("Checksum failed") != std::string::npos || e.find("integrity") != std::string::npos;
  }
  if (!integrity) {
    return absl::InternalError(Cat("no integrity error in the guest kernel log; lines: ", Join(errors, " | ")));
  }
  if (note) {
    std::string first;
    for (const auto& e : errors) {
      if (e.find("INTEGRITY AEAD ERROR") != std::string::npos || e.find("Checksum failed") != std::string::npos) {
        first = e;
        break;
      }
    }
    auto pos = first.find("device-mapper");
    if (pos != std::string::npos) first = first.substr(pos);
    *note = Cat(changed.size(), " blocks flipped; cat: EIO; dmesg: ", Tail(first, 70));
  }
  return OkStatus();
}

StatusOr<std::vector<std::string>> Flow::NewKernelErrors() {
  COCO_ASSIGN_OR_RETURN(std::string log, Guest("dmesg -c"));
  return vmtest::GuestVm::IntegrityErrors(log);
}

Status Flow::CheckNothingLeaked(const PodVolume& pod) {
  std::vector<std::string> leaks;
  if (!pod.mount_info.device.empty() && PathExists(pod.mount_info.device)) {
    leaks.push_back(Cat("backing file ", pod.mount_info.device));
  }
  if (!pod.mount_info_dir.empty() && PathExists(pod.mount_info_dir)) {
    leaks.push_back(Cat("direct-volume dir ", pod.mount_info_dir));
  }
  if (PathExists(Cat(plugin_->state_dir(), "/", pod.volume_id, ".json"))) {
    leaks.push_back(Cat("CSI state record for ", pod.volume_id));
  }
  if (PathExists(pod.target_path)) leaks.push_back(Cat("kubelet target ", pod.target_path));
  if (vm_) {
    COCO_ASSIGN_OR_RETURN(std::string dm, Guest("dmsetup ls 2>/dev/null | grep coco- || true"));
    if (!TrimWhitespace(dm).empty()) leaks.push_back(Cat("guest dm mappings: ", TrimWhitespace(dm)));
    COCO_ASSIGN_OR_RETURN(std::string mounts, Guest(Cat("grep ' ", kKataSandboxStorageDir, "/' /proc/mounts || true")));
    if (!TrimWhitespace(mounts).empty()) leaks.push_back(Cat("guest mounts: ", TrimWhitespace(mounts)));
    if (!pod.storage.mount_point.empty()) {
      COCO_ASSIGN_OR_RETURN(std::string mp,
                            Guest(Cat("test -e ", pod.storage.mount_point, " && echo present || true")));
      if (!TrimWhitespace(mp).empty()) leaks.push_back(Cat("guest mount point ", pod.storage.mount_point));
    }
    COCO_ASSIGN_OR_RETURN(std::string disk,
                          Guest(Cat("grep -l '^", pod.serial, "$' /sys/block/vd*/serial 2>/dev/null || true")));
    if (!TrimWhitespace(disk).empty()) leaks.push_back(Cat("guest disk with serial ", pod.serial));
    std::vector<agentpb::Volume> vols;
    COCO_RETURN_IF_ERROR(agent_->List(&vols));
    for (const auto& v : vols) {
      if (v.volume_id() == pod.agent_volume_id) leaks.push_back(Cat("agent record ", v.volume_id()));
    }
  }
  if (!leaks.empty()) return absl::InternalError(Cat("leaked: ", Join(leaks, "; ")));
  return OkStatus();
}

std::string Flow::Diagnostics() {
  std::string out = Cat("---- CSI plugin log tail (", plugin_->log_path(), ") ----\n", plugin_->LogTail(3000), "\n");
  if (vm_) {
    auto log = vm_->AgentLog();
    if (log.ok()) out += Cat("---- guest agent log tail ----\n", Tail(*log, 3000), "\n");
    out += Cat("---- guest console tail ----\n", vm_->ConsoleTail(3000), "\n");
  }
  return out;
}

// ---------------------------------------------------------------- RunDemo

Status RunDemo(const FlowOptions& options, FILE* out, DemoResult* result) {
  auto t_start = Clock::now();
  COCO_ASSIGN_OR_RETURN(std::unique_ptr<Flow> flow, Flow::Create(options));
  Flow& f = *flow;
  constexpr int kSteps = 35;
  Progress p(out, kSteps);
  // The example pod: deploy/examples/ephemeral-pod.yaml (10G generic ephemeral volume).
  PodVolume pod = f.NewPod("cocostorage-ephemeral-demo", 10'000'000'000ull);
  const std::string secret = Cat("COCO-DEMO-SECRET-", RandomUuid());
  std::map<uint64_t, uint64_t> before_write;
  HostView host;
  double cleanup_s = 0;
  // Part 2: the example StatefulSet's persistent claim
  // (deploy/examples/storageclass-kbs.yaml + statefulset-kbs.yaml, replica 0).
  const std::vector<std::string> pv_yaml = {Cat(COCOSTORAGE_SOURCE_DIR, "/deploy/examples/storageclass-kbs.yaml"),
                                            Cat(COCOSTORAGE_SOURCE_DIR, "/deploy/examples/statefulset-kbs.yaml")};
  const std::string pv_key_path = "default/volume-keys/data-cocostorage-kbs-demo-0";
  PodVolume pv;
  PodVolume pv2;
  HostView pv_host;
  const std::string pv_secret = Cat("COCO-DEMO-PERSISTENT-", RandomUuid());
  auto policy_options = [](agent::policy::CreateRule create, uint32_t version) {
    policygen::GeneratorOptions g;
    g.default_namespace = "default";
    g.ordinal = 0;
    g.create = create;
    g.policy_version = version;
    return g;
  };

  auto fail = [&](const Status& s) {
    if (out) std::fprintf(out, "\n%s\n", f.Diagnostics().c_str());
    return s;
  };
#define DEMO_STEP(label, body)                                                          \
  do {                                                                                  \
    Status s_ = p.Step(label, [&]([[maybe_unused]] std::string * note) -> Status body); \
    if (!s_.ok()) return fail(s_);                                                      \
  } while (0)

  if (out) {
    std::fprintf(out,
                 "cocostorage demo: pod %s/%s asks for a 10G encrypted scratch volume (StorageClass "
                 "cocostorage-ephemeral)\nwork dir %s\n\n",
                 pod.pod_namespace.c_str(), pod.pod_name.c_str(), f.root().c_str());
  }
  DEMO_STEP("Start cocostorage-csi on a unix socket", {
    COCO_RETURN_IF_ERROR(f.StartPlugin());
    *note = Cat("pid ", f.plugin()->pid());
    return OkStatus();
  });
  DEMO_STEP("GetPluginInfo / Probe / NodeGetInfo", { return f.Identify(note); });
  DEMO_STEP("CreateVolume 10G ephemeral ext4 hmac-sha256", {
    COCO_RETURN_IF_ERROR(f.CreateVolume(pod));
    *note = pod.volume_id;
    return OkStatus();
  });
  DEMO_STEP("NodeStageVolume", { return f.StageVolume(pod); });
  DEMO_STEP("NodePublishVolume (fsGroup 1000)", { return f.PublishVolume(pod); });
  DEMO_STEP("Kata runtime: read mountInfo.json", {
    COCO_RETURN_IF_ERROR(f.ReadMountInfo(pod));
    *note = Cat("device ", pod.mount_info.device.substr(pod.mount_info.device.rfind('/') + 1), ", key ",
                pod.mount_info.metadata["encryptionKey"]);
    return OkStatus();
  });
  DEMO_STEP("Boot the confidential-VM stand-in (QEMU TCG)", {
    COCO_RETURN_IF_ERROR(f.BootVm());
    *note = fmt::format("guest ready after {:.1f} s", f.vm()->BootSeconds());
    return OkStatus();
  });
  DEMO_STEP("Hot-plug the backing file over QMP", {
    COCO_RETURN_IF_ERROR(f.HotplugDevice(pod));
    *note = Cat("virtio-blk at PCI path ", pod.pci_path);
    return OkStatus();
  });
  DEMO_STEP("Kata runtime: build the Storage for kata-agent", {
    COCO_RETURN_IF_ERROR(f.BuildStorage(pod));
    *note = Cat("[", Join(pod.storage.driver_options, " "), "]");
    if (note->size() > 90) *note = note->substr(0, 87) + "...";
    return OkStatus();
  });
  DEMO_STEP("kata-agent: route by driver_options, PCI -> MAJ:MIN", {
    COCO_RETURN_IF_ERROR(f.KataAgentResolve(pod));
    *note = Cat("SecureMount; PCI path ", pod.storage.source, " -> disk ", pod.dev_number, " (sysfs)");
    return OkStatus();
  });
  DEMO_STEP("kata-agent: SecureMount over ttrpc -> our agent", {
    COCO_RETURN_IF_ERROR(f.KataAgentSecureMount(pod));
    *note = Cat("ok (api.SecureMountService, ", kCdhSocket, ")");
    return OkStatus();
  });
  DEMO_STEP(Cat("Agent GetVolume ", pod.agent_volume_id), {
    COCO_RETURN_IF_ERROR(f.VerifyAgentVolume(pod));
    *note = Cat("ACTIVE, ", pod.volume.cipher(), "/", pod.volume.integrity_algorithm(), ", ", pod.volume.fs_type(),
                ", ", HumanBytes(pod.volume.capacity_bytes()), " usable");
    return OkStatus();
  });
  DEMO_STEP("Guest writes a secret, drops caches, reads it back", {
    before_write = BlockHashes(pod.mount_info.device);
    COCO_RETURN_IF_ERROR(f.WriteAndReadBackSecret(pod, secret, 20000));
    *note =
        Cat("20000 lines, ", pod.volume.target_path().substr(pod.volume.target_path().rfind('/') + 1), "/secret.txt");
    return OkStatus();
  });
  DEMO_STEP("Host scans the backing file for the secret", {
    COCO_ASSIGN_OR_RETURN(host, InspectBackingFile(pod.mount_info.device, secret));
    if (host.secret_found) return absl::DataLossError("the secret is readable in the host's backing file");
    if (host.luks_magic_found) return absl::DataLossError("a LUKS header is on the host's backing file");
    if (host.data_blocks == 0) return absl::InternalError("nothing reached the backing file");
    *note = Cat("absent (", host.data_blocks, " non-zero blocks, ", HumanBytes(host.allocated_bytes), " allocated)");
    return OkStatus();
  });
  DEMO_STEP("Host flips bytes; guest read must fail", { return f.TamperAndExpectEio(pod, before_write, note); });
  DEMO_STEP("kata-agent unmounts; the agent cleans up by itself", {
    COCO_RETURN_IF_ERROR(f.KataAgentUnmount(pod));
    COCO_RETURN_IF_ERROR(f.WaitForAgentCleanup(pod, std::chrono::seconds(60), &cleanup_s));
    *note = fmt::format("{} gone {:.1f} s after the unmount, no mapping left", pod.agent_volume_id, cleanup_s);
    return OkStatus();
  });
  DEMO_STEP("QMP unplug", { return f.UnplugDevice(pod); });
  DEMO_STEP("NodeUnpublishVolume", { return f.UnpublishVolume(pod); });
  DEMO_STEP("NodeUnstageVolume", { return f.UnstageVolume(pod); });
  DEMO_STEP("DeleteVolume", { return f.DeleteVolume(pod); });
  DEMO_STEP("Check nothing leaked (host + guest)", { return f.CheckNothingLeaked(pod); });
  DEMO_STEP("Shut the VM down", { return f.ShutdownVm(note); });

  if (out) {
    std::fprintf(out,
                 "\nPart 2: StatefulSet cocostorage-kbs-demo, replica 0, claim data-cocostorage-kbs-demo-0 (20Gi, "
                 "StorageClass cocostorage-kbs,\nkey from a KBS): the data outlives the pod, the VM and a plugin "
                 "restart\n\n");
  }
  DEMO_STEP("Start the KBS stand-in with the claim's key", {
    std::string hex;
    for (int i = 0; i < 4; ++i) hex += RandomUuid().substr(0, 8) + RandomUuid().substr(0, 8);
    COCO_RETURN_IF_ERROR(f.StartKbs({{pv_key_path, hex}}));
    *note = Cat("tests/kbs/test_kbs.py, ", f.kbs()->url(), ", resource ", pv_key_path);
    return OkStatus();
  });
  DEMO_STEP("Owner: storage policy + init-data from the YAML",
            { return f.GeneratePolicy(pv_yaml, policy_options(agent::policy::CreateRule::kIfBlank, 1), note); });
  DEMO_STEP("CreateVolume 20Gi persistent (cocostorage-kbs)", {
    COCO_ASSIGN_OR_RETURN(std::string sc, ReadFileToString(pv_yaml[0]));
    policygen::K8sInputs k8s;
    COCO_RETURN_IF_ERROR(policygen::ParseK8sYaml(sc, pv_yaml[0], &k8s));
    if (k8s.classes.size() != 1) return absl::InternalError(Cat(pv_yaml[0], " holds no single StorageClass"));
    pv = f.NewPod("cocostorage-kbs-demo-0", 20ull << 30);
    pv.pvc_name = "data-cocostorage-kbs-demo-0";
    pv.class_parameters = k8s.classes[0].parameters;
    COCO_RETURN_IF_ERROR(f.CreateVolume(pv));
    *note = Cat(pv.volume_id, ", key ", pv.volume_context["kbsResourceUri"]);
    return OkStatus();
  });
  DEMO_STEP("Boot VM 1 with the init-data (policy create = if-blank)", {
    COCO_RETURN_IF_ERROR(f.BootVm());
    *note = fmt::format("agent checked the init-data digest, guest ready after {:.1f} s", f.vm()->BootSeconds());
    return OkStatus();
  });
  DEMO_STEP("Pod 1: stage, publish, hot-plug, SecureMount", {
    COCO_RETURN_IF_ERROR(f.BringUpPod(pv));
    if (pv.mount_info.metadata["encryptionKey"] != "ephemeral") {
      return absl::InternalError("mountInfo.json would make kata-agent mount the disk in plaintext");
    }
    const std::string action = f.LastAgentAction(pv);
    if (action != "create") return absl::InternalError(Cat("the agent's action was '", action, "', want create"));
    *note = Cat("blank disk: the agent created the volume, key from the KBS");
    return OkStatus();
  });
  DEMO_STEP("Pod 1 writes a secret; host scans the backing file", {
    COCO_RETURN_IF_ERROR(f.WriteAndReadBackSecret(pv, pv_secret, 5000));
    COCO_ASSIGN_OR_RETURN(pv_host, InspectBackingFile(pv.mount_info.device, pv_secret));
    if (pv_host.secret_found) return absl::DataLossError("the secret is readable in the host's backing file");
    *note = Cat("secret absent (", HumanBytes(pv_host.allocated_bytes), " allocated)");
    return OkStatus();
  });
  DEMO_STEP("Pod 1 deleted, VM 1 off, node reboot (plugin restart)", {
    COCO_RETURN_IF_ERROR(f.EndPod(pv));
    if (!PathExists(pv.mount_info.device)) return absl::DataLossError("the claim's backing file went with the pod");
    COCO_RETURN_IF_ERROR(f.ShutdownVm(nullptr));
    COCO_RETURN_IF_ERROR(f.RestartPlugin());
    *note = "claim and backing file kept";
    return OkStatus();
  });
  DEMO_STEP("Owner: policy version 2, create = never",
            { return f.GeneratePolicy(pv_yaml, policy_options(agent::policy::CreateRule::kNever, 2), note); });
  DEMO_STEP("Boot VM 2; pod 2 on the same claim", {
    COCO_RETURN_IF_ERROR(f.BootVm());
    pv2 = f.NewPodOnClaim(pv, "cocostorage-kbs-demo-0");
    COCO_RETURN_IF_ERROR(f.BringUpPod(pv2));
    const std::string action = f.LastAgentAction(pv2);
    if (action != "open") return absl::InternalError(Cat("the agent's action was '", action, "', want open"));
    *note = "the agent opened the volume (header authenticated with the KBS key)";
    return OkStatus();
  });
  DEMO_STEP("Pod 2 reads pod 1's secret", {
    COCO_ASSIGN_OR_RETURN(std::string count, f.Guest(Cat("echo 3 > /proc/sys/vm/drop_caches && grep -c ", pv_secret,
                                                         " ", pv2.volume.target_path(), "/secret.txt")));
    if (TrimWhitespace(count) != "5000") {
      return absl::DataLossError(Cat("pod 2 read ", TrimWhitespace(count), " secret lines, pod 1 wrote 5000"));
    }
    *note = "5000 lines, as pod 1 wrote them";
    return OkStatus();
  });
  DEMO_STEP("Pod 2 deleted, claim deleted, nothing leaked", {
    COCO_RETURN_IF_ERROR(f.EndPod(pv2));
    COCO_RETURN_IF_ERROR(f.DeleteVolume(pv2));
    return f.CheckNothingLeaked(pv2);
  });
  DEMO_STEP("Shut VM 2 down", { return f.ShutdownVm(note); });
  DEMO_STEP("Stop cocostorage-csi (SIGTERM)", {
    COCO_ASSIGN_OR_RETURN(int code, f.StopPlugin(SIGTERM));
    if (code != 0) return absl::InternalError(Cat("exit code ", code));
    *note = "exit 0";
    return OkStatus();
  });
#undef DEMO_STEP

  if (result) {
    result->steps = p.entries();
    result->total_ms = MsSince(t_start);
    result->host_after_write = host;
    result->agent_volume_id = pod.agent_volume_id;
    result->cleanup_seconds = cleanup_s;
  }
  if (out) {
    double vm_ms = 0, csi_ms = 0, agent_ms = 0;
    // The timings line is the ephemeral part's (its first 23 steps).
    const auto& entries = p.entries();
    for (size_t i = 0; i < entries.size() && i < 23; ++i) {
      const auto& e = entries[i];
      const std::string& l = e.label;
      if (l.find("Node") != std::string::npos || l.find("Volume 10G") != std::string::npos ||
          l.find("DeleteVolume") != std::string::npos || l.find("GetPluginInfo") != std::string::npos) {
        csi_ms += e.ms;
      } else if (l.find("SecureMount") != std::string::npos || l.find("cleans up") != std::string::npos) {
        agent_ms += e.ms;
      } else if (l.find("Boot") != std::string::npos) {
        vm_ms += e.ms;
      }
    }
    std::fprintf(out,
                 "\nSummary\n"
                 "  volume     %s (%s requested), ext4 in the guest, key generated in the guest, never on the host\n"
                 "  host saw   %s sparse file, %s allocated, %zu non-zero 4 KiB blocks: ciphertext only\n"
                 "             (secret absent, no LUKS header: it lives in guest memory)\n"
                 "  tamper     flipped bytes on the host -> the guest's read fails with EIO, dm-integrity logs it\n"
                 "  teardown   kata-agent only unmounts; the agent saw the mount go and closed the rest in %.1f s\n"
                 "  leaks      none: backing file, mountInfo.json, state record, dm mapping, mount, QEMU all gone\n"
                 "  timings    CSI calls %.0f ms, VM boot %.1f s, SecureMount + self-teardown %.1f s, total %.1f s\n"
                 "  persistent %s (20Gi, key from the KBS): created by the agent in VM 1 (the policy allowed it on a "
                 "blank disk),\n"
                 "             opened in VM 2 after a plugin restart, pod 1's data read back; the host saw %s "
                 "allocated, no plaintext\n",
                 pod.volume_id.c_str(), fmt::format("{} GB", pod.size_bytes / 1000000000).c_str(),
                 HumanBytes(host.apparent_bytes).c_str(), HumanBytes(host.allocated_bytes).c_str(), host.data_blocks,
                 cleanup_s, csi_ms, vm_ms / 1000, agent_ms / 1000, MsSince(t_start) / 1000, pv.volume_id.c_str(),
                 HumanBytes(pv_host.allocated_bytes).c_str());
    // What kata-agent keeps to itself: it forwards none of the other options.
    std::vector<std::string> dropped;
    for (const auto& o : pod.storage.driver_options) {
      if (o != kEphemeralKeyOption && o != kCreateFilesystemOption) dropped.push_back(o);
    }
    std::vector<std::string> opts;
    for (const auto& [k, v] : pod.secure_mount.Options()) {
      opts.push_back(v.find(' ') == std::string::npos ? Cat(k, ": ", v) : Cat(k, ": \"", v, "\""));
    }
    const agentpb::Volume& v = pod.volume;
    std::fprintf(
        out,
        "\nWhat crossed each boundary\n"
        "  plugin -> Kata runtime  %s/mountInfo.json\n    %s\n"
        "  runtime -> kata-agent   Storage{driver: %s, source: %s, fstype: %s, mount_point: %s,\n"
        "                            driver_options: [%s], options: [%s]}\n"
        "  kata-agent (guest)      [%s, %s] -> SecureMount; PCI path %s -> sysfs -> deviceId %s\n"
        "                          not forwarded: [%s]%s\n"
        "  kata-agent -> cocostorage-agent  ttrpc %s, api.SecureMountService/SecureMount\n"
        "    SecureMountRequest{volume_type: %s, mount_point: %s, flags: [],\n"
        "      options: {%s}}\n"
        "  cocostorage-agent       GetVolume(%s) -> %s, device %s (%s) -> %s, %s + %s, %s, %s usable\n"
        "  pod gone                kata-agent: umount + rmdir %s; no call to the agent, which tore the volume\n"
        "                          down by itself (mount table watch) %.1f s later\n",
        DirectVolumeDirName(pod.target_path).c_str(), pod.mount_info_json.c_str(), pod.storage.driver.c_str(),
        pod.storage.source.c_str(), pod.storage.fs_type.c_str(), pod.storage.mount_point.c_str(),
        Join(pod.storage.driver_options, ", ").c_str(), Join(pod.storage.options, ", ").c_str(), kEphemeralKeyOption,
        kCreateFilesystemOption, pod.storage.source.c_str(), pod.dev_number.c_str(), Join(dropped, ", ").c_str(),
        dropped.empty() ? "" : " (fsGroup: kata-agent chgrps the mount itself)", kCdhSocket,
        pod.secure_mount.volume_type.c_str(), pod.secure_mount.mount_point.c_str(), Join(opts, ", ").c_str(),
        pod.agent_volume_id.c_str(), agentpb::VolumeState_Name(v.state()).c_str(),
        v.device().ShortDebugString().c_str(), v.device_path().c_str(), v.mapped_device().c_str(), v.cipher().c_str(),
        v.integrity_algorithm().c_str(), v.fs_type().c_str(), HumanBytes(v.capacity_bytes()).c_str(),
        pod.storage.mount_point.c_str(), cleanup_s);
  }
  return OkStatus();
}

}  // namespace cocostorage::e2e
