// Wire format of coco-guest-exec (test-only remote command execution inside
// the VM-harness guest). Shared by the guest server and the host client.
//
// Request  (all integers big-endian):
//   u32 magic 'CGE1' | u32 timeout_ms (0 = none) | u32 flags
//   u32 cmd_len | cmd bytes (run as /bin/sh -c cmd)
//   u32 stdin_len | stdin bytes (fed to the command, then EOF)
// Response:
//   u32 magic 'CGE1' | i32 exit_code (-1 when killed by a signal)
//   i32 term_signal | u32 timed_out (0/1)
//   u32 out_len | stdout bytes | u32 err_len | stderr bytes
// With kFlagMergeOutput stderr goes into the stdout stream and err is empty.
#pragma once

#include <cstdint>

namespace cocostorage::vmtest {

inline constexpr uint32_t kExecMagic = 0x43474531;  // "CGE1"
inline constexpr uint32_t kExecFlagMergeOutput = 1u << 0;
// Cap per stream and for stdin/command: keeps a runaway command from
// exhausting guest or host memory.
inline constexpr uint32_t kExecMaxPayload = 256u << 20;

}  // namespace cocostorage::vmtest
