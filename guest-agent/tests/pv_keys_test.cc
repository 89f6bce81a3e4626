// The persistent volume's key hierarchy (pv/pv_keys.h): the HKDF primitives
// against RFC 5869's test cases 1-3, DeriveKeys against pv_golden.inc (an
// independent implementation on python3-cryptography, pv_golden.py).
#include "pv/pv_keys.h"

#include <gtest/gtest.h>

#include "pv/pv_keys_internal.h"
#include "pv_test_util.h"

namespace cocostorage::agent::pv {
namespace {

using testing::Buffer;
using testing::FixedRoot;
using testing::FromHex;
using testing::ToHex;

std::vector<uint8_t> Range(int from, int to) {
  std::vector<uint8_t> v;
  for (int i = from; i < to; ++i) v.push_back(static_cast<uint8_t>(i));
  return v;
}

struct Rfc5869Case {
  std::vector<uint8_t> ikm, salt, info;
  std::string prk, okm;
};

class HkdfRfc5869Test : public ::testing::TestWithParam<int> {};

TEST_P(HkdfRfc5869Test, ExtractThenExpand) {
  const Rfc5869Case cases[] = {
      {std::vector<uint8_t>(22, 0x0b), Range(0, 13), Range(0xf0, 0xfa),
       "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
       "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"},
      {Range(0, 0x50), Range(0x60, 0xb0), Range(0xb0, 0x100),
       "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
       "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09da3275600c2f09b"
       "8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87"},
      {std::vector<uint8_t>(22, 0x0b),
       {},
       {},
       "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
       "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"},
  };
  const Rfc5869Case& c = cases[GetParam()];
  auto prk = internal::HkdfExtract(c.salt, c.ikm);
  ASSERT_TRUE(prk.ok()) << prk.status();
  EXPECT_EQ(ToHex(prk->span()), c.prk);
  std::vector<uint8_t> okm(c.okm.size() / 2);
  ASSERT_TRUE(internal::HkdfExpand(prk->span(), c.info, okm).ok());
  EXPECT_EQ(ToHex(okm), c.okm);
}

INSTANTIATE_TEST_SUITE_P(Cases, HkdfRfc5869Test, ::testing::Values(0, 1, 2));

TEST(HkdfTest, ExpandRefusesShortPrkAndBadLengths) {
  std::vector<uint8_t> out(32);
  EXPECT_EQ(internal::HkdfExpand(Range(0, 31), {}, out).code(), absl::StatusCode::kInvalidArgument);
  std::vector<uint8_t> empty;
  EXPECT_EQ(internal::HkdfExpand(Range(0, 32), {}, empty).code(), absl::StatusCode::kInvalidArgument);
  std::vector<uint8_t> huge(255 * 32 + 1);
  EXPECT_EQ(internal::HkdfExpand(Range(0, 32), {}, huge).code(), absl::StatusCode::kInvalidArgument);
}

TEST(DeriveKeysTest, MatchesIndependentPythonImplementation) {
  for (const testing::GoldenKeys& g : testing::kGoldenKeys) {
    SCOPED_TRACE(std::string(g.volume_id) + " " + g.suite);
    auto mode = ParseIntegrityName(g.suite);
    ASSERT_TRUE(mode.ok());
    auto keys = DeriveKeys(FixedRoot(), g.volume_id, *mode);
    ASSERT_TRUE(keys.ok()) << keys.status();
    EXPECT_EQ(keys->luks_key.size(), SuiteFor(*mode).key_bytes);
    EXPECT_EQ(ToHex(keys->luks_key.span()), g.luks);
    EXPECT_EQ(ToHex(keys->mac_key.span()), g.mac);
    EXPECT_EQ(ToHex(keys->kcv), g.kcv);
  }
}

TEST(DeriveKeysTest, KeysAreBoundToVolumeIdAndSuite) {
  auto a = DeriveKeys(FixedRoot(), "db-1", IntegrityMode::kHmacSha256);
  auto b = DeriveKeys(FixedRoot(), "db-2", IntegrityMode::kHmacSha256);
  auto c = DeriveKeys(FixedRoot(), "db-1", IntegrityMode::kNone);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_NE(ToHex(a->mac_key.span()), ToHex(b->mac_key.span()));
  EXPECT_NE(a->kcv, b->kcv);
  EXPECT_NE(ToHex(a->luks_key.span()).substr(0, 128), ToHex(c->luks_key.span()));
  // The MAC key and KCV do not depend on the suite.
  EXPECT_EQ(ToHex(a->mac_key.span()), ToHex(c->mac_key.span()));
}

TEST(DeriveKeysTest, RootMustBeExactly32Bytes) {
  for (size_t n : {0, 16, 31, 33, 64, 96}) {
    std::vector<uint8_t> root(n, 1);
    auto keys = DeriveKeys(Buffer(root), "db-1", IntegrityMode::kHmacSha256);
    EXPECT_EQ(keys.status().code(), absl::StatusCode::kFailedPrecondition) << n;
  }
}

TEST(DeriveKeysTest, InvalidVolumeIdIsRefused) {
  for (std::string id : {std::string(), std::string("-x"), std::string("a/b"), std::string(65, 'a')}) {
    EXPECT_EQ(DeriveKeys(FixedRoot(), id, IntegrityMode::kHmacSha256).status().code(),
              absl::StatusCode::kInvalidArgument)
        << id;
  }
}

}  // namespace
}  // namespace cocostorage::agent::pv
