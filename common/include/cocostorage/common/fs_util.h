// Small filesystem helpers shared by both binaries.
#pragma once

#include <string>
#include <string_view>

#include "cocostorage/common/status.h"

namespace cocostorage {

// Writes `content` to `path` atomically: temp file in the same directory,
// fsync, rename over `path`, fsync the directory. A crash leaves either the old
// or the new content, never a torn file.
Status AtomicWriteFile(const std::string& path, std::string_view content, unsigned mode = 0600);

// The temp file name AtomicWriteFile uses next for `path`:
// "<path>.tmp.<pid>.<n>", unique per call within the process (concurrent
// writers of one path never share a temp file), and always with the ".tmp."
// infix that start-up clean-up of crash leftovers matches.
std::string AtomicWriteTempPath(const std::string& path);

StatusOr<std::string> ReadFileToString(const std::string& path, size_t max_bytes = 16 << 20);

// Creates `path` and missing parents with `mode`.
Status MakeDirs(const std::string& path, unsigned mode = 0700);

// The directory part of `path`: "/a/b" → "/a", "/a" → "/", "a" → ".".
std::string ParentDir(const std::string& path);

// Lexically normalises an absolute path ("/a/./b//c/../d" -> "/a/b/d").
// Fails on relative paths, NUL bytes and ".." that would climb above "/".
StatusOr<std::string> NormalizeAbsolutePath(std::string_view path);

// True when normalised `path` is `root` itself or lies below it. Both must be
// normalised absolute paths. Purely lexical: callers that then open the path
// must also refuse symlinks (O_NOFOLLOW / realpath check).
bool IsPathWithin(std::string_view root, std::string_view path);

// Removes a file; a missing file is success (idempotent cleanup).
Status RemoveFileIfExists(const std::string& path);

}  // namespace cocostorage
