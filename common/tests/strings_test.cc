#include "cocostorage/common/strings.h"

#include <gtest/gtest.h>

namespace cocostorage {
namespace {

TEST(HexEncodeTest, LowerCaseTwoDigitsPerByte) {
  EXPECT_EQ(HexEncode(""), "");
  EXPECT_EQ(HexEncode(std::string_view("\x00\x01\xab\xff", 4)), "0001abff");
  EXPECT_EQ(HexEncode("AZ"), "415a");
}

}  // namespace
}  // namespace cocostorage
