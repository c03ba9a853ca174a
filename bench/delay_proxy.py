"""A TCP proxy that delays every byte by a fixed time each way: Redis "on another host" for
bench/run --rtt, on a kernel without netem.

Each connection gets two threads per direction: one reads and stamps what it read with its
due time, the other sleeps until then (nanosleep: tens of microseconds of precision, where
event loops round to milliseconds) and writes it on. Bytes keep their order and stay
pipelined: a request sent while another is in flight is delayed by the same amount, not
queued behind it.
"""

import queue
import socket
import threading
import time


def _pump(src, dst, delay):
    due = queue.Queue()

    def read():
        while True:
            try:
                data = src.recv(1 << 20)
            except OSError:
                data = b""
            due.put((time.monotonic() + delay, data))
            if not data:
                return

    def write():
        while True:
            at, data = due.get()
            wait = at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    for target in (read, write):
        threading.Thread(target=target, daemon=True).start()


class DelayProxy:
    """Listens on 127.0.0.1:`port` and forwards to 127.0.0.1:`target`, adding `rtt_ms / 2`
    each way."""

    def __init__(self, port, target, rtt_ms):
        self.port, self.target, self.delay = port, target, rtt_ms / 2000.0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(256)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _pump(client, server, self.delay)
            _pump(server, client, self.delay)

    def close(self):
        self.listener.close()
