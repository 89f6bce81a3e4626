// Where the storage policy comes from: the SNP report parser against
// hand-built reports (offsets written here from the SNP ABI spec, not from the
// parser's constants), the tsm verifier over a fake configfs-tsm, the aa
// verifier against a stand-in Attestation Agent (our ttrpc server answering
// CheckInitData as guest-components does), the configured-digest verifier,
// auto, the `policy` config object, and LoadPolicyState with an injected
// parser (the real one is tested with the parser).
#include "policy/policy_source.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <map>
#include <set>
#include <stdexcept>

#include "attestation_agent/attestation_agent.pb.h"
#include "cocostorage/common/fs_util.h"
#include "cocostorage/common/strings.h"
#include "cocostorage/common/unique_fd.h"
#include "cocostorage/testing/status_matchers.h"
#include "cocostorage/testing/temp_dir.h"
#include "cocostorage/ttrpc/server.h"
#include "kbs/init_data.h"
#include "policy/launch_field.h"

namespace cocostorage::agent::policy {
namespace {

using ::cocostorage::testing::StatusIs;
using ::cocostorage::testing::TempDir;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string InitDataToml(const std::string& algorithm, const std::string& policy_toml, bool with_policy = true) {
  std::string t = Cat("version = \"0.1.0\"\nalgorithm = \"", algorithm, "\"\n[data]\n\"aa.toml\" = \"x\"\n");
  if (with_policy) t += Cat("\"cocostorage.toml\" = '''\n", policy_toml, "'''\n");
  return t;
}

kbs::InitData MakeInitData(const std::string& algorithm = "sha256") {
  auto d = kbs::ParseInitData(InitDataToml(algorithm, "schema = 1\n"));
  EXPECT_TRUE(d.ok()) << d.status();
  return *d;
}

std::string Bytes(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }

// An ATTESTATION_REPORT as the PSP returns it: VERSION (u32 LE) at 0x000,
// REPORT_DATA (64 bytes) at 0x050, HOST_DATA (32 bytes) at 0x0C0, 0x4A0 in all.
std::string SnpReport(uint32_t version, std::string_view report_data, std::string_view host_data, size_t size = 0x4A0) {
  std::string r(size, '\0');
  for (size_t i = 0; i < 4 && i < size; ++i) r[i] = static_cast<char>((version >> (8 * i)) & 0xff);
  if (size >= 0x50 + 64) r.replace(0x50, 64, std::string(report_data).substr(0, 64));
  if (size >= 0xC0 + 32) r.replace(0xC0, 32, std::string(host_data).substr(0, 32));
  return r;
}

TEST(SnpReportTest, HostDataAndReportDataAtTheirSpecOffsets) {
  std::string r(0x4A0, '\0');
  for (size_t i = 0; i < r.size(); ++i) r[i] = static_cast<char>(i & 0xff);
  r[0] = 2, r[1] = 0, r[2] = 0, r[3] = 0;
  auto f = ParseSnpReport(r);
  ASSERT_OK(f);
  EXPECT_EQ(f->version, 2u);
  for (size_t i = 0; i < 32; ++i) EXPECT_EQ(f->host_data[i], (0xC0 + i) & 0xff) << i;
  for (size_t i = 0; i < 64; ++i) EXPECT_EQ(f->report_data[i], (0x50 + i) & 0xff) << i;
  auto hd = SnpReportHostData(r);
  ASSERT_OK(hd);
  EXPECT_EQ(*hd, f->host_data);
}

TEST(SnpReportTest, RefusesShortReportsAndUnknownVersions) {
  const std::string rd(64, 'r'), hd(32, 'h');
  EXPECT_THAT(ParseSnpReport(SnpReport(2, rd, hd, 0x49F)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("shorter")));
  EXPECT_THAT(ParseSnpReport(""), StatusIs(absl::StatusCode::kInvalidArgument));
  for (uint32_t v : {0u, 1u, 6u, 0x02000000u})
    EXPECT_THAT(ParseSnpReport(SnpReport(v, rd, hd)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("version")))
        << v;
  for (uint32_t v : {2u, 3u, 4u, 5u}) EXPECT_OK(ParseSnpReport(SnpReport(v, rd, hd))) << v;
  // Longer than a report (a later firmware's padding) is fine.
  EXPECT_OK(ParseSnpReport(SnpReport(3, rd, hd, 0x1000)));
}

// configfs-tsm in memory: mkdir makes an entry with provider and generation,
// a write to inblob bumps generation, reading outblob runs `make_report` on
// the entry's inblob. `races`: so many outblob reads also see another
// writer's write.
class FakeConfigfs final : public TsmFs {
 public:
  struct State {
    std::string root = "/fake/tsm/report";
    bool root_exists = true;
    std::string provider = "sev_guest\n";
    std::function<std::string(std::string_view inblob)> make_report;
    int races = 0;
    bool fail_outblob = false;
    std::vector<std::string> made, removed;
    std::map<std::string, uint64_t> generation;
    std::map<std::string, std::string> inblob;
    int inblob_writes = 0;
  };
  explicit FakeConfigfs(std::shared_ptr<State> s) : s_(std::move(s)) {}

  bool Exists(const std::string& path) override { return s_->root_exists && path == s_->root; }
  Status MakeDir(const std::string& path) override {
    if (ParentDir(path) != s_->root || s_->generation.count(path)) return absl::InternalError("bad mkdir " + path);
    s_->made.push_back(path);
    s_->generation[path] = 7;  // not 0: the verifier must not assume a fresh entry starts at 0
    return OkStatus();
  }
  Status RemoveDir(const std::string& path) override {
    if (!s_->generation.erase(path)) return absl::NotFoundError("no entry " + path);
    s_->removed.push_back(path);
    return OkStatus();
  }
  StatusOr<std::string> ReadFile(const std::string& path, size_t) override {
    const std::string dir = ParentDir(path), attr = path.substr(dir.size() + 1);
    if (!s_->generation.count(dir)) return absl::NotFoundError("no entry for " + path);
    if (attr == "provider") return s_->provider;
    if (attr == "generation") return std::to_string(s_->generation[dir]) + "\n";
    if (attr == "outblob") {
      if (s_->fail_outblob) return ErrnoStatus(EIO, "reading " + path);
      if (s_->races > 0) {
        --s_->races;
        ++s_->generation[dir];
      }
      return s_->make_report(s_->inblob[dir]);
    }
    return absl::NotFoundError("no attribute " + path);
  }
  Status WriteFile(const std::string& path, std::string_view data) override {
    const std::string dir = ParentDir(path);
    if (!s_->generation.count(dir) || path != dir + "/inblob") return absl::InternalError("bad write " + path);
    s_->inblob[dir] = std::string(data);
    ++s_->generation[dir];
    ++s_->inblob_writes;
    return OkStatus();
  }

 private:
  std::shared_ptr<State> s_;
};

class TsmVerifierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    init_ = MakeInitData();
    state_ = std::make_shared<FakeConfigfs::State>();
    const std::string host_data = Bytes(init_.digest);
    state_->make_report = [host_data](std::string_view inblob) { return SnpReport(2, inblob, host_data); };
  }
  Status Verify() { return NewTsmVerifier(state_->root, std::make_unique<FakeConfigfs>(state_))->Verify(init_); }
  void ExpectAllRemoved() {
    EXPECT_FALSE(state_->made.empty());
    EXPECT_EQ(state_->removed, state_->made);
    EXPECT_TRUE(state_->generation.empty());
  }
  kbs::InitData init_;
  std::shared_ptr<FakeConfigfs::State> state_;
};

TEST_F(TsmVerifierTest, MatchingHostDataVerifies) {
  EXPECT_OK(Verify());
  ASSERT_EQ(state_->made.size(), 1u);
  EXPECT_THAT(state_->made[0], StartsWith(Cat(state_->root, "/cocostorage-", static_cast<int64_t>(getpid()), "-")));
  EXPECT_EQ(state_->inblob_writes, 1);
  ExpectAllRemoved();
  // A second call uses a fresh entry name.
  EXPECT_OK(Verify());
  ASSERT_EQ(state_->made.size(), 2u);
  EXPECT_NE(state_->made[0], state_->made[1]);
}

TEST_F(TsmVerifierTest, OtherHostDataIsPermissionDenied) {
  state_->make_report = [](std::string_view inblob) { return SnpReport(2, inblob, std::string(32, '\x5a')); };
  std::string want;
  for (int i = 0; i < 32; ++i) want += "5a";
  EXPECT_THAT(Verify(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("does not match SNP HOST_DATA " + want)));
  ExpectAllRemoved();
}

TEST_F(TsmVerifierTest, ShortOrUnknownReportIsFailedPrecondition) {
  state_->make_report = [](std::string_view inblob) { return SnpReport(2, inblob, "", 0x100); };
  EXPECT_THAT(Verify(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("shorter")));
  ExpectAllRemoved();
  const std::string host_data = Bytes(init_.digest);
  state_->make_report = [host_data](std::string_view inblob) { return SnpReport(9, inblob, host_data); };
  EXPECT_THAT(Verify(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("version 9")));
}

TEST_F(TsmVerifierTest, WrongProviderIsFailedPreconditionWithoutARequest) {
  state_->provider = "tdx_guest\n";
  EXPECT_THAT(Verify(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("\"tdx_guest\", not sev_guest")));
  EXPECT_EQ(state_->inblob_writes, 0);
  ExpectAllRemoved();
}

TEST_F(TsmVerifierTest, ReportWithoutOurReportDataIsRefused) {
  const std::string host_data = Bytes(init_.digest);
  state_->make_report = [host_data](std::string_view) { return SnpReport(2, std::string(64, 'x'), host_data); };
  EXPECT_THAT(Verify(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("REPORT_DATA")));
  ExpectAllRemoved();
}

TEST_F(TsmVerifierTest, GenerationRaceIsRetriedThenGivenUp) {
  state_->races = 1;
  EXPECT_OK(Verify());
  EXPECT_EQ(state_->made.size(), 2u);
  ExpectAllRemoved();

  state_->made.clear(), state_->removed.clear();
  state_->races = 100;
  EXPECT_THAT(Verify(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("another writer")));
  EXPECT_EQ(state_->made.size(), static_cast<size_t>(kTsmAttempts));
  ExpectAllRemoved();
}

TEST_F(TsmVerifierTest, Sha384DoesNotFitHostData) {
  init_ = MakeInitData("sha384");
  EXPECT_THAT(Verify(),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("sha384 does not fit SNP HOST_DATA")));
  EXPECT_EQ(state_->inblob_writes, 0);
  ExpectAllRemoved();
}

TEST_F(TsmVerifierTest, NoConfigfsAndFailedReportsAreDistinct) {
  state_->fail_outblob = true;
  EXPECT_THAT(Verify(), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("outblob")));
  ExpectAllRemoved();
  state_->root_exists = false;
  EXPECT_THAT(Verify(), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no configfs-tsm")));
}

TEST(RealTsmFsTest, PlainFileOperationsAndNoSymlinks) {
  auto dir = TempDir::Make();
  ASSERT_OK(dir);
  auto fs = NewRealTsmFs();
  EXPECT_TRUE(fs->Exists(dir->path()));
  EXPECT_FALSE(fs->Exists(dir->path() + "/none"));
  const std::string e = dir->path() + "/entry";
  ASSERT_OK(fs->MakeDir(e));
  ASSERT_OK(AtomicWriteFile(e + "/inblob", ""));
  ASSERT_OK(fs->WriteFile(e + "/inblob", "nonce"));
  auto got = fs->ReadFile(e + "/inblob", 64);
  ASSERT_OK(got);
  EXPECT_EQ(*got, "nonce");
  EXPECT_THAT(fs->ReadFile(e + "/inblob", 3), StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("larger")));
  ASSERT_EQ(symlink((e + "/inblob").c_str(), (e + "/link").c_str()), 0);
  EXPECT_FALSE(fs->ReadFile(e + "/link", 64).ok());
  EXPECT_FALSE(fs->WriteFile(e + "/link", "x").ok());
  EXPECT_FALSE(fs->RemoveDir(e).ok());  // not empty: only configfs removes an entry with its attributes
  ASSERT_OK(RemoveFileIfExists(e + "/inblob"));
  ASSERT_OK(RemoveFileIfExists(e + "/link"));
  EXPECT_OK(fs->RemoveDir(e));
}

// CheckInitData as guest-components' ttrpc AA serves it: an empty reply when
// the digest (zero-padded) equals the launch field, INTERNAL with a message
// otherwise.
class StandInAa {
 public:
  StandInAa(const std::string& socket, std::string launch_field, bool serve_check = true) {
    server_.Register("attestation_agent.AttestationAgentService", "GetEvidence",
                     [](const ttrpc::CallContext&, const std::string&, std::string* resp) -> Status {
                       *resp = attestation_agent::GetEvidenceResponse().SerializeAsString();
                       return OkStatus();
                     });
    if (serve_check)
      server_.Register(
          "attestation_agent.AttestationAgentService", "CheckInitData",
          [this, launch_field](const ttrpc::CallContext&, const std::string& req, std::string* resp) -> Status {
            attestation_agent::CheckInitDataRequest r;
            if (!r.ParseFromString(req)) return absl::InvalidArgumentError("bad request");
            seen.push_back(r.digest());
            std::string padded = r.digest();
            padded.resize(launch_field.size(), '\0');
            if (padded != launch_field)
              return absl::InternalError(
                  "[ERROR:attestation-agent] AA check initdata failed: Init data does not match!");
            *resp = attestation_agent::CheckInitDataResponse().SerializeAsString();
            return OkStatus();
          });
    EXPECT_OK(server_.ListenUnix(socket));
    server_.Start();
  }
  ~StandInAa() { server_.Stop(); }
  std::vector<std::string> seen;

 private:
  ttrpc::Server server_;
};

TEST(AttestationAgentVerifierTest, MatchMismatchAndMissingAreDistinct) {
  auto dir = TempDir::Make();
  ASSERT_OK(dir);
  const std::string sock = dir->path() + "/aa.sock";
  const kbs::InitData tdx = MakeInitData("sha384");
  auto verifier = NewAttestationAgentVerifier(sock, std::chrono::seconds(5));
  EXPECT_STREQ(verifier->name(), "aa");
  {
    std::string mrconfigid = Bytes(tdx.digest);
    mrconfigid.resize(48, '\0');
    StandInAa aa(sock, mrconfigid);
    EXPECT_OK(verifier->Verify(tdx));
    ASSERT_EQ(aa.seen.size(), 1u);
    EXPECT_EQ(aa.seen[0], Bytes(tdx.digest));
    EXPECT_THAT(verifier->Verify(MakeInitData("sha512")),
                StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("Init data does not match!")));
  }
  EXPECT_THAT(verifier->Verify(tdx), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("Attestation Agent")));
}

TEST(AttestationAgentVerifierTest, RefusedConnectionIsUnavailable) {
  auto dir = TempDir::Make();
  ASSERT_OK(dir);
  const std::string sock = dir->path() + "/aa.sock";
  // A socket file nobody listens on: what a crashed AA leaves.
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(fd.valid());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  sock.copy(addr.sun_path, sock.size());
  ASSERT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_THAT(NewAttestationAgentVerifier(sock, std::chrono::seconds(5))->Verify(MakeInitData()),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST(AttestationAgentVerifierTest, AnAaWithoutCheckInitDataIsFailedPrecondition) {
  auto dir = TempDir::Make();
  ASSERT_OK(dir);
  const std::string sock = dir->path() + "/aa.sock";
  StandInAa aa(sock, "", /*serve_check=*/false);
  EXPECT_THAT(NewAttestationAgentVerifier(sock, std::chrono::seconds(5))->Verify(MakeInitData()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("does not serve CheckInitData")));
}

TEST(LaunchFieldVerifierTest, ConfiguredDigestOnlyInTestBuilds) {
  const kbs::InitData init = MakeInitData();
  PolicySourceConfig c;
  c.verifier = "configured-digest";
  c.configured_digest_hex = kbs::DigestHex(init);
  EXPECT_THAT(NewLaunchFieldVerifier(c),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("insecure_test_build")));
  c.insecure_test_build = true;
  auto v = NewLaunchFieldVerifier(c);
  ASSERT_OK(v);
  EXPECT_STREQ((*v)->name(), "configured-digest");
  EXPECT_OK((*v)->Verify(init));
  EXPECT_THAT((*v)->Verify(MakeInitData("sha384")), StatusIs(absl::StatusCode::kPermissionDenied));
  c.configured_digest_hex.clear();
  EXPECT_THAT(NewLaunchFieldVerifier(c), StatusIs(absl::StatusCode::kInvalidArgument));
  c.verifier = "tpm";
  EXPECT_THAT(NewLaunchFieldVerifier(c), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(LaunchFieldVerifierTest, AutoUsesConfigfsTsmAndNeverTheAttestationAgent) {
  auto dir = TempDir::Make();
  ASSERT_OK(dir);
  PolicySourceConfig c;
  c.tsm_root = dir->path() + "/tsm";
  c.aa_socket = dir->path() + "/aa.sock";
  auto v = NewLaunchFieldVerifier(c);
  ASSERT_OK(v);
  EXPECT_STREQ((*v)->name(), "auto");
  const kbs::InitData init = MakeInitData();
  // No configfs-tsm yet: retryable (configfs may be mounted after us).
  EXPECT_THAT((*v)->Verify(init), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("no way to verify init-data")));
  {
    // An AA that would say OK is not asked: its OK does not always mean it compared.
    StandInAa aa(c.aa_socket, Bytes(init.digest));
    EXPECT_THAT((*v)->Verify(init), StatusIs(absl::StatusCode::kUnavailable));
    EXPECT_STREQ((*v)->name(), "auto");
  }
  // A tsm_root directory makes auto use configfs-tsm (here a plain
  // directory, so the entry has no provider attribute).
  ASSERT_OK(MakeDirs(c.tsm_root));
  EXPECT_THAT((*v)->Verify(init), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("provider")));
  EXPECT_STREQ((*v)->name(), "tsm");
}

TEST(PolicyConfigTest, AppliesEveryKeyStrictly) {
  PolicySourceConfig c;
  ASSERT_OK(ApplyPolicyConfigJson(nlohmann::json{{"required", false},
                                                 {"verifier", "configured-digest"},
                                                 {"init_data", "/i.toml"},
                                                 {"init_data_digest", std::string(64, 'A')},
                                                 {"tsm_root", "/t"},
                                                 {"aa_socket", "/a.sock"}},
                                  &c));
  EXPECT_FALSE(c.required);
  EXPECT_EQ(c.verifier, "configured-digest");
  EXPECT_EQ(c.init_data_path, "/i.toml");
  EXPECT_EQ(c.configured_digest_hex, std::string(64, 'A'));
  EXPECT_EQ(c.tsm_root, "/t");
  EXPECT_EQ(c.aa_socket, "/a.sock");
  EXPECT_FALSE(c.insecure_test_build);
  EXPECT_THAT(ApplyPolicyConfigJson(nlohmann::json{{"verifer", "aa"}}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"policy.verifer\"")));
  EXPECT_THAT(ApplyPolicyConfigJson(nlohmann::json{{"required", "yes"}}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("\"policy.required\"")));
  EXPECT_THAT(ApplyPolicyConfigJson(nlohmann::json{{"insecure_test_build", true}}, &c),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ApplyPolicyConfigJson(nlohmann::json::array(), &c), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(PolicyConfigTest, ValidationKeepsTestShortcutsOutOfProduction) {
  EXPECT_OK(ValidatePolicySourceConfig(PolicySourceConfig{}));
  PolicySourceConfig c;
  c.required = false;
  EXPECT_THAT(ValidatePolicySourceConfig(c), StatusIs(absl::StatusCode::kFailedPrecondition));
  c.insecure_test_build = true;
  EXPECT_OK(ValidatePolicySourceConfig(c));

  c = PolicySourceConfig{};
  c.verifier = "configured-digest";
  c.configured_digest_hex = std::string(96, 'f');
  EXPECT_THAT(ValidatePolicySourceConfig(c), StatusIs(absl::StatusCode::kFailedPrecondition));
  c.insecure_test_build = true;
  EXPECT_OK(ValidatePolicySourceConfig(c));
  for (const std::string& bad : {std::string(63, 'f'), std::string(64, 'g'), std::string("")}) {
    c.configured_digest_hex = bad;
    EXPECT_THAT(ValidatePolicySourceConfig(c), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }

  c = PolicySourceConfig{};
  c.configured_digest_hex = std::string(64, '0');  // ignored by aa: a confusion worth reporting
  c.verifier = "aa";
  EXPECT_THAT(ValidatePolicySourceConfig(c), StatusIs(absl::StatusCode::kInvalidArgument));
  c = PolicySourceConfig{};
  c.verifier = "sgx";
  EXPECT_THAT(ValidatePolicySourceConfig(c), StatusIs(absl::StatusCode::kInvalidArgument));
  c = PolicySourceConfig{};
  c.init_data_path = "initdata.toml";
  EXPECT_THAT(ValidatePolicySourceConfig(c), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("absolute")));
}

class ScriptedVerifier final : public LaunchFieldVerifier {
 public:
  explicit ScriptedVerifier(Status s) : s_(std::move(s)) {}
  const char* name() const override { return "scripted"; }
  Status Verify(const kbs::InitData& d) override {
    seen_digest = kbs::DigestHex(d);
    return s_;
  }
  std::string seen_digest;

 private:
  Status s_;
};

class LoadPolicyStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::Make();
    ASSERT_OK(d);
    dir_ = std::move(*d);
    config_.init_data_path = dir_.path() + "/initdata.toml";
    parse_ = [this](std::string_view text) -> StatusOr<StoragePolicy> {
      parsed.emplace_back(text);
      StoragePolicy p;
      p.workload = "w1";
      return p;
    };
  }
  void WriteInitData(const std::string& text) { ASSERT_OK(AtomicWriteFile(config_.init_data_path, text, 0644)); }

  TempDir dir_;
  PolicySourceConfig config_;
  StoragePolicyParser parse_;
  std::vector<std::string> parsed;
};

TEST_F(LoadPolicyStateTest, VerifiedPolicyCarriesDigestAndVerifier) {
  const std::string toml = InitDataToml("sha256", "schema = 1\n");
  WriteInitData(toml);
  auto expected = kbs::ParseInitData(toml);
  ASSERT_OK(expected);
  auto v = NewConfiguredDigestVerifier(kbs::DigestHex(*expected));
  const PolicyState st = LoadPolicyState(config_, *v, parse_);
  ASSERT_TRUE(st.verified()) << st.unverified_reason;
  EXPECT_EQ(st.policy->workload, "w1");
  EXPECT_EQ(st.verified_by, "configured-digest");
  EXPECT_EQ(st.init_data_digest_hex, kbs::DigestHex(*expected));
  EXPECT_EQ(parsed, std::vector<std::string>{"schema = 1\n"});
  EXPECT_TRUE(st.unverified_reason.empty());
}

TEST_F(LoadPolicyStateTest, MissingFileIsRetryableOtherFileProblemsAreNot) {
  ScriptedVerifier ok(OkStatus());
  PolicyState st = LoadPolicyState(config_, ok, parse_);
  EXPECT_FALSE(st.verified());
  EXPECT_TRUE(st.retryable);
  EXPECT_THAT(st.unverified_reason, HasSubstr("cannot read init-data"));

  const std::string real = dir_.path() + "/real.toml";
  ASSERT_OK(AtomicWriteFile(real, InitDataToml("sha256", "x = 1\n")));
  ASSERT_EQ(symlink(real.c_str(), config_.init_data_path.c_str()), 0);
  st = LoadPolicyState(config_, ok, parse_);
  EXPECT_FALSE(st.verified());
  EXPECT_FALSE(st.retryable);
  ASSERT_OK(RemoveFileIfExists(config_.init_data_path));

  WriteInitData(std::string(kbs::kMaxInitDataBytes + 1, '#'));
  st = LoadPolicyState(config_, ok, parse_);
  EXPECT_FALSE(st.verified());
  EXPECT_THAT(st.unverified_reason, HasSubstr("larger"));

  WriteInitData("this is [not toml");
  st = LoadPolicyState(config_, ok, parse_);
  EXPECT_FALSE(st.verified());
  EXPECT_FALSE(st.retryable);
  EXPECT_THAT(st.unverified_reason, HasSubstr("not TOML"));
  EXPECT_TRUE(ok.seen_digest.empty());
  EXPECT_TRUE(parsed.empty());
}

TEST_F(LoadPolicyStateTest, VerifierOutcomeDecidesRetryability) {
  WriteInitData(InitDataToml("sha256", "x = 1\n"));
  ScriptedVerifier denied(absl::PermissionDeniedError("HOST_DATA differs"));
  PolicyState st = LoadPolicyState(config_, denied, parse_);
  EXPECT_FALSE(st.verified());
  EXPECT_FALSE(st.retryable);
  EXPECT_THAT(st.unverified_reason, HasSubstr("HOST_DATA differs"));
  EXPECT_THAT(st.unverified_reason, HasSubstr("scripted"));
  EXPECT_EQ(st.init_data_digest_hex, denied.seen_digest);

  ScriptedVerifier later(absl::UnavailableError("AA not up"));
  st = LoadPolicyState(config_, later, parse_);
  EXPECT_FALSE(st.verified());
  EXPECT_TRUE(st.retryable);
  EXPECT_TRUE(parsed.empty());
}

TEST_F(LoadPolicyStateTest, NoPolicyOrABadOneIsUnverifiedWithTheReason) {
  ScriptedVerifier ok(OkStatus());
  WriteInitData(InitDataToml("sha256", "", /*with_policy=*/false));
  PolicyState st = LoadPolicyState(config_, ok, parse_);
  EXPECT_FALSE(st.verified());
  EXPECT_EQ(st.unverified_reason, "init-data holds no cocostorage.toml");

  WriteInitData(InitDataToml("sha256", "bad = 1\n"));
  StoragePolicyParser refuse = [](std::string_view) -> StatusOr<StoragePolicy> {
    return absl::InvalidArgumentError("volume[0].integrity: unknown mode");
  };
  st = LoadPolicyState(config_, ok, refuse);
  EXPECT_FALSE(st.verified());
  EXPECT_FALSE(st.retryable);
  EXPECT_EQ(st.unverified_reason, "cocostorage.toml: volume[0].integrity: unknown mode");

  StoragePolicyParser throws = [](std::string_view) -> StatusOr<StoragePolicy> { throw std::runtime_error("boom"); };
  st = LoadPolicyState(config_, ok, throws);
  EXPECT_FALSE(st.verified());
  EXPECT_THAT(st.unverified_reason, HasSubstr("boom"));
}

// The production form: the real parser on the example policy an owner would
// ship (deploy/examples/policy/ephemeral-only.toml), through the digest check.
TEST_F(LoadPolicyStateTest, TheRealParserOnAShippedExample) {
  auto example = ReadFileToString(Cat(COCOSTORAGE_SOURCE_DIR, "/deploy/examples/policy/ephemeral-only.toml"));
  ASSERT_OK(example);
  const std::string toml = InitDataToml("sha256", *example);
  WriteInitData(toml);
  auto init = kbs::ParseInitData(toml);
  ASSERT_OK(init);
  auto v = NewConfiguredDigestVerifier(kbs::DigestHex(*init));
  const PolicyState st = LoadPolicyState(config_, *v);
  ASSERT_TRUE(st.verified()) << st.unverified_reason;
  EXPECT_FALSE(st.policy->volumes.empty());
  // One byte more and the digest no longer matches: nothing is trusted.
  WriteInitData(toml + "\n");
  const PolicyState tampered = LoadPolicyState(config_, *v);
  EXPECT_FALSE(tampered.verified());
  EXPECT_FALSE(tampered.retryable);
}

}  // namespace
}  // namespace cocostorage::agent::policy
