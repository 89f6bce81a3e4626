// The persistent volume's on-disk header (docs/design.md §4.3/§4.4), all of it
// host-controlled: the 8 KiB of superblock slots through ParsePrefix and
// ChooseSlot (keys of a fixed root for volume "db-1", the root of
// guest-agent/tests/pv_golden.py), the rest through ValidateLuksImage.
// Input: [0, 8192) prefix (zero-padded), byte 8192 a mode, then the image.
// Mode bit 0 makes the harness recompute both LUKS2 checksums first, so the
// fuzzer reaches the JSON rules without forging SHA-256.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "pv/pv_header.h"
#include "pv/pv_keys.h"

using namespace cocostorage;
using namespace cocostorage::agent::pv;

namespace {

const PersistentKeys& Keys() {
  static PersistentKeys* keys = nullptr;
  if (keys == nullptr) {
    auto root = SecureBuffer::Allocate(kRootKeyBytes);
    if (!root.ok()) abort();
    for (size_t i = 0; i < kRootKeyBytes; ++i) root->data()[i] = static_cast<uint8_t>(i);
    auto k = DeriveKeys(*root, "db-1", cocostorage::agent::IntegrityMode::kHmacSha256);
    if (!k.ok()) abort();
    keys = new PersistentKeys(std::move(*k));
  }
  return *keys;
}

void FixChecksum(std::vector<uint8_t>& image, size_t off, size_t hdr_size) {
  if (image.size() < off + hdr_size) return;
  std::fill_n(image.begin() + static_cast<std::ptrdiff_t>(off + 448), 64, 0);
  const Sha256 sum = Sha256Of(std::span(image).subspan(off, hdr_size));
  std::copy(sum.begin(), sum.end(), image.begin() + static_cast<std::ptrdiff_t>(off + 448));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> prefix(2 * kSlotBytes, 0);
  std::copy_n(data, std::min(size, prefix.size()), prefix.begin());
  PrefixView view = ParsePrefix(prefix);
  if (view.kind == PrefixView::Kind::kOurs) {
    if (view.volume_id.empty()) abort();
    auto chosen = ChooseSlot(view, prefix, Keys(), "db-1");
    if (chosen.ok()) {
      // What was trusted is exactly what the agent would have written.
      auto again = EncodeSlot(chosen->sb, Keys().mac_key);
      if (!again.ok()) abort();
      if (std::memcmp(again->data(), prefix.data() + kSlotOffsets[chosen->index], kSlotBytes) != 0) abort();
    }
  }
  if (size <= prefix.size()) return 0;
  const uint8_t mode = data[prefix.size()];
  std::vector<uint8_t> image(data + prefix.size() + 1, data + size);
  if (mode & 1) {
    FixChecksum(image, 0, kLuksMetadataBytes);
    FixChecksum(image, kLuksMetadataBytes, kLuksMetadataBytes);
  }
  LuksExpectations want;
  for (size_t i = 0; i < want.uuid.size(); ++i) want.uuid[i] = static_cast<uint8_t>(0x10 + i);
  want.integrity =
      (mode & 2) ? cocostorage::agent::IntegrityMode::kNone : cocostorage::agent::IntegrityMode::kHmacSha256;
  Status s = ValidateLuksImage(image, want);
  if (!s.ok() && s.code() != absl::StatusCode::kDataLoss) abort();
  return 0;
}
