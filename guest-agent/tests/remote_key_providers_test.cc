// The cdh key provider against a stand-in Confidential Data Hub (our ttrpc
// server answering api.GetResourceService/GetResource as CDH does), the
// config checks that keep test shortcuts out of production, and init-data.
#include "keys/remote_key_providers.h"

#include <gtest/gtest.h>

#include "attestation_agent/attestation_agent.pb.h"
#include "cdh/api.pb.h"
#include "cocostorage/common/fs_util.h"
#include "cocostorage/testing/status_matchers.h"
#include "cocostorage/testing/temp_dir.h"
#include "cocostorage/ttrpc/server.h"
#include "kbs/attester.h"
#include "kbs/init_data.h"
#include "keys/key_config.h"

namespace cocostorage::agent {
namespace {

using ::cocostorage::testing::StatusIs;
using ::cocostorage::testing::TempDir;
using ::testing::HasSubstr;

class StandInCdh {
 public:
  explicit StandInCdh(const std::string& socket) {
    server_.Register("api.GetResourceService", "GetResource",
                     [this](const ttrpc::CallContext&, const std::string& req, std::string* resp) -> Status {
                       api::GetResourceRequest r;
                       if (!r.ParseFromString(req)) return absl::InvalidArgumentError("bad request");
                       paths.push_back(r.resourcepath());
                       auto it = resources.find(r.resourcepath());
                       // CDH answers every failure as INTERNAL with a message.
                       if (it == resources.end())
                         return absl::InternalError("get resource failed: kbs returned 401 PluginInternalError");
                       api::GetResourceResponse out;
                       out.set_resource(it->second);
                       *resp = out.SerializeAsString();
                       return OkStatus();
                     });
    EXPECT_OK(server_.ListenUnix(socket));
    server_.Start();
  }
  ~StandInCdh() { server_.Stop(); }
  std::map<std::string, std::string> resources;
  std::vector<std::string> paths;

 private:
  ttrpc::Server server_;
};

TEST(CdhKeyProviderTest, ReleasesTheResourceAsTheKey) {
  auto dir = TempDir::Make();
  ASSERT_OK(dir);
  const std::string sock = dir->path() + "/cdh.sock";
  StandInCdh cdh(sock);
  cdh.resources["kbs:///default/keys/pv-1"] = std::string(96, '\x42');
  CdhKeyProvider keys(sock, std::chrono::seconds(5));
  auto key = keys.GetKey(*KeySource::Kbs("kbs:///default/keys/pv-1"), 96);
  ASSERT_OK(key);
  EXPECT_EQ(std::string(key->chars(), key->size()), std::string(96, '\x42'));
  EXPECT_EQ(cdh.paths, std::vector<std::string>{"kbs:///default/keys/pv-1"});
}

TEST(CdhKeyProviderTest, WrongSizeMissingAndUnreachableAreDistinct) {
  auto dir = TempDir::Make();
  ASSERT_OK(dir);
  const std::string sock = dir->path() + "/cdh.sock";
  {
    StandInCdh cdh(sock);
    cdh.resources["kbs:///default/keys/short"] = std::string(32, 'x');
    CdhKeyProvider keys(sock, std::chrono::seconds(5));
    EXPECT_THAT(keys.GetKey(*KeySource::Kbs("kbs:///default/keys/short"), 96),
                StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("holds 32 bytes")));
    EXPECT_THAT(keys.GetKey(*KeySource::Kbs("kbs:///default/keys/none"), 96),
                StatusIs(absl::StatusCode::kInternal, HasSubstr("PluginInternalError")));
  }
  CdhKeyProvider gone(sock, std::chrono::seconds(5));
  EXPECT_THAT(gone.GetKey(*KeySource::Kbs("kbs:///default/keys/pv-1"), 96),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("unreachable")));
}

// The Attestation Agent's GetEvidence as guest-components serves it: the
// evidence binds the runtime data it was given.
TEST(AttestationAgentAttesterTest, AsksTheAaForEvidenceOverTheReportData) {
  auto dir = TempDir::Make();
  ASSERT_OK(dir);
  const std::string sock = dir->path() + "/aa.sock";
  ttrpc::Server aa;
  std::string seen;
  aa.Register("attestation_agent.AttestationAgentService", "GetEvidence",
              [&](const ttrpc::CallContext&, const std::string& req, std::string* resp) -> Status {
                attestation_agent::GetEvidenceRequest r;
                if (!r.ParseFromString(req)) return absl::InvalidArgumentError("bad request");
                seen = r.runtimedata();
                attestation_agent::GetEvidenceResponse out;
                out.set_evidence(nlohmann::json{{"quote", "q"}, {"len", seen.size()}}.dump());
                *resp = out.SerializeAsString();
                return OkStatus();
              });
  ASSERT_OK(aa.ListenUnix(sock));
  aa.Start();
  auto attester = kbs::NewAttestationAgentAttester(sock, "tdx", std::chrono::seconds(5));
  EXPECT_EQ(attester->tee(), "tdx");
  kbs::ReportData rd{};
  for (size_t i = 0; i < rd.size(); ++i) rd[i] = static_cast<uint8_t>(i + 1);
  auto ev = attester->PrimaryEvidence(rd);
  ASSERT_OK(ev);
  EXPECT_EQ((*ev)["quote"], "q");
  EXPECT_EQ(seen, std::string(reinterpret_cast<const char*>(rd.data()), rd.size()));
  aa.Stop();
  EXPECT_THAT(attester->PrimaryEvidence(rd), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("Attestation Agent")));
}

TEST(KeyConfigTest, TestShortcutsNeedATestBuild) {
  KeyConfig c;
  c.provider = "kbs";
  c.kbs_url = "http://127.0.0.1:8080";
  c.attester = "aa";
  c.tee = "snp";
  c.init_data_path = "";
  EXPECT_THAT(NewRemoteKeyProvider(c), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("plain HTTP")));
  c.kbs_url = "https://kbs.example:8080";
  c.attester = "sample";
  EXPECT_THAT(NewRemoteKeyProvider(c), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("sample")));
  c.insecure_test_build = true;
  EXPECT_OK(NewRemoteKeyProvider(c));
}

TEST(KeyConfigTest, BadValuesAreInvalidArgument) {
  KeyConfig c;
  c.provider = "vault";
  EXPECT_THAT(NewRemoteKeyProvider(c), StatusIs(absl::StatusCode::kInvalidArgument));
  c.provider = "kbs";
  EXPECT_THAT(NewRemoteKeyProvider(c), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("kbs_url")));
  c.kbs_url = "https://k";
  c.tee_key_algorithm = "RSA1_5";
  EXPECT_THAT(NewRemoteKeyProvider(c), StatusIs(absl::StatusCode::kInvalidArgument));
  c.tee_key_algorithm = "ECDH-ES+A256KW";
  c.attester = "aa";
  c.tee = "";
  EXPECT_THAT(NewRemoteKeyProvider(c), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("tee")));
  EXPECT_THAT(ApplyKeyConfigJson(nlohmann::json{{"provder", "kbs"}}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("keys.provder")));
  EXPECT_THAT(ApplyKeyConfigJson(nlohmann::json{{"insecure_test_build", "yes"}}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(KeyConfigTest, SampleAttesterChecksTheInitDataDigest) {
  auto dir = TempDir::Make();
  ASSERT_OK(dir);
  const std::string path = dir->path() + "/initdata.toml";
  const std::string toml = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"a.txt\" = \"hello\"\n";
  ASSERT_OK(AtomicWriteFile(path, toml, 0600));
  KeyConfig c;
  c.provider = "kbs";
  c.kbs_url = "http://127.0.0.1:1";
  c.attester = "sample";
  c.insecure_test_build = true;
  c.init_data_path = path;
  EXPECT_THAT(NewRemoteKeyProvider(c), StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("does not match")));
  // sha256 of the bytes above, from Python's hashlib.
  c.init_data_digest = "933B09515292B998E75C3D08ECFC3C6E0B0E349639DE2A191BA7AFB34F6403A1";
  EXPECT_OK(NewRemoteKeyProvider(c));
  c.init_data_path = dir->path() + "/absent.toml";
  EXPECT_THAT(NewRemoteKeyProvider(c), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no init-data")));
}

TEST(InitDataTest, ParsesAndHashesWithTheDeclaredAlgorithm) {
  const std::string toml =
      "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"cocostorage.toml\" = '''\nx = 1\n'''\n";
  auto d = kbs::ParseInitData(toml);
  ASSERT_OK(d);
  EXPECT_EQ(d->algorithm, "sha384");
  EXPECT_EQ(d->digest.size(), 48u);
  EXPECT_EQ(d->data.at("cocostorage.toml"), "x = 1\n");
  EXPECT_EQ(d->raw, toml);
}

TEST(InitDataTest, RefusesWhatIsNotInitData) {
  for (const char* bad : {"version = \"0.2.0\"\nalgorithm = \"sha256\"\n", "version = \"0.1.0\"\nalgorithm = \"md5\"\n",
                          "version = \"0.1.0\"\nalgorithm = \"sha256\"\nextra = 1\n",
                          "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\nn = 5\n", "version = ", "[data\n"}) {
    EXPECT_THAT(kbs::ParseInitData(bad), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
}

}  // namespace
}  // namespace cocostorage::agent
