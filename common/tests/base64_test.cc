#include "cocostorage/common/base64.h"

#include <gtest/gtest.h>

namespace cocostorage {
namespace {

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

}  // namespace
}  // namespace cocostorage
