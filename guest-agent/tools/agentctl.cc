// cocostorage-agentctl: talk to a guest agent (debugging, demos, on-call).
//   cocostorage-agentctl --addr=HOST:PORT list      (or --addr=unix:PATH, --addr=vsock:CID:PORT)
// Parsed with CLI11 (--help for the full list).
//   cocostorage-agentctl --addr=... get ID
//   cocostorage-agentctl --addr=... deactivate ID
//   cocostorage-agentctl --addr=... activate --id=ID (--pci=02/00|--serial=S|--devno=M:m) --target=PATH
//       [--fs=ext4|xfs | --block] [--integrity=hmac-sha256|none|aegis128|aes-gcm] [--init=zero-guard|full-wipe]
//       [--fs-group=N] [--mkfs-opt=A --mkfs-opt=B] [--mount-opt=noatime] [--timeout-ms=N]
// Prints the resulting Volume as JSON; exit code 0 on success, else the gRPC code.
#include <google/protobuf/util/json_util.h>
#include <grpcpp/create_channel_posix.h>
#include <grpcpp/grpcpp.h>
#include <linux/vm_sockets.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cocostorage/common/cli.h"
#include "cocostorage/storage/v1/agent.grpc.pb.h"

namespace pb = cocostorage::storage::v1;

namespace {

std::string Json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, opts);
  return out;
}

int Fail(const grpc::Status& s) {
  std::cerr << "error: " << s.error_code() << " " << s.error_message() << "\n";
  return s.error_code() == 0 ? 1 : s.error_code();
}

// "vsock:CID:PORT" -> a channel over a socket we connect ourselves (gRPC 1.51
// has no vsock scheme); anything else is a gRPC target.
std::shared_ptr<grpc::Channel> Connect(const std::string& addr) {
  if (addr.rfind("vsock:", 0) != 0) return grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
  const std::string parts = addr.substr(6);
  const auto colon = parts.find(':');
  unsigned cid = 0, port = 0;
  auto num = [](std::string_view v, unsigned* out) {
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), *out);
    return !v.empty() && ec == std::errc() && p == v.data() + v.size();
  };
  if (colon == std::string::npos || !num(std::string_view(parts).substr(0, colon), &cid) ||
      !num(std::string_view(parts).substr(colon + 1), &port)) {
    std::cerr << "error: --addr vsock:CID:PORT expected, got " << addr << "\n";
    return nullptr;
  }
  sockaddr_vm sa{};
  sa.svm_family = AF_VSOCK;
  sa.svm_cid = cid;
  sa.svm_port = port;
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    std::cerr << "error: cannot connect to " << addr << "\n";
    if (fd >= 0) close(fd);
    return nullptr;
  }
  return grpc::CreateInsecureChannelFromFd(addr, fd);
}

struct ActivateArgs {
  std::string id, target;
  std::optional<std::string> pci, serial, devno, fs, kbs;
  bool block = false, read_only = false;
  std::optional<int64_t> fs_group;
  std::vector<std::string> mkfs_opts, mount_opts;
  uint32_t timeout_ms = 0;
  std::string init = "zero-guard", integrity = "hmac-sha256";
};

pb::ActivateVolumeRequest BuildRequest(const ActivateArgs& a) {
  pb::ActivateVolumeRequest req;
  req.set_volume_id(a.id);
  if (a.pci) req.mutable_device()->set_pci_path(*a.pci);
  if (a.serial) req.mutable_device()->set_serial(*a.serial);
  if (a.devno) req.mutable_device()->set_dev_number(*a.devno);
  req.set_target_path(a.target);
  if (a.kbs) {
    req.mutable_key()->set_kbs_resource_uri(*a.kbs);
  } else {
    req.mutable_key()->mutable_ephemeral();
  }
  if (a.block) req.set_mode(pb::VOLUME_MODE_BLOCK);
  if (a.fs) req.mutable_filesystem()->set_fs_type(*a.fs);
  if (a.fs_group) req.mutable_filesystem()->set_fs_group(*a.fs_group);
  for (const auto& o : a.mkfs_opts) req.mutable_filesystem()->add_mkfs_options(o);
  for (const auto& o : a.mount_opts) req.mutable_filesystem()->add_mount_options(o);
  req.set_read_only(a.read_only);
  req.set_device_timeout_ms(a.timeout_ms);
  req.set_init_mode(a.init == "full-wipe" ? pb::INIT_MODE_FULL_WIPE : pb::INIT_MODE_ZERO_GUARD);
  static const std::map<std::string, pb::Integrity> kIntegrity = {{"none", pb::INTEGRITY_NONE},
                                                                  {"hmac-sha256", pb::INTEGRITY_HMAC_SHA256},
                                                                  {"aegis128", pb::INTEGRITY_AEGIS128},
                                                                  {"aes-gcm", pb::INTEGRITY_AES_GCM}};
  req.set_integrity(kIntegrity.at(a.integrity));
  return req;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cocostorage-agentctl: talk to a guest agent; prints JSON, exits with the gRPC code on error"};
  std::string addr;
  app.add_option("--addr", addr, "HOST:PORT, unix:PATH or vsock:CID:PORT")->required();
  app.require_subcommand(1);
  app.fallthrough();  // --addr may also follow the subcommand
  auto* list = app.add_subcommand("list", "all volumes");
  auto* info = app.add_subcommand("info", "agent version, kernel, supported modes");
  std::string id;
  auto* get = app.add_subcommand("get", "one volume");
  get->add_option("id", id, "volume id")->required();
  auto* deactivate = app.add_subcommand("deactivate", "unmount, close, forget the key");
  deactivate->add_option("id", id, "volume id")->required();
  ActivateArgs a;
  auto* activate = app.add_subcommand("activate", "set up a hot-plugged disk");
  activate->add_option("--id", a.id, "volume id")->required();
  auto* dev = activate->add_option_group("device", "how the disk is named")->require_option(1);
  dev->add_option("--pci", a.pci, "Kata PCI path, e.g. 02/00");
  dev->add_option("--serial", a.serial, "virtio serial");
  dev->add_option("--devno", a.devno, "MAJ:MIN");
  activate->add_option("--target", a.target, "mount point or block node path")->required();
  activate->add_option("--fs", a.fs, "ext4 or xfs");
  activate->add_flag("--block", a.block, "raw block volume");
  activate->add_flag("--read-only", a.read_only, "mount read-only");
  activate->add_option("--fs-group", a.fs_group, "group owning the volume root");
  activate->add_option("--mkfs-opt", a.mkfs_opts, "one mkfs argument (repeat)");
  activate->add_option("--mount-opt", a.mount_opts, "one mount option (repeat)");
  activate->add_option("--timeout-ms", a.timeout_ms, "device wait");
  activate->add_option("--kbs", a.kbs, "kbs:///repo/type/tag key instead of an ephemeral one");
  activate->add_option("--init", a.init, "zero-guard or full-wipe")->check(CLI::IsMember({"zero-guard", "full-wipe"}));
  activate->add_option("--integrity", a.integrity, "hmac-sha256, none, aegis128, aes-gcm")
      ->check(CLI::IsMember({"none", "hmac-sha256", "aegis128", "aes-gcm"}));
  if (auto code = cocostorage::ParseCommandLine(app, argc, argv)) return *code;

  auto channel = Connect(addr);
  if (!channel) return 14;  // UNAVAILABLE
  auto stub = pb::StorageAgent::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
  grpc::Status s;
  if (list->parsed()) {
    pb::ListVolumesResponse resp;
    s = stub->ListVolumes(&ctx, {}, &resp);
    if (s.ok()) std::cout << Json(resp) << "\n";
  } else if (info->parsed()) {
    pb::AgentInfo resp;
    s = stub->GetAgentInfo(&ctx, {}, &resp);
    if (s.ok()) std::cout << Json(resp) << "\n";
  } else if (get->parsed()) {
    pb::GetVolumeRequest req;
    req.set_volume_id(id);
    pb::Volume resp;
    s = stub->GetVolume(&ctx, req, &resp);
    if (s.ok()) std::cout << Json(resp) << "\n";
  } else if (deactivate->parsed()) {
    pb::DeactivateVolumeRequest req;
    req.set_volume_id(id);
    pb::DeactivateVolumeResponse resp;
    s = stub->DeactivateVolume(&ctx, req, &resp);
    if (s.ok()) std::cout << Json(resp) << "\n";
  } else {
    pb::ActivateVolumeResponse resp;
    s = stub->ActivateVolume(&ctx, BuildRequest(a), &resp);
    if (s.ok()) std::cout << Json(resp.volume()) << "\n";
  }
  return s.ok() ? 0 : Fail(s);
}
