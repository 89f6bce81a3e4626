// GuestVm: one QEMU (TCG) guest booted from the test image built by
// tests/vm/guest/build-guest-image.sh, for tests that need device-mapper,
// hot-plugged virtio-blk disks and the in-guest agent.
//
//   COCO_ASSIGN_OR_RETURN(auto vm, GuestVm::Start(GuestVmOptions{}));
//   COCO_ASSIGN_OR_RETURN(ExecResult r, vm->Exec("cat /proc/uptime"));
//   COCO_ASSIGN_OR_RETURN(std::string pci, vm->Hotplug("/tmp/d.img", "vol1", "serial-1"));  // "02/00"
//   auto channel = grpc::CreateChannel(vm->AgentTarget(), grpc::InsecureChannelCredentials());
//   COCO_RETURN_IF_ERROR(vm->Unplug("vol1"));
//
// The destructor kills QEMU and removes the temporary directory (QMP socket,
// console log unless a path was given). QEMU also dies with the process that
// started it (PR_SET_PDEATHSIG). Set COCOSTORAGE_VM_KEEP=1 to leave the VM
// running and the temp dir in place after the test for debugging.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cocostorage/common/status.h"
#include "qmp_client.h"

namespace cocostorage::vmtest {

inline constexpr int kGuestExecPort = 7000;
inline constexpr int kGuestAgentPort = 7001;
inline constexpr char kDefaultAgentBinary[] = "/usr/bin/cocostorage-agent";
inline constexpr char kPlaceholderAgentBinary[] = "/usr/bin/coco-placeholder-agent";

struct GuestImage {
  std::string kernel;  // vmlinuz
  std::string initrd;  // initrd.gz
};

// The image tests use by default: $COCOSTORAGE_VM_IMAGE_DIR/{vmlinuz,initrd.gz}
// if set, else the image CMake built into the build tree (COCO_VM_IMAGE_DIR).
GuestImage DefaultGuestImage();

struct GuestVmOptions {
  std::string kernel;  // empty: DefaultGuestImage()
  std::string initrd;  // empty: DefaultGuestImage()
  int memory_mib = 1024;
  int smp = 2;
  // Hot-plug slots. Root port i sits at pcie.0 slot 0x02+i, so the disk
  // plugged into it has the Kata PCI path "%02x/00" of (2+i): "02/00", "03/00"...
  int root_ports = 8;
  std::vector<std::string> extra_kernel_args;
  // Agent command line. Unset: the guest default (--listen=tcp://0.0.0.0:7001
  // --storage-root=/run/kata-containers/sandbox/storage --state-dir=/run/cocostorage).
  std::optional<std::vector<std::string>> agent_args;
  std::vector<std::string> agent_extra_args;  // appended to the above
  std::vector<std::string> agent_env;         // "KEY=VALUE"
  bool start_agent = true;                    // false: boots with /run/agent.disabled
  // Where QEMU's serial console (and its own stderr) goes. Empty: <tempdir>/console.log.
  std::string console_log;
  std::chrono::milliseconds boot_timeout{std::chrono::seconds(120)};
  std::string qemu_binary = "qemu-system-x86_64";
  std::vector<std::string> extra_qemu_args;
  // More guest TCP ports to forward from 127.0.0.1 (see HostPort()).
  std::vector<int> forward_guest_ports;
};

struct ExecResult {
  int exit_code = -1;  // -1 when killed by a signal or timed out
  int term_signal = 0;
  bool timed_out = false;
  std::string out;
  std::string err;  // empty with merge_output
};

struct ExecOptions {
  std::string stdin_data;
  bool merge_output = false;  // stderr into out
};

// One error-injection rule of QEMU's blkdebug block driver: requests of
// `iotype` ("read", "write", "flush", "discard", "write-zeroes") fail with
// `error` (an errno). With `sector` set only a request covering that 512-byte
// sector of the image fails, else every one; `once` removes the rule after
// its first hit.
struct BlkdebugRule {
  std::string iotype = "write";
  int error = 5;  // EIO
  std::optional<int64_t> sector;
  bool once = false;
};

// A throttle-group's limits (0 = unlimited): a very slow device.
struct ThrottleLimits {
  int64_t bps_total = 0;
  int64_t iops_total = 0;
};

struct HotplugOptions {
  // virtio-blk on its own root port (vdX), or a scsi-hd on the VM's one
  // virtio-scsi controller (sdX): Kata's default block driver for QEMU.
  enum class Bus { kVirtioBlk, kScsi };
  Bus bus = Bus::kVirtioBlk;
  bool read_only = false;
  bool discard = true;        // pass discards through to the image (punch holes)
  bool cache_direct = false;  // O_DIRECT on the host file
  // Device error policies ("report", "stop", "ignore", and "enospc" for
  // werror). Empty: QEMU's default (werror=enospc pauses the VM on a full
  // host disk; "report" hands the guest an I/O error instead).
  std::string werror;
  std::string rerror;
  // A blkdebug node between the format node and the file, with these rules
  // from the start; SetFaults() changes them on a plugged disk.
  bool fault_node = false;
  std::vector<BlkdebugRule> faults;
  // A throttle filter over the file (throttle-group "<id>-tg").
  std::optional<ThrottleLimits> throttle;
  // Instead of the image file: an RBD image, through QEMU's rbd driver
  // (qemu-block-extra), standing in for the node's `rbd device map`. The key
  // goes to QEMU as a secret object ("<id>-key"), not on a command line.
  struct Rbd {
    std::string conf;  // ceph.conf (monitors)
    std::string pool;
    std::string image;
    std::string user;  // cephx id, without "client."
    std::string key;   // cephx secret (base64)
  };
  std::optional<Rbd> rbd;
};

// One guest-exec request to 127.0.0.1:host_port (a VM started elsewhere, e.g.
// one kept with COCOSTORAGE_VM_KEEP=1). `io_slack` is added to `timeout` for
// the host-side deadline.
StatusOr<ExecResult> GuestExecAt(int host_port, const std::string& cmd, std::chrono::milliseconds timeout,
                                 const ExecOptions& options = {},
                                 std::chrono::milliseconds io_slack = std::chrono::seconds(30));

class GuestVm {
 public:
  static StatusOr<std::unique_ptr<GuestVm>> Start(const GuestVmOptions& options);
  ~GuestVm();
  GuestVm(const GuestVm&) = delete;
  GuestVm& operator=(const GuestVm&) = delete;

  // Runs `cmd` with /bin/sh -c in the guest as root. A non-zero exit is not
  // an error (look at exit_code); failing to reach the guest is.
  StatusOr<ExecResult> Exec(const std::string& cmd, std::chrono::milliseconds timeout = std::chrono::seconds(120),
                            const ExecOptions& options = {});
  // Exec that requires exit 0 and returns stdout; the error carries stderr.
  StatusOr<std::string> ExecOk(const std::string& cmd, std::chrono::milliseconds timeout = std::chrono::seconds(120));

  // Hot-plugs `image_path` as a virtio-blk disk with this QEMU id and serial
  // (at most 20 bytes) on a free root port; returns its Kata PCI path
  // ("02/00"). Returns when QEMU accepted the device; the guest sees it about
  // a second later (WaitForDisk).
  StatusOr<std::string> Hotplug(const std::string& image_path, const std::string& id, const std::string& serial,
                                const HotplugOptions& options = {});
  // device_del, waits for DEVICE_DELETED (the guest's pciehp acknowledges the
  // removal; ~0.2 s measured), then blockdev-del. The guest gets no say: a disk
  // still in use (mounted, dm table) is yanked like a surprise removal.
  Status Unplug(const std::string& id, std::chrono::milliseconds timeout = std::chrono::seconds(60));
  // Replaces the blkdebug rules of a disk plugged with fault_node (empty: no
  // faults). A fresh blkdebug node is put under the format node with
  // blockdev-reopen, so the guest keeps its device.
  Status SetFaults(const std::string& id, const std::vector<BlkdebugRule>& rules);
  // Waits until a guest block device with this serial exists; returns "/dev/vdX".
  StatusOr<std::string> WaitForDisk(const std::string& serial,
                                    std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Waits until a guest SCSI disk with this serial (VPD page 0x80) exists;
  // returns "/dev/sdX".
  StatusOr<std::string> WaitForScsiDisk(const std::string& serial,
                                        std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Waits until no guest block device has this serial.
  Status WaitForDiskGone(const std::string& serial, std::chrono::milliseconds timeout = std::chrono::seconds(30));

  // "127.0.0.1:PORT", forwarded to the agent's guest port 7001.
  std::string AgentTarget() const;
  int AgentHostPort() const { return agent_host_port_; }
  int ExecHostPort() const { return exec_host_port_; }
  // Host port forwarded to a guest port listed in forward_guest_ports (or 7000/7001); -1 if none.
  int HostPort(int guest_port) const;

  // Agent lifecycle, through the guest's respawn loop (/run/agent.disabled,
  // /run/agent.pid). StopAgent: SIGTERM, SIGKILL after `grace`; waits until gone.
  Status StopAgent(std::chrono::milliseconds grace = std::chrono::seconds(10));
  // Clears /run/agent.disabled and waits for a running agent (pid file).
  Status StartAgent(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  Status RestartAgent();
  // Sends `signal` to the running agent without disabling it: the respawn loop
  // starts a new one (crash simulation). Waits for the new pid.
  Status KillAgent(int signal, std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // Replaces the agent's arguments/environment (and binary) used from its next
  // start on. The image also holds /usr/bin/coco-placeholder-agent.
  Status SetAgentCommandLine(const std::vector<std::string>& args, const std::vector<std::string>& env,
                             const std::string& binary = kDefaultAgentBinary);
  // Waits until something listens on guest TCP `port` (the agent's server is up).
  Status WaitAgentListening(int port = kGuestAgentPort, std::chrono::milliseconds timeout = std::chrono::seconds(60));
  StatusOr<std::string> AgentLog();  // /run/agent.log

  StatusOr<std::string> KernelLog();  // dmesg
  // Lines of a kernel log that report integrity or I/O failures
  // ("INTEGRITY AEAD ERROR", dm-integrity "Checksum failed", "I/O error",
  // "Buffer I/O error", "EXT4-fs error", XFS corruption...).
  static std::vector<std::string> IntegrityErrors(const std::string& log);

  const std::string& ConsoleLogPath() const { return console_log_; }
  std::string ConsoleTail(size_t max_bytes = 8192) const;
  QmpClient& Qmp() { return *qmp_; }
  pid_t QemuPid() const { return qemu_pid_; }
  bool Alive();
  // Kills QEMU at once (like a host crash / power cut). Idempotent.
  void Kill();
  // Seconds from QEMU launch until guest-exec answered.
  double BootSeconds() const { return boot_seconds_; }

 private:
  GuestVm() = default;
  Status Launch(const GuestVmOptions& options);
  Status WaitReady(std::chrono::milliseconds timeout);
  StatusOr<ExecResult> ExecOnce(const std::string& cmd, std::chrono::milliseconds timeout, const ExecOptions& options,
                                std::chrono::milliseconds io_slack);
  StatusOr<std::string> AgentPid();

  std::string temp_dir_;
  bool keep_ = false;
  std::string console_log_;
  std::string qmp_path_;
  pid_t qemu_pid_ = -1;
  int exec_host_port_ = -1;
  int agent_host_port_ = -1;
  std::map<int, int> forwarded_;  // guest port -> host port
  std::unique_ptr<QmpClient> qmp_;
  int root_ports_ = 0;
  std::mutex hotplug_mu_;
  struct Plugged {
    int port = -1;                   // root port index; -1 on SCSI
    std::vector<std::string> nodes;  // block nodes, top first
    nlohmann::json format_node;      // blockdev-add arguments of "<id>-blk" (for reopen)
    bool fault_node = false;
    int fault_generation = 0;
    bool throttle = false;
    bool rbd_key = false;  // secret object "<id>-key"
  };
  std::map<std::string, Plugged> plugged_;  // QEMU device id -> its disk
  double boot_seconds_ = 0;
};

}  // namespace cocostorage::vmtest
