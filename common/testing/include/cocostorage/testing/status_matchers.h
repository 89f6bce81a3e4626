// Test helpers for Status / StatusOr:
//   ASSERT_OK(expr); EXPECT_OK(expr);
//   EXPECT_THAT(s, StatusIs(absl::StatusCode::kNotFound));
//   EXPECT_THAT(s, StatusIs(absl::StatusCode::kNotFound, HasSubstr("volume v1")));
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ostream>
#include <string>

#include "cocostorage/common/status.h"

namespace cocostorage::testing {

inline const Status& GetStatus(const Status& s) { return s; }
template <typename T>
Status GetStatus(const StatusOr<T>& s) {
  return s.status();
}

MATCHER_P(StatusIs, code, "") {
  Status s = GetStatus(arg);
  if (s.code() == code) return true;
  *result_listener << "status is " << s;
  return false;
}

MATCHER_P2(StatusIs, code, message_matcher, "") {
  Status s = GetStatus(arg);
  if (s.code() != code) {
    *result_listener << "status is " << s;
    return false;
  }
  return ::testing::ExplainMatchResult(message_matcher, std::string(s.message()), result_listener);
}

}  // namespace cocostorage::testing

#define COCO_TESTING_STATUS_OK(expr) ::cocostorage::testing::GetStatus(expr).ok()
#define ASSERT_OK(expr) ASSERT_TRUE(COCO_TESTING_STATUS_OK(expr)) << ::cocostorage::testing::GetStatus(expr)
#define EXPECT_OK(expr) EXPECT_TRUE(COCO_TESTING_STATUS_OK(expr)) << ::cocostorage::testing::GetStatus(expr)
