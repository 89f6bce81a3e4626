// Our KBS client (libcurl, OpenSSL, JOSE) against the test KBS over real
// HTTPS on loopback: every error the issue names is distinct and clear. The
// same client inside the VM, activating volumes: kbs_vm_test.cc.
#include <gtest/gtest.h>

#include <thread>

#include "cocostorage/testing/status_matchers.h"
#include "cocostorage/testing/temp_dir.h"
#include "kbs/init_data.h"
#include "kbs/kbs_client.h"
#include "keys/remote_key_providers.h"
#include "test_kbs_process.h"

namespace cocostorage::agent::kbs {
namespace {

using ::cocostorage::testing::StatusIs;
using ::cocostorage::testing::TempDir;
using ::cocostorage::testing::TestKbsProcess;
using nlohmann::json;
using ::testing::HasSubstr;

constexpr char kKeyHex[] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"
    "303132333435363738393a3b3c3d3e3f404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f";

json BaseConfig() {
  return {{"resources",
           {{"default/keys/pv-1", {{"hex", kKeyHex}}},
            {"default/keys/short", {{"hex", "00112233"}}},
            {"default/secret/denied", {{"hex", kKeyHex}}}}},
          {"allowed_tees", {"sample"}},
          {"policy", {{"default", "allow"}, {"rules", {{{"resource", "default/secret/*"}, {"allow", false}}}}}}};
}

// Flips one bit of the report data: evidence that no longer binds the key.
class TamperingAttester : public Attester {
 public:
  std::string tee() const override { return "sample"; }
  StatusOr<json> PrimaryEvidence(const ReportData& rd) override {
    ReportData bad = rd;
    bad[0] ^= 1;
    return SampleEvidence(bad);
  }
};

class KbsClientHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::Make("/tmp", "coco-kbs");
    ASSERT_OK(d);
    dir_ = std::move(*d);
    kbs_ = std::make_unique<TestKbsProcess>(dir_.path());
    ASSERT_TRUE(kbs_->Start(BaseConfig(), 0)) << ReadFileToString(dir_.path() + "/server.stderr").value_or("");
  }

  std::unique_ptr<KbsClient> Client(KbsClientOptions o = {}, std::unique_ptr<Attester> attester = nullptr,
                                    std::string ca = "") {
    CurlOptions c;
    c.ca_bundle = ca.empty() ? kbs_->ca_bundle() : ca;
    auto http = NewCurlHttpClient(c);
    EXPECT_OK(http);
    if (o.url.empty()) o.url = kbs_->url();
    o.handshake_retry_delay = std::chrono::milliseconds(500);
    o.request_timeout = std::chrono::milliseconds(10000);
    return std::make_unique<KbsClient>(std::move(o), std::move(*http),
                                       attester ? std::move(attester) : NewSampleAttester());
  }

  TempDir dir_;
  std::unique_ptr<TestKbsProcess> kbs_;
};

TEST_F(KbsClientHttpTest, ReleasesTheKeyForBothTeeKeyAlgorithms) {
  for (KeyAlgorithm alg : {KeyAlgorithm::kEcdhEsA256Kw, KeyAlgorithm::kRsaOaep256}) {
    KbsClientOptions o;
    o.key_algorithm = alg;
    auto key = Client(o)->GetResource("kbs:///default/keys/pv-1");
    ASSERT_OK(key) << KeyAlgorithmName(alg);
    ASSERT_EQ(key->size(), 96u);
    for (size_t i = 0; i < key->size(); ++i) ASSERT_EQ(key->data()[i], i) << i;
  }
  EXPECT_EQ(kbs_->Attested(), 2);
}

TEST_F(KbsClientHttpTest, PolicyDenialMissingResourceAndBadLengthAreDistinct) {
  auto client = Client();
  EXPECT_THAT(client->GetResource("kbs:///default/secret/denied"),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("policy denies")));
  EXPECT_THAT(client->GetResource("kbs:///default/keys/absent"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("kbs:///default/keys/absent")));
  KeyProviderRouter provider(std::make_unique<EphemeralKeyProvider>(), std::make_unique<KbsKeyProvider>(Client()));
  EXPECT_THAT(provider.GetKey(*KeySource::Kbs("kbs:///default/keys/short"), 96),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("holds 4 bytes")));
}

TEST_F(KbsClientHttpTest, ANewerTrusteesForbiddenIsAlsoAPolicyDenial) {
  json c = BaseConfig();
  c["policy_deny_status"] = 403;
  ASSERT_NE(kbs_->Admin("POST", "/_test/config", c), "");
  EXPECT_THAT(Client()->GetResource("kbs:///default/secret/denied"),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("policy denies")));
}

TEST_F(KbsClientHttpTest, ExpiredSessionIsRenewedTransparently) {
  auto client = Client();
  ASSERT_OK(client->GetResource("kbs:///default/keys/pv-1"));
  ASSERT_NE(kbs_->Admin("POST", "/_test/expire-sessions"), "");
  ASSERT_OK(client->GetResource("kbs:///default/keys/pv-1"));
  EXPECT_EQ(kbs_->Attested(), 2);
}

TEST_F(KbsClientHttpTest, TamperedEvidenceIsRefused) {
  EXPECT_THAT(Client({}, std::make_unique<TamperingAttester>())->GetResource("kbs:///default/keys/pv-1"),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("refused the attestation")));
  EXPECT_EQ(kbs_->Attested(), 0);
}

TEST_F(KbsClientHttpTest, InitDataDecidesWhenThePolicyAsksForIt) {
  const std::string good = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"k\" = \"v\"\n";
  auto parsed = ParseInitData(good);
  ASSERT_OK(parsed);
  json c = BaseConfig();
  c["policy"]["rules"].push_back(
      json{{"resource", "default/keys/*"}, {"allow", true}, {"require_init_data_digest", DigestHex(*parsed)}});
  ASSERT_NE(kbs_->Admin("POST", "/_test/config", c), "");
  KbsClientOptions o;
  o.init_data_toml = good;
  EXPECT_OK(Client(o)->GetResource("kbs:///default/keys/pv-1"));
  o.init_data_toml = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"k\" = \"other\"\n";
  EXPECT_THAT(Client(o)->GetResource("kbs:///default/keys/pv-1"),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("policy denies")));
  o.init_data_toml.reset();
  EXPECT_THAT(Client(o)->GetResource("kbs:///default/keys/pv-1"), StatusIs(absl::StatusCode::kPermissionDenied));
}

TEST_F(KbsClientHttpTest, KbsDownThenUpIsRetriedWithBackoff) {
  const int port = kbs_->port();
  kbs_->Stop();
  std::thread restart([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));
    EXPECT_TRUE(kbs_->Start(BaseConfig(), port));
  });
  auto key = Client()->GetResource("kbs:///default/keys/pv-1");
  restart.join();
  EXPECT_OK(key);
}

TEST_F(KbsClientHttpTest, KbsDownForGoodIsUnavailable) {
  kbs_->Stop();
  KbsClientOptions o;
  o.handshake_attempts = 3;
  EXPECT_THAT(Client(o)->GetResource("kbs:///default/keys/pv-1"), StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(KbsClientHttpTest, ACertificateOutsideTheBundleIsRefused) {
  // Another CA than the one that issued the server's certificate.
  auto other = TempDir::Make("/tmp", "coco-kbs-ca");
  ASSERT_OK(other);
  TestKbsProcess unrelated(other->path());
  KbsClientOptions o;
  o.handshake_attempts = 1;
  EXPECT_THAT(Client(o, nullptr, unrelated.ca_bundle())->GetResource("kbs:///default/keys/pv-1"),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("certificate")));
}

TEST_F(KbsClientHttpTest, PlainHttpIsRefusedByDefault) {
  KbsClientOptions o;
  o.url = Cat("http://127.0.0.1:", kbs_->port());
  EXPECT_THAT(Client(o)->GetResource("kbs:///default/keys/pv-1"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("plain HTTP")));
}

}  // namespace
}  // namespace cocostorage::agent::kbs
