#include "cocostorage/common/status.h"

#include <cerrno>
#include <cstring>

#include "cocostorage/common/strings.h"

namespace cocostorage {

absl::StatusCode ErrnoToCode(int err) {
  switch (err) {
    case 0:
      return absl::StatusCode::kOk;
    case ENOENT:
    case ENODEV:
    case ENXIO:
      return absl::StatusCode::kNotFound;
    case EEXIST:
      return absl::StatusCode::kAlreadyExists;
    case EACCES:
    case EPERM:
      return absl::StatusCode::kPermissionDenied;
    case EINVAL:
    case ENAMETOOLONG:
    case ENOTDIR:
    case EISDIR:
      return absl::StatusCode::kInvalidArgument;
    case ENOSPC:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
    case EDQUOT:
      return absl::StatusCode::kResourceExhausted;
    case EBUSY:
    case EAGAIN:
    case EINTR:
      return absl::StatusCode::kUnavailable;
    case ETIMEDOUT:
      return absl::StatusCode::kDeadlineExceeded;
    case ENOTSUP:
    case ENOSYS:
      return absl::StatusCode::kUnimplemented;
    case EIO:
    case EBADMSG:
    case EILSEQ:
      return absl::StatusCode::kDataLoss;
    default:
      return absl::StatusCode::kInternal;
  }
}

Status ErrnoStatus(int err, std::string_view context) {
  return Status(ErrnoToCode(err), Cat(context, ": ", std::strerror(err)));
}

Status Annotate(const Status& s, std::string_view context) {
  if (s.ok()) return s;
  return Status(s.code(), Cat(context, ": ", s.message()));
}

}  // namespace cocostorage
