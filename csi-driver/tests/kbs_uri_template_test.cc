// kbsResourceUri templates (one KBS key per volume): the pure resolver and
// how ParseVolumeParams / ResolveVolumeParams / records treat templates.
#include <gtest/gtest.h>

#include <string>

#include "params.h"
#include "volume_state.h"

namespace cocostorage::csi {
namespace {

using Map = std::map<std::string, std::string>;

constexpr char kTemplate[] = "kbs:///${pvc.namespace}/volume-keys/${pvc.name}";

// What external-provisioner --extra-create-metadata adds, plus an SC's keys.
Map Metadata(std::string ns = "team-a", std::string pvc = "data-db-0", std::string pv = "pvc-0b1c2d3e") {
  return {{"csi.storage.k8s.io/pvc/namespace", std::move(ns)},
          {"csi.storage.k8s.io/pvc/name", std::move(pvc)},
          {"csi.storage.k8s.io/pv/name", std::move(pv)},
          {"keySource", "kbs"},
          {"kbsResourceUri", kTemplate}};
}

// The resolver's error for `uri` with `params`, or "" when it resolved.
std::string ResolveError(std::string_view uri, const Map& params) {
  auto r = ResolveKbsResourceUri(uri, params);
  if (r.ok()) return "";
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << uri;
  return std::string(r.status().message());
}

bool Contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(KbsUriTemplateTest, TheMetadataKeysAreTheProvisionersOwn) {
  EXPECT_EQ(kPvcNameKey, "csi.storage.k8s.io/pvc/name");
  EXPECT_EQ(kPvcNamespaceKey, "csi.storage.k8s.io/pvc/namespace");
  EXPECT_EQ(kPvNameKey, "csi.storage.k8s.io/pv/name");
}

TEST(KbsUriTemplateTest, ResolvesEveryPlaceholder) {
  const Map m = Metadata();
  EXPECT_EQ(*ResolveKbsResourceUri(kTemplate, m), "kbs:///team-a/volume-keys/data-db-0");
  EXPECT_EQ(*ResolveKbsResourceUri("kbs:///${pvc.namespace}/${pvc.name}/${pv.name}", m),
            "kbs:///team-a/data-db-0/pvc-0b1c2d3e");
  EXPECT_EQ(*ResolveKbsResourceUri("kbs:///cluster-1/volume-keys/${pv.name}", m),
            "kbs:///cluster-1/volume-keys/pvc-0b1c2d3e");
  // Part of a segment, twice in one segment, the same placeholder twice.
  EXPECT_EQ(*ResolveKbsResourceUri("kbs:///ns-${pvc.namespace}/key_${pvc.name}.v1/${pvc.namespace}.${pvc.name}", m),
            "kbs:///ns-team-a/key_data-db-0.v1/team-a.data-db-0");
  EXPECT_EQ(*ResolveKbsResourceUri("kbs:///${pvc.name}/${pvc.name}/${pvc.name}", m),
            "kbs:///data-db-0/data-db-0/data-db-0");
  // Names with dots (DNS subdomains) fit the KBS grammar.
  EXPECT_EQ(*ResolveKbsResourceUri(kTemplate, Metadata("a", "db.example.com")), "kbs:///a/volume-keys/db.example.com");
  // Single characters and digits.
  EXPECT_EQ(*ResolveKbsResourceUri(kTemplate, Metadata("0", "9")), "kbs:///0/volume-keys/9");
}

TEST(KbsUriTemplateTest, AFixedUriIsReturnedAsItIs) {
  EXPECT_EQ(*ResolveKbsResourceUri("kbs:///default/key/vol1", {}), "kbs:///default/key/vol1");
  EXPECT_EQ(*ResolveKbsResourceUri("kbs:///default/key/vol1", Metadata()), "kbs:///default/key/vol1");
  EXPECT_NE(ResolveError("kbs:///default/key", {}), "");
  EXPECT_FALSE(IsKbsResourceUriTemplate("kbs:///default/key/vol1"));
  EXPECT_TRUE(IsKbsResourceUriTemplate(kTemplate));
  EXPECT_TRUE(IsKbsResourceUriTemplate("kbs:///a/b/$"));
}

TEST(KbsUriTemplateTest, SameMetadataSameUriOtherMetadataOtherUri) {
  const Map m = Metadata();
  EXPECT_EQ(*ResolveKbsResourceUri(kTemplate, m), *ResolveKbsResourceUri(kTemplate, m));
  EXPECT_NE(*ResolveKbsResourceUri(kTemplate, m), *ResolveKbsResourceUri(kTemplate, Metadata("team-a", "data-db-1")));
  EXPECT_NE(*ResolveKbsResourceUri(kTemplate, m), *ResolveKbsResourceUri(kTemplate, Metadata("team-b")));
}

TEST(KbsUriTemplateTest, MissingMetadataNamesEveryMissingKeyAndTheFix) {
  std::string e = ResolveError(kTemplate, {});
  EXPECT_TRUE(Contains(e, "${pvc.namespace} (parameter csi.storage.k8s.io/pvc/namespace)")) << e;
  EXPECT_TRUE(Contains(e, "${pvc.name} (parameter csi.storage.k8s.io/pvc/name)")) << e;
  EXPECT_FALSE(Contains(e, "pv/name")) << e;  // not used by this template
  EXPECT_TRUE(Contains(e, "--extra-create-metadata")) << e;
  EXPECT_TRUE(Contains(e, "node.provisioner.extraCreateMetadata=true")) << e;

  Map no_pv = Metadata();
  no_pv.erase("csi.storage.k8s.io/pv/name");
  EXPECT_EQ(*ResolveKbsResourceUri(kTemplate, no_pv), "kbs:///team-a/volume-keys/data-db-0");
  e = ResolveError("kbs:///${pv.name}/k/${pv.name}", no_pv);
  EXPECT_TRUE(Contains(e, "${pv.name} (parameter csi.storage.k8s.io/pv/name)")) << e;
  EXPECT_EQ(e.find("${pv.name} (parameter"), e.rfind("${pv.name} (parameter")) << "named once: " << e;

  // An empty value is no name either.
  e = ResolveError(kTemplate, Metadata("team-a", ""));
  EXPECT_TRUE(Contains(e, "csi.storage.k8s.io/pvc/name \"\"")) << e;
}

TEST(KbsUriTemplateTest, ValuesMustBeKubernetesNames) {
  struct Case {
    const char* ns;
    const char* pvc;
    const char* complaint;
  };
  const std::string long_label(64, 'a');
  for (const Case& c : std::initializer_list<Case>{
           {"team-a", "a/b", "pvc/name"},        // would add a segment
           {"team-a", "../../etc", "pvc/name"},  // traversal
           {"team-a", "..", "pvc/name"},
           {"team-a", ".", "pvc/name"},
           {"team-a", "a..b", "pvc/name"},  // empty DNS label
           {"team-a", ".hidden", "pvc/name"},
           {"team-a", "trailing.", "pvc/name"},
           {"team-a", "-dash", "pvc/name"},
           {"team-a", "dash-", "pvc/name"},
           {"team-a", "Data", "pvc/name"},  // Kubernetes names are lowercase
           {"team-a", "under_score", "pvc/name"},
           {"team-a", "a b", "pvc/name"},
           {"team-a", "a\nb", "pvc/name"},
           {"team-a", "$x", "pvc/name"},
           {"team-a", "${pvc.namespace}", "pvc/name"},  // no second expansion
           {"team-a", "a%2Fb", "pvc/name"},
           {"team-a", "a?b", "pvc/name"},
           {"team.a", "data", "pvc/namespace"},  // namespaces are DNS labels: no dots
           {"Team-A", "data", "pvc/namespace"},
           {"a/b", "data", "pvc/namespace"},
           {"..", "data", "pvc/namespace"},
       }) {
    std::string e = ResolveError(kTemplate, Metadata(c.ns, c.pvc));
    EXPECT_TRUE(Contains(e, c.complaint)) << c.ns << " " << c.pvc << ": " << e;
    EXPECT_TRUE(Contains(e, "is not a Kubernetes")) << e;
  }
  EXPECT_TRUE(Contains(ResolveError(kTemplate, Metadata(long_label, "data")), "DNS-1123 label"));
  EXPECT_TRUE(Contains(ResolveError(kTemplate, Metadata("team-a", std::string(254, 'a'))), "DNS-1123 subdomain"));
  // pv.name is checked like pvc.name.
  EXPECT_TRUE(Contains(ResolveError("kbs:///a/b/${pv.name}", Metadata("team-a", "data", "PV_1")), "pv/name"));
  // A valid value that is merely unused never matters.
  EXPECT_EQ(*ResolveKbsResourceUri("kbs:///a/b/${pv.name}", Metadata("Bad/Ns", "Bad..Name", "pv-1")),
            "kbs:///a/b/pv-1");
}

TEST(KbsUriTemplateTest, ResolvedUriMustStillBeValid) {
  // A 243-character PVC name (four 60-character labels) is a valid
  // Kubernetes name but exceeds the 128-character KBS segment limit.
  const std::string label(60, 'a');
  const std::string long_name = label + "." + label + "." + label + "." + label;
  std::string e = ResolveError(kTemplate, Metadata("team-a", long_name));
  EXPECT_TRUE(Contains(e, "resolves to")) << e;
  EXPECT_TRUE(Contains(e, "longer than 128")) << e;
  EXPECT_TRUE(Contains(e, "...")) << "echo is bounded: " << e;
  EXPECT_LT(e.size(), 1024u);
  // Literal text plus a value can overflow too.
  e = ResolveError("kbs:///a/b/" + std::string(100, 'k') + "-${pvc.name}", Metadata("team-a", std::string(30, 'n')));
  EXPECT_TRUE(Contains(e, "longer than 128")) << e;
  // Exactly 128 fits.
  EXPECT_TRUE(ResolveKbsResourceUri("kbs:///a/b/" + std::string(100, 'k') + "-${pvc.name}",
                                    Metadata("team-a", std::string(27, 'n')))
                  .ok());
}

TEST(KbsUriTemplateTest, BadTemplatesAreRefusedWithoutMetadata) {
  struct Case {
    std::string uri;
    const char* complaint;
  };
  for (const Case& c : std::vector<Case>{
           {"kbs:///${pvc.namespace}/keys/${pvc.nam}", "unknown placeholder \"${pvc.nam}\""},
           {"kbs:///${pvc.namespace}/keys/${PVC.NAME}", "unknown placeholder"},
           {"kbs:///${pod.name}/keys/x", "unknown placeholder"},
           {"kbs:///${}/keys/x", "unknown placeholder \"${}\""},
           {"kbs:///${ pvc.name }/keys/x", "unknown placeholder"},
           {"kbs:///a/keys/${pvc.name", "unterminated placeholder"},
           {"kbs:///a/keys/${", "unterminated placeholder"},
           {"kbs:///a/keys/$", "does not start a placeholder"},
           {"kbs:///a/keys/$pvc.name", "does not start a placeholder"},
           {"kbs:///a/keys/$$", "does not start a placeholder"},
           {"kbs:///a/keys/$(pvc.name)", "does not start a placeholder"},
           {"kbs:///a/keys/${pvc.${pv.name}}", "nested placeholder"},
           {"kbs:///a/keys/${${pvc.name}}", "nested placeholder"},
           {"kbs:///a/keys/x}${pvc.name}", "can never resolve"},  // stray '}' in the literal
           // The shape around the placeholders is wrong whatever the values.
           {"kbs:///${pvc.namespace}/${pvc.name}", "want 3 path segments, got 2"},
           {"kbs:///${pvc.namespace}/a/b/${pvc.name}", "want 3 path segments, got 4"},
           {"kbs:///${pvc.namespace}//${pvc.name}", "empty path segment"},
           {"kbs:///.${pvc.namespace}/a/${pvc.name}", "must start with"},
           {"kbs:///${pvc.namespace}/a/${pvc.name}/", "empty path segment"},
           {"kbs://${pvc.namespace}/a/b/c", "must start with kbs:///"},
           {"${pv.name}:///a/b/c", "must start with kbs:///"},  // no placeholder in the scheme
           {"https:///${pvc.namespace}/a/${pvc.name}", "must start with kbs:///"},
           {"kbs:///${pvc.namespace}/a b/${pvc.name}", "not allowed"},
           {"kbs:///a/b/" + std::string(128, 'k') + "${pvc.name}", "longer than 128"},
       }) {
    Status s = ValidateKbsResourceUriTemplate(c.uri);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.uri;
    EXPECT_TRUE(Contains(std::string(s.message()), c.complaint)) << c.uri << ": " << s.message();
    // The resolver refuses them the same way, metadata or not.
    std::string e = ResolveError(c.uri, Metadata());
    EXPECT_TRUE(Contains(e, c.complaint)) << c.uri << ": " << e;
    auto parsed = ParseVolumeParams({{"keySource", "kbs"}, {"kbsResourceUri", c.uri}});
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << c.uri;
  }
  // Error messages list the placeholders and stay bounded for huge input.
  Status s = ValidateKbsResourceUriTemplate("kbs:///a/b/${nope}");
  EXPECT_TRUE(Contains(std::string(s.message()), "${pvc.namespace}, ${pvc.name}, ${pv.name}")) << s;
  s = ValidateKbsResourceUriTemplate("kbs:///a/b/${" + std::string(100000, 'x'));
  EXPECT_LT(s.message().size(), 1024u);
  s = ValidateKbsResourceUriTemplate("kbs:///a/b/${" + std::string(100000, 'x') + "}");
  EXPECT_LT(s.message().size(), 1024u);
}

TEST(KbsUriTemplateTest, ParseKeepsTheTemplateAndResolveVolumeParamsFillsItIn) {
  const Map m = Metadata();
  auto p = ParseVolumeParams(m);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->HasUriTemplate());
  EXPECT_EQ(p->kbs_resource_uri, kTemplate);
  ASSERT_TRUE(ResolveVolumeParams(&*p, m).ok());
  EXPECT_FALSE(p->HasUriTemplate());
  EXPECT_EQ(p->kbs_resource_uri, "kbs:///team-a/volume-keys/data-db-0");
  EXPECT_EQ(p->ToMap().at("kbsResourceUri"), "kbs:///team-a/volume-keys/data-db-0");

  // Without metadata (GetCapacity's parameters) the class still parses...
  auto bare = ParseVolumeParams({{"keySource", "kbs"}, {"kbsResourceUri", kTemplate}});
  ASSERT_TRUE(bare.ok()) << bare.status();
  // ...but cannot be resolved.
  Status s = ResolveVolumeParams(&*bare, {{"keySource", "kbs"}, {"kbsResourceUri", kTemplate}});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(bare->HasUriTemplate()) << "left as it was on failure";

  // A template is a kbsResourceUri like any other: only with keySource kbs.
  EXPECT_EQ(ParseVolumeParams({{"kbsResourceUri", kTemplate}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseVolumeParams({{"keySource", "ephemeral"}, {"kbsResourceUri", kTemplate}}).status().code(),
            absl::StatusCode::kInvalidArgument);

  // Fixed URIs and ephemeral classes pass through untouched.
  VolumeParams fixed;
  fixed.key_source = KeySource::kKbs;
  fixed.kbs_resource_uri = "kbs:///a/b/c";
  ASSERT_TRUE(ResolveVolumeParams(&fixed, {}).ok());
  EXPECT_EQ(fixed.kbs_resource_uri, "kbs:///a/b/c");
  VolumeParams eph;
  ASSERT_TRUE(ResolveVolumeParams(&eph, {}).ok());
  EXPECT_EQ(eph.key_source, KeySource::kEphemeral);
  EXPECT_TRUE(eph.kbs_resource_uri.empty());
}

TEST(KbsUriTemplateTest, ARecordNeverHoldsATemplate) {
  VolumeRecord r;
  r.id = "cv-1";
  r.name = "pvc-1";
  r.capacity_bytes = 1 << 20;
  r.params.key_source = KeySource::kKbs;
  r.params.kbs_resource_uri = "kbs:///team-a/volume-keys/data";
  r.backend = "sparse-file";
  r.device = "/x/cv-1.img";
  auto back = RecordFromJson(RecordToJson(r));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->params, r.params);
  r.params.kbs_resource_uri = kTemplate;  // not something CreateVolume records
  EXPECT_EQ(RecordFromJson(RecordToJson(r)).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace cocostorage::csi
