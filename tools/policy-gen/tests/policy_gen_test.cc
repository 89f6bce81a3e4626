// Unit tests of the policy generator's pure parts: YAML -> objects -> policy
// rule by rule, the Rego additions (golden file shared with the CLI golden
// test), init-data building/merging and the deterministic gzip.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "init_data_writer.h"
#include "k8s_input.h"
#include "kbs/init_data.h"
#include "policy_builder.h"
#include "rego.h"

namespace cocostorage::policygen {
namespace {

using agent::policy::CreateRule;
using agent::policy::VolumeKind;
using ::testing::HasSubstr;

std::string ReadCaseFile(const std::string& rel) {
  std::ifstream f(std::string(COCO_POLICY_GEN_CASES) + "/" + rel, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

K8sInputs Parse(const std::string& yaml) {
  K8sInputs in;
  Status s = ParseK8sYaml(yaml, "test.yaml", &in);
  EXPECT_TRUE(s.ok()) << s;
  return in;
}

K8sInputs CaseInputs(const std::string& name) { return Parse(ReadCaseFile(name + "/input.yaml")); }

GeneratorOptions StsOptions() {
  GeneratorOptions o;
  o.default_namespace = "team-a";
  o.ordinal = 0;
  o.create = CreateRule::kIfBlank;
  o.policy_version = 3;
  return o;
}

TEST(PolicyGen, StatefulSetWithKbsClaimAndInlineEphemeral) {
  auto g = BuildStoragePolicy(CaseInputs("statefulset-kbs-inline"), StsOptions());
  ASSERT_TRUE(g.ok()) << g.status();
  const auto& p = g->policy;
  EXPECT_EQ(p.workload, "team-a/pg-0");
  EXPECT_EQ(p.policy_version, 3u);
  EXPECT_EQ(p.max_ephemeral_volumes, 1u);
  EXPECT_EQ(p.secure_mount_blank_device.kind, agent::policy::BlankDeviceRule::Kind::kDeny);
  ASSERT_EQ(p.volumes.size(), 2u);
  const auto& scratch = p.volumes[0];  // pod volumes first, then claim templates
  EXPECT_EQ(scratch.id, "scratch");
  EXPECT_EQ(scratch.kind, VolumeKind::kEphemeral);
  EXPECT_TRUE(scratch.key.ephemeral());
  EXPECT_EQ(scratch.mkfs_options, KataSecureMountMkfsOptions());
  EXPECT_EQ(scratch.min_size_bytes, 2ull << 30);
  EXPECT_EQ(scratch.max_size_bytes, 2ull << 30);
  EXPECT_EQ(scratch.container_path, "/scratch");
  EXPECT_EQ(scratch.routes, std::vector<agent::Origin>{agent::Origin::kSecureMount});
  const auto& data = p.volumes[1];
  EXPECT_EQ(data.id, "pgdata-pg-0");
  EXPECT_EQ(data.kind, VolumeKind::kPersistent);
  EXPECT_EQ(data.key.kbs_uri(), "kbs:///team-a/volume-keys/pgdata-pg-0");
  EXPECT_EQ(data.create, CreateRule::kIfBlank);
  EXPECT_EQ(data.integrity, std::vector<agent::IntegrityMode>{agent::IntegrityMode::kHmacSha256});
  EXPECT_EQ(data.fs_type, "ext4");
  EXPECT_EQ(data.mkfs_options, (std::vector<std::string>{"-m", "0"}));
  EXPECT_EQ(data.mount_options, std::vector<std::string>{"noatime"});
  EXPECT_EQ(data.min_size_bytes, 8ull << 30);
  EXPECT_EQ(data.max_size_bytes, 64ull << 30);
  EXPECT_EQ(data.container_path, "/var/lib/postgresql/data");
  EXPECT_FALSE(data.read_only);
  EXPECT_EQ(g->fs_group, 999);
  // One ephemeral and one create-able persistent volume: ambiguous blank device.
  EXPECT_THAT(testing::PrintToString(g->warnings), HasSubstr("blank SecureMount device"));
}

TEST(PolicyGen, RegoMatchesGolden) {
  auto g = BuildStoragePolicy(CaseInputs("statefulset-kbs-inline"), StsOptions());
  ASSERT_TRUE(g.ok()) << g.status();
  const std::string rego = GenerateRego(*g);
  const std::string path = "statefulset-kbs-inline/expected/cocostorage.rego";
  if (std::getenv("COCOSTORAGE_UPDATE_GOLDENS") != nullptr) {
    std::ofstream(std::string(COCO_POLICY_GEN_CASES) + "/" + path, std::ios::binary) << rego;
  }
  EXPECT_EQ(rego, ReadCaseFile(path)) << "regenerate with COCOSTORAGE_UPDATE_GOLDENS=1";
}

TEST(PolicyGen, SameInputSameOutput) {
  auto a = BuildStoragePolicy(CaseInputs("statefulset-kbs-inline"), StsOptions());
  auto b = BuildStoragePolicy(CaseInputs("statefulset-kbs-inline"), StsOptions());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->policy, b->policy);
  EXPECT_EQ(GenerateRego(*a), GenerateRego(*b));
}

TEST(PolicyGen, BlockVolumeIsRoutedAsKataStorageWithoutRego) {
  GeneratorOptions o;
  o.default_namespace = "default";
  auto g = BuildStoragePolicy(CaseInputs("block-volume"), o);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ(g->policy.volumes.size(), 1u);
  const auto& v = g->policy.volumes[0];
  EXPECT_TRUE(v.block_mode);
  EXPECT_EQ(v.fs_type, "");
  EXPECT_TRUE(v.mkfs_options.empty());
  EXPECT_EQ(v.container_path, "/dev/xvda");
  EXPECT_EQ(v.routes, std::vector<agent::Origin>{agent::Origin::kKataStorage});
  EXPECT_TRUE(g->rego_volumes.empty());
  EXPECT_THAT(GenerateRego(*g), HasSubstr("nothing to add"));
}

Status BuildError(const std::string& case_name, GeneratorOptions o) {
  auto g = BuildStoragePolicy(CaseInputs(case_name), o);
  return g.ok() ? OkStatus() : g.status();
}

TEST(PolicyGen, UnknownParameterIsRefused) {
  Status s = BuildError("error-unknown-parameter", StsOptions());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("compression"));
}

TEST(PolicyGen, IdCollisionIsRefused) {
  GeneratorOptions o;
  o.default_namespace = "default";
  Status s = BuildError("error-id-collision", o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("collides"));
}

TEST(PolicyGen, UnresolvedPvNameIsRefusedUntilGiven) {
  GeneratorOptions o;
  o.default_namespace = "default";
  Status s = BuildError("error-pv-name", o);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("--pv-name keyed"));
  o.pv_names["keyed"] = "pvc-0123";
  auto g = BuildStoragePolicy(CaseInputs("error-pv-name"), o);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->policy.volumes[0].key.kbs_uri(), "kbs:///default/volume-keys/pvc-0123");
}

TEST(PolicyGen, RefusesWhatSecureMountCannotCarry) {
  const std::string base = R"(
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: sc}
provisioner: csi.cocostorage.dev
parameters: {PARAMS}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: ns}
spec:
  volumes:
    - name: v
      ephemeral:
        volumeClaimTemplate:
          spec: {storageClassName: sc, accessModes: [ReadWriteOncePod], resources: {requests: {storage: 1Gi}}}
  containers:
    - name: c
      image: busybox
      volumeMounts: [{name: v, mountPath: /v}MOUNT2]
)";
  auto run = [&](const std::string& params, const std::string& mount2 = "") {
    std::string y = base;
    y.replace(y.find("PARAMS"), 6, params);
    y.replace(y.find("MOUNT2"), 6, mount2);
    auto g = BuildStoragePolicy(Parse(y), GeneratorOptions{});
    return g.ok() ? OkStatus() : g.status();
  };
  EXPECT_TRUE(run("keySource: ephemeral").ok());
  EXPECT_THAT(std::string(run("fsType: xfs").message()), HasSubstr("always asks for ext4"));
  EXPECT_THAT(std::string(run("integrity: aegis128").message()), HasSubstr("dataIntegrity"));
  EXPECT_THAT(std::string(run("mkfsOptions: \"-m 1\"").message()), HasSubstr("constant options"));
  EXPECT_THAT(std::string(run("keySource: ephemeral", ", {name: v, mountPath: /w}").message()),
              HasSubstr("several paths"));
  EXPECT_THAT(std::string(run("keySource: kbs, kbsResourceUri: \"kbs:///a/b/c\"").message()),
              HasSubstr("generic ephemeral"));
}

TEST(PolicyGen, NoVolumeOfOursIsAnErrorUnlessAllowed) {
  const std::string y = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c}]\n";
  GeneratorOptions o;
  EXPECT_EQ(BuildStoragePolicy(Parse(y), o).status().code(), absl::StatusCode::kInvalidArgument);
  o.allow_empty = true;
  auto g = BuildStoragePolicy(Parse(y), o);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE(g->policy.volumes.empty());
}

TEST(PolicyGen, MalformedYamlIsInvalidArgumentNotAnException) {
  K8sInputs in;
  EXPECT_EQ(ParseK8sYaml("kind: Pod\nspec: [unclosed", "bad.yaml", &in).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseK8sYaml("kind: Pod\nmetadata: {name: p}\nspec: {volumes: 3}\n", "bad.yaml", &in).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PolicyGen, SanitizeVolumeId) {
  EXPECT_EQ(SanitizeVolumeId("data-web-0"), "data-web-0");
  EXPECT_EQ(SanitizeVolumeId("a/b"), "a-b");
  EXPECT_EQ(SanitizeVolumeId(".x"), "v.x");
  const std::string long_name(80, 'a');
  const std::string id = SanitizeVolumeId(long_name);
  EXPECT_EQ(id.size(), 64u);
  EXPECT_EQ(id, SanitizeVolumeId(long_name));
  EXPECT_NE(id, SanitizeVolumeId(long_name + "b"));
}

constexpr char kPolicy[] = "schema = \"cocostorage.dev/storage-policy\"\nschema_version = 1\n";

TEST(InitData, FreshDocumentReadsBack) {
  auto d = BuildInitData(kPolicy, "sha384");
  ASSERT_TRUE(d.ok()) << d.status();
  auto parsed = agent::kbs::ParseInitData(*d);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->algorithm, "sha384");
  EXPECT_EQ(parsed->data.at("cocostorage.toml"), kPolicy);
  EXPECT_EQ(InitDataDigestHex(*d).value().size(), 96u);
  // Text a literal string cannot hold goes in a basic string, still exact.
  const std::string odd = "workload = '''x'''\r\n\x01'";
  auto d2 = BuildInitData(odd, "sha256");
  ASSERT_TRUE(d2.ok()) << d2.status();
  EXPECT_EQ(agent::kbs::ParseInitData(*d2)->data.at("cocostorage.toml"), odd);
}

TEST(InitData, MergeKeepsOtherEntriesByteIdentical) {
  const std::string existing = ReadCaseFile("merge-init-data/existing-initdata.toml");
  auto merged = MergeInitData(existing, kPolicy, "sha256", false);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_EQ(merged->substr(0, existing.size()), existing);
  auto parsed = agent::kbs::ParseInitData(*merged);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->data.size(), 3u);

  // Present already: refused without replace; replaced in place with it.
  EXPECT_EQ(MergeInitData(*merged, kPolicy, "sha256", false).status().code(), absl::StatusCode::kFailedPrecondition);
  auto replaced = MergeInitData(*merged, "schema_version = 2\n", "sha256", true);
  ASSERT_TRUE(replaced.ok()) << replaced.status();
  EXPECT_EQ(replaced->substr(0, existing.size()), existing);
  EXPECT_EQ(agent::kbs::ParseInitData(*replaced)->data.at("cocostorage.toml"), "schema_version = 2\n");
  EXPECT_EQ(agent::kbs::ParseInitData(*replaced)->data.at("policy.rego"), parsed->data.at("policy.rego"));

  EXPECT_EQ(MergeInitData(existing, kPolicy, "sha384", false).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(Gzip, DeterministicHeaderAndRoundTrip) {
  const std::string text = "version = \"0.1.0\"\n" + std::string(5000, 'x');
  auto a = GzipDeterministic(text);
  auto b = GzipDeterministic(text);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  ASSERT_GE(a->size(), 10u);
  const std::string header = a->substr(0, 10);
  EXPECT_EQ(header, std::string("\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03", 10));  // no mtime, no name, Unix
  std::string back(text.size() + 16, '\0');
  z_stream zs{};
  ASSERT_EQ(inflateInit2(&zs, 15 + 16), Z_OK);
  zs.next_in = reinterpret_cast<Bytef*>(a->data());
  zs.avail_in = static_cast<uInt>(a->size());
  zs.next_out = reinterpret_cast<Bytef*>(back.data());
  zs.avail_out = static_cast<uInt>(back.size());
  EXPECT_EQ(inflate(&zs, Z_FINISH), Z_STREAM_END);
  back.resize(back.size() - zs.avail_out);
  inflateEnd(&zs);
  EXPECT_EQ(back, text);
}

}  // namespace
}  // namespace cocostorage::policygen
