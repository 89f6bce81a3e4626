#include "cocostorage/common/json_fields.h"

#include "cocostorage/common/strings.h"

namespace cocostorage {

StatusOr<int64_t> JsonInteger(const nlohmann::json& value, std::string_view field, int64_t lo, int64_t hi) {
  if (!value.is_number_integer()) return absl::DataLossError(Cat(field, " is not an integer"));
  const bool fits = value.is_number_unsigned()
                        ? value.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
                        : true;
  const int64_t v = fits ? value.get<int64_t>() : 0;
  if (!fits || v < lo || v > hi) return absl::DataLossError(Cat(field, " ", value.dump(), " is out of range"));
  return v;
}

StatusOr<uint64_t> JsonUnsigned(const nlohmann::json& value, std::string_view field) {
  if (!value.is_number_unsigned()) return absl::DataLossError(Cat(field, " is not an unsigned integer"));
  return value.get<uint64_t>();
}

}  // namespace cocostorage
