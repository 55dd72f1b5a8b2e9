#!/usr/bin/env python3
"""A thriftpy2 implementation of lbsim's `Backend` service (thrift/lbsim.thrift).

Same semantics as the Rust server (src/live/server.rs): `--workers` calls in
service at once, later calls wait in strict FIFO order in a queue of
`--queue-capacity` places (unbounded by default), a call that finds the queue
full gets `Rejected`, and service is emulated by sleeping `work_ns / speed`.

It checks that the Rust client interoperates with another Thrift stack. One
thread per connection (thriftpy2's `make_server` serves one connection at a
time). Prints `READY <port>` on stdout once listening; stops on SIGTERM or
SIGINT, and with `--exit-on-stdin-eof` when stdin closes (so a test harness
that dies does not leave it running).
"""

import argparse
import collections
import ctypes
import ctypes.util
import os
import signal
import socket
import sys
import threading
import time

import thriftpy2
from thriftpy2.protocol import TBinaryProtocolFactory, TCompactProtocolFactory
from thriftpy2.server import TThreadedServer
from thriftpy2.thrift import TProcessor
from thriftpy2.transport import (
    TBufferedTransportFactory,
    TFramedTransportFactory,
    TServerSocket,
)

IDL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "thrift", "lbsim.thrift")
lbsim = thriftpy2.load(IDL, module_name="lbsim_thrift")


PR_SET_TIMERSLACK = 29


def precise_sleeps():
    """1 ns timer slack for this thread, as the Rust server does (best effort, Linux)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(1), 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Admission:
    """Worker slots with a strictly FIFO waiting queue (see `Admission` in server.rs)."""

    def __init__(self, workers, capacity):
        self.workers = workers
        self.capacity = capacity
        self.lock = threading.Lock()
        self.in_service = 0
        self.queue = collections.deque()  # one Event per waiting call, oldest first

    def acquire(self):
        """Returns None when admitted, else the queue length (rejected)."""
        with self.lock:
            if self.in_service < self.workers and not self.queue:
                self.in_service += 1
                return None
            if self.capacity is not None and len(self.queue) >= self.capacity:
                return len(self.queue)
            granted = threading.Event()
            self.queue.append(granted)
        granted.wait()
        return None

    def release(self):
        with self.lock:
            if self.queue:
                # Hand the slot to the oldest waiter; in_service is unchanged.
                self.queue.popleft().set()
            else:
                self.in_service -= 1


class Handler:
    def __init__(self, server_id, speed, admission, extra_delay=0.0):
        self.server_id = server_id
        self.speed = speed
        self.admission = admission
        self.extra_delay = extra_delay

    def call(self, req):
        arrived = time.perf_counter_ns()
        queue_len = self.admission.acquire()
        if queue_len is not None:
            raise lbsim.Rejected(server_id=self.server_id, queue_len=queue_len)
        started = time.perf_counter_ns()
        sleep_ns = int((max(req.work_ns, 0) / self.speed / 1e9 + self.extra_delay) * 1e9)
        try:
            time.sleep(sleep_ns / 1e9)
        finally:
            self.admission.release()
        finished = time.perf_counter_ns()
        return lbsim.Reply(
            id=req.id,
            server_id=self.server_id,
            queued_ns=started - arrived,
            served_ns=finished - started,
            # The service is a sleep: how much later than its end this thread woke.
            woke_late_ns=max(finished - started - sleep_ns, 0),
        )

    def ping(self, sent_ns):
        return lbsim.Pong(server_id=self.server_id, sent_ns=sent_ns)


class Server(TThreadedServer):
    """TThreadedServer that reports its port and sets TCP_NODELAY."""

    def serve(self):
        self.trans.listen()
        port = self.trans.sock.getsockname()[1]
        print(f"READY {port}", flush=True)
        while not self.closed:
            try:
                client = self.trans.accept()
            except OSError:
                break
            client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self.handle, args=(client,), daemon=True).start()

    def handle(self, client):
        precise_sleeps()
        super().handle(client)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--id", default="py")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--queue-capacity", type=int, default=None)
    parser.add_argument(
        "--extra-delay",
        type=float,
        default=0.0,
        help="seconds added to every call's service inside its worker slot (as lbsim serve --extra-delay)",
    )
    parser.add_argument("--protocol", choices=["binary", "compact"], default="binary")
    parser.add_argument("--transport", choices=["framed", "buffered"], default="framed")
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if not args.speed > 0:
        parser.error("--speed must be above 0")
    if not args.extra_delay >= 0:
        parser.error("--extra-delay must be 0 or more")
    if args.queue_capacity is not None and args.queue_capacity < 0:
        parser.error("--queue-capacity must be at least 0")

    handler = Handler(
        args.id, args.speed, Admission(args.workers, args.queue_capacity), args.extra_delay
    )
    processor = TProcessor(lbsim.Backend, handler)
    trans_factory = (
        TFramedTransportFactory() if args.transport == "framed" else TBufferedTransportFactory()
    )
    proto_factory = (
        TBinaryProtocolFactory() if args.protocol == "binary" else TCompactProtocolFactory()
    )
    server = Server(
        processor,
        TServerSocket(host=args.host, port=args.port, client_timeout=None),
        itrans_factory=trans_factory,
        iprot_factory=proto_factory,
        otrans_factory=trans_factory,
        oprot_factory=proto_factory,
        daemon=True,
    )

    def stop(*_):
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def watch_stdin():
        # EOF on stdin: the parent went away.
        try:
            sys.stdin.read()
        except (OSError, ValueError):
            pass
        os._exit(0)

    if args.exit_on_stdin_eof:
        threading.Thread(target=watch_stdin, daemon=True).start()
    server.serve()


if __name__ == "__main__":
    main()
