// The main job end to end on one machine, as reusable steps:
//
//   external-provisioner + kubelet  -> cocostorage-csi (real binary, real gRPC)
//   Kata runtime                    -> mountInfo.json -> QMP hot-plug -> Storage
//   kata-agent                      -> driver_options decide; PCI path -> MAJ:MIN (sysfs);
//                                      SecureMount over ttrpc (coco-kata-securemount, the
//                                      real Go client) -> cocostorage-agent on cdh.sock;
//                                      teardown = unmount, the agent cleans up by itself
//
// Block-mode volumes cannot take kata-agent's way (it refuses
// encryption_key=ephemeral without create_filesystem); for them the flow maps
// the Storage with the agent's own adapter and calls the agent's gRPC API
// (MapToAgentRequest, Activate, Deactivate).
//
// `Flow` owns every resource (temp dirs, the plugin process, the VM) and
// releases them in reverse order in its destructor, whatever failed. Each
// step is a method returning Status; `RunDemo` strings them together with a
// progress line per step, and tests/e2e calls them one by one with assertions.
// See docs/e2e.md.
#pragma once

#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agent_client.h"
#include "backing_file.h"
#include "cocostorage/common/status.h"
#include "cocostorage/storage/v1/agent.grpc.pb.h"
#include "cocostorage/testing/temp_dir.h"
#include "csi/v1/csi.grpc.pb.h"
#include "guest_vm.h"
#include "kata_agent.h"
#include "kata_runtime.h"
#include "policy_builder.h"
#include "test_kbs_process.h"

namespace cocostorage::e2e {

namespace csipb = ::csi::v1;
namespace agentpb = ::cocostorage::storage::v1;

inline constexpr uint64_t kMiB = 1ull << 20;
inline constexpr uint64_t kGiB = 1ull << 30;
inline constexpr char kDriverName[] = "csi.cocostorage.dev";
inline constexpr char kTopologyKey[] = "topology.cocostorage.dev/node";

using testing::RemoveTree;
using testing::TempDir;

// The real cocostorage-csi binary as a child process on a unix socket.
// Layout under `root`: csi.sock, backing/, state/, kata/, plugin.log.
class CsiPlugin {
 public:
  CsiPlugin(std::string binary, std::string root, std::string node_id);
  ~CsiPlugin();  // SIGKILL if still running
  CsiPlugin(const CsiPlugin&) = delete;
  CsiPlugin& operator=(const CsiPlugin&) = delete;

  // Starts the plugin and waits until Probe answers ready. The plugin gets
  // PR_SET_PDEATHSIG=SIGKILL: it dies with the thread that started it.
  Status Start(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Sends `sig` and waits; returns the exit code. An exit by signal or no
  // exit within `timeout` (then SIGKILL) is an error.
  StatusOr<int> Stop(int sig, std::chrono::milliseconds timeout = std::chrono::seconds(30));
  bool Running();
  pid_t pid() const { return pid_; }

  std::string socket() const { return root_ + "/csi.sock"; }
  std::string backing_root() const { return root_ + "/backing"; }
  std::string state_dir() const { return root_ + "/state"; }
  std::string kata_root() const { return root_ + "/kata"; }
  std::string log_path() const { return root_ + "/plugin.log"; }
  std::string LogTail(size_t bytes = 4000) const;

  csipb::Identity::Stub& identity() { return *identity_; }
  csipb::Controller::Stub& controller() { return *controller_; }
  csipb::Node::Stub& node() { return *node_; }

 private:
  std::string binary_, root_, node_id_;
  pid_t pid_ = -1;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<csipb::Identity::Stub> identity_;
  std::unique_ptr<csipb::Controller::Stub> controller_;
  std::unique_ptr<csipb::Node::Stub> node_;
};

// The agent's retrying client (guest-agent/client) with Status results.
class AgentRpc {
 public:
  explicit AgentRpc(const std::string& target);
  Status Activate(const agentpb::ActivateVolumeRequest& req, agentpb::Volume* out);
  Status Deactivate(const std::string& id, bool* was_active);
  Status Get(const std::string& id, agentpb::Volume* out);
  Status List(std::vector<agentpb::Volume>* out);
  Status Info(agentpb::AgentInfo* out);

 private:
  agent::AgentClient client_;
};

// One pod's volume as it travels through the stack.
struct PodVolume {
  // Kubernetes side
  std::string pod_name;
  std::string pod_namespace = "default";
  std::string pod_uid;
  std::string pvc_name;
  std::string pv_name;  // CreateVolume name ("pvc-<uid>")
  uint64_t size_bytes = 0;
  // The StorageClass's parameters; empty: cocostorage-ephemeral's (keySource
  // ephemeral, fs_type, integrity below).
  std::map<std::string, std::string> class_parameters;
  std::string fs_type = "ext4";
  bool block = false;  // volumeMode: Block (raw device in the pod)
  std::string integrity = "hmac-sha256";
  int64_t fs_group = 2000;
  // CSI side
  std::string volume_id;
  std::map<std::string, std::string> volume_context;
  std::string staging_path;
  std::string target_path;
  // Kata runtime side
  std::string mount_info_dir;
  std::string mount_info_json;
  std::string sandbox_id;  // the runtime's marker file next to mountInfo.json
  KataMountInfo mount_info;
  std::string qemu_id;
  std::string serial;
  std::string pci_path;
  KataStorage storage;
  // Guest side: kata-agent's SecureMount (filesystem volumes)...
  std::string dev_number;  // MAJ:MIN of the disk, resolved from pci_path in the guest
  KataSecureMountCall secure_mount;
  // ...or the agent's own API (block volumes: MapToAgentRequest)
  agentpb::ActivateVolumeRequest request;
  std::string agent_volume_id;  // the id our agent knows the volume by (either way)
  agentpb::Volume volume;       // the agent's answer (GetVolume / ActivateVolume)
};

struct FlowOptions {
  std::string csi_binary;  // empty: $COCOSTORAGE_CSI_BINARY, else the build tree's binary
  std::string image_dir;   // empty: vmtest::DefaultGuestImage() ($COCOSTORAGE_VM_IMAGE_DIR or build tree)
  std::string qemu_binary = "qemu-system-x86_64";
  std::string node_id = "e2e-node";
  std::string temp_parent = "/tmp";  // short: the CSI socket path must fit in 107 bytes
  int vm_memory_mib = 1536;
  int vm_root_ports = 8;
};

// Timings of the steps run so far, with a progress line per step.
class Progress {
 public:
  Progress(FILE* out, int total) : out_(out), total_(total) {}
  // Runs `fn`; prints "[ n/N] label ....... ok  12 ms" (or FAILED + reason).
  // `note`, when set by fn, is appended to the line.
  Status Step(const std::string& label, const std::function<Status(std::string* note)>& fn);
  struct Entry {
    std::string label;
    double ms = 0;
    bool ok = false;
  };
  const std::vector<Entry>& entries() const { return entries_; }
  double TotalMs() const;

 private:
  FILE* out_;
  int total_;
  int n_ = 0;
  std::vector<Entry> entries_;
};

// What the host could observe about a volume's backing file.
struct HostView {
  uint64_t apparent_bytes = 0;   // file size
  uint64_t allocated_bytes = 0;  // st_blocks * 512
  size_t data_blocks = 0;        // non-zero 4 KiB blocks
  bool secret_found = false;
  bool luks_magic_found = false;
};

// The host's view helpers live in the VM harness (backing_file.h).
using vmtest::BlockHashes;
using vmtest::ChangedBlocks;
using vmtest::FileContains;
using vmtest::FlipBytes;
StatusOr<HostView> InspectBackingFile(const std::string& path, const std::string& secret);

class Flow {
 public:
  // Checks prerequisites (plugin binary, QEMU, kernel, initrd) and makes the
  // temp dirs. A missing prerequisite is FAILED_PRECONDITION naming it.
  static StatusOr<std::unique_ptr<Flow>> Create(const FlowOptions& options);
  ~Flow();  // best-effort teardown: VM killed, plugin killed, temp dirs removed
  Flow(const Flow&) = delete;
  Flow& operator=(const Flow&) = delete;

  // ---- external-provisioner / kubelet (CSI over gRPC) ----
  Status StartPlugin();
  StatusOr<int> StopPlugin(int sig = SIGTERM);
  Status RestartPlugin();  // SIGTERM (exit 0 required) + start on the same dirs
  // GetPluginInfo, Probe, GetPluginCapabilities, NodeGetInfo (topology).
  Status Identify(std::string* note);
  PodVolume NewPod(const std::string& pod_name, uint64_t bytes);
  // A new pod on the claim `earlier` was provisioned for (a StatefulSet's
  // next pod): same volume id and context, its own pod uid, kubelet paths,
  // sandbox and disk names.
  PodVolume NewPodOnClaim(const PodVolume& earlier, const std::string& pod_name);
  Status CreateVolume(PodVolume& pod);
  Status StageVolume(PodVolume& pod);
  Status PublishVolume(PodVolume& pod);
  Status UnpublishVolume(PodVolume& pod);
  Status UnstageVolume(PodVolume& pod);
  Status DeleteVolume(PodVolume& pod);

  // ---- Kata runtime ----
  // Reads <kata root>/<base64url(target)>/mountInfo.json and parses it.
  Status ReadMountInfo(PodVolume& pod);
  // With StartKbs, the guest's agent gets its keys from that KBS; with
  // GeneratePolicy as well, it reads the init-data from where kata-agent
  // leaves it and checks its digest (as it would the TEE's launch field).
  Status BootVm();
  Status HotplugDevice(PodVolume& pod);  // the "device" of mountInfo.json over QMP
  Status BuildStorage(PodVolume& pod);   // mountInfo.json + PCI path -> Storage
  Status UnplugDevice(PodVolume& pod);
  // Powers the guest off (falls back to SIGKILL) and checks QEMU is gone.
  Status ShutdownVm(std::string* note);

  // ---- kata-agent -> our agent (SecureMount over ttrpc, in the guest) ----
  // kata-agent's route by driver_options (KataAgentRoute: FAILED_PRECONDITION
  // "kata-agent would mount this in plaintext" for anything but the
  // ephemeral marker + create_filesystem), then the PCI path resolved to the
  // disk's MAJ:MIN through sysfs; fills pod.dev_number and pod.secure_mount.
  Status KataAgentResolve(PodVolume& pod);
  // Runs coco-kata-securemount in the guest (kata-agent's exact request, the
  // real Go ttrpc client), then kata-agent's fsGroup ownership change. Errors
  // keep the agent's gRPC code.
  Status KataAgentSecureMount(PodVolume& pod);
  // GetVolume of sm-<...>: must be ACTIVE at the Storage's mount point.
  Status VerifyAgentVolume(PodVolume& pod);
  // What kata-agent does when the pod goes: unmount, remove the directory.
  Status KataAgentUnmount(PodVolume& pod);
  // Polls GetVolume (then dmsetup) until the agent has torn the volume down
  // by itself; DEADLINE_EXCEEDED after `timeout`. `seconds`: how long it took.
  Status WaitForAgentCleanup(PodVolume& pod, std::chrono::milliseconds timeout = std::chrono::seconds(60),
                             double* seconds = nullptr);

  // A filesystem volume's pod on a created volume, all the way up (stage,
  // publish, mountInfo.json, hot-plug, Storage, kata-agent's route and
  // SecureMount, GetVolume), and back to a volume that only exists on the
  // host (kata-agent's unmount, the agent's own cleanup, unplug, unpublish,
  // unstage): the volume and its backing file stay.
  Status BringUpPod(PodVolume& pod);
  Status EndPod(PodVolume& pod);

  // ---- the agent's own API (block volumes) ----
  Status MapToAgentRequest(PodVolume& pod);  // BuildStorage + adapter + admission
  Status Activate(PodVolume& pod);
  Status Deactivate(PodVolume& pod);

  // ---- persistent volumes: a KBS and the attested storage policy ----
  // Starts the test KBS (tests/kbs/test_kbs.py) on the host's loopback, the
  // guests reaching it over QEMU's user network; it releases `keys`
  // (resource path "<repo>/<type>/<tag>" -> hex) to the sample attester.
  Status StartKbs(const std::map<std::string, std::string>& keys);
  // What the workload's owner runs: the policy generator's code
  // (tools/policy-gen, as cocostorage-policy --tee snp) on Kubernetes YAML.
  // Keeps the init-data for the next BootVm; `note`: its digest.
  Status GeneratePolicy(const std::vector<std::string>& yaml_files, const policygen::GeneratorOptions& options,
                        std::string* note);
  const std::string& init_data() const { return init_data_; }
  const std::string& init_data_digest() const { return init_data_digest_; }
  ::cocostorage::testing::TestKbsProcess* kbs() { return kbs_.get(); }
  // The last action ("create", "open", "format") the agent logged for the
  // pod's volume, "" if none.
  std::string LastAgentAction(const PodVolume& pod);

  // ---- the guest's and the host's view ----
  // Writes `lines` lines of `secret` to <mount>/secret.txt, syncs, drops the
  // caches and reads it back (count must match). Block volumes: the same text
  // at offset 0 of the device node, read back with O_DIRECT.
  Status WriteAndReadBackSecret(const PodVolume& pod, const std::string& secret, int lines);
  // Flips the blocks that changed since `before`; the guest's read of
  // secret.txt must then fail with EIO and the kernel must log an integrity
  // error. `note` says how many blocks and what the guest saw.
  Status TamperAndExpectEio(const PodVolume& pod, const std::map<uint64_t, uint64_t>& before, std::string* note);
  // Host: no backing file, no mountInfo dir, no state record. Guest: no coco-
  // mapping, nothing mounted under the storage dir, disk gone.
  Status CheckNothingLeaked(const PodVolume& pod);
  // Guest integrity/I/O errors logged since the previous call (dmesg -c).
  StatusOr<std::vector<std::string>> NewKernelErrors();

  vmtest::GuestVm* vm() { return vm_.get(); }
  AgentRpc* agent() { return agent_.get(); }
  CsiPlugin* plugin() { return plugin_.get(); }
  const std::string& root() const { return root_.path(); }
  const std::string& node_id() const { return options_.node_id; }
  std::string backing_path(const PodVolume& pod) const { return pod.mount_info.device; }
  StatusOr<std::string> Guest(const std::string& cmd, std::chrono::milliseconds timeout = std::chrono::minutes(3));
  // Diagnostics for a failure: plugin log tail, agent log tail, console tail.
  std::string Diagnostics();

 private:
  explicit Flow(FlowOptions options) : options_(std::move(options)) {}
  void SetKubeletPaths(PodVolume& pod);
  Status ConfigureKbsAgent();
  FlowOptions options_;
  vmtest::GuestImage image_;
  TempDir root_;
  std::unique_ptr<CsiPlugin> plugin_;
  std::unique_ptr<vmtest::GuestVm> vm_;
  std::unique_ptr<AgentRpc> agent_;
  std::map<std::string, std::string> topology_;
  int next_pod_ = 0;
  std::unique_ptr<::cocostorage::testing::TestKbsProcess> kbs_;
  std::string init_data_, init_data_digest_;
};

// The demo: one pod with the example's 10G generic ephemeral volume through
// the whole stack and back. Prints progress to `out`; returns the first failure.
struct DemoResult {
  std::vector<Progress::Entry> steps;
  double total_ms = 0;
  double boot_seconds = 0;
  HostView host_after_write;
  size_t tampered_blocks = 0;
  std::string agent_volume_id;  // sm-<...>
  double cleanup_seconds = 0;   // unmount -> the agent's own teardown done
};
Status RunDemo(const FlowOptions& options, FILE* out, DemoResult* result);

}  // namespace cocostorage::e2e
