#include "cocostorage/common/base64.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "cocostorage/testing/status_matchers.h"

namespace cocostorage {
namespace {

using ::cocostorage::testing::StatusIs;

// RFC 4648 section 10 vectors, URL alphabet, with padding (Go's URLEncoding).
TEST(Base64UrlTest, MatchesRfc4648AndGoUrlEncoding) {
  EXPECT_EQ(Base64UrlEncode(""), "");
  EXPECT_EQ(Base64UrlEncode("f"), "Zg==");
  EXPECT_EQ(Base64UrlEncode("fo"), "Zm8=");
  EXPECT_EQ(Base64UrlEncode("foo"), "Zm9v");
  EXPECT_EQ(Base64UrlEncode("foob"), "Zm9vYg==");
  EXPECT_EQ(Base64UrlEncode("fooba"), "Zm9vYmE=");
  EXPECT_EQ(Base64UrlEncode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64UrlEncode("02/00"), "MDIvMDA=");
  EXPECT_EQ(Base64UrlEncode("\xfb\xff"), "-_8=");  // URL alphabet, not + and /
  EXPECT_EQ(Base64UrlEncode("/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/pv/mount"),
            "L3Zhci9saWIva3ViZWxldC9wb2RzL3Uvdm9sdW1lcy9rdWJlcm5ldGVzLmlvfmNzaS9wdi9tb3VudA==");
}

// RFC 4648 §10, the plain text and its standard (padded) encoding.
const std::vector<std::pair<std::string, std::string>> kRfc4648Vectors = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

TEST(Base64Test, StandardEncodingMatchesRfc4648) {
  for (const auto& [plain, encoded] : kRfc4648Vectors) EXPECT_EQ(Base64Encode(plain), encoded) << plain;
  EXPECT_EQ(Base64Encode("\xfb\xff"), "+/8=");
}

TEST(Base64Test, UrlNoPadDropsOnlyThePadding) {
  for (const auto& [plain, encoded] : kRfc4648Vectors) {
    std::string unpadded = encoded.substr(0, encoded.find('='));
    EXPECT_EQ(Base64UrlEncodeNoPad(plain), unpadded) << plain;
  }
  EXPECT_EQ(Base64UrlEncodeNoPad("\xfb\xff"), "-_8");
}

TEST(Base64Test, DecodesRfc4648VectorsInEveryMode) {
  for (const auto& [plain, encoded] : kRfc4648Vectors) {
    auto padded = Base64Decode(encoded, Base64Alphabet::kStandard, Base64Padding::kRequired);
    ASSERT_OK(padded);
    EXPECT_EQ(*padded, plain);
    auto url_padded = Base64Decode(encoded, Base64Alphabet::kUrl, Base64Padding::kRequired);
    ASSERT_OK(url_padded);
    EXPECT_EQ(*url_padded, plain);
    auto unpadded = Base64Decode(encoded.substr(0, encoded.find('=')), Base64Alphabet::kUrl, Base64Padding::kNone);
    ASSERT_OK(unpadded);
    EXPECT_EQ(*unpadded, plain);
  }
}

TEST(Base64Test, DecodesEveryByteValueBack) {
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  for (size_t len = 0; len <= all.size(); len += 37) {
    std::string part = all.substr(all.size() - len);
    auto std_back = Base64Decode(Base64Encode(part), Base64Alphabet::kStandard, Base64Padding::kRequired);
    ASSERT_OK(std_back);
    EXPECT_EQ(*std_back, part);
    auto url_back = Base64Decode(Base64UrlEncodeNoPad(part), Base64Alphabet::kUrl, Base64Padding::kNone);
    ASSERT_OK(url_back);
    EXPECT_EQ(*url_back, part);
  }
}

TEST(Base64Test, RefusesCharactersOutsideTheAlphabet) {
  constexpr auto kBad = absl::StatusCode::kInvalidArgument;
  EXPECT_THAT(Base64Decode("-_8=", Base64Alphabet::kStandard, Base64Padding::kRequired), StatusIs(kBad));
  EXPECT_THAT(Base64Decode("+/8", Base64Alphabet::kUrl, Base64Padding::kNone), StatusIs(kBad));
  EXPECT_THAT(Base64Decode("Zm9v\n", Base64Alphabet::kUrl, Base64Padding::kNone), StatusIs(kBad));
  EXPECT_THAT(Base64Decode("Zm 9v", Base64Alphabet::kUrl, Base64Padding::kNone), StatusIs(kBad));
  EXPECT_THAT(Base64Decode(std::string("Zm\0v", 4), Base64Alphabet::kUrl, Base64Padding::kNone), StatusIs(kBad));
  EXPECT_THAT(Base64Decode("Zm9\xc3\xa9", Base64Alphabet::kUrl, Base64Padding::kNone), StatusIs(kBad));
}

TEST(Base64Test, RefusesWrongPadding) {
  constexpr auto kBad = absl::StatusCode::kInvalidArgument;
  // Padding where none is allowed.
  EXPECT_THAT(Base64Decode("Zg==", Base64Alphabet::kUrl, Base64Padding::kNone), StatusIs(kBad));
  EXPECT_THAT(Base64Decode("Zm8=", Base64Alphabet::kUrl, Base64Padding::kNone), StatusIs(kBad));
  // Missing, excess or misplaced padding where it is required.
  EXPECT_THAT(Base64Decode("Zg", Base64Alphabet::kStandard, Base64Padding::kRequired), StatusIs(kBad));
  EXPECT_THAT(Base64Decode("Zg=", Base64Alphabet::kStandard, Base64Padding::kRequired), StatusIs(kBad));
  EXPECT_THAT(Base64Decode("Zm8==", Base64Alphabet::kStandard, Base64Padding::kRequired), StatusIs(kBad));
  EXPECT_THAT(Base64Decode("Zg===", Base64Alphabet::kStandard, Base64Padding::kRequired), StatusIs(kBad));
  EXPECT_THAT(Base64Decode("Z===", Base64Alphabet::kStandard, Base64Padding::kRequired), StatusIs(kBad));
  EXPECT_THAT(Base64Decode("====", Base64Alphabet::kStandard, Base64Padding::kRequired), StatusIs(kBad));
  EXPECT_THAT(Base64Decode("Zg==Zm8=", Base64Alphabet::kStandard, Base64Padding::kRequired), StatusIs(kBad));
  EXPECT_THAT(Base64Decode("Zm=v", Base64Alphabet::kStandard, Base64Padding::kRequired), StatusIs(kBad));
  EXPECT_THAT(Base64Decode("Zm9vYg=", Base64Alphabet::kStandard, Base64Padding::kRequired), StatusIs(kBad));
}

TEST(Base64Test, RefusesImpossibleLengths) {
  constexpr auto kBad = absl::StatusCode::kInvalidArgument;
  EXPECT_THAT(Base64Decode("Z", Base64Alphabet::kUrl, Base64Padding::kNone), StatusIs(kBad));
  EXPECT_THAT(Base64Decode("Zm9vY", Base64Alphabet::kUrl, Base64Padding::kNone), StatusIs(kBad));
}

TEST(Base64Test, RefusesNonCanonicalTrailingBits) {
  constexpr auto kBad = absl::StatusCode::kInvalidArgument;
  // "f" is Zg: 'g' = 32 leaves the low 4 bits zero; 'h' = 33 sets one of them.
  EXPECT_THAT(Base64Decode("Zh", Base64Alphabet::kUrl, Base64Padding::kNone), StatusIs(kBad));
  EXPECT_THAT(Base64Decode("Zh==", Base64Alphabet::kStandard, Base64Padding::kRequired), StatusIs(kBad));
  // "fo" is Zm8: '8' = 60 leaves the low 2 bits zero; '9' = 61 does not.
  EXPECT_THAT(Base64Decode("Zm9", Base64Alphabet::kUrl, Base64Padding::kNone), StatusIs(kBad));
  EXPECT_THAT(Base64Decode("Zm9=", Base64Alphabet::kStandard, Base64Padding::kRequired), StatusIs(kBad));
  auto canonical = Base64Decode("Zm8", Base64Alphabet::kUrl, Base64Padding::kNone);
  ASSERT_OK(canonical);
  EXPECT_EQ(*canonical, "fo");
}

}  // namespace
}  // namespace cocostorage
