"""Background HTTP traffic for the integration tests that switch a stack under load."""

from __future__ import annotations

import collections
import http.client
import ssl
import threading
import time


class Traffic:
    """Keep-alive clients on the public port, in background threads, until the `with` ends.

    responses: [(monotonic time, HTTP status or the exception's name, came from the canary)].
    warm_up: seconds to keep sending, after the first answer, before the `with` body runs (a
    canary judged on its last window must have had traffic for all of it).
    ca_file: for a stack with nginx.tls, the CA that signed its certificate: HTTPS, verified.
    host: the address to send to (a fleet host's own address; default this machine's loopback)."""

    def __init__(self, port, threads=2, warm_up=0.0, ca_file=None, host="127.0.0.1"):
        self.port = port
        self.host = host
        self.ca_file = ca_file
        self.warm_up = warm_up
        self.responses = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for index in range(threads)]

    def _client(self):
        conn = self.connection()
        while not self._stop.is_set():
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                entry = (time.monotonic(), response.status, response.getheader("X-Mode") == "canary")
            except (OSError, http.client.HTTPException) as exc:
                # A keep-alive connection closed under the request (nginx reloading): reconnect.
                entry = (time.monotonic(), type(exc).__name__, False)
                conn.close()
                self._stop.wait(0.05)
            with self._lock:
                self.responses.append(entry)
        conn.close()

    def connection(self):
        if self.ca_file is None:
            return http.client.HTTPConnection(self.host, self.port, timeout=10)
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return http.client.HTTPSConnection(self.host, self.port, timeout=10, context=context)

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        if self.warm_up:
            deadline = time.monotonic() + 30
            while not self.responses:
                assert time.monotonic() < deadline, "no answer on %s:%d within 30 s" % (self.host, self.port)
                time.sleep(0.01)
            time.sleep(self.warm_up)
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    @property
    def successes(self):
        return sum(1 for entry in self.responses if entry[1] == 200)

    @property
    def canary(self):
        return sum(1 for entry in self.responses if entry[2])

    def failures(self):
        """Responses that are neither a 200 nor the canary's injected 500."""
        return collections.Counter(entry[1] for entry in self.responses
                                   if entry[1] != 200 and not (entry[1] == 500 and entry[2]))

    def buckets(self, seconds=1.0):
        """{bucket index: [responses, canary responses]} over `seconds`-long buckets."""
        if not self.responses:
            return {}
        start = self.responses[0][0]
        counts = collections.defaultdict(lambda: [0, 0])
        for moment, status, from_canary in self.responses:
            bucket = counts[int((moment - start) / seconds)]
            bucket[0] += 1
            bucket[1] += from_canary
        return dict(counts)


class AllTraffic:
    """Several Traffic (one per fleet host: {name: Traffic}), started and stopped together."""

    def __init__(self, per_host):
        self.per_host = per_host

    def __enter__(self):
        for traffic in self.per_host.values():
            traffic.__enter__()
        return self.per_host

    def __exit__(self, *exc_info):
        for traffic in self.per_host.values():
            traffic.__exit__(*exc_info)
