// The KBS client's protocol handling and retry rules, against a scripted
// server (FakeKbs) whose resource replies are encrypted by an independent
// JWE implementation (Python `cryptography`). The same client against the
// test KBS over real HTTP: tests/kbs/.
#include "kbs/kbs_client.h"

#include <gtest/gtest.h>

#include <deque>
#include <functional>

#include "cocostorage/testing/status_matchers.h"
#include "kbs/jcs.h"
#include "kbs/protocol.h"
#include "kbs_test_util.h"

namespace cocostorage::agent::kbs {
namespace {

using ::cocostorage::testing::StatusIs;
using nlohmann::json;
using ::testing::HasSubstr;

std::string ErrorJson(std::string_view variant, std::string_view detail) {
  return json{{"type", Cat("https://github.com/confidential-containers/kbs/errors/", variant)}, {"detail", detail}}
      .dump();
}

// A scripted KBS: behaves like trustee unless a test overrides a step.
class FakeKbs : public HttpClient {
 public:
  int auths = 0, attests = 0, resources = 0;
  std::string resource = std::string(96, '\x5a');
  // Optional overrides, consumed one per request of that kind.
  std::deque<std::function<StatusOr<HttpResponse>(const HttpRequest&)>> on_auth, on_attest, on_resource;
  json last_attest;
  std::vector<HttpRequest> log;

  StatusOr<HttpResponse> Send(const HttpRequest& r) override {
    log.push_back(r);
    if (r.url.ends_with("/kbs/v0/auth")) {
      ++auths;
      if (!on_auth.empty()) return Pop(on_auth, r);
      json body = json::parse(r.body);
      EXPECT_EQ(body["version"], "0.4.0");
      session_ = Cat("0123456789abcdef0123456789abcd", auths % 10, "f");
      nonce_ = Cat("bm9uY2Ut", auths);
      return HttpResponse{200,
                          {{"set-cookie", Cat("kbs-session-id=", session_, "; Expires=Wed, 02 Dec 2026 01:00:00 GMT")}},
                          json{{"nonce", nonce_}, {"extra-params", ""}}.dump()};
    }
    if (r.url.ends_with("/kbs/v0/attest")) {
      ++attests;
      EXPECT_TRUE(HasCookie(r)) << "attest without the session cookie";
      last_attest = json::parse(r.body);
      if (!on_attest.empty()) return Pop(on_attest, r);
      jwk_ = last_attest["runtime-data"]["tee-pubkey"];
      EXPECT_EQ(last_attest["runtime-data"]["nonce"], nonce_);
      // The sample evidence must bind nonce and key (independent hash: JCS
      // of these shapes equals Python's sorted compact dump, checked below).
      auto rd = BindReportData(nonce_, jwk_);
      EXPECT_TRUE(rd.ok());
      token_ = Cat("eyJh.", attests, ".sig");
      return HttpResponse{200, {}, json{{"token", token_}}.dump()};
    }
    ++resources;
    if (!on_resource.empty()) return Pop(on_resource, r);
    bool bearer = false;
    for (const auto& [k, v] : r.headers) bearer |= (k == "Authorization" && v == Cat("Bearer ", token_));
    if (!bearer) return HttpResponse{401, {}, ErrorJson("TokenNotFound", "Attestation Token not found")};
    return HttpResponse{200, {}, kbs_testing::PythonJwe(jwk_, resource).value_or("")};
  }

  void ExpireToken() { token_ = "expired"; }

 private:
  StatusOr<HttpResponse> Pop(std::deque<std::function<StatusOr<HttpResponse>(const HttpRequest&)>>& q,
                             const HttpRequest& r) {
    auto f = std::move(q.front());
    q.pop_front();
    return f(r);
  }
  bool HasCookie(const HttpRequest& r) const {
    for (const auto& [k, v] : r.headers)
      if (k == "Cookie" && v == Cat("kbs-session-id=", session_)) return true;
    return false;
  }
  std::string session_, nonce_, token_;
  json jwk_;
};

struct Fixture {
  FakeKbs* kbs = nullptr;
  std::vector<std::chrono::milliseconds> sleeps;
  std::unique_ptr<KbsClient> client;
};

Fixture Make(KeyAlgorithm alg = KeyAlgorithm::kEcdhEsA256Kw, std::optional<std::string> init_data = std::nullopt) {
  Fixture f;
  auto kbs = std::make_unique<FakeKbs>();
  f.kbs = kbs.get();
  KbsClientOptions o;
  o.url = "https://kbs.test:8080/";
  o.key_algorithm = alg;
  o.init_data_toml = std::move(init_data);
  auto* sleeps = &f.sleeps;
  f.client = std::make_unique<KbsClient>(std::move(o), std::move(kbs), NewSampleAttester(),
                                         [sleeps](std::chrono::milliseconds d) { sleeps->push_back(d); });
  return f;
}

constexpr char kUri[] = "kbs:///default/volume-keys/pv-1";

TEST(KbsClientTest, HandshakeThenResourceForBothKeyAlgorithms) {
  for (KeyAlgorithm alg : {KeyAlgorithm::kEcdhEsA256Kw, KeyAlgorithm::kRsaOaep256}) {
    Fixture f = Make(alg);
    auto key = f.client->GetResource(kUri);
    ASSERT_OK(key);
    EXPECT_EQ(std::string(key->chars(), key->size()), f.kbs->resource);
    EXPECT_EQ(f.kbs->auths, 1);
    EXPECT_EQ(f.kbs->log.back().url, "https://kbs.test:8080/kbs/v0/resource/default/volume-keys/pv-1");
    EXPECT_EQ(f.kbs->last_attest["runtime-data"]["tee-pubkey"]["alg"], KeyAlgorithmName(alg));
    EXPECT_TRUE(f.kbs->last_attest["init-data"].is_null());
  }
}

TEST(KbsClientTest, TheSessionIsReusedUntilRefused) {
  Fixture f = Make();
  ASSERT_OK(f.client->GetResource(kUri));
  ASSERT_OK(f.client->GetResource(kUri));
  EXPECT_EQ(f.kbs->auths, 1);
  EXPECT_EQ(f.kbs->resources, 2);
}

TEST(KbsClientTest, ExpiredTokenGets401AndANewHandshake) {
  Fixture f = Make();
  ASSERT_OK(f.client->GetResource(kUri));
  f.kbs->ExpireToken();
  ASSERT_OK(f.client->GetResource(kUri));
  EXPECT_EQ(f.kbs->auths, 2);
  EXPECT_EQ(f.kbs->resources, 3);
}

TEST(KbsClientTest, PersistentPolicyDenialStopsAfterThreeAttempts) {
  Fixture f = Make();
  for (int i = 0; i < 5; ++i)
    f.kbs->on_resource.push_back([](const HttpRequest&) {
      return HttpResponse{401, {}, ErrorJson("PolicyDeny", "Access denied by policy")};
    });
  auto r = f.client->GetResource(kUri);
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("policy denies")));
  EXPECT_EQ(f.kbs->resources, 3);
  EXPECT_EQ(f.kbs->auths, 3);
}

TEST(KbsClientTest, Forbidden403IsFinal) {
  Fixture f = Make();
  f.kbs->on_resource.push_back([](const HttpRequest&) {
    return HttpResponse{403, {}, ErrorJson("PolicyDeny", "Access denied by policy")};
  });
  EXPECT_THAT(f.client->GetResource(kUri), StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("PolicyDeny")));
  EXPECT_EQ(f.kbs->resources, 1);
}

TEST(KbsClientTest, NotFoundIsImmediate) {
  Fixture f = Make();
  f.kbs->on_resource.push_back([](const HttpRequest&) {
    return HttpResponse{404, {}, ErrorJson("InvalidRequestPath", "Request path x is invalid")};
  });
  EXPECT_THAT(f.client->GetResource(kUri), StatusIs(absl::StatusCode::kNotFound, HasSubstr("InvalidRequestPath")));
  EXPECT_EQ(f.kbs->resources, 1);
}

TEST(KbsClientTest, AMissingResourceBehindA401IsNotFound) {
  Fixture f = Make();
  for (int i = 0; i < 3; ++i)
    f.kbs->on_resource.push_back([](const HttpRequest&) {
      return HttpResponse{401, {}, ErrorJson("PluginInternalError", "Plugin internal error")};
    });
  EXPECT_THAT(f.client->GetResource(kUri), StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing")));
}

TEST(KbsClientTest, RefusedAttestationIsPermissionDeniedWithoutRetries) {
  Fixture f = Make();
  f.kbs->on_attest.push_back([](const HttpRequest&) {
    return HttpResponse{401, {}, ErrorJson("AttestationError", "Attestation error: evidence verification failed")};
  });
  EXPECT_THAT(f.client->GetResource(kUri),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("refused the attestation")));
  EXPECT_EQ(f.kbs->attests, 1);
  EXPECT_EQ(f.kbs->resources, 0);
}

TEST(KbsClientTest, UnreachableKbsIsRetriedFiveTimesOneSecondApart) {
  Fixture f = Make();
  for (int i = 0; i < 5; ++i)
    f.kbs->on_auth.push_back([](const HttpRequest&) -> StatusOr<HttpResponse> {
      return absl::UnavailableError("cannot reach https://kbs.test:8080/kbs/v0/auth: Connection refused");
    });
  EXPECT_THAT(f.client->GetResource(kUri), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("Connection refused")));
  EXPECT_EQ(f.kbs->auths, 5);
  EXPECT_EQ(f.sleeps, std::vector<std::chrono::milliseconds>(4, std::chrono::milliseconds(1000)));
}

TEST(KbsClientTest, KbsDownThenUpSucceeds) {
  Fixture f = Make();
  for (int i = 0; i < 2; ++i)
    f.kbs->on_auth.push_back(
        [](const HttpRequest&) -> StatusOr<HttpResponse> { return absl::UnavailableError("refused"); });
  f.kbs->on_auth.push_back([](const HttpRequest&) -> StatusOr<HttpResponse> { return HttpResponse{503, {}, "busy"}; });
  ASSERT_OK(f.client->GetResource(kUri));
  EXPECT_EQ(f.kbs->auths, 4);
  EXPECT_EQ(f.sleeps.size(), 3u);
}

// A KBS that restarts loses its sessions: the resource GET fails to connect,
// then the old token is refused; a fresh handshake (with its own retries)
// gets the key.
TEST(KbsClientTest, KbsRestartBetweenCallsIsAHandshakeAway) {
  Fixture f = Make();
  ASSERT_OK(f.client->GetResource(kUri));
  f.kbs->on_resource.push_back(
      [](const HttpRequest&) -> StatusOr<HttpResponse> { return absl::UnavailableError("refused"); });
  for (int i = 0; i < 2; ++i)
    f.kbs->on_auth.push_back(
        [](const HttpRequest&) -> StatusOr<HttpResponse> { return absl::UnavailableError("refused"); });
  ASSERT_OK(f.client->GetResource(kUri));
  EXPECT_EQ(f.kbs->auths, 4);  // the first session, two refused, one new
  EXPECT_EQ(f.sleeps.size(), 2u);
}

TEST(KbsClientTest, MalformedRepliesAreInvalidArgument) {
  const std::vector<std::pair<std::string, std::function<StatusOr<HttpResponse>(const HttpRequest&)>>> cases = {
      {"no cookie",
       [](const HttpRequest&) {
         return HttpResponse{200, {}, R"({"nonce":"n","extra-params":""})"};
       }},
      {"no nonce",
       [](const HttpRequest&) {
         return HttpResponse{200, {{"set-cookie", "kbs-session-id=ab"}}, R"({"x":1})"};
       }},
      {"not json",
       [](const HttpRequest&) {
         return HttpResponse{200, {{"set-cookie", "kbs-session-id=ab"}}, "<html>"};
       }},
      {"numeric extra-params",
       [](const HttpRequest&) {
         return HttpResponse{200, {{"set-cookie", "kbs-session-id=ab"}}, R"({"nonce":"n","extra-params":5})"};
       }},
  };
  for (const auto& [name, reply] : cases) {
    Fixture f = Make();
    f.kbs->on_auth.push_back(reply);
    EXPECT_THAT(f.client->GetResource(kUri), StatusIs(absl::StatusCode::kInvalidArgument)) << name;
    EXPECT_EQ(f.kbs->auths, 1) << name;
  }
}

TEST(KbsClientTest, TokenThatWouldInjectHeadersIsRefused) {
  Fixture f = Make();
  f.kbs->on_attest.push_back([](const HttpRequest&) {
    return HttpResponse{200, {}, R"({"token":"a.b.c\r\nX-Evil: 1"})"};
  });
  EXPECT_THAT(f.client->GetResource(kUri), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("JWT")));
}

TEST(KbsClientTest, ReplyEncryptedToAnotherKeyIsPermissionDenied) {
  Fixture f = Make();
  auto other = TeeKeyPair::Generate(KeyAlgorithm::kEcdhEsA256Kw);
  ASSERT_OK(other);
  const json other_jwk = other->PublicJwk();
  f.kbs->on_resource.push_back([other_jwk](const HttpRequest&) {
    return HttpResponse{200, {}, kbs_testing::PythonJwe(other_jwk, std::string(96, 'k')).value_or("")};
  });
  EXPECT_THAT(f.client->GetResource(kUri), StatusIs(absl::StatusCode::kPermissionDenied));
}

TEST(KbsClientTest, InitDataIsSentVerbatim) {
  const std::string toml = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"x\" = \"y\"\n";
  Fixture f = Make(KeyAlgorithm::kEcdhEsA256Kw, toml);
  ASSERT_OK(f.client->GetResource(kUri));
  EXPECT_EQ(f.kbs->last_attest["init-data"], (json{{"format", "toml"}, {"body", toml}}));
}

TEST(KbsClientTest, BadUriTouchesNothing) {
  Fixture f = Make();
  EXPECT_THAT(f.client->GetResource("kbs:///a/../b"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_TRUE(f.kbs->log.empty());
}

TEST(KbsProtocolTest, ReportDataMatchesAnIndependentHash) {
  // Python: hashlib.sha384(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
  // for obj = {"additional-evidence": "", "nonce": "MTIz", "tee-pubkey": {"kty":"EC","crv":"P-256",
  // "alg":"ECDH-ES+A256KW","x":"AAAA","y":"BBBB"}}.
  const json jwk = {{"kty", "EC"}, {"crv", "P-256"}, {"alg", "ECDH-ES+A256KW"}, {"x", "AAAA"}, {"y", "BBBB"}};
  auto rd = BindReportData("MTIz", jwk);
  ASSERT_OK(rd);
  EXPECT_EQ(HexEncode(std::string_view(reinterpret_cast<const char*>(rd->data()), rd->size())),
            "6575aae192135b79f8875f2bb9a2675426b9e9606a1fc305ac26ae7d6c6e4f2dfa705f67c513ebe6b0df2497e9e98b95");
}

TEST(KbsProtocolTest, SetCookieParsing) {
  EXPECT_EQ(SessionIdFromSetCookie("kbs-session-id=abc123; Expires=x"), "abc123");
  EXPECT_EQ(SessionIdFromSetCookie("kbs-session-id=abc123"), "abc123");
  EXPECT_EQ(SessionIdFromSetCookie("other=1; kbs-session-id=abc"), std::nullopt);
  EXPECT_EQ(SessionIdFromSetCookie("kbs-session-id=; Path=/"), std::nullopt);
  EXPECT_EQ(SessionIdFromSetCookie("kbs-session-id=a\r\nb"), std::nullopt);
}

TEST(KbsProtocolTest, ErrorBodyIsClippedToPrintableAscii) {
  ErrorBody e = ParseErrorBody(ErrorJson("PolicyDeny", std::string(1000, 'x') + "\n"));
  EXPECT_EQ(e.variant, "PolicyDeny");
  EXPECT_EQ(e.detail.size(), 256u);
  EXPECT_EQ(ParseErrorBody("not json").variant, "");
  EXPECT_EQ(ParseErrorBody(R"({"type":"x/Evil\u0007"})").variant, "Evil?");
}

TEST(KbsProtocolTest, ResourcePathFromUri) {
  EXPECT_EQ(*ResourcePath("kbs:///repo/type/tag.1"), "/kbs/v0/resource/repo/type/tag.1");
  EXPECT_THAT(ResourcePath("kbs:///repo/type"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ResourcePath("https://x/repo/type/tag"), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace cocostorage::agent::kbs
