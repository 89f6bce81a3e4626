// cocostorage-agentctl: talk to a guest agent (debugging, demos, on-call).
//   cocostorage-agentctl --addr=HOST:PORT list      (or --addr=unix:PATH, --addr=vsock:CID:PORT)
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

#include <iostream>
#include <string>
#include <vector>

#include "cocostorage/storage/v1/agent.grpc.pb.h"

namespace pb = cocostorage::storage::v1;

namespace {

int Usage() {
  std::cerr << "usage: cocostorage-agentctl --addr=HOST:PORT|unix:PATH (list|info|get ID|deactivate ID|activate ...)\n";
  return 2;
}

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

}  // namespace

int main(int argc, char** argv) {
  std::string addr;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--addr=", 0) == 0)
      addr = a.substr(7);
    else
      args.push_back(a);
  }
  if (addr.empty() || args.empty()) return Usage();
  std::shared_ptr<grpc::Channel> channel;
  if (addr.rfind("vsock:", 0) == 0) {
    // vsock:CID:PORT — gRPC 1.51 has no vsock scheme: connect ourselves and
    // hand the socket to a channel.
    auto parts = addr.substr(6);
    auto colon = parts.find(':');
    if (colon == std::string::npos) return Usage();
    sockaddr_vm sa{};
    sa.svm_family = AF_VSOCK;
    sa.svm_cid = static_cast<unsigned>(std::stoul(parts.substr(0, colon)));
    sa.svm_port = static_cast<unsigned>(std::stoul(parts.substr(colon + 1)));
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
      std::cerr << "error: cannot connect to " << addr << "\n";
      if (fd >= 0) close(fd);
      return 14;
    }
    channel = grpc::CreateInsecureChannelFromFd(addr, fd);
  } else {
    channel = grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
  }
  auto stub = pb::StorageAgent::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
  const std::string& cmd = args[0];
  if (cmd == "list") {
    pb::ListVolumesResponse resp;
    auto s = stub->ListVolumes(&ctx, {}, &resp);
    if (!s.ok()) return Fail(s);
    std::cout << Json(resp) << "\n";
    return 0;
  }
  if (cmd == "info") {
    pb::AgentInfo resp;
    auto s = stub->GetAgentInfo(&ctx, {}, &resp);
    if (!s.ok()) return Fail(s);
    std::cout << Json(resp) << "\n";
    return 0;
  }
  if ((cmd == "get" || cmd == "deactivate") && args.size() == 2) {
    if (cmd == "get") {
      pb::GetVolumeRequest req;
      req.set_volume_id(args[1]);
      pb::Volume resp;
      auto s = stub->GetVolume(&ctx, req, &resp);
      if (!s.ok()) return Fail(s);
      std::cout << Json(resp) << "\n";
    } else {
      pb::DeactivateVolumeRequest req;
      req.set_volume_id(args[1]);
      pb::DeactivateVolumeResponse resp;
      auto s = stub->DeactivateVolume(&ctx, req, &resp);
      if (!s.ok()) return Fail(s);
      std::cout << Json(resp) << "\n";
    }
    return 0;
  }
  if (cmd != "activate") return Usage();
  pb::ActivateVolumeRequest req;
  req.mutable_key()->mutable_ephemeral();
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto val = [&](const char* p) { return a.substr(std::string(p).size()); };
    if (a.rfind("--id=", 0) == 0)
      req.set_volume_id(val("--id="));
    else if (a.rfind("--pci=", 0) == 0)
      req.mutable_device()->set_pci_path(val("--pci="));
    else if (a.rfind("--serial=", 0) == 0)
      req.mutable_device()->set_serial(val("--serial="));
    else if (a.rfind("--devno=", 0) == 0)
      req.mutable_device()->set_dev_number(val("--devno="));
    else if (a.rfind("--target=", 0) == 0)
      req.set_target_path(val("--target="));
    else if (a.rfind("--fs=", 0) == 0)
      req.mutable_filesystem()->set_fs_type(val("--fs="));
    else if (a == "--block")
      req.set_mode(pb::VOLUME_MODE_BLOCK);
    else if (a == "--read-only")
      req.set_read_only(true);
    else if (a.rfind("--fs-group=", 0) == 0)
      req.mutable_filesystem()->set_fs_group(std::stoll(val("--fs-group=")));
    else if (a.rfind("--mkfs-opt=", 0) == 0)
      req.mutable_filesystem()->add_mkfs_options(val("--mkfs-opt="));
    else if (a.rfind("--mount-opt=", 0) == 0)
      req.mutable_filesystem()->add_mount_options(val("--mount-opt="));
    else if (a.rfind("--timeout-ms=", 0) == 0)
      req.set_device_timeout_ms(static_cast<uint32_t>(std::stoul(val("--timeout-ms="))));
    else if (a.rfind("--kbs=", 0) == 0)
      req.mutable_key()->set_kbs_resource_uri(val("--kbs="));
    else if (a.rfind("--init=", 0) == 0) {
      std::string v = val("--init=");
      req.set_init_mode(v == "full-wipe" ? pb::INIT_MODE_FULL_WIPE : pb::INIT_MODE_ZERO_GUARD);
    } else if (a.rfind("--integrity=", 0) == 0) {
      std::string v = val("--integrity=");
      if (v == "none")
        req.set_integrity(pb::INTEGRITY_NONE);
      else if (v == "hmac-sha256")
        req.set_integrity(pb::INTEGRITY_HMAC_SHA256);
      else if (v == "aegis128")
        req.set_integrity(pb::INTEGRITY_AEGIS128);
      else if (v == "aes-gcm")
        req.set_integrity(pb::INTEGRITY_AES_GCM);
      else
        return Usage();
    } else {
      std::cerr << "unknown argument " << a << "\n";
      return Usage();
    }
  }
  pb::ActivateVolumeResponse resp;
  auto s = stub->ActivateVolume(&ctx, req, &resp);
  if (!s.ok()) return Fail(s);
  std::cout << Json(resp.volume()) << "\n";
  return 0;
}
