// kata-agent's SecureMount request, sent by the real Go containerd/ttrpc
// client (the coco-kata-securemount tool the VM suites use), against our
// ttrpc server and the agent's own mapping of it (ActivationFromSecureMount +
// Admit), while other Go clients keep the server busy. Every field must come
// out as kata-agent meant it: a misread field fails the comparison below.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "cdh/secure_mount.h"
#include "cocostorage/common/base64.h"
#include "cocostorage/common/exec.h"
#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/testing/status_matchers.h"
#include "cocostorage/testing/temp_dir.h"
#include "cocostorage/ttrpc/server.h"
#include "request/admission.h"

namespace cocostorage::agent {
namespace {

TEST(SecureMountGoClientTest, KataAgentsRequestIsReadExactlyUnderLoad) {
  auto dir = cocostorage::testing::TempDir::Make("/tmp", "smgo");
  ASSERT_OK(dir);
  // The tool creates the mount point first, as kata-agent does: a storage
  // root in the temp dir keeps that off the host's real paths.
  const std::string root = dir->path() + "/storage";
  ASSERT_OK(MakeDirs(root));
  std::mutex mu;
  std::map<std::string, VolumeSpec> seen;  // by target
  ttrpc::Server server;
  server.Register(kSecureMountService, kSecureMountMethod,
                  [&](const ttrpc::CallContext&, const std::string& bytes, std::string* out) -> Status {
                    api::SecureMountRequest req;
                    if (!req.ParseFromString(bytes)) return absl::InvalidArgumentError("undecodable");
                    COCO_ASSIGN_OR_RETURN(ActivationRequest a,
                                          ActivationFromSecureMount(req, std::chrono::seconds(50)));
                    AdmissionConfig config;
                    config.storage_root = root;
                    config.allow_integrity_none = true;
                    COCO_ASSIGN_OR_RETURN(ValidatedActivate v, Admit(a, config));
                    std::lock_guard<std::mutex> lock(mu);
                    seen[v.spec.target_path] = v.spec;
                    api::SecureMountResponse resp;
                    resp.SerializeToString(out);
                    return OkStatus();
                  });
  const std::string sock = dir->path() + "/cdh.sock";
  ASSERT_OK(server.ListenUnix(sock));
  server.Start();
  auto runner = NewSystemCommandRunner();
  constexpr int kCalls = 32;
  std::vector<std::thread> callers;
  std::atomic<int> ok{0};
  std::mutex out_mu;
  std::string failures;
  for (int i = 0; i < kCalls; ++i) {
    callers.emplace_back([&, i] {
      const std::string pci = Cat(i < 16 ? "0" : "1", "0123456789abcdef"[i % 16], "/00");
      auto r =
          runner->Run({{COCO_KATA_SECUREMOUNT, "-socket", sock, "-device", Cat("254:", 16 * i), "-mount-point",
                        Cat(root, "/", Base64UrlEncode(pci)), "-fs", i % 2 ? "xfs" : "ext4", "-mkfs",
                        i % 2 ? "" : "-O ^has_journal -m 0 -i 163840 -I 128", "-integrity", i % 3 ? "true" : "false"},
                       std::chrono::minutes(2)});
      if (r.ok() && r->out == "ok\n") {
        ++ok;
      } else {
        std::lock_guard<std::mutex> lock(out_mu);
        failures += r.ok() ? r->out : std::string(r.status().message());
      }
    });
  }
  for (auto& t : callers) t.join();
  server.Stop();
  ASSERT_EQ(ok.load(), kCalls) << failures;
  ASSERT_EQ(seen.size(), static_cast<size_t>(kCalls));
  for (int i = 0; i < kCalls; ++i) {
    SCOPED_TRACE(i);
    const std::string pci = Cat(i < 16 ? "0" : "1", "0123456789abcdef"[i % 16], "/00");
    const std::string target = Cat(root, "/", Base64UrlEncode(pci));
    ASSERT_EQ(seen.count(target), 1u);
    const VolumeSpec& s = seen[target];
    std::string id = Cat("sm-", Base64UrlEncode(pci));
    while (id.back() == '=') id.pop_back();
    EXPECT_EQ(s.id, id);
    EXPECT_EQ(s.device, (DeviceId{DeviceIdKind::kDevNumber, Cat("254:", 16 * i)}));
    EXPECT_EQ(s.fs_type, i % 2 ? "xfs" : "ext4");
    const std::vector<std::string> kata_mkfs = {"-O", "^has_journal", "-m", "0", "-i", "163840", "-I", "128"};
    EXPECT_EQ(s.mkfs_options, i % 2 ? std::vector<std::string>{} : kata_mkfs);
    EXPECT_EQ(s.integrity, i % 3 ? IntegrityMode::kHmacSha256 : IntegrityMode::kNone);
    EXPECT_TRUE(s.key.ephemeral());
    EXPECT_TRUE(s.teardown_on_unmount);
  }
}

}  // namespace
}  // namespace cocostorage::agent
