// Streaming stop-string detection: text arrives in pieces (one per generated token) and
// may only be shown once it can no longer turn out to be the start of a stop string.
//   StopStringFilter f({"\n\n", "###"});
//   for each piece: std::string shown = f.Push(piece); if (f.stopped()) break;
//   shown += f.Flush();   // at the end, when no stop string came
// The concatenation of everything returned is the generated text cut just before the
// first occurrence of any stop string (the stop string itself is never returned).
// Not thread-safe.
#ifndef KVSPAN_MODEL_STOP_STRINGS_H_
#define KVSPAN_MODEL_STOP_STRINGS_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace kvspan::model {

class StopStringFilter {
 public:
  // Empty stop strings are ignored.
  explicit StopStringFilter(std::vector<std::string> stop_strings);

  // Appends `piece`; returns the text that is now safe to show.
  std::string Push(absl::string_view piece);
  // Returns the text held back (call when generation ended without a stop string).
  std::string Flush();
  bool stopped() const { return stopped_; }
  // The full text shown so far (what Push and Flush returned, concatenated).
  const std::string& shown() const { return shown_; }

 private:
  std::vector<std::string> stops_;
  size_t max_stop_size_ = 0;
  std::string text_;      // everything pushed, or cut at the stop string once stopped
  size_t num_shown_ = 0;  // prefix of text_ already returned
  std::string shown_;
  bool stopped_ = false;
};

}  // namespace kvspan::model

#endif  // KVSPAN_MODEL_STOP_STRINGS_H_
