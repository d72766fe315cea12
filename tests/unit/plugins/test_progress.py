"""Progress lines: the host's progress file (module_utils/_progress.py), the controller's ticker,
its line, its schedule and its reading of the file (plugin_utils/_progress.py), on fake clocks."""

import json
import os
import shlex
import subprocess
import time

import pytest
from ansible.errors import AnsibleActionFail

from ansible_collections.swiftdeploy.stack.plugins.action import image_build, stack_lock
from ansible_collections.swiftdeploy.stack.plugins.module_utils import _edge as edge
from ansible_collections.swiftdeploy.stack.plugins.module_utils import _lock as lock
from ansible_collections.swiftdeploy.stack.plugins.module_utils import _progress as host_progress
from ansible_collections.swiftdeploy.stack.plugins.plugin_utils import _progress as progress


# --------------------------------------------------------------------------------------------
# The line
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("what, host, elapsed, limit, expected", [
    ("the stack lock", "web1", 12.7, 60, "Waiting for the stack lock on web1: 12 s of at most 60 s"),
    ("app-green to be healthy", "web1", 3.0, None, "Waiting for app-green to be healthy on web1: 3 s"),
    ("a drain", "h", 4.2, 2.5, "Waiting for a drain on h: 4 s of at most 2.5 s"),
    ("nginx", "h", 0.4, 10.0, "Waiting for nginx on h: 0 s of at most 10 s"),
    ("a clock behind", "h", -3, 30, "Waiting for a clock behind on h: 0 s of at most 30 s"),
    ("no limit known", "h", 5, 0, "Waiting for no limit known on h: 5 s"),
    ("a long wait", "h", 125, 600, "Waiting for a long wait on h: 125 s of at most 600 s"),
], ids=["limit", "no limit", "fractional limit", "under a second", "negative", "zero limit", "minutes"])
def test_progress_line(what, host, elapsed, limit, expected):
    assert progress.progress_line(what, host, elapsed, limit) == expected


@pytest.mark.parametrize("text, expected", [
    ("plain", "plain"),
    ("red \x1b[31mtext\x1b[0m", "red [31mtext [0m"),
    ("two\nlines\r\n", "two lines"),
    ("tab\there", "tab here"),
    ("bell\x07 and del\x7f", "bell and del"),
    ("zero\u200bwidth and bidi\u202e", "zero width and bidi"),
    ("  spaces   collapse  ", "spaces collapse"),
    ("ünïcödé letters stay", "ünïcödé letters stay"),
    ("x" * 300, "x" * 197 + "..."),
], ids=["plain", "escape codes", "line breaks", "tab", "bell and del", "format characters", "spaces",
        "letters", "long"])
def test_plain_text_has_no_control_codes(text, expected):
    assert progress.plain(text) == expected


def test_a_line_is_one_plain_line_whatever_the_host_noted():
    line = progress.progress_line("\x1b[2J\x1b[Hcleared\nFAKE: ok", "web\r1", 5, 10)
    assert "\x1b" not in line and "\n" not in line and "\r" not in line
    assert line == "Waiting for [2J [Hcleared FAKE: ok on web 1: 5 s of at most 10 s"


# --------------------------------------------------------------------------------------------
# The schedule and the ticker
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("due, elapsed, expected", [
    (3.0, 3.0, 8.0),
    (3.0, 3.4, 8.0),     # a read that took 0.4 s does not move the schedule
    (8.0, 12.0, 14.5),   # a read of 4 s: the next line no sooner than 2.5 s after it
    (13.0, 30.0, 32.5),  # a stalled tick does not print a burst of lines
], ids=["on time", "a short read", "a slow read", "a stall"])
def test_next_due(due, elapsed, expected):
    assert progress.next_due(due, elapsed) == expected


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def run_ticker(times, describe):
    """Lines a ticker prints when ticked at `times` seconds into the call."""
    clock, lines = FakeClock(), []
    ticker = progress.Ticker("web1", describe, lines.append, clock=clock)
    for at in times:
        clock.now = 1000.0 + at
        ticker.tick()
    return lines


@pytest.mark.parametrize("name, times, expected", [
    ("a call that ends fast prints nothing", [0.5, 1.0, 2.9], []),
    ("the first line at 3 s", [2.0, 3.0], ["Waiting for the lock on web1: 3 s of at most 30 s"]),
    ("then one every 5 s", [3.0, 4.0, 7.9, 8.0, 12.0, 13.1],
     ["Waiting for the lock on web1: 3 s of at most 30 s", "Waiting for the lock on web1: 8 s of at most 30 s",
      "Waiting for the lock on web1: 13 s of at most 30 s"]),
    ("a late tick prints once", [20.0, 20.5, 22.0],
     ["Waiting for the lock on web1: 20 s of at most 30 s"]),
], ids=lambda value: value if isinstance(value, str) else None)
def test_ticker_schedule(name, times, expected):
    assert run_ticker(times, lambda elapsed: ("the lock", elapsed, 30)) == expected


def test_nothing_to_say_prints_nothing_but_keeps_the_schedule():
    said = []

    def describe(elapsed):
        said.append(elapsed)
        return None if elapsed < 5 else ("slots", 1.0, 60)

    assert run_ticker([3.0, 8.0], describe) == ["Waiting for slots on web1: 1 s of at most 60 s"]
    assert said == [3.0, 8.0]


def test_a_stopped_ticker_prints_no_more_lines():
    clock, lines = FakeClock(), []
    ticker = progress.Ticker("web1", lambda elapsed: ("x", elapsed, None), lines.append, clock=clock)
    ticker.stop()
    clock.now += 10
    assert ticker.tick() is None and lines == []


def test_the_thread_prints_on_a_real_clock_and_stops():
    lines = []
    ticker = progress.Ticker("web1", lambda elapsed: ("x", elapsed, None), lines.append, first=0.05, every=0.05)
    ticker.start()
    deadline = 200
    while len(lines) < 2 and deadline:
        ticker._stop.wait(0.01)
        deadline -= 1
    ticker.stop()
    count = len(lines)
    assert count >= 2 and lines[0] == "Waiting for x on web1: 0 s"
    ticker._stop.wait(0.2)
    assert len(lines) == count and not ticker._thread.is_alive()


def test_a_describe_that_raises_ends_the_ticker_not_the_task():
    ticker = progress.Ticker("h", lambda elapsed: 1 / 0, [].append, first=0.01)
    ticker.start()
    ticker._thread.join(2)
    assert not ticker._thread.is_alive()
    ticker.stop()


# --------------------------------------------------------------------------------------------
# Reading the host's file
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stdout, expected", [
    (b'1000.500000000\n{"what": "app-green to be healthy", "limit": 60.0, "started": 990.0}',
     ("app-green to be healthy", 10.5, 60.0)),
    (b'1000\n{"what": "nginx", "limit": null, "started": 998.25}\n', ("nginx", 1.75, None)),
    (b'1000.N\n{"what": "no %N in this date", "limit": 5, "started": 999}', ("no %N in this date", 1.0, 5.0)),
    (b'1000.0\n{"what": "clocks apart", "limit": 5, "started": 1003}', ("clocks apart", 0.0, 5.0)),
    (b"1000.0\n", None),
    (b"1000.0\n{}", None),
    (b'1000.0\n{"what": "half', None),
    (b'1000.0\n["what"]', None),
    (b'1000.0\n{"what": 3, "started": 1}', None),
    (b'1000.0\n{"what": "x", "started": "soon"}', None),
    (b'1000.0\n{"what": "x", "started": NaN}', None),
    (b'1000.0\n{"what": "x", "started": 1, "limit": Infinity}', None),
    (b"sh: date: not found\n", None),
    (b"", None),
], ids=["a wait", "whole seconds", "no %N", "host clock before the start", "no file", "no wait", "cut short",
        "not an object", "what not text", "started not a number", "NaN", "infinite limit", "no date", "nothing"])
def test_parse_host_progress(stdout, expected):
    assert progress.parse_host_progress(stdout) == expected


@pytest.mark.parametrize("path", [
    "/run/lock/swiftdeploy/.swiftdeploy-progress-0123456789abcdef.json",
    "~/.swiftdeploy/shop/.swiftdeploy-progress-0123456789abcdef.json",
    "/tmp/it's a $(touch pwned) `dir`/p.json",
    "~/it's a $(touch pwned)/p.json",
], ids=["absolute", "home", "quotes and substitutions", "home with quotes"])
def test_read_command_reads_exactly_that_file(tmp_path, path):
    home = tmp_path / "home"
    real = path.replace("~", str(home), 1) if path.startswith("~/") else str(tmp_path) + path
    os.makedirs(os.path.dirname(real))
    with open(real, "w") as handle:
        json.dump({"what": "w", "limit": 1, "started": 1}, handle)
    command = progress.read_command(path if path.startswith("~/") else str(tmp_path) + path)
    out = subprocess.run(["/bin/sh", "-c", command], cwd=str(tmp_path), env={"HOME": str(home), "PATH": os.environ["PATH"]},
                         capture_output=True, check=True).stdout
    assert progress.parse_host_progress(out)[0] == "w"
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


def test_read_command_prints_the_clock_alone_without_a_file(tmp_path):
    out = subprocess.run(["/bin/sh", "-c", progress.read_command(str(tmp_path / "none.json"))],
                         capture_output=True, check=True).stdout
    assert progress.parse_host_progress(out) is None and float(out.split()[0]) > 0


def test_progress_paths_are_fresh_names_in_the_directory():
    first, second = progress.progress_path("/run/lock/sd/"), progress.progress_path("/run/lock/sd")
    assert first != second
    assert os.path.dirname(first) == "/run/lock/sd" and shlex.quote(first) == first
    args, path = progress.with_progress_path({"a": 1}, "~/.swiftdeploy/shop")
    assert args == {"a": 1, "progress_path": path} and path.startswith("~/.swiftdeploy/shop/.swiftdeploy-progress-")
    assert progress.with_progress_path({"a": 1}, None) == ({"a": 1}, None)


class FakeConnection:
    """Records commands; the reader must run them on a copy, without privilege escalation."""

    def __init__(self, transport="ssh", answer=(0, b"1000\n", b""), error=None):
        self.transport = transport
        self.answer = answer
        self.error = error
        self.calls = []
        self.state = "the task's own"

    def exec_command(self, cmd, in_data=None, sudoable=True):
        self.state = "a reader's"
        self.calls.append((cmd, sudoable))
        if self.error:
            raise self.error
        return self.answer


@pytest.mark.parametrize("transport", ["ssh", "local"])
def test_the_reader_uses_a_copy_of_the_connection_without_become(transport):
    connection = FakeConnection(transport, (0, b'1000\n{"what": "w", "limit": 2, "started": 999}', b""))
    reader = progress.HostReader(connection, "/p/.swiftdeploy-progress-1.json")
    assert reader.read() == ("w", 1.0, 2.0)
    assert connection.state == "the task's own", "the task's connection object was used"


@pytest.mark.parametrize("transport", ["paramiko", "winrm", "community.docker.docker", None])
def test_other_connections_are_not_read(transport):
    connection = FakeConnection(transport)
    assert progress.HostReader(connection, "/p.json").read() is None
    assert connection.calls == []


def test_a_failing_connection_is_not_asked_again():
    connection = FakeConnection(error=RuntimeError("ssh: connect to host web1 port 22: Connection refused"))
    reader = progress.HostReader(connection, "/p.json")
    assert reader.read() is None and reader.read() is None
    assert reader.connection is None


def test_a_failing_command_is_no_progress():
    assert progress.HostReader(FakeConnection(answer=(1, b"", b"denied")), "/p.json").read() is None


def test_no_path_no_read():
    connection = FakeConnection()
    assert progress.HostReader(connection, None).read() is None and connection.calls == []


# --------------------------------------------------------------------------------------------
# The host's file
# --------------------------------------------------------------------------------------------


def noted(path):
    with open(path) as handle:
        return json.load(handle)


def test_waits_are_noted_while_they_last_and_the_file_goes_at_the_end(tmp_path):
    path = str(tmp_path / "p.json")
    with host_progress.activate(path):
        assert not os.path.exists(path), "nothing is written before a wait"
        with host_progress.waiting("app-green to be healthy", 60):
            first = noted(path)
            assert (first["what"], first["limit"]) == ("app-green to be healthy", 60.0)
            with host_progress.waiting("nginx to serve generation 4", None):
                assert (noted(path)["what"], noted(path)["limit"]) == ("nginx to serve generation 4", None)
            assert noted(path) == first, "the outer wait is noted again"
        assert not os.path.exists(path)
        host_progress.note("the stack lock held by bob", 30, started=123.0)
        assert noted(path) == {"what": "the stack lock held by bob", "limit": 30.0, "started": 123.0}
        host_progress.note("the lock again", 30, started=124.0)
        assert noted(path)["what"] == "the lock again"
        host_progress.clear()
        assert not os.path.exists(path)
        host_progress.note("left behind", 1)
    assert not os.path.exists(path) and os.listdir(str(tmp_path)) == []


def test_the_file_is_readable_and_replaced_whole(tmp_path):
    path = str(tmp_path / "p.json")
    with host_progress.activate(path):
        with host_progress.waiting("x", 1):
            assert os.stat(path).st_mode & 0o777 == 0o644 & ~_umask()
            assert os.listdir(str(tmp_path)) == ["p.json"]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_file_that_cannot_be_written_never_fails_the_wait(tmp_path):
    path = str(tmp_path / "missing" / "p.json")
    with host_progress.activate(path):
        with host_progress.waiting("x", 1):
            pass
    with host_progress.activate(None):
        with host_progress.waiting("nowhere", 1):
            pass
    assert os.listdir(str(tmp_path)) == []


def test_a_symlink_in_place_of_the_temporary_file_is_not_followed(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep")
    path = str(tmp_path / "p.json")
    os.symlink(str(target), path + ".new")
    with host_progress.activate(path):
        with host_progress.waiting("x", 1):
            pass
    assert target.read_text() == "keep"


def test_without_activation_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with host_progress.waiting("x", 1):
        host_progress.note("y")
        host_progress.clear()
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize("text, age, now, expected", [
    ('{"what": "the stack lock", "limit": 120.0, "started": 1000.0}', 10, 1100.0, False),
    ('{"what": "the stack lock", "limit": 120.0, "started": 1000.0}', 10, 1000.0 + 120 + 300, False),
    ('{"what": "the stack lock", "limit": 120.0, "started": 1000.0}', 10, 1000.0 + 120 + 301, True),
    ('{"what": "slots to be healthy", "limit": 60, "started": 1000}', 3000, 5000.0, True),
    ('{"what": "containers to stop", "limit": null, "started": 1000.0}', 3600, 9000.0, False),
    ('{"what": "containers to stop", "limit": null, "started": 1000.0}', 3601, 9000.0, True),
    ('{"what": "a clock set back", "limit": 5, "started": 9000.0}', 60, 1000.0, False),
    ('{"what": "half', 60, 9000.0, False),
    ('{"what": "half', 3601, 9000.0, True),
    ('["what"]', 60, 9000.0, False),
    ('{"what": "x", "limit": "soon", "started": 1}', 60, 9000.0, False),
    ('{"what": "x", "limit": 5, "started": NaN}', 60, 9000.0, False),
    ("", 60, 9000.0, False),
    (None, 60, 9000.0, False),
    (None, 3601, 9000.0, True),
], ids=["a wait under way", "at its limit and grace", "past its limit and grace", "a wait long over",
        "no limit, an hour old", "no limit, older than an hour", "started after now", "cut short",
        "cut short, older than an hour", "not an object", "limit not a number", "NaN", "empty",
        "temporary file", "temporary file, older than an hour"])
def test_stale(text, age, now, expected):
    assert host_progress.stale(text, age, now) is expected


def _left(directory, name, content, age, now):
    path = directory / name
    path.write_text(content)
    os.utime(str(path), (now - age, now - age))
    return path


def test_the_first_write_of_a_call_prunes_what_killed_calls_left(tmp_path):
    """A killed call's file goes when a later call notes its first wait; the files of calls
    that still wait, other names and a link's target stay."""
    now = time.time()
    old_wait = json.dumps({"what": "the stack lock", "limit": 120.0, "started": now - 1000})
    live_wait = json.dumps({"what": "the stack lock", "limit": 120.0, "started": now - 5})
    no_limit = json.dumps({"what": "containers to stop", "limit": None, "started": now - 7200})
    killed = _left(tmp_path, ".swiftdeploy-progress-00000000000000aa.json", old_wait, 1000, now)
    killed_new = _left(tmp_path, ".swiftdeploy-progress-00000000000000bb.json.new", "{", 7200, now)
    killed_no_limit = _left(tmp_path, ".swiftdeploy-progress-00000000000000cc.json", no_limit, 7200, now)
    live = _left(tmp_path, ".swiftdeploy-progress-00000000000000dd.json", live_wait, 5, now)
    other = _left(tmp_path, "shop.lock", old_wait, 7200, now)
    not_ours = _left(tmp_path, ".swiftdeploy-progress-XYZ.json", old_wait, 7200, now)
    target = _left(tmp_path, "target", old_wait, 7200, now)
    link = tmp_path / ".swiftdeploy-progress-00000000000000ee.json"
    os.symlink(str(target), str(link))
    own = str(tmp_path / ".swiftdeploy-progress-00000000000000ff.json")
    with host_progress.activate(own):
        assert killed.exists(), "nothing is pruned before the call writes"
        with host_progress.waiting("slots to be healthy", 60):
            assert not killed.exists() and not killed_new.exists() and not killed_no_limit.exists()
            assert live.exists() and other.exists() and not_ours.exists() and os.path.exists(own)
            assert target.read_text() == old_wait and os.path.islink(str(link))
            os.utime(str(live), (now - 7200, now - 7200))
        with host_progress.waiting("nginx to serve generation 2", 10):
            assert live.exists(), "one prune a call"
    assert not os.path.exists(own)


def test_pruning_a_missing_directory_removes_nothing(tmp_path):
    assert host_progress.prune(str(tmp_path / "gone"), None) == []


class FakeTime:
    def __init__(self, now=1000.0):
        self.now = now
        self.seen = []
        self.path = None

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.seen.append(noted(self.path) if os.path.exists(self.path) else None)
        self.now += seconds


def test_a_lock_wait_is_noted_with_its_holder_and_limit(tmp_path):
    fake = FakeTime()
    fake.path = str(tmp_path / "progress.json")
    lock_path = str(tmp_path / "locks" / "shop.lock")
    kwargs = {"clock": fake.clock, "monotonic": fake.clock, "sleep": fake.sleep}
    lock.acquire(lock_path, {"user": "bob", "playbook": "deploy.yml"}, host="web1", pid=1, **kwargs)
    with host_progress.activate(fake.path):
        with pytest.raises(lock.LockHeldError):
            lock.acquire(lock_path, {"user": "alice"}, host="web2", pid=2, wait=1, **kwargs)
    assert fake.seen[0] == {"what": "the stack lock held by bob (playbook deploy.yml)",
                            "limit": 1.0, "started": 1000.0}
    assert len(fake.seen) == 4 and all(seen == fake.seen[0] for seen in fake.seen)


def test_a_free_lock_notes_nothing(tmp_path):
    fake = FakeTime()
    fake.path = str(tmp_path / "progress.json")
    with host_progress.activate(fake.path):
        lock.acquire(str(tmp_path / "shop.lock"), {"user": "bob"}, host="web1", pid=1, wait=30,
                     clock=fake.clock, monotonic=fake.clock, sleep=fake.sleep)
        assert not os.path.exists(fake.path)


def test_a_young_canarys_window_is_noted(tmp_path):
    fake = FakeTime()
    fake.path = str(tmp_path / "progress.json")
    os.makedirs(str(tmp_path / "edge"))
    with host_progress.activate(fake.path):
        edge.measure(str(tmp_path / "edge"), 30, {"green": 1000.0 - 12}, ["green"], clock=fake.clock, sleep=fake.sleep)
    assert [(seen["what"], seen["limit"]) for seen in fake.seen] == [
        ("the canary (slot green) to be a 30 s window old", 18.0)]
    assert not os.path.exists(fake.path)


# --------------------------------------------------------------------------------------------
# What the action plugins say before the module has noted anything
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, expected", [
    ({"name": "shop:1", "path": "/p/build/app", "build_args": {"BASE_IMAGE": "base:1"}},
     ("community.docker.docker_image",
      {"name": "shop:1", "source": "build",
       "build": {"path": "/p/build/app", "args": {"BASE_IMAGE": "base:1"}, "pull": False}},
      "shop:1 to be built (docker build)")),
    ({"name": "shop:1", "path": "/p/ctx"},
     ("community.docker.docker_image",
      {"name": "shop:1", "source": "build", "build": {"path": "/p/ctx", "args": {}, "pull": False}},
      "shop:1 to be built (docker build)")),
    ({"name": "base:1", "script": ["bash", "/p/build/images/build-base-image.sh", "base:1"]},
     ("ansible.legacy.command", {"argv": ["bash", "/p/build/images/build-base-image.sh", "base:1"]},
      "base:1 to be built by build-base-image.sh")),
    ({"name": "x", "script": ["sh", "-c", "sleep 4"]},
     ("ansible.legacy.command", {"argv": ["sh", "-c", "sleep 4"]}, "x to be built by sh")),
], ids=["context with args", "context", "script", "inline script"])
def test_image_build_calls(args, expected):
    assert image_build.build_call(args) == expected


@pytest.mark.parametrize("args, message", [
    ({"path": "/p"}, "image_build: name is required; give the image reference to build"),
    ({"name": "x"}, "image_build: give exactly one of path (a build context on the host) and script (the argv of "
                    "a script that builds x)"),
    ({"name": "x", "path": "/p", "script": ["true"]}, "image_build: give exactly one of path"),
    ({"name": "x", "script": "make image"}, "image_build: script must be a list of strings (an argv), not 'str'"),
    ({"name": "x", "path": "/p", "pull": True},
     "image_build: unsupported option(s) pull; use name, path, build_args, script"),
], ids=["no name", "neither", "both", "script as text", "unknown option"])
def test_image_build_refusals(args, message):
    with pytest.raises(AnsibleActionFail) as info:
        image_build.build_call(args)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("holder, expected", [
    ({"user": "bob", "playbook": "deploy.yml", "awx_job_id": "42", "host": "web1",
      "controller": {"host": "ctl1", "pid": 7}}, "bob (playbook deploy.yml, AWX job 42, controller ctl1)"),
    ({"user": "bob", "host": "web1"}, "bob"),
    ({"user": "bob", "awx_job_id": 0, "controller": {"pid": 7}}, "bob (AWX job 0)"),
    ({}, "an unknown user"),
    (None, "an unknown run"),
], ids=["all", "user only", "job 0, controller without a host", "empty", "unreadable"])
def test_the_lock_holder_in_a_progress_line(holder, expected):
    assert lock.holder_summary(holder) == expected


@pytest.mark.parametrize("args, expected", [
    ({}, (None, None)),
    ({"host": {"images": ["a"]}}, (None, None)),
    ({"host": {"edge": {"window_seconds": 30, "wait_for_canary": True}}}, ("the canary to be a window old", 30.0)),
    ({"host": {"edge": {"window_seconds": 30, "wait_for_canary": False}}}, (None, None)),
    ({"host": {"metrics_urls": ["u"], "window_seconds": 5}}, ("the canary's window of app metrics", 5.0)),
], ids=["nothing", "images only", "edge canary", "edge without the canary's wait", "app metrics"])
def test_the_window_a_lock_call_may_wait_for(args, expected):
    assert stack_lock.window_of(args) == expected
