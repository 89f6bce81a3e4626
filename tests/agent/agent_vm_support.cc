#include "agent_vm_support.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>

#include "cocostorage/common/strings.h"
#include "cocostorage/common/unique_fd.h"

namespace cocostorage::vmtest {

std::string MakeTempDir(const std::string& prefix) {
  std::string tmpl = "/var/tmp/" + prefix + "-XXXXXX";
  char* d = mkdtemp(tmpl.data());
  return d ? std::string(d) : std::string();
}

SparseImage::SparseImage(const std::string& dir, const std::string& name, uint64_t bytes)
    : path_(dir + "/" + name + ".img") {
  UniqueFd fd(open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (fd.valid()) (void)!ftruncate(fd.get(), static_cast<off_t>(bytes));
}

SparseImage::~SparseImage() { unlink(path_.c_str()); }

namespace {

template <typename Fn>
void ForEachDataBlock(const std::string& path, Fn fn) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return;
  off_t end = lseek(fd.get(), 0, SEEK_END);
  std::vector<char> buf(1 << 20);
  off_t pos = 0;
  while (pos < end) {
    off_t data = lseek(fd.get(), pos, SEEK_DATA);
    if (data < 0) break;
    off_t hole = lseek(fd.get(), data, SEEK_HOLE);
    if (hole < 0) hole = end;
    data = data / 4096 * 4096;
    for (off_t off = data; off < hole;) {
      size_t want = static_cast<size_t>(std::min<off_t>(static_cast<off_t>(buf.size()), hole - off));
      ssize_t n = pread(fd.get(), buf.data(), want, off);
      if (n <= 0) return;
      for (ssize_t b = 0; b < n; b += 4096) {
        size_t len = static_cast<size_t>(std::min<ssize_t>(4096, n - b));
        fn(static_cast<uint64_t>(off + b), std::string_view(buf.data() + b, len));
      }
      off += n;
    }
    pos = hole;
  }
}

}  // namespace

std::map<uint64_t, uint64_t> BlockHashes(const std::string& path) {
  std::map<uint64_t, uint64_t> out;
  ForEachDataBlock(path, [&](uint64_t off, std::string_view block) {
    bool zero = block.find_first_not_of('\0') == std::string_view::npos;
    if (!zero) out[off] = std::hash<std::string_view>{}(block);
  });
  return out;
}

bool FileContains(const std::string& path, const std::string& needle) {
  // Blocks are scanned with an overlap so a match across a block edge counts.
  bool found = false;
  std::string carry;
  ForEachDataBlock(path, [&](uint64_t, std::string_view block) {
    if (found) return;
    std::string window = carry + std::string(block);
    if (window.find(needle) != std::string::npos) found = true;
    carry = window.size() >= needle.size() ? window.substr(window.size() - needle.size() + 1) : window;
  });
  return found;
}

Status FlipBytes(const std::string& path, const std::vector<uint64_t>& block_offsets) {
  UniqueFd fd(open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid()) return ErrnoStatus(errno, "open " + path);
  for (uint64_t off : block_offsets) {
    char c = 0;
    if (pread(fd.get(), &c, 1, static_cast<off_t>(off + 1000)) != 1) return ErrnoStatus(errno, "pread");
    c = static_cast<char>(c ^ 0x5a);
    if (pwrite(fd.get(), &c, 1, static_cast<off_t>(off + 1000)) != 1) return ErrnoStatus(errno, "pwrite");
  }
  fsync(fd.get());
  return OkStatus();
}

AgentClient::AgentClient(const std::string& target, bool retry_unavailable)
    : stub_(pb::StorageAgent::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()))),
      retry_(retry_unavailable) {}

namespace {
// wait_for_ready: after an agent restart the channel may be in reconnect
// backoff; a call should wait for the new agent (within its deadline) rather
// than fail at once, like a real client with retries would.
void Deadline(grpc::ClientContext* ctx) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
  ctx->set_wait_for_ready(true);
}
}  // namespace

template <typename Fn>
grpc::Status AgentClient::Call(Fn fn) {
  grpc::Status s;
  for (int attempt = 0; attempt < (retry_ ? 5 : 1); ++attempt) {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    s = fn(&ctx);
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  return s;
}

grpc::Status AgentClient::Activate(const pb::ActivateVolumeRequest& req, pb::Volume* out) {
  pb::ActivateVolumeResponse resp;
  grpc::Status s = Call([&](grpc::ClientContext* ctx) { return stub_->ActivateVolume(ctx, req, &resp); });
  if (out) *out = resp.volume();
  return s;
}

grpc::Status AgentClient::Deactivate(const std::string& id, bool* was_active) {
  pb::DeactivateVolumeRequest req;
  req.set_volume_id(id);
  pb::DeactivateVolumeResponse resp;
  grpc::Status s = Call([&](grpc::ClientContext* ctx) { return stub_->DeactivateVolume(ctx, req, &resp); });
  if (was_active) *was_active = resp.was_active();
  return s;
}

grpc::Status AgentClient::Get(const std::string& id, pb::Volume* out) {
  pb::GetVolumeRequest req;
  req.set_volume_id(id);
  return Call([&](grpc::ClientContext* ctx) { return stub_->GetVolume(ctx, req, out); });
}

grpc::Status AgentClient::List(std::vector<pb::Volume>* out) {
  pb::ListVolumesResponse resp;
  grpc::Status s = Call([&](grpc::ClientContext* ctx) { return stub_->ListVolumes(ctx, {}, &resp); });
  out->assign(resp.volumes().begin(), resp.volumes().end());
  return s;
}

pb::ActivateVolumeRequest FsRequest(const std::string& id, const std::string& pci_path, const std::string& fs_type) {
  pb::ActivateVolumeRequest r;
  r.set_volume_id(id);
  r.mutable_device()->set_pci_path(pci_path);
  r.mutable_key()->mutable_ephemeral();
  r.mutable_filesystem()->set_fs_type(fs_type);
  r.mutable_filesystem()->set_fs_group(2000);
  r.set_target_path(Cat(kStorageRoot, "/", id));
  r.set_device_timeout_ms(20000);
  return r;
}

pb::ActivateVolumeRequest BlockRequest(const std::string& id, const std::string& pci_path) {
  pb::ActivateVolumeRequest r;
  r.set_volume_id(id);
  r.mutable_device()->set_pci_path(pci_path);
  r.mutable_key()->mutable_ephemeral();
  r.set_mode(pb::VOLUME_MODE_BLOCK);
  r.set_target_path(Cat(kStorageRoot, "/", id, ".blk"));
  r.set_device_timeout_ms(20000);
  return r;
}

StatusOr<std::vector<std::string>> KernelLogCursor::NewErrors() {
  // Read-and-clear: each call sees only what the kernel logged since the last
  // one, however much that is (no ring-buffer offset arithmetic).
  COCO_ASSIGN_OR_RETURN(std::string log, vm_->ExecOk("dmesg -c"));
  return GuestVm::IntegrityErrors(log);
}

}  // namespace cocostorage::vmtest
