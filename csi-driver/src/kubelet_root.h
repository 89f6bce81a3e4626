// Where kubelet's paths may be: every target_path and staging_target_path
// must lie below --kubelet-root, and the plugin reaches them from an fd of
// that root without following any symlink on the way, so a request (or a
// directory swapped for a symlink) cannot make it create or remove anything
// elsewhere on the host.
#pragma once

#include <string>
#include <string_view>

#include "cocostorage/common/status.h"
#include "cocostorage/common/unique_fd.h"

namespace cocostorage::csi {

// A path below the kubelet root, opened as (parent directory fd, last
// component): every operation on it is an *at() call with AT_SYMLINK_NOFOLLOW
// semantics, so nothing is resolved by name again.
struct KubeletPath {
  UniqueFd parent;
  std::string name;  // last component
  std::string path;  // the request path, for messages
};

class KubeletRoot {
 public:
  // `root` is a normalised absolute path (it may itself be a symlink: it is
  // operator configuration, not request input).
  explicit KubeletRoot(std::string root) : root_(std::move(root)) {}
  const std::string& root() const { return root_; }

  // Pure: INVALID_ARGUMENT unless the already normalised `path` lies strictly
  // below the root. `field` names the request field in the message.
  Status CheckWithin(std::string_view path, std::string_view field) const;

  // Opens the parent of `path` (which passed CheckWithin) one component at a
  // time with O_NOFOLLOW|O_DIRECTORY from the root. NOT_FOUND when a
  // component is missing; FAILED_PRECONDITION when one is a symlink or not a
  // directory.
  StatusOr<KubeletPath> Open(const std::string& path) const;

 private:
  std::string root_;
};

}  // namespace cocostorage::csi
