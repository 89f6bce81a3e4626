#include "cocostorage/common/flags.h"

#include <gtest/gtest.h>

namespace cocostorage {
namespace {

TEST(FlagsTest, ParsesBothFormsAndBooleans) {
  Flags f({"endpoint", "port"}, {"verbose"});
  const char* argv[] = {"prog", "--endpoint=unix:///x.sock", "--port", "42", "--verbose", "pos"};
  ASSERT_TRUE(f.Parse(6, argv).ok());
  EXPECT_EQ(f.Get("endpoint"), "unix:///x.sock");
  EXPECT_EQ(*f.GetInt("port", 0), 42);
  EXPECT_TRUE(f.GetBool("verbose"));
  EXPECT_EQ(f.positional().size(), 1u);
}

TEST(FlagsTest, UnknownAndMalformedFlagsFail) {
  Flags f({"port"});
  const char* bad[] = {"prog", "--prot=1"};
  EXPECT_EQ(f.Parse(2, bad).code(), absl::StatusCode::kInvalidArgument);
  Flags g({"port"});
  const char* nonint[] = {"prog", "--port=abc"};
  ASSERT_TRUE(g.Parse(2, nonint).ok());
  EXPECT_EQ(g.GetInt("port", 0).status().code(), absl::StatusCode::kInvalidArgument);
  Flags h({"port"});
  const char* missing[] = {"prog", "--port"};
  EXPECT_EQ(h.Parse(2, missing).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cocostorage
