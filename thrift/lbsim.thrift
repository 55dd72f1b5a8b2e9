// Benchmark service used by lbsim's live mode.
//
// A backend models one scenario server: `workers` requests in service at
// once, the rest waiting in FIFO order. Service is emulated by sleeping
// `work_ns / speed` nanoseconds. Implemented in Rust (src/live/server.rs)
// and Python (tests/peers/thriftpy2_server.py).

namespace rs lbsim
namespace py lbsim

// One request sent by the load balancer.
struct Call {
  // Request id, echoed back unchanged.
  1: required i64 id,
  // Service demand in nanoseconds of work at speed 1.
  2: required i64 work_ns,
  // Optional affinity key (consistent hashing and the like).
  3: optional i64 key,
  // Optional opaque payload, to make requests bigger on the wire.
  4: optional binary payload,
}

// What the server saw while handling a call.
struct Reply {
  // Request id copied from the call.
  1: required i64 id,
  // Id of the server that served the call.
  2: required string server_id,
  // Time spent waiting in the FIFO queue before service started.
  3: required i64 queued_ns,
  // Time spent in service (the emulated work).
  4: required i64 served_ns,
  // Load report carried on the reply (ORCA-style), for strategies that read it:
  // requests at the server (waiting + in service) and waiting, as the call ends,
  // and the server's estimate of the response time of a call arriving now.
  5: optional i32 in_flight,
  6: optional i32 queued,
  7: optional i64 latency_ns,
  // How much later than its service's end the worker woke to answer (an emulated
  // backend's service is a sleep; a busy machine wakes it late). Emulated backends
  // only: a real service has no declared end to be late for.
  8: optional i64 woke_late_ns,
}

// Raised when the call arrives to a full waiting queue, or when the server's
// admission control (queue timeout, CoDel) drops it after it waited.
exception Rejected {
  1: required string server_id,
  // Number of requests waiting when the call was turned away.
  2: required i32 queue_len,
  // True when admission control dropped the call after it waited ("shed").
  3: optional bool shed,
}

struct Pong {
  1: required string server_id,
  // `sent_ns` copied from the ping.
  2: required i64 sent_ns,
}

// A server's answer to a probe: its load as the probe arrived, for balancers
// that probe (prequal).
struct Load {
  1: required string server_id,
  // `sent_ns` copied from the probe.
  2: required i64 sent_ns,
  // Requests at the server: waiting + in service.
  3: required i32 in_flight,
  // Of those, waiting for a worker.
  4: required i32 queued,
  // Recent mean service time (an EWMA over the calls started).
  5: required i64 service_ns,
  // Estimated response time of a call arriving now.
  6: required i64 latency_ns,
  // Set by servers that run probes' cost jobs (`probe`'s cost_ns): the time
  // all such jobs that ended so far waited for a worker, and held one.
  7: optional i64 cost_queued_ns,
  8: optional i64 cost_served_ns,
}

service Backend {
  Reply call(1: Call req) throws (1: Rejected rej),
  Pong ping(1: i64 sent_ns),
  // cost_ns: work (ns at speed 1) the probe costs the server after it answers,
  // a job holding a worker, queued behind calls when all are busy (the
  // scenario's [probes] cost, time-scaled). Absent or 0: free.
  Load probe(1: i64 sent_ns, 2: optional i64 cost_ns),
}
