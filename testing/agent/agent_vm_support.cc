#include "agent_vm_support.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>

#include "cocostorage/common/base64.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/common/unique_fd.h"

namespace cocostorage::vmtest {

std::string SecureMountPoint(const std::string& pci_like) { return Cat(kStorageRoot, "/", Base64UrlEncode(pci_like)); }

std::string SecureMountVolumeId(const std::string& pci_like) {
  std::string id = Cat("sm-", Base64UrlEncode(pci_like));
  while (id.back() == '=') id.pop_back();
  return id;
}

std::string InitDataToml(const std::string& policy) {
  return Cat("version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"cocostorage.toml\" = '''\n", policy, "'''\n");
}

std::string Sha256Hex(const std::string& bytes) {
  unsigned char md[32];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha256(), nullptr);
  return HexEncode(std::string_view(reinterpret_cast<char*>(md), len));
}

StatusOr<std::string> GuestDevNumber(GuestVm* vm, const std::string& dev_path) {
  COCO_ASSIGN_OR_RETURN(std::string devno,
                        vm->ExecOk(Cat("cat /sys/block/", dev_path.substr(dev_path.rfind('/') + 1), "/dev")));
  while (!devno.empty() && devno.back() == '\n') devno.pop_back();
  if (devno.empty()) return absl::NotFoundError(Cat("no dev number for ", dev_path));
  return devno;
}

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

std::string AgentLogTail(GuestVm* vm, size_t bytes) {
  auto log = vm->AgentLog();
  const std::string tail = log.ok() ? log->substr(log->size() > bytes ? log->size() - bytes : 0) : "";
  return Cat("---- agent log tail ----\n", tail, "\n");
}

StatusOr<std::vector<std::string>> KernelLogCursor::NewErrors() {
  // Read-and-clear: each call sees only what the kernel logged since the last
  // one, however much that is (no ring-buffer offset arithmetic).
  COCO_ASSIGN_OR_RETURN(std::string log, vm_->ExecOk("dmesg -c"));
  return GuestVm::IntegrityErrors(log);
}

}  // namespace cocostorage::vmtest
