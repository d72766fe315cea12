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


def exchange(conn, method, target, body=None, headers=None, close=False):
    """One request on a kept-alive http.client connection: (the status, or the name of the
    exception, and the connection to reuse, None once closed: on `close`, when the server said it
    closes, or after an error)."""
    try:
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        response.read()
        if close or response.will_close:
            conn.close()
            conn = None
        return response.status, conn
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        return type(exc).__name__, None


class ClientThreads:
    """Client threads (self._threads, stopped by self._stop) that the `with` block runs: entering
    returns once ready() is true, at most 30 s after the start; leaving stops and joins them."""

    def ready(self):
        raise NotImplementedError

    def waiting_for(self):
        raise NotImplementedError

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + 30
        while not self.ready():
            assert time.monotonic() < deadline, "no answer within 30 s on %s" % self.waiting_for()
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


class ClientMix(ClientThreads):
    """Clients of several kinds on the public port, in background threads, until the `with` ends;
    what each kind saw, to count the failed requests a reload costs each (docs/keepalive.md).

    Kinds ({kind: (threads, pause between two requests in seconds)}):
    - `close`: a new connection for every request (http.client, no retry);
    - `keepalive`, `keepalive-idle`: one persistent connection each (http.client, no retry): a
      request on a connection the server closed at that instant fails;
    - `urllib3`, `urllib3-idle`: one pooled connection each through urllib3 (requests' HTTP
      library) with its default retries: it opens a new connection when the pooled one was
      closed before the request, and sends an idempotent request again when the server closed
      the connection under it (`retried` counts those).
    An `-idle` kind pauses long enough that its connection is idle when a reload comes.
    outcomes[kind]: Counter of HTTP status or exception name; failures(kind): all but 200."""

    KINDS = {"close": (2, 0.02), "keepalive": (2, 0.01), "keepalive-idle": (4, 0.4),
             "urllib3": (2, 0.01), "urllib3-idle": (4, 0.4)}

    def __init__(self, port, ca_file=None, host="127.0.0.1", kinds=None):
        self.port, self.ca_file, self.host = port, ca_file, host
        self.kinds = dict(kinds or self.KINDS)
        self.outcomes = collections.defaultdict(collections.Counter)
        self.retried = collections.Counter()
        self.opened = collections.Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        for kind, (threads, pause) in sorted(self.kinds.items()):
            for index in range(threads):
                # The idle clients' requests spread over their pause, so some are idle at any instant.
                offset = pause * index / threads
                target = self._urllib3 if kind.startswith("urllib3") else self._http_client
                self._threads.append(threading.Thread(target=target, args=(kind, pause, offset), daemon=True))

    def _note(self, kind, outcome, retried=0, opened=0):
        with self._lock:
            self.outcomes[kind][outcome] += 1
            self.retried[kind] += retried
            self.opened[kind] += opened

    def _http_client(self, kind, pause, offset):
        self._stop.wait(offset)
        conn = None
        while not self._stop.is_set():
            opened = 0
            if conn is None:
                conn, opened = Traffic.connection(self), 1  # the same connection as Traffic's (host, port, CA)
            outcome, conn = exchange(conn, "GET", "/?client=%s" % kind, close=kind == "close")
            self._note(kind, outcome, opened=opened)
            self._stop.wait(pause)
        if conn is not None:
            conn.close()

    def _urllib3(self, kind, pause, offset):
        import urllib3  # requests' HTTP library, in the project's requirements

        self._stop.wait(offset)
        if self.ca_file is None:
            pool = urllib3.HTTPConnectionPool(self.host, self.port, maxsize=1, timeout=10)
        else:
            pool = urllib3.HTTPSConnectionPool(self.host, self.port, maxsize=1, timeout=10,
                                               cert_reqs="CERT_REQUIRED", ca_certs=str(self.ca_file))
        with pool:
            while not self._stop.is_set():
                before = pool.num_connections
                retried = 0
                try:
                    response = pool.request("GET", "/?client=%s" % kind, retries=urllib3.Retry(3, redirect=False))
                    outcome = response.status
                    retried = len(response.retries.history) if response.retries else 0
                except urllib3.exceptions.HTTPError as exc:
                    outcome = type(exc).__name__
                self._note(kind, outcome, retried=retried, opened=pool.num_connections - before)
                self._stop.wait(pause)

    def ready(self):
        return all(self.outcomes[kind] for kind in self.kinds)

    def waiting_for(self):
        return "%s:%d: %s" % (self.host, self.port, dict(self.outcomes))

    def failures(self, kind):
        return {outcome: count for outcome, count in self.outcomes[kind].items() if outcome != 200}

    def summary(self):
        """One line a kind: requests, failures, connections opened, requests urllib3 sent again."""
        return "\n".join("%s: %d requests, failed %s, %d connections, %d sent again" % (
            kind, sum(self.outcomes[kind].values()), self.failures(kind) or 0, self.opened[kind], self.retried[kind])
            for kind in sorted(self.kinds))
