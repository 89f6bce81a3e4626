// Status and StatusOr for the whole project.
//
// absl::StatusCode values equal gRPC status codes, so a Status produced deep in
// a module converts to the wire at the RPC boundary without a mapping table.
// Exceptions never cross module boundaries; functions that can fail return
// Status or StatusOr<T> and the caller must look at it ([[nodiscard]]).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cocostorage {

using Status = absl::Status;
template <typename T>
using StatusOr = absl::StatusOr<T>;
using absl::OkStatus;

// Wraps an errno value with context: "while opening /dev/vda: No such file".
Status ErrnoStatus(int err, std::string_view context);

// Maps an errno to the closest gRPC code (ENOENT -> NOT_FOUND, EACCES ->
// PERMISSION_DENIED, EBUSY -> UNAVAILABLE, ...).
absl::StatusCode ErrnoToCode(int err);

// Prefixes the message of a non-OK status with context, keeping the code.
Status Annotate(const Status& s, std::string_view context);

}  // namespace cocostorage

#define COCO_STATUS_CONCAT_INNER(a, b) a##b
#define COCO_STATUS_CONCAT(a, b) COCO_STATUS_CONCAT_INNER(a, b)

#define COCO_RETURN_IF_ERROR(expr)                       \
  do {                                                   \
    ::absl::Status coco_status_tmp_ = (expr);            \
    if (!coco_status_tmp_.ok()) return coco_status_tmp_; \
  } while (0)

#define COCO_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()

#define COCO_ASSIGN_OR_RETURN(lhs, expr) \
  COCO_ASSIGN_OR_RETURN_IMPL(COCO_STATUS_CONCAT(coco_statusor_, __LINE__), lhs, expr)
