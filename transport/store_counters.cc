#include "transport/store_counters.h"

namespace kvspan::transport {

void ToProto(const prefill::SpanStoreStats& s, v1::StoreCounters* c) {
  c->set_spans_loaded(s.num_spans_loaded);
  c->set_bytes_loaded(s.bytes_loaded);
  c->set_store_errors(s.num_store_errors);
  c->set_misses(s.num_misses);
  c->set_bad_spans(s.num_bad_spans);
  c->set_bad_spans_deleted(s.num_bad_spans_deleted);
  c->set_puts_ok(s.num_puts_ok);
  c->set_puts_failed(s.num_puts_failed);
  c->set_puts_refused(s.num_puts_refused);
  c->set_puts_dropped(s.num_puts_dropped);
  c->set_bytes_put(s.bytes_put);
  c->set_lookups(s.num_lookups);
  c->set_spans_looked_up(s.num_spans_looked_up);
  c->set_spans_hit(s.num_spans_hit);
  c->set_get_errors(s.num_get_errors);
}

prefill::SpanStoreStats FromProto(const v1::StoreCounters& c) {
  prefill::SpanStoreStats s;
  s.num_spans_loaded = c.spans_loaded();
  s.bytes_loaded = c.bytes_loaded();
  s.num_store_errors = c.store_errors();
  s.num_misses = c.misses();
  s.num_bad_spans = c.bad_spans();
  s.num_bad_spans_deleted = c.bad_spans_deleted();
  s.num_puts_ok = c.puts_ok();
  s.num_puts_failed = c.puts_failed();
  s.num_puts_refused = c.puts_refused();
  s.num_puts_dropped = c.puts_dropped();
  s.bytes_put = c.bytes_put();
  s.num_lookups = c.lookups();
  s.num_spans_looked_up = c.spans_looked_up();
  s.num_spans_hit = c.spans_hit();
  s.num_get_errors = c.get_errors();
  return s;
}

}  // namespace kvspan::transport
