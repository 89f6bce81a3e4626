#include "keys/key_provider.h"

#include <gtest/gtest.h>

#include <cstring>

#include "cocostorage/testing/status_matchers.h"

namespace cocostorage::agent {
namespace {

using ::cocostorage::testing::StatusIs;

class FixedKey : public KeyProvider {
 public:
  explicit FixedKey(size_t size) : size_(size) {}
  StatusOr<SecureBuffer> GetKey(const KeySource&, size_t) override { return SecureBuffer::Allocate(size_); }

 private:
  size_t size_;
};

TEST(KeyProviderTest, EphemeralKeysAreFreshAndOfTheAskedSize) {
  KeyProviderRouter keys(std::make_unique<EphemeralKeyProvider>());
  auto a = keys.GetKey(KeySource::Ephemeral(), 96);
  auto b = keys.GetKey(KeySource::Ephemeral(), 96);
  ASSERT_OK(a);
  ASSERT_OK(b);
  EXPECT_EQ(a->size(), 96u);
  EXPECT_NE(std::memcmp(a->data(), b->data(), 96), 0);
}

TEST(KeyProviderTest, KbsWithoutProviderIsUnimplemented) {
  KeyProviderRouter keys(std::make_unique<EphemeralKeyProvider>());
  EXPECT_THAT(keys.GetKey(*KeySource::Kbs("kbs:///a/b/c"), 96), StatusIs(absl::StatusCode::kUnimplemented));
}

TEST(KeyProviderTest, AResourceOfTheWrongSizeIsRefused) {
  KeyProviderRouter keys(std::make_unique<EphemeralKeyProvider>(), std::make_unique<FixedKey>(64));
  EXPECT_THAT(keys.GetKey(*KeySource::Kbs("kbs:///a/b/c"), 96), StatusIs(absl::StatusCode::kFailedPrecondition));
  KeyProviderRouter ok(std::make_unique<EphemeralKeyProvider>(), std::make_unique<FixedKey>(96));
  EXPECT_OK(ok.GetKey(*KeySource::Kbs("kbs:///a/b/c"), 96));
}

TEST(KeyProviderTest, EphemeralProviderRefusesKbsSources) {
  EphemeralKeyProvider p;
  EXPECT_FALSE(p.GetKey(*KeySource::Kbs("kbs:///a/b/c"), 96).ok());
}

}  // namespace
}  // namespace cocostorage::agent
