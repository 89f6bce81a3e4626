#include "guest_vm.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "cocostorage/common/log.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/common/unique_fd.h"
#include "exec_protocol.h"

#ifndef COCO_VM_IMAGE_DIR
#define COCO_VM_IMAGE_DIR ""
#endif

namespace cocostorage::vmtest {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

int MsLeft(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  if (left < 0) return 0;
  return left > 1000000 ? 1000000 : static_cast<int>(left);
}

std::string Base64(std::string_view in) {
  static const char kChars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << 16) |
                 (static_cast<uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8) |
                 static_cast<uint32_t>(static_cast<unsigned char>(in[i + 2]));
    out += kChars[(v >> 18) & 63];
    out += kChars[(v >> 12) & 63];
    out += kChars[(v >> 6) & 63];
    out += kChars[v & 63];
  }
  if (i < in.size()) {
    uint32_t v = static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << 16;
    if (i + 1 < in.size()) v |= static_cast<uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8;
    out += kChars[(v >> 18) & 63];
    out += kChars[(v >> 12) & 63];
    out += i + 1 < in.size() ? kChars[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string Lines(const std::vector<std::string>& items) {
  std::string s;
  for (const auto& i : items) s += i + "\n";
  return s;
}

// Single-quotes `s` for /bin/sh.
std::string ShellQuote(std::string_view s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  out += "'";
  return out;
}

StatusOr<int> PickFreePort() {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoStatus(errno, "socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return ErrnoStatus(errno, "bind 127.0.0.1:0");
  }
  socklen_t len = sizeof addr;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return ErrnoStatus(errno, "getsockname");
  }
  return static_cast<int>(ntohs(addr.sin_port));
}

void PutU32(std::string& out, uint32_t v) {
  uint32_t be = htonl(v);
  out.append(reinterpret_cast<const char*>(&be), sizeof be);
}

Status SendAll(int fd, const std::string& data, Clock::time_point deadline) {
  size_t off = 0;
  while (off < data.size()) {
    pollfd pfd{fd, POLLOUT, 0};
    int r = ::poll(&pfd, 1, MsLeft(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ErrnoStatus(errno, "poll");
    if (r == 0) return absl::DeadlineExceededError("timed out sending to guest-exec");
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return ErrnoStatus(errno, "send to guest-exec");
    off += static_cast<size_t>(n);
  }
  return OkStatus();
}

// Reads exactly `len` bytes.
Status RecvAll(int fd, char* out, size_t len, Clock::time_point deadline) {
  size_t off = 0;
  while (off < len) {
    pollfd pfd{fd, POLLIN, 0};
    int r = ::poll(&pfd, 1, MsLeft(deadline));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ErrnoStatus(errno, "poll");
    if (r == 0) return absl::DeadlineExceededError("timed out waiting for guest-exec");
    ssize_t n = ::recv(fd, out + off, len - off, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return ErrnoStatus(errno, "recv from guest-exec");
    if (n == 0) return absl::UnavailableError("guest-exec closed the connection");
    off += static_cast<size_t>(n);
  }
  return OkStatus();
}

StatusOr<uint32_t> RecvU32(int fd, Clock::time_point deadline) {
  uint32_t be = 0;
  COCO_RETURN_IF_ERROR(RecvAll(fd, reinterpret_cast<char*>(&be), sizeof be, deadline));
  return ntohl(be);
}

StatusOr<std::string> RecvBlob(int fd, Clock::time_point deadline) {
  COCO_ASSIGN_OR_RETURN(uint32_t len, RecvU32(fd, deadline));
  if (len > kExecMaxPayload) return absl::DataLossError("guest-exec: oversized reply");
  std::string s(len, '\0');
  if (len > 0) COCO_RETURN_IF_ERROR(RecvAll(fd, s.data(), len, deadline));
  return s;
}

std::string HexByte(int v) {
  static const char kHex[] = "0123456789abcdef";
  std::string s;
  s += kHex[(v >> 4) & 15];
  s += kHex[v & 15];
  return s;
}

bool ValidQemuId(const std::string& id) {
  if (id.empty() || id.size() > 24 || !std::isalpha(static_cast<unsigned char>(id[0]))) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
  }
  return true;
}

}  // namespace

GuestImage DefaultGuestImage() {
  std::string dir;
  if (const char* env = std::getenv("COCOSTORAGE_VM_IMAGE_DIR"); env != nullptr && *env != '\0') {
    dir = env;
  } else {
    dir = COCO_VM_IMAGE_DIR;
  }
  return GuestImage{dir + "/vmlinuz", dir + "/initrd.gz"};
}

StatusOr<std::unique_ptr<GuestVm>> GuestVm::Start(const GuestVmOptions& options) {
  std::unique_ptr<GuestVm> vm(new GuestVm());
  Status s = vm->Launch(options);
  if (!s.ok()) {
    std::string tail = vm->ConsoleTail(4096);
    return Annotate(s, Cat("starting guest VM (console ", vm->console_log_, ", last lines:\n", tail, "\n)"));
  }
  return vm;
}

Status GuestVm::Launch(const GuestVmOptions& options) {
  const char* keep = std::getenv("COCOSTORAGE_VM_KEEP");
  keep_ = keep != nullptr && std::string(keep) == "1";
  GuestImage image = DefaultGuestImage();
  const std::string kernel = options.kernel.empty() ? image.kernel : options.kernel;
  const std::string initrd = options.initrd.empty() ? image.initrd : options.initrd;
  for (const auto& f : {kernel, initrd}) {
    if (::access(f.c_str(), R_OK) != 0) {
      return absl::NotFoundError(
          Cat("guest image file ", f, " missing (build the vm_guest_image target or set COCOSTORAGE_VM_IMAGE_DIR)"));
    }
  }
  if (options.root_ports < 0 || options.root_ports > 24) {
    return absl::InvalidArgumentError("root_ports must be in [0, 24]");
  }
  root_ports_ = options.root_ports;

  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = Cat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/coco-vm.XXXXXX");
  if (::mkdtemp(tmpl.data()) == nullptr) return ErrnoStatus(errno, Cat("mkdtemp ", tmpl));
  temp_dir_ = tmpl;
  qmp_path_ = temp_dir_ + "/qmp.sock";
  console_log_ = options.console_log.empty() ? temp_dir_ + "/console.log" : options.console_log;

  COCO_ASSIGN_OR_RETURN(exec_host_port_, PickFreePort());
  COCO_ASSIGN_OR_RETURN(agent_host_port_, PickFreePort());
  forwarded_[kGuestExecPort] = exec_host_port_;
  forwarded_[kGuestAgentPort] = agent_host_port_;
  for (int gp : options.forward_guest_ports) {
    if (forwarded_.count(gp) != 0) continue;
    COCO_ASSIGN_OR_RETURN(int hp, PickFreePort());
    forwarded_[gp] = hp;
  }

  // A big log buffer so that tests scanning dmesg see everything since boot.
  std::string append = "console=ttyS0 quiet panic=-1 printk.devkmsg=on log_buf_len=8M";
  if (options.agent_args) append += " coco.agent_args_b64=" + Base64(Lines(*options.agent_args));
  if (!options.agent_extra_args.empty()) {
    append += " coco.agent_extra_args_b64=" + Base64(Lines(options.agent_extra_args));
  }
  if (!options.agent_env.empty()) append += " coco.agent_env_b64=" + Base64(Lines(options.agent_env));
  if (!options.start_agent) append += " coco.agent=0";
  for (const auto& a : options.extra_kernel_args) append += " " + a;

  std::string netdev = "user,id=n0,net=10.0.2.0/24";
  for (const auto& [gp, hp] : forwarded_) netdev += Cat(",hostfwd=tcp:127.0.0.1:", hp, "-:", gp);

  std::vector<std::string> args = {
      options.qemu_binary,
      "-machine",
      "q35,accel=tcg",
      "-cpu",
      "max",
      "-m",
      Cat(options.memory_mib),
      "-smp",
      Cat(options.smp),
      "-nographic",
      "-no-reboot",
      "-vga",
      "none",
      "-nodefaults",
      "-serial",
      "stdio",
      "-kernel",
      kernel,
      "-initrd",
      initrd,
      "-append",
      append,
      "-netdev",
      netdev,
      // Slot 0x1e keeps 0x02.. free for the hot-plug root ports; no option ROM (no iPXE).
      "-device",
      "virtio-net-pci,netdev=n0,addr=0x1e,romfile=",
      // One virtio-scsi controller (Kata's default block driver) for scsi-hd hot-plugs.
      "-device",
      "virtio-scsi-pci,id=scsi0,addr=0x1c",
      "-qmp",
      Cat("unix:", qmp_path_, ",server=on,wait=off"),
  };
  for (int i = 0; i < root_ports_; ++i) {
    args.push_back("-device");
    args.push_back(
        Cat("pcie-root-port,id=rp", i, ",bus=pcie.0,chassis=", i + 1, ",slot=", i + 1, ",addr=0x", HexByte(2 + i)));
  }
  for (const auto& a : options.extra_qemu_args) args.push_back(a);

  UniqueFd log_fd(::open(console_log_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  if (!log_fd.valid()) return ErrnoStatus(errno, Cat("opening console log ", console_log_));
  UniqueFd null_fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!null_fd.valid()) return ErrnoStatus(errno, "opening /dev/null");
  std::string cmdline_for_log;
  for (const auto& a : args) cmdline_for_log += (cmdline_for_log.empty() ? "" : " ") + a;
  {
    std::string header = Cat("### ", cmdline_for_log, "\n");
    if (::write(log_fd.get(), header.data(), header.size()) < 0) {
      // best effort; the log is for humans
    }
  }

  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const auto launched = Clock::now();
  pid_t pid = ::fork();
  if (pid < 0) return ErrnoStatus(errno, "fork");
  if (pid == 0) {
    // QEMU must not outlive the test, whatever kills it.
    if (!keep_) ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::setpgid(0, 0);
    ::dup2(null_fd.get(), 0);
    ::dup2(log_fd.get(), 1);
    ::dup2(log_fd.get(), 2);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  qemu_pid_ = pid;
  log::Info(
      "vm.launch",
      {{"pid", pid}, {"console", console_log_}, {"exec_port", exec_host_port_}, {"agent_port", agent_host_port_}});

  const auto deadline = Clock::now() + options.boot_timeout;
  for (;;) {
    if (!Alive()) return absl::UnavailableError("QEMU exited at startup (see the console log)");
    auto qmp = QmpClient::Connect(qmp_path_, milliseconds(500));
    if (qmp.ok()) {
      qmp_ = std::move(qmp).value();
      break;
    }
    if (Clock::now() >= deadline) return Annotate(qmp.status(), "connecting to QMP");
  }
  COCO_RETURN_IF_ERROR(WaitReady(milliseconds(MsLeft(deadline))));
  boot_seconds_ = std::chrono::duration<double>(Clock::now() - launched).count();
  log::Info("vm.ready", {{"pid", pid}, {"boot_seconds", boot_seconds_}});
  return OkStatus();
}

Status GuestVm::WaitReady(milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  Status last = absl::DeadlineExceededError("guest-exec never answered");
  while (Clock::now() < deadline) {
    if (!Alive()) return absl::UnavailableError("QEMU exited during boot");
    // Short attempts: a connection made before the guest listens can hang in
    // QEMU's user-mode TCP retransmissions.
    auto r = ExecOnce("true", milliseconds(2000), {}, milliseconds(500));
    if (r.ok() && r->exit_code == 0) return OkStatus();
    if (!r.ok()) last = r.status();
    std::this_thread::sleep_for(milliseconds(200));
  }
  return Annotate(last, Cat("guest-exec not ready after ", timeout.count(), " ms"));
}

GuestVm::~GuestVm() {
  if (keep_ && qemu_pid_ > 0) {
    std::fprintf(stderr,
                 "COCOSTORAGE_VM_KEEP=1: leaving QEMU pid %d running; guest-exec 127.0.0.1:%d, agent %s, "
                 "QMP %s, console %s\n",
                 static_cast<int>(qemu_pid_), exec_host_port_, AgentTarget().c_str(), qmp_path_.c_str(),
                 console_log_.c_str());
    return;
  }
  Kill();
  if (!temp_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(temp_dir_, ec);
  }
}

bool GuestVm::Alive() {
  if (qemu_pid_ <= 0) return false;
  int status = 0;
  pid_t r = ::waitpid(qemu_pid_, &status, WNOHANG);
  if (r == qemu_pid_) {
    qemu_pid_ = -1;
    return false;
  }
  return true;
}

void GuestVm::Kill() {
  qmp_.reset();
  if (qemu_pid_ <= 0) return;
  ::kill(qemu_pid_, SIGKILL);
  int status = 0;
  while (::waitpid(qemu_pid_, &status, 0) < 0 && errno == EINTR) {
  }
  qemu_pid_ = -1;
}

std::string GuestVm::ConsoleTail(size_t max_bytes) const {
  std::ifstream in(console_log_, std::ios::binary);
  if (!in) return "";
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  if (s.size() > max_bytes) s = s.substr(s.size() - max_bytes);
  return s;
}

std::string GuestVm::AgentTarget() const { return Cat("127.0.0.1:", agent_host_port_); }

int GuestVm::HostPort(int guest_port) const {
  auto it = forwarded_.find(guest_port);
  return it == forwarded_.end() ? -1 : it->second;
}

StatusOr<ExecResult> GuestVm::ExecOnce(const std::string& cmd, milliseconds timeout, const ExecOptions& options,
                                       milliseconds io_slack) {
  return GuestExecAt(exec_host_port_, cmd, timeout, options, io_slack);
}

StatusOr<ExecResult> GuestExecAt(int host_port, const std::string& cmd, milliseconds timeout,
                                 const ExecOptions& options, milliseconds io_slack) {
  const auto deadline = Clock::now() + timeout + io_slack;
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return ErrnoStatus(errno, "socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(host_port));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS) {
    return ErrnoStatus(errno, "connecting to guest-exec");
  }
  int one = 1;
  ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  std::string req;
  PutU32(req, kExecMagic);
  PutU32(req, static_cast<uint32_t>(timeout.count()));
  PutU32(req, options.merge_output ? kExecFlagMergeOutput : 0u);
  PutU32(req, static_cast<uint32_t>(cmd.size()));
  req += cmd;
  PutU32(req, static_cast<uint32_t>(options.stdin_data.size()));
  req += options.stdin_data;
  COCO_RETURN_IF_ERROR(SendAll(fd.get(), req, deadline));
  COCO_ASSIGN_OR_RETURN(uint32_t magic, RecvU32(fd.get(), deadline));
  if (magic != kExecMagic) return absl::DataLossError("guest-exec: bad reply magic");
  ExecResult r;
  COCO_ASSIGN_OR_RETURN(uint32_t code, RecvU32(fd.get(), deadline));
  COCO_ASSIGN_OR_RETURN(uint32_t sig, RecvU32(fd.get(), deadline));
  COCO_ASSIGN_OR_RETURN(uint32_t timed_out, RecvU32(fd.get(), deadline));
  r.exit_code = static_cast<int32_t>(code);
  r.term_signal = static_cast<int32_t>(sig);
  r.timed_out = timed_out != 0;
  COCO_ASSIGN_OR_RETURN(r.out, RecvBlob(fd.get(), deadline));
  COCO_ASSIGN_OR_RETURN(r.err, RecvBlob(fd.get(), deadline));
  return r;
}

StatusOr<ExecResult> GuestVm::Exec(const std::string& cmd, milliseconds timeout, const ExecOptions& options) {
  if (qemu_pid_ <= 0) return absl::FailedPreconditionError("VM is not running");
  if (cmd.size() > kExecMaxPayload || options.stdin_data.size() > kExecMaxPayload) {
    return absl::InvalidArgumentError("command or stdin too large");
  }
  // Slack for TCG slowness between the guest's own deadline and ours.
  return ExecOnce(cmd, timeout, options, std::chrono::seconds(30));
}

StatusOr<std::string> GuestVm::ExecOk(const std::string& cmd, milliseconds timeout) {
  COCO_ASSIGN_OR_RETURN(ExecResult r, Exec(cmd, timeout));
  if (r.timed_out) return absl::DeadlineExceededError(Cat("guest command timed out: ", cmd));
  if (r.exit_code != 0) {
    return absl::InternalError(Cat("guest command failed (exit ", r.exit_code, ", signal ", r.term_signal, "): ", cmd,
                                   "\nstderr: ", r.err, "\nstdout: ", r.out));
  }
  return r.out;
}

namespace {

nlohmann::json BlkdebugNode(const std::string& node, const std::string& image, const std::vector<BlkdebugRule>& rules) {
  nlohmann::json inject = nlohmann::json::array();
  for (const auto& r : rules) {
    // blkdebug arms a rule on a debug event; the raw format node above emits
    // read_aio/write_aio per request, the generic flush path flush_to_disk.
    std::string event = r.iotype == "read" ? "read_aio" : r.iotype == "flush" ? "flush_to_disk" : "write_aio";
    nlohmann::json rule = {{"event", event}, {"iotype", r.iotype}, {"errno", r.error}, {"once", r.once}};
    if (r.sector) rule["sector"] = *r.sector;
    inject.push_back(rule);
  }
  nlohmann::json args = {{"node-name", node}, {"driver", "blkdebug"}, {"image", image}};
  // QEMU refuses an empty list ("doesn't support the option").
  if (!inject.empty()) args["inject-error"] = inject;
  return args;
}

}  // namespace

StatusOr<std::string> GuestVm::Hotplug(const std::string& image_path, const std::string& id, const std::string& serial,
                                       const HotplugOptions& options) {
  if (!ValidQemuId(id)) return absl::InvalidArgumentError(Cat("bad device id '", id, "'"));
  if (serial.size() > 20) return absl::InvalidArgumentError("virtio-blk serial is at most 20 bytes");
  std::lock_guard<std::mutex> lock(hotplug_mu_);
  if (plugged_.count(id) != 0) return absl::AlreadyExistsError(Cat("device ", id, " already plugged"));
  const bool scsi = options.bus == HotplugOptions::Bus::kScsi;
  int port = -1;
  for (int i = 0; i < root_ports_ && port < 0 && !scsi; ++i) {
    bool used = false;
    for (const auto& [dev, p] : plugged_) used = used || p.port == i;
    if (!used) port = i;
  }
  if (port < 0 && !scsi) return absl::ResourceExhaustedError("no free pcie-root-port (raise root_ports)");
  if (!qmp_) return absl::FailedPreconditionError("VM is not running");

  // Node graph, bottom up: file "<id>-file" [-> throttle "<id>-thr"]
  // [-> blkdebug "<id>-dbg0"] -> raw "<id>-blk" (the device's drive).
  Plugged disk;
  disk.port = port;
  auto rollback = [&] {
    for (const auto& n : disk.nodes) (void)qmp_->Execute("blockdev-del", {{"node-name", n}});
    if (disk.throttle) (void)qmp_->Execute("object-del", {{"id", id + "-tg"}});
    if (disk.rbd_key) (void)qmp_->Execute("object-del", {{"id", id + "-key"}});
  };
  nlohmann::json cache = {{"direct", options.cache_direct}, {"no-flush", false}};
  nlohmann::json file = {{"node-name", id + "-file"},
                         {"driver", "file"},
                         {"filename", image_path},
                         {"read-only", options.read_only},
                         {"cache", cache}};
  if (options.cache_direct) file["aio"] = "threads";
  if (options.discard) file["discard"] = "unmap";
  if (options.rbd) {
    const HotplugOptions::Rbd& r = *options.rbd;
    COCO_RETURN_IF_ERROR(
        qmp_->Execute("object-add",
                      {{"qom-type", "secret"}, {"id", id + "-key"}, {"data", r.key}, {"format", "base64"}})
            .status());
    disk.rbd_key = true;
    file = {{"node-name", id + "-file"},
            {"driver", "rbd"},
            {"pool", r.pool},
            {"image", r.image},
            {"conf", r.conf},
            {"user", r.user},
            {"key-secret", id + "-key"},
            {"read-only", options.read_only}};
    if (options.discard) file["discard"] = "unmap";
  }
  if (auto s = qmp_->Execute("blockdev-add", file); !s.ok()) {
    rollback();
    return s.status();
  }
  disk.nodes.insert(disk.nodes.begin(), id + "-file");
  std::string below = id + "-file";
  if (options.throttle) {
    nlohmann::json limits = nlohmann::json::object();
    if (options.throttle->bps_total > 0) limits["bps-total"] = options.throttle->bps_total;
    if (options.throttle->iops_total > 0) limits["iops-total"] = options.throttle->iops_total;
    if (auto s = qmp_->Execute("object-add", {{"qom-type", "throttle-group"}, {"id", id + "-tg"}, {"limits", limits}});
        !s.ok()) {
      rollback();
      return s.status();
    }
    disk.throttle = true;
    nlohmann::json thr = {
        {"node-name", id + "-thr"}, {"driver", "throttle"}, {"throttle-group", id + "-tg"}, {"file", below}};
    if (auto s = qmp_->Execute("blockdev-add", thr); !s.ok()) {
      rollback();
      return s.status();
    }
    disk.nodes.insert(disk.nodes.begin(), id + "-thr");
    below = id + "-thr";
  }
  if (options.fault_node || !options.faults.empty()) {
    if (options.throttle) {
      rollback();
      return absl::InvalidArgumentError("fault_node and throttle are not combined");
    }
    disk.fault_node = true;
    if (auto s = qmp_->Execute("blockdev-add", BlkdebugNode(id + "-dbg0", below, options.faults)); !s.ok()) {
      rollback();
      return s.status();
    }
    disk.nodes.insert(disk.nodes.begin(), id + "-dbg0");
    below = id + "-dbg0";
  }
  const std::string node = id + "-blk";
  nlohmann::json blockdev = {
      {"node-name", node}, {"driver", "raw"}, {"file", below}, {"read-only", options.read_only}, {"cache", cache}};
  if (options.discard) blockdev["discard"] = "unmap";
  if (auto s = qmp_->Execute("blockdev-add", blockdev); !s.ok()) {
    rollback();
    return s.status();
  }
  disk.nodes.insert(disk.nodes.begin(), node);
  disk.format_node = blockdev;
  nlohmann::json dev = {
      {"driver", "virtio-blk-pci"}, {"id", id}, {"drive", node}, {"bus", Cat("rp", port)}, {"serial", serial}};
  if (scsi) dev = {{"driver", "scsi-hd"}, {"id", id}, {"drive", node}, {"bus", "scsi0.0"}, {"serial", serial}};
  if (!options.werror.empty()) dev["werror"] = options.werror;
  if (!options.rerror.empty()) dev["rerror"] = options.rerror;
  auto added = qmp_->Execute("device_add", dev);
  if (!added.ok()) {
    rollback();
    return added.status();
  }
  plugged_[id] = std::move(disk);
  // A SCSI disk has no PCI path of its own: the caller names it by MAJ:MIN.
  return scsi ? std::string("scsi0") : Cat(HexByte(2 + port), "/00");
}

Status GuestVm::SetFaults(const std::string& id, const std::vector<BlkdebugRule>& rules) {
  std::lock_guard<std::mutex> lock(hotplug_mu_);
  auto it = plugged_.find(id);
  if (it == plugged_.end()) return absl::NotFoundError(Cat("device ", id, " is not plugged"));
  if (!it->second.fault_node) return absl::FailedPreconditionError(Cat("device ", id, " has no blkdebug node"));
  if (!qmp_) return absl::FailedPreconditionError("VM is not running");
  Plugged& disk = it->second;
  const std::string old_node = Cat(id, "-dbg", disk.fault_generation);
  const std::string new_node = Cat(id, "-dbg", disk.fault_generation + 1);
  // blkdebug ignores new rules on reopen: a new node takes the old one's
  // place under the format node instead.
  COCO_RETURN_IF_ERROR(qmp_->Execute("blockdev-add", BlkdebugNode(new_node, id + "-file", rules)).status());
  nlohmann::json reopen = disk.format_node;
  reopen["file"] = new_node;
  if (auto s = qmp_->Execute("blockdev-reopen", {{"options", nlohmann::json::array({reopen})}}); !s.ok()) {
    (void)qmp_->Execute("blockdev-del", {{"node-name", new_node}});
    return s.status();
  }
  disk.format_node = reopen;
  ++disk.fault_generation;
  for (auto& n : disk.nodes) {
    if (n == old_node) n = new_node;
  }
  return qmp_->Execute("blockdev-del", {{"node-name", old_node}}).status();
}

Status GuestVm::Unplug(const std::string& id, milliseconds timeout) {
  std::lock_guard<std::mutex> lock(hotplug_mu_);
  auto it = plugged_.find(id);
  if (it == plugged_.end()) return absl::NotFoundError(Cat("device ", id, " is not plugged"));
  if (!qmp_) return absl::FailedPreconditionError("VM is not running");
  COCO_RETURN_IF_ERROR(qmp_->Execute("device_del", {{"id", id}}).status());
  COCO_RETURN_IF_ERROR(
      qmp_->WaitEvent(
              "DEVICE_DELETED",
              [&](const nlohmann::json& data) { return data.contains("device") && data["device"] == id; }, timeout)
          .status());
  Plugged disk = std::move(it->second);
  plugged_.erase(it);
  for (const auto& n : disk.nodes) COCO_RETURN_IF_ERROR(qmp_->Execute("blockdev-del", {{"node-name", n}}).status());
  if (disk.throttle) COCO_RETURN_IF_ERROR(qmp_->Execute("object-del", {{"id", id + "-tg"}}).status());
  if (disk.rbd_key) COCO_RETURN_IF_ERROR(qmp_->Execute("object-del", {{"id", id + "-key"}}).status());
  return OkStatus();
}

StatusOr<std::string> GuestVm::WaitForScsiDisk(const std::string& serial, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  // VPD page 0x80: a 4-byte header, then the serial (QEMU pads nothing).
  const std::string cmd =
      Cat("for d in /sys/block/sd*; do [ -e $d/device/vpd_pg80 ] && [ \"$(tail -c +5 $d/device/vpd_pg80 | tr -d '\\000 "
          "')\" = ",
          ShellQuote(serial), " ] && [ -b /dev/${d##*/} ] && echo ${d##*/}; done; true");
  for (;;) {
    COCO_ASSIGN_OR_RETURN(std::string out, ExecOk(cmd, std::chrono::seconds(30)));
    std::string name(TrimWhitespace(out));
    if (!name.empty() && name.find('\n') == std::string::npos) return Cat("/dev/", name);
    if (Clock::now() > deadline) return absl::DeadlineExceededError(Cat("no SCSI disk with serial ", serial));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

StatusOr<std::string> GuestVm::WaitForDisk(const std::string& serial, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const std::string cmd = Cat("for d in /sys/block/*; do [ \"$(cat $d/serial 2>/dev/null)\" = ", ShellQuote(serial),
                              " ] && echo ${d##*/}; done; true");
  for (;;) {
    COCO_ASSIGN_OR_RETURN(std::string out, ExecOk(cmd, std::chrono::seconds(30)));
    std::string name(TrimWhitespace(out));
    if (!name.empty() && name.find('\n') == std::string::npos) {
      // The node appears in /dev (devtmpfs) with the sysfs entry; make sure.
      auto r = Exec(Cat("test -b /dev/", name));
      if (r.ok() && r->exit_code == 0) return "/dev/" + name;
    }
    if (Clock::now() >= deadline) {
      return absl::DeadlineExceededError(Cat("no guest disk with serial ", serial, " after ", timeout.count(), " ms"));
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
}

Status GuestVm::WaitForDiskGone(const std::string& serial, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const std::string cmd = Cat("for d in /sys/block/*; do [ \"$(cat $d/serial 2>/dev/null)\" = ", ShellQuote(serial),
                              " ] && echo ${d##*/}; done; true");
  for (;;) {
    COCO_ASSIGN_OR_RETURN(std::string out, ExecOk(cmd, std::chrono::seconds(30)));
    if (TrimWhitespace(out).empty()) return OkStatus();
    if (Clock::now() >= deadline) {
      return absl::DeadlineExceededError(Cat("guest disk with serial ", serial, " still present"));
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
}

StatusOr<std::string> GuestVm::AgentPid() {
  COCO_ASSIGN_OR_RETURN(std::string out, ExecOk("cat /run/agent.pid 2>/dev/null; true"));
  return std::string(TrimWhitespace(out));
}

Status GuestVm::StopAgent(milliseconds grace) {
  const std::string cmd = Cat(
      "touch /run/agent.disabled; p=$(cat /run/agent.pid 2>/dev/null); [ -z \"$p\" ] && exit 0; "
      "kill -TERM $p 2>/dev/null; i=0; while [ -e /run/agent.pid ]; do i=$((i+1)); "
      "if [ $i -eq ",
      grace.count() / 100 + 1, " ]; then kill -KILL $p 2>/dev/null; fi; ", "if [ $i -gt ", grace.count() / 100 + 200,
      " ]; then echo agent did not stop >&2; exit 1; fi; "
      "sleep 0.1; done");
  return ExecOk(cmd, grace + std::chrono::seconds(30)).status();
}

Status GuestVm::StartAgent(milliseconds timeout) {
  COCO_RETURN_IF_ERROR(ExecOk("b=$(cat /run/agent.bin 2>/dev/null); b=${b:-/usr/bin/cocostorage-agent}; "
                              "test -x $b || { echo no agent binary $b >&2; exit 1; }")
                           .status());
  COCO_RETURN_IF_ERROR(ExecOk("rm -f /run/agent.disabled").status());
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    COCO_ASSIGN_OR_RETURN(std::string pid, AgentPid());
    if (!pid.empty()) return OkStatus();
    if (Clock::now() >= deadline) return absl::DeadlineExceededError("agent did not start");
    std::this_thread::sleep_for(milliseconds(100));
  }
}

Status GuestVm::RestartAgent() {
  COCO_RETURN_IF_ERROR(StopAgent());
  return StartAgent();
}

Status GuestVm::KillAgent(int signal, milliseconds timeout) {
  COCO_ASSIGN_OR_RETURN(std::string old_pid, AgentPid());
  if (old_pid.empty()) return absl::FailedPreconditionError("agent is not running");
  COCO_RETURN_IF_ERROR(ExecOk(Cat("kill -", signal, " ", old_pid)).status());
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    COCO_ASSIGN_OR_RETURN(std::string pid, AgentPid());
    if (!pid.empty() && pid != old_pid) return OkStatus();
    if (Clock::now() >= deadline) return absl::DeadlineExceededError("agent was not respawned");
    std::this_thread::sleep_for(milliseconds(100));
  }
}

Status GuestVm::SetAgentCommandLine(const std::vector<std::string>& args, const std::vector<std::string>& env,
                                    const std::string& binary) {
  std::string cmd = Cat("printf '%s' ", ShellQuote(binary), " > /run/agent.bin && ", "printf '%s' ",
                        ShellQuote(Base64(Lines(args))), " | base64 -d > /run/agent.args.new && ", "printf '%s' ",
                        ShellQuote(Base64(Lines(env))), " | base64 -d > /run/agent.env.new && ",
                        "mv /run/agent.args.new /run/agent.args && mv /run/agent.env.new /run/agent.env");
  return ExecOk(cmd).status();
}

Status GuestVm::WaitAgentListening(int port, milliseconds timeout) {
  // /proc/net/tcp{,6}: local address "....:PORT" in hex, state 0A = LISTEN.
  std::string hex_port = Cat(HexByte((port >> 8) & 0xff), HexByte(port & 0xff));
  for (char& c : hex_port) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const std::string cmd = Cat("cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk '$2 ~ /:", hex_port,
                              "$/ && $4 == \"0A\" {f=1} END {exit !f}'");
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    COCO_ASSIGN_OR_RETURN(ExecResult r, Exec(cmd));
    if (r.exit_code == 0) return OkStatus();
    if (Clock::now() >= deadline) {
      return absl::DeadlineExceededError(Cat("nothing listens on guest port ", port));
    }
    std::this_thread::sleep_for(milliseconds(200));
  }
}

StatusOr<std::string> GuestVm::AgentLog() { return ExecOk("cat /run/agent.log 2>/dev/null; true"); }

StatusOr<std::string> GuestVm::KernelLog() { return ExecOk("dmesg"); }

std::vector<std::string> GuestVm::IntegrityErrors(const std::string& log) {
  static const char* const kPatterns[] = {
      "INTEGRITY AEAD ERROR",  "Checksum failed",         "I/O error",
      "Buffer I/O error",      "EXT4-fs error",           "integrity: Error",
      "critical medium error", "blk_update_request: I/O",
  };
  std::vector<std::string> hits;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    bool hit = false;
    for (const char* p : kPatterns) hit = hit || line.find(p) != std::string::npos;
    if (!hit && line.find("XFS") != std::string::npos &&
        (line.find("orrupt") != std::string::npos || line.find("metadata I/O error") != std::string::npos ||
         line.find("Metadata CRC error") != std::string::npos)) {
      hit = true;
    }
    if (hit) hits.push_back(line);
  }
  return hits;
}

}  // namespace cocostorage::vmtest
