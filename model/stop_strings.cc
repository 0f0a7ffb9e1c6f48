#include "model/stop_strings.h"

#include <algorithm>

namespace kvspan::model {

StopStringFilter::StopStringFilter(std::vector<std::string> stop_strings) {
  for (std::string& s : stop_strings) {
    if (s.empty()) continue;
    max_stop_size_ = std::max(max_stop_size_, s.size());
    stops_.push_back(std::move(s));
  }
}

std::string StopStringFilter::Push(absl::string_view piece) {
  if (stopped_) return "";
  text_.append(piece.data(), piece.size());
  // A stop string that ends inside the new text starts at most max_stop_size_ - 1 bytes
  // before it; everything before num_shown_ was already checked.
  const size_t search_from =
      num_shown_ >= max_stop_size_ ? num_shown_ - (max_stop_size_ - 1) : 0;
  size_t cut = std::string::npos;
  for (const std::string& stop : stops_) {
    cut = std::min(cut, text_.find(stop, search_from));
  }
  size_t safe_end;
  if (cut != std::string::npos) {
    stopped_ = true;
    text_.resize(cut);
    safe_end = cut;
  } else {
    // Hold back the longest suffix that is a proper prefix of some stop string.
    size_t hold = 0;
    for (const std::string& stop : stops_) {
      const size_t longest = std::min(stop.size() - 1, text_.size());
      for (size_t len = longest; len > hold; --len) {
        if (absl::string_view(text_).substr(text_.size() - len) ==
            absl::string_view(stop).substr(0, len)) {
          hold = len;
          break;
        }
      }
    }
    safe_end = std::max(num_shown_, text_.size() - hold);
  }
  std::string out = text_.substr(num_shown_, safe_end - num_shown_);
  num_shown_ = safe_end;
  shown_ += out;
  return out;
}

std::string StopStringFilter::Flush() {
  std::string out = text_.substr(num_shown_);
  num_shown_ = text_.size();
  shown_ += out;
  return out;
}

}  // namespace kvspan::model
