// Reading the files beside tokenizer.json that say which tokens are bos/eos:
//   tokenizer_config.json  bos_token, eos_token, pad_token (a string or {"content": ...}),
//                          add_bos_token (add_eos_token is not read: nothing here appends eos)
//   config.json, generation_config.json  bos_token_id, eos_token_id (an int, a list, or null),
//                          pad_token_id;
//                          generation_config.json wins over config.json
// Each file is optional. Error codes: DataLoss for a file that is not JSON, InvalidArgument for
// a field of the wrong type, and the errno-derived code for a file that exists but cannot be
// read. Pure and thread-safe.
#ifndef KVSPAN_MODEL_INTERNAL_TOKENIZER_CONFIG_H_
#define KVSPAN_MODEL_INTERNAL_TOKENIZER_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvspan::model::internal {

struct SpecialTokenConfig {
  std::optional<std::string> bos_token;  // from tokenizer_config.json
  std::optional<std::string> eos_token;
  std::optional<std::string> pad_token;
  std::optional<bool> add_bos_token;
  std::optional<int32_t> bos_token_id;  // from generation_config.json, else config.json
  std::optional<std::vector<int32_t>> eos_token_ids;
  std::optional<int32_t> pad_token_id;
};


absl::StatusOr<SpecialTokenConfig> ReadSpecialTokenConfig(const std::string& dir);

}  // namespace kvspan::model::internal

#endif  // KVSPAN_MODEL_INTERNAL_TOKENIZER_CONFIG_H_
