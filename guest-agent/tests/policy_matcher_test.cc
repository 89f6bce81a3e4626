// Requests under the attested storage policy: what each rule admits, the
// shape it gives the request, and the rule each denial names. Policies are
// built as structs here (the parser has its own tests).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cdh/secure_mount.h"
#include "cocostorage/testing/status_matchers.h"
#include "kata_agent_request.h"
#include "policy/matcher.h"
#include "policy/policy_gate.h"
#include "request/admission.h"

namespace cocostorage::agent::policy {
namespace {

using ::cocostorage::testing::StatusIs;
using ::testing::HasSubstr;

constexpr uint64_t kGiB = 1ull << 30;
const std::string kRoot = "/run/kata-containers/sandbox/storage";
const std::vector<std::string> kKataMkfs = {"-O", "^has_journal", "-m", "0", "-i", "163840", "-I", "128"};

VolumeRule Scratch() {
  VolumeRule r;
  r.id = "scratch";
  r.kind = VolumeKind::kEphemeral;
  r.integrity = {IntegrityMode::kHmacSha256};
  r.fs_type = "ext4";
  r.mkfs_options = kKataMkfs;
  r.mount_options = {"noatime"};
  r.min_size_bytes = 1 * kGiB;
  r.max_size_bytes = 16 * kGiB;
  r.routes = {Origin::kSecureMount};
  r.container_path = "/scratch";
  return r;
}

VolumeRule Pgdata() {
  VolumeRule r;
  r.id = "pgdata";
  r.kind = VolumeKind::kPersistent;
  r.key = *KeySource::Kbs("kbs:///team-a/volume-keys/pgdata");
  r.create = CreateRule::kIfBlank;
  r.integrity = {IntegrityMode::kHmacSha256};
  r.fs_type = "ext4";
  r.mkfs_options = {"-m", "0"};
  r.min_size_bytes = 8 * kGiB;
  r.max_size_bytes = 64 * kGiB;
  r.routes = {Origin::kAgentApi, Origin::kKataStorage};
  return r;
}

StoragePolicy Policy(std::vector<VolumeRule> rules, uint32_t max_ephemeral = 1) {
  StoragePolicy p;
  p.policy_version = 3;
  p.workload = "team-a/postgres-0";
  p.max_ephemeral_volumes = max_ephemeral;
  p.volumes = std::move(rules);
  return p;
}

using ::cocostorage::agent::testing::KataAgentRequest;

class PolicyMatcherTest : public ::testing::Test {
 protected:
  void Use(StoragePolicy p) {
    gate_ = std::make_unique<PolicyGate>([p] {
      PolicyState s;
      s.policy = p;
      s.verified_by = "test";
      return s;
    });
  }
  StatusOr<ValidatedActivate> SecureMount(const api::SecureMountRequest& r) {
    COCO_ASSIGN_OR_RETURN(ActivationRequest a, ActivationFromSecureMount(r, std::chrono::seconds(50)));
    return Admit(a, Config());
  }
  StatusOr<ValidatedActivate> AgentApi(ActivationRequest a) {
    a.origin = Origin::kAgentApi;
    return Admit(a, Config());
  }
  AdmissionConfig Config() {
    AdmissionConfig c;
    c.storage_root = kRoot;
    c.policy = gate_.get();
    return c;
  }
  static ActivationRequest PgdataRequest() {
    ActivationRequest a;
    a.volume_id = "pgdata";
    a.device = DeviceId{DeviceIdKind::kPciPath, "02/00"};
    a.key = *KeySource::Kbs("kbs:///team-a/volume-keys/pgdata");
    a.fs_type = "ext4";
    a.target_path = kRoot + "/pgdata";
    return a;
  }
  std::unique_ptr<PolicyGate> gate_;
};

TEST_F(PolicyMatcherTest, ConformantSecureMountIsAdmittedUnderItsRule) {
  Use(Policy({Scratch()}));
  auto v = SecureMount(KataAgentRequest());
  ASSERT_OK(v);
  EXPECT_EQ(v->spec.policy_rules, std::vector<std::string>{"scratch"});
  EXPECT_EQ(v->spec.mkfs_options, kKataMkfs);
  EXPECT_EQ(v->spec.integrity, IntegrityMode::kHmacSha256);
}

TEST_F(PolicyMatcherTest, IntegrityDowngradeNamesTheRule) {
  Use(Policy({Scratch()}));
  auto r = KataAgentRequest();
  (*r.mutable_options())["dataIntegrity"] = "false";
  EXPECT_THAT(SecureMount(r).status(),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("storage policy v3, rule volume[scratch].integrity: request asks for \"none\"")));
}

TEST_F(PolicyMatcherTest, IntegrityNoneIsTheRulesCallNotTheAgentFlag) {
  VolumeRule rule = Scratch();
  rule.integrity = {IntegrityMode::kHmacSha256, IntegrityMode::kNone};
  Use(Policy({rule}));
  auto r = KataAgentRequest();
  (*r.mutable_options())["dataIntegrity"] = "false";
  auto v = SecureMount(r);
  ASSERT_OK(v);
  EXPECT_EQ(v->spec.integrity, IntegrityMode::kNone);
}

TEST_F(PolicyMatcherTest, OtherMkfsOptionsAreRefusedAsAWholeList) {
  Use(Policy({Scratch()}));
  auto r = KataAgentRequest();
  (*r.mutable_options())["mkfsOpts"] = "-O ^has_journal -m 5 -i 163840 -I 128";
  EXPECT_THAT(SecureMount(r).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("rule volume[scratch].mkfs_options")));
  // A prefix of the policy's words is not the policy's words either.
  (*r.mutable_options())["mkfsOpts"] = "-O ^has_journal";
  EXPECT_THAT(SecureMount(r).status(), StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("mkfs_options")));
}

TEST_F(PolicyMatcherTest, APolicyNarrowsTheAgentsAllowlistNeverWidensIt) {
  VolumeRule rule = Scratch();
  rule.mkfs_options = {"-d", "/etc"};  // populate the fs from guest files: the agent refuses it regardless
  Use(Policy({rule}));
  auto r = KataAgentRequest();
  (*r.mutable_options())["mkfsOpts"] = "-d /etc";
  EXPECT_THAT(SecureMount(r).status(), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(PolicyMatcherTest, ARouteTheRuleDoesNotListIsRefused) {
  Use(Policy({Pgdata()}));
  EXPECT_THAT(SecureMount(KataAgentRequest()).status(),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("rule match.no_rule: no volume rule allows the secure-mount route")));
}

TEST_F(PolicyMatcherTest, FormatSmuggledIntoAnotherFsTypeIsRefused) {
  Use(Policy({Scratch()}));
  auto r = KataAgentRequest();
  (*r.mutable_options())["filesystemType"] = "xfs";
  (*r.mutable_options())["mkfsOpts"] = "";
  EXPECT_THAT(SecureMount(r).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("rule volume[scratch].fs_type")));
}

TEST_F(PolicyMatcherTest, KbsUriFromTheHostMustBeThePolicys) {
  Use(Policy({Pgdata()}));
  auto a = PgdataRequest();
  a.key = *KeySource::Kbs("kbs:///team-b/volume-keys/other");
  EXPECT_THAT(AgentApi(a).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("rule volume[pgdata].key")));
  ASSERT_OK(AgentApi(PgdataRequest()));
}

TEST_F(PolicyMatcherTest, ANamedRuleNeverFallsThroughToAnother) {
  VolumeRule loose = Pgdata();
  loose.id = "loose";
  loose.integrity = {IntegrityMode::kHmacSha256, IntegrityMode::kNone};
  Use(Policy({Pgdata(), loose}));
  auto a = PgdataRequest();
  a.integrity = IntegrityMode::kNone;
  EXPECT_THAT(AgentApi(a).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("rule volume[pgdata].integrity")));
}

TEST_F(PolicyMatcherTest, CreateNeverOpensOnlyAndIfBlankMayCreate) {
  VolumeRule rule = Pgdata();
  rule.create = CreateRule::kNever;
  Use(Policy({rule}));
  auto never = AgentApi(PgdataRequest());
  ASSERT_OK(never);
  EXPECT_FALSE(never->spec.create_if_blank);
  rule.create = CreateRule::kIfBlank;
  Use(Policy({rule}));
  auto if_blank = AgentApi(PgdataRequest());
  ASSERT_OK(if_blank);
  EXPECT_TRUE(if_blank->spec.create_if_blank);
  EXPECT_FALSE(if_blank->spec.full_blank_check);
  rule.blank_check = BlankCheck::kFull;
  Use(Policy({rule}));
  auto full = AgentApi(PgdataRequest());
  ASSERT_OK(full);
  EXPECT_TRUE(full->spec.full_blank_check);
}

TEST_F(PolicyMatcherTest, TheRuleGivesDefaultsAndForcesReadOnly) {
  VolumeRule rule = Pgdata();
  rule.integrity = {IntegrityMode::kAegis128};
  rule.read_only = true;
  Use(Policy({rule}));
  auto v = AgentApi(PgdataRequest());
  ASSERT_OK(v);
  EXPECT_EQ(v->spec.integrity, IntegrityMode::kAegis128);
  EXPECT_EQ(v->spec.mkfs_options, (std::vector<std::string>{"-m", "0"}));
  EXPECT_TRUE(v->spec.read_only);
}

TEST_F(PolicyMatcherTest, MountOptionsMustEachBeListed) {
  Use(Policy({Scratch()}));
  ActivationRequest a;
  ASSERT_OK(ActivationFromSecureMount(KataAgentRequest(), std::chrono::seconds(1)));
  a = *ActivationFromSecureMount(KataAgentRequest(), std::chrono::seconds(1));
  a.mount_options = {"noatime"};
  ASSERT_OK(Admit(a, Config()));
  a.mount_options = {"noatime", "nodiratime"};
  EXPECT_THAT(Admit(a, Config()).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("rule volume[scratch].mount_options")));
}

TEST_F(PolicyMatcherTest, SeveralRulesAreReportedTogether) {
  VolumeRule xfs = Scratch();
  xfs.id = "cache";
  xfs.fs_type = "xfs";
  xfs.mkfs_options = {};
  Use(Policy({xfs, Scratch()}, 2));
  auto r = KataAgentRequest();
  (*r.mutable_options())["dataIntegrity"] = "false";
  auto s = SecureMount(r).status();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("rule match.no_rule")));
  EXPECT_THAT(s.message(), HasSubstr("volume[cache].fs_type"));
  EXPECT_THAT(s.message(), HasSubstr("volume[scratch].integrity"));
}

TEST_F(PolicyMatcherTest, UnverifiedPolicyServesNothing) {
  gate_ = std::make_unique<PolicyGate>([] {
    PolicyState s;
    s.unverified_reason = "init-data digest does not match HOST_DATA";
    return s;
  });
  EXPECT_THAT(SecureMount(KataAgentRequest()).status(),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("no attested storage policy: init-data digest does not match HOST_DATA")));
}

TEST(PolicyGateTest, ATransientFailureIsRetriedAMismatchIsNot) {
  int loads = 0;
  PolicyGate retry([&] {
    PolicyState s;
    if (++loads == 1) {
      s.unverified_reason = "attestation agent not reachable";
      s.retryable = true;
    } else {
      s.policy = Policy({Scratch()});
    }
    return s;
  });
  EXPECT_THAT(retry.Snapshot().unverified_reason, HasSubstr("not reachable"));
  ASSERT_OK(retry.Current());
  ASSERT_OK(retry.Current());
  EXPECT_EQ(loads, 2);

  int sticky_loads = 0;
  PolicyGate sticky([&] {
    ++sticky_loads;
    PolicyState s;
    s.unverified_reason = "mismatch";
    return s;
  });
  EXPECT_FALSE(sticky.Current().ok());
  EXPECT_FALSE(sticky.Current().ok());
  EXPECT_EQ(sticky_loads, 1);
}

TEST(CheckClaimTest, DeviceSizeMustFitTheRule) {
  StoragePolicy p = Policy({Scratch()});
  VolumeSpec spec;
  spec.id = "sm-MDIvMDA";
  spec.policy_rules = {"scratch"};
  EXPECT_THAT(CheckClaim(p, spec, kGiB / 2, {}).status(),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("rule volume[scratch].size: device has 512Mi; the policy requires scratch 1Gi-16Gi")));
  EXPECT_THAT(CheckClaim(p, spec, 17 * kGiB, {}).status(), StatusIs(absl::StatusCode::kPermissionDenied));
  auto rule = CheckClaim(p, spec, 16 * kGiB, {});
  ASSERT_OK(rule);
  EXPECT_EQ(*rule, "scratch");
}

TEST(CheckClaimTest, TheFirstRuleWhoseSizeFitsWins) {
  VolumeRule big = Scratch();
  big.id = "big";
  big.min_size_bytes = 32 * kGiB;
  big.max_size_bytes = 64 * kGiB;
  StoragePolicy p = Policy({Scratch(), big}, 2);
  VolumeSpec spec;
  spec.id = "sm-x";
  spec.policy_rules = {"scratch", "big"};
  EXPECT_EQ(*CheckClaim(p, spec, 40 * kGiB, {}), "big");
  EXPECT_THAT(CheckClaim(p, spec, 20 * kGiB, {}).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("rule match.size")));
}

TEST(CheckClaimTest, AnInjectedSecondEphemeralVolumeIsRefused) {
  StoragePolicy p = Policy({Scratch()}, 1);
  VolumeSpec spec;
  spec.id = "sm-second";
  spec.policy_rules = {"scratch"};
  VolumeSpec first = spec;
  first.id = "sm-first";
  EXPECT_THAT(CheckClaim(p, spec, 2 * kGiB, {first}).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("rule limits.max_ephemeral_volumes")));
  // A volume made without a policy (an earlier agent run) is not counted.
  VolumeSpec unpoliced = first;
  unpoliced.policy_rules.clear();
  ASSERT_OK(CheckClaim(p, spec, 2 * kGiB, {unpoliced}));
}

// Persistent volumes through an unmodified kata-agent (design §2.4): the
// request looks ephemeral; the device decides.
VolumeRule PgdataOverSecureMount() {
  VolumeRule r = Pgdata();
  r.routes = {Origin::kSecureMount};
  r.min_size_bytes = 1 * kGiB;
  return r;
}

TEST_F(PolicyMatcherTest, SecureMountRequestCarriesPersistentCandidates) {
  Use(Policy({Scratch(), PgdataOverSecureMount()}));
  auto v = SecureMount(KataAgentRequest());
  ASSERT_OK(v);
  EXPECT_EQ(v->spec.policy_rules, std::vector<std::string>{"scratch"});
  EXPECT_EQ(v->spec.persistent_candidates, std::vector<std::string>{"pgdata"});
  EXPECT_TRUE(v->spec.key.ephemeral());
  // kata-agent's mkfs words do not disqualify the persistent rule (its own are used).
  Use(Policy({PgdataOverSecureMount()}));
  v = SecureMount(KataAgentRequest());
  ASSERT_OK(v);
  EXPECT_TRUE(v->spec.policy_rules.empty());
  EXPECT_EQ(v->spec.persistent_candidates, std::vector<std::string>{"pgdata"});
  // What a persistent rule checks still applies: integrity, fs type.
  auto r = KataAgentRequest();
  (*r.mutable_options())["dataIntegrity"] = "false";
  EXPECT_THAT(SecureMount(r).status(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("volume[pgdata].integrity")));
}

class RouteSecureMountTest : public ::testing::Test {
 protected:
  VolumeSpec Request(std::vector<std::string> ephemeral, std::vector<std::string> persistent) {
    VolumeSpec s;
    s.id = "sm-MDI";
    s.policy_rules = std::move(ephemeral);
    s.persistent_candidates = std::move(persistent);
    return s;
  }
  static DeviceFacts Blank() { return {}; }
  static DeviceFacts Ours(const std::string& id) { return {DeviceFacts::Kind::kOurs, id, ""}; }
  static DeviceFacts Other() { return {DeviceFacts::Kind::kOther, "", "holds an ext4 signature"}; }
};

TEST_F(RouteSecureMountTest, AHeaderNamesTheVolume) {
  StoragePolicy p = Policy({Scratch(), PgdataOverSecureMount()});
  EXPECT_EQ(*RouteSecureMount(p, Request({"scratch"}, {"pgdata"}), Ours("pgdata"), {}), "pgdata");
  // Another volume's disk (a swap): refused, whatever else would fit.
  EXPECT_THAT(RouteSecureMount(p, Request({"scratch"}, {"pgdata"}), Ours("other"), {}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("foreign_volume")));
}

TEST_F(RouteSecureMountTest, ABlankDeviceIsCreatedOnlyWhenUnambiguous) {
  VolumeRule never = PgdataOverSecureMount();
  never.create = CreateRule::kNever;
  // Only a persistent candidate that may be created: it is.
  EXPECT_EQ(*RouteSecureMount(Policy({PgdataOverSecureMount()}), Request({}, {"pgdata"}), Blank(), {}), "pgdata");
  // create = never: a blank disk is never formatted as the volume.
  EXPECT_THAT(RouteSecureMount(Policy({never}), Request({}, {"pgdata"}), Blank(), {}),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("volume[pgdata].create")));
  // ... but may still be the scratch volume next to it.
  EXPECT_EQ(*RouteSecureMount(Policy({Scratch(), never}), Request({"scratch"}, {"pgdata"}), Blank(), {}), "");
  // Both could be it: [secure_mount] blank_device decides, or nothing does.
  StoragePolicy both = Policy({Scratch(), PgdataOverSecureMount()});
  EXPECT_THAT(RouteSecureMount(both, Request({"scratch"}, {"pgdata"}), Blank(), {}),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("secure_mount.blank_device")));
  both.secure_mount_blank_device = {BlankDeviceRule::Kind::kEphemeral, ""};
  EXPECT_EQ(*RouteSecureMount(both, Request({"scratch"}, {"pgdata"}), Blank(), {}), "");
  both.secure_mount_blank_device = {BlankDeviceRule::Kind::kVolume, "pgdata"};
  EXPECT_EQ(*RouteSecureMount(both, Request({"scratch"}, {"pgdata"}), Blank(), {}), "pgdata");
  // The volume is already active elsewhere: a blank disk is not it.
  VolumeSpec active;
  active.id = "sm-MDM";
  active.key = *KeySource::Kbs("kbs:///team-a/volume-keys/pgdata");
  active.persistent_id = "pgdata";
  EXPECT_EQ(*RouteSecureMount(both, Request({"scratch"}, {"pgdata"}), Blank(), {active}), "");
}

TEST_F(RouteSecureMountTest, ADeviceThatIsNotBlankIsNeverPersistent) {
  EXPECT_EQ(
      *RouteSecureMount(Policy({Scratch(), PgdataOverSecureMount()}), Request({"scratch"}, {"pgdata"}), Other(), {}),
      "");  // the ephemeral path judges it (and refuses an ext4 disk)
  EXPECT_THAT(RouteSecureMount(Policy({PgdataOverSecureMount()}), Request({}, {"pgdata"}), Other(), {}),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("not_blank")));
}

TEST_F(RouteSecureMountTest, TheRuleShapesThePersistentSpec) {
  VolumeRule rule = PgdataOverSecureMount();
  rule.read_only = true;
  VolumeSpec requested = Request({"scratch"}, {"pgdata"});
  requested.mkfs_options = kKataMkfs;
  VolumeSpec s = PersistentSpecFromRule(requested, rule);
  EXPECT_EQ(s.id, "sm-MDI");  // the record keeps kata-agent's name
  EXPECT_EQ(s.PvId(), "pgdata");
  EXPECT_EQ(s.key, rule.key);
  EXPECT_EQ(s.mkfs_options, rule.mkfs_options);
  EXPECT_TRUE(s.read_only);
  EXPECT_TRUE(s.create_if_blank);
  EXPECT_FALSE(s.full_blank_check);
  EXPECT_EQ(s.policy_rules, std::vector<std::string>{"pgdata"});
  EXPECT_TRUE(s.persistent_candidates.empty());
  rule.blank_check = BlankCheck::kFull;
  EXPECT_TRUE(PersistentSpecFromRule(requested, rule).full_blank_check);
}

}  // namespace
}  // namespace cocostorage::agent::policy
