// A StatefulSet's persistent volume end to end (issue 12): the workload's
// owner generates the storage policy from the example YAML
// (deploy/examples/storageclass-kbs.yaml + statefulset-kbs.yaml) with the
// policy generator's code; the real cocostorage-csi provisions the claim from
// the example StorageClass; the Kata runtime's and kata-agent's steps hand it
// to the real agent, which takes the key from the test KBS and, because the
// attested policy says so, creates the volume on the blank disk. The pod and
// its VM go, the plugin restarts (node reboot); the next pod of the
// StatefulSet, in a new VM whose policy now says `create = "never"` (what
// docs/policy-generator.md tells the owner to deploy once provisioned), gets
// the same claim and reads pod 1's data; a blank disk the host hands in the
// volume's place is then refused untouched. One plugin, one KBS, two VMs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <iostream>
#include <string>

#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "flow.h"
#include "k8s_input.h"

namespace cocostorage::e2e {
namespace {

#define ASSERT_OK(expr)                          \
  do {                                           \
    ::absl::Status s_ = (expr);                  \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_; \
  } while (0)

constexpr char kClaim[] = "data-cocostorage-kbs-demo-0";  // <template>-<statefulset>-<ordinal>
constexpr char kKeyPath[] = "default/volume-keys/data-cocostorage-kbs-demo-0";
constexpr char kKeyHex[] = "3c0a9f41d2b7e8065a1c4d3f2e9b8a7c6d5e4f30211203f4e5d6c7b8a9f0e1d2";

std::string Example(const std::string& name) { return Cat(COCOSTORAGE_SOURCE_DIR, "/deploy/examples/", name); }

std::vector<std::string> ExampleYaml() { return {Example("storageclass-kbs.yaml"), Example("statefulset-kbs.yaml")}; }

policygen::GeneratorOptions Options(agent::policy::CreateRule create, uint32_t version) {
  policygen::GeneratorOptions o;
  o.default_namespace = "default";
  o.ordinal = 0;
  o.create = create;
  o.policy_version = version;
  return o;
}

class PersistentE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    FlowOptions o;
    o.vm_memory_mib = 1536;
    auto f = Flow::Create(o);
    ASSERT_TRUE(f.ok()) << f.status();
    flow_ = f->release();
    ASSERT_OK(flow_->StartPlugin());
    std::string note;
    ASSERT_OK(flow_->Identify(&note));
    ASSERT_OK(flow_->StartKbs({{kKeyPath, kKeyHex}}));
  }

  static void TearDownTestSuite() {
    if (flow_ != nullptr) {
      std::string note;
      EXPECT_TRUE(flow_->ShutdownVm(&note).ok());
      auto code = flow_->StopPlugin(SIGTERM);
      EXPECT_TRUE(code.ok() && *code == 0) << (code.ok() ? Cat("exit ", *code) : code.status().ToString());
    }
    delete flow_;
    flow_ = nullptr;
  }

  void TearDown() override {
    if (HasFailure() && flow_ != nullptr) std::cerr << flow_->Diagnostics();
  }

  static std::string Guest(const std::string& cmd) {
    auto r = flow_->Guest(cmd);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : "";
  }

  static Flow* flow_;
};

Flow* PersistentE2eTest::flow_ = nullptr;

TEST_F(PersistentE2eTest, AStatefulSetPodsDataOutlivesItsPodItsVmAndAPluginRestart) {
  // The example StorageClass, as external-provisioner passes it.
  policygen::K8sInputs k8s;
  for (const auto& path : ExampleYaml()) {
    auto text = ReadFileToString(path);
    ASSERT_TRUE(text.ok()) << text.status();
    ASSERT_OK(policygen::ParseK8sYaml(*text, path, &k8s));
  }
  ASSERT_EQ(k8s.classes.size(), 1u);
  ASSERT_EQ(k8s.workloads.size(), 1u);
  ASSERT_EQ(k8s.workloads[0].claim_templates.size(), 1u);
  EXPECT_EQ(k8s.workloads[0].claim_templates[0].request, "20Gi");

  // First deployment: the owner's policy lets the agent create the volume.
  std::string note;
  ASSERT_OK(flow_->GeneratePolicy(ExampleYaml(), Options(agent::policy::CreateRule::kIfBlank, 1), &note));
  EXPECT_NE(flow_->init_data().find("create = \"if-blank\""), std::string::npos) << flow_->init_data();
  EXPECT_NE(flow_->init_data().find(Cat("kbs:///", kKeyPath)), std::string::npos) << flow_->init_data();
  ASSERT_OK(flow_->BootVm());

  PodVolume pod = flow_->NewPod("cocostorage-kbs-demo-0", 20ull << 30);
  pod.pvc_name = kClaim;
  pod.class_parameters = k8s.classes[0].parameters;
  ASSERT_OK(flow_->CreateVolume(pod));
  EXPECT_EQ(pod.volume_context.at("keySource"), "kbs");
  EXPECT_EQ(pod.volume_context.at("kbsResourceUri"), Cat("kbs:///", kKeyPath));  // the template, resolved

  ASSERT_OK(flow_->StageVolume(pod));
  ASSERT_OK(flow_->PublishVolume(pod));
  ASSERT_OK(flow_->ReadMountInfo(pod));
  // What makes an unmodified kata-agent hand the disk to us and not mount it
  // in plaintext; the agent never reads the rest (the host wrote it).
  EXPECT_EQ(pod.mount_info.metadata["encryptionKey"], "ephemeral");
  EXPECT_EQ(pod.mount_info.metadata["createFilesystem"], "true");
  EXPECT_EQ(pod.mount_info.metadata["cocostorage.dev/kind"], "persistent");
  const std::string backing = pod.mount_info.device;
  ASSERT_OK(flow_->HotplugDevice(pod));
  ASSERT_OK(flow_->BuildStorage(pod));
  ASSERT_OK(flow_->KataAgentResolve(pod));
  ASSERT_OK(flow_->KataAgentSecureMount(pod));
  ASSERT_OK(flow_->VerifyAgentVolume(pod));
  EXPECT_EQ(flow_->LastAgentAction(pod), "create");
  EXPECT_EQ(pod.volume.key_source(), Cat("kbs:///", kKeyPath));  // from the attested policy
  EXPECT_TRUE(pod.volume.integrity_enabled());
  EXPECT_LT(pod.volume.provisioning_bytes_written(), 256ull << 20) << "flat provisioning at 20 GiB";
  const int attested_once = flow_->kbs()->Attested();
  EXPECT_GE(attested_once, 1);

  const std::string secret = "COCO-E2E-PERSISTENT-3f9d0c2a-MUST-NOT-LEAK";
  ASSERT_OK(flow_->WriteAndReadBackSecret(pod, secret, 5000));
  auto host = InspectBackingFile(backing, secret);
  ASSERT_TRUE(host.ok()) << host.status();
  EXPECT_FALSE(host->secret_found) << "plaintext in the host's backing file";
  EXPECT_LT(host->allocated_bytes, 512ull << 20);

  // The pod is deleted (its VM with it); the node reboots (plugin restart).
  ASSERT_OK(flow_->EndPod(pod));
  ASSERT_EQ(access(backing.c_str(), F_OK), 0) << "the claim's backing file went with the pod";
  ASSERT_OK(flow_->ShutdownVm(&note));
  ASSERT_OK(flow_->RestartPlugin());

  // Provisioned: the owner now deploys a policy that never formats.
  const std::string first_digest = flow_->init_data_digest();
  ASSERT_OK(flow_->GeneratePolicy(ExampleYaml(), Options(agent::policy::CreateRule::kNever, 2), &note));
  EXPECT_NE(flow_->init_data_digest(), first_digest);
  ASSERT_OK(flow_->BootVm());

  // The StatefulSet's next pod: same claim, new pod, new VM.
  PodVolume again = flow_->NewPodOnClaim(pod, "cocostorage-kbs-demo-0");
  ASSERT_OK(flow_->BringUpPod(again));
  EXPECT_EQ(flow_->LastAgentAction(again), "open");
  EXPECT_EQ(again.mount_info.device, backing);
  EXPECT_EQ(Guest(Cat("echo 3 > /proc/sys/vm/drop_caches && grep -c ", secret, " ", again.volume.target_path(),
                      "/secret.txt")),
            "5000\n");
  EXPECT_GT(flow_->kbs()->Attested(), attested_once) << "the new VM attested again for the key";

  // A blank disk in the volume's place, while the volume is not active: the
  // policy says never create, so nothing is formatted or mounted.
  ASSERT_OK(flow_->EndPod(again));
  PodVolume blank = flow_->NewPod("cocostorage-kbs-demo-0", 20ull << 30);  // within the rule's size bounds
  blank.pvc_name = "data-cocostorage-kbs-demo-0-blank";
  blank.class_parameters = pod.class_parameters;
  ASSERT_OK(flow_->CreateVolume(blank));
  ASSERT_OK(flow_->StageVolume(blank));
  ASSERT_OK(flow_->PublishVolume(blank));
  ASSERT_OK(flow_->ReadMountInfo(blank));
  ASSERT_OK(flow_->HotplugDevice(blank));
  ASSERT_OK(flow_->BuildStorage(blank));
  ASSERT_OK(flow_->KataAgentResolve(blank));
  Status refused = flow_->KataAgentSecureMount(blank);
  EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied) << refused;
  EXPECT_NE(refused.message().find("create = never"), std::string::npos) << refused;
  auto blank_host = InspectBackingFile(blank.mount_info.device, secret);
  ASSERT_TRUE(blank_host.ok()) << blank_host.status();
  EXPECT_EQ(blank_host->data_blocks, 0u) << "the refused disk was written to";
  EXPECT_EQ(Guest(Cat("grep -c ' ", blank.storage.mount_point, " ' /proc/mounts || true")), "0\n");
  // kata-agent made the mount point before its call; the failed pod's
  // sandbox (and the directory) goes with it.
  Guest(Cat("rmdir '", blank.storage.mount_point, "'"));
  ASSERT_OK(flow_->UnplugDevice(blank));
  ASSERT_OK(flow_->UnpublishVolume(blank));
  ASSERT_OK(flow_->UnstageVolume(blank));
  ASSERT_OK(flow_->DeleteVolume(blank));

  // The claim is deleted at last (reclaimPolicy Retain: by its owner).
  ASSERT_OK(flow_->DeleteVolume(again));
  ASSERT_OK(flow_->CheckNothingLeaked(again));
  auto errors = flow_->NewKernelErrors();
  ASSERT_TRUE(errors.ok()) << errors.status();
  EXPECT_TRUE(errors->empty()) << Join(*errors, "\n");
}

}  // namespace
}  // namespace cocostorage::e2e
