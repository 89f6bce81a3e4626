// Integer members of JSON records read back from disk (state records, the
// CSI plugin's volume records). nlohmann's get<int>() of a JSON float is a
// bare static_cast, undefined behaviour when the value is out of range
// (found by fuzz/state_record and fuzz/csi_records), so an integer field must
// be a JSON integer within [lo, hi]. DATA_LOSS naming the field otherwise.
#pragma once

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string_view>

#include "cocostorage/common/status.h"

namespace cocostorage {

StatusOr<int64_t> JsonInteger(const nlohmann::json& value, std::string_view field,
                              int64_t lo = std::numeric_limits<int64_t>::min(),
                              int64_t hi = std::numeric_limits<int64_t>::max());
StatusOr<uint64_t> JsonUnsigned(const nlohmann::json& value, std::string_view field);

}  // namespace cocostorage
