#!/usr/bin/env python3
"""Two fdist-fetch runs to one -o FILE, against the real daemon.

Two shares serve different files at a slow rate_limit, so a run is still
receiving when the next one starts, and FILE shows whose bytes it holds.
Whatever the order and whether a run is killed, FILE is only ever the
old file or one run's complete copy of what it received, and a run that
exits 0 published its own bytes.
"""

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time

from fdtest import Daemon, file_sha256, free_port, main, make_file, need

FETCH = os.environ.get("FDIST_FETCH", "build/fdist-fetch")
SIZE = 2 * 1024 * 1024 + 1     # about 4 s at the rate below
RATE = "512K"
OLD = b"the previous version\n"
EXIT_BUSY = 7


class Sizes(threading.Thread):
    """Sample FILE's size until stopped: each must be the old or a full one."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.seen = set()
        self.done = threading.Event()
        self.start()

    def run(self):
        while not self.done.wait(0.005):
            try:
                self.seen.add(os.stat(self.path).st_size)
            except FileNotFoundError:
                self.seen.add(None)

    def stop(self):
        self.done.set()
        self.join(10)
        return self.seen


@contextlib.contextmanager
def two_shares(tmp, rates=None):
    """One daemon, shares x and y with different files, once it has
    logged both digests: the daemon, the shares' ports and digests."""
    ports, sums, shares = {}, {}, {}
    for seed, name in enumerate(("x", "y"), 1):
        path = make_file(os.path.join(tmp, "src-" + name), SIZE, seed=seed)
        ports[name] = free_port()
        sums[name] = file_sha256(path)
        shares[name] = {"listen": "127.0.0.1:%d" % ports[name], "file": path,
                        "rate_limit": (rates or {}).get(name, RATE)}
    with Daemon(tmp, shares) as d:
        for name in ("x", "y"):
            d.wait_log(r"sha256 %s" % sums[name])
        yield d, ports, sums


def start(out, port):
    return subprocess.Popen([FETCH, "-q", "-o", out, "127.0.0.1:%d" % port],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def receiving(p, part, at_least=128 * 1024, timeout=20):
    """Wait until run p has written at_least bytes to part, still running."""
    deadline = time.monotonic() + timeout
    while True:
        assert p.poll() is None, ("run ended early", p.returncode, p.stderr.read())
        try:
            if os.path.getsize(part) >= at_least:
                return
        except FileNotFoundError:
            pass
        assert time.monotonic() < deadline, "no part file grew to %d bytes" % at_least
        time.sleep(0.01)


def finish(p, timeout=60):
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError("fetch did not end within %ss" % timeout)
    return p.returncode, err.decode(errors="replace")


def slurp(path):
    with open(path, "rb") as f:
        return f.read()


def setup_target(tmp):
    out = os.path.join(tmp, "target.img")
    with open(out, "wb") as f:
        f.write(OLD)
    return out, out + ".part"


def second_while_first_receives(out, part, ports, first, second):
    """Start the first run, and the second once the first is receiving;
    wait for the second.  The first run, the second's exit status and
    message, and whether the first was still running then."""
    a = start(out, ports[first])
    try:
        receiving(a, part)
        rc, err = finish(start(out, ports[second]))
        return a, rc, err, a.poll() is None
    except BaseException:
        a.kill()
        a.communicate()
        raise


def second_failed_at_once(rc, err, part, first_running):
    assert rc == EXIT_BUSY, (rc, err)
    assert "another fdist-fetch" in err and part in err, err
    assert first_running, "the first run ended before the second failed"


def test_second_run_fails_at_once_first_publishes_its_own_bytes(tmp):
    with two_shares(tmp) as (d, ports, sums):
        for first, second in (("x", "y"), ("y", "x")):
            out, part = setup_target(tmp)
            sizes = Sizes(out)
            a, rc_b, err_b, running = second_while_first_receives(out, part, ports, first, second)
            rc, err = finish(a)
            seen = sizes.stop()
            # FILE was never partial, and a run that says 0 published its own bytes.
            assert seen <= {len(OLD), SIZE}, (first, rc, sorted(s for s in seen if s))
            if rc == 0:
                assert file_sha256(out) == sums[first], (first, os.path.getsize(out))
            assert rc == 0, (first, rc, err)
            second_failed_at_once(rc_b, err_b, part, running)
            assert not os.path.exists(part)
        recs = d.wait_records(2)
        # The second runs never connected: one record per first run.
        assert [(r["share"], r["status"], r["verified"], r["sha256"]) for r in recs] == \
            [("x", "acked", "yes", sums["x"]), ("y", "acked", "yes", sums["y"])], recs
        assert all("Thank you sha256=%s host=%s" % (sums[r["share"]], socket.gethostname()) == r["ack"]
                   for r in recs), recs


def test_killed_run_leaves_old_file_and_a_part_the_next_run_removes(tmp):
    with two_shares(tmp) as (d, ports, sums):
        for first, second in (("x", "y"), ("y", "x")):
            out, part = setup_target(tmp)
            sizes = Sizes(out)
            a, rc_b, err_b, running = second_while_first_receives(out, part, ports, first, second)
            a.kill()
            finish(a)
            assert a.returncode == -signal.SIGKILL, a.returncode
            assert slurp(out) == OLD
            second_failed_at_once(rc_b, err_b, part, running)
            assert os.path.exists(part)     # SIGKILL leaves it; nobody holds it
            # The next run takes it for the leftover it is.
            rc, err = finish(start(out, ports[second]))
            seen = sizes.stop()
            assert rc == 0, (second, rc, err)
            assert file_sha256(out) == sums[second]
            assert seen <= {len(OLD), SIZE}, (second, sorted(s for s in seen if s))
            assert not os.path.exists(part)
        acked = [(r["share"], r["verified"]) for r in d.wait_records(4) if r["status"] == "acked"]
        assert acked == [("y", "yes"), ("x", "yes")], d.records()


def test_terminated_run_removes_its_part_and_a_later_run_succeeds(tmp):
    with two_shares(tmp) as (d, ports, sums):
        out, part = setup_target(tmp)
        a, rc_b, err_b, running = second_while_first_receives(out, part, ports, "x", "y")
        a.send_signal(signal.SIGTERM)
        finish(a)
        assert a.returncode == -signal.SIGTERM, a.returncode
        assert slurp(out) == OLD and not os.path.exists(part)
        second_failed_at_once(rc_b, err_b, part, running)
        rc, err = finish(start(out, ports["y"]))
        assert rc == 0, (rc, err)
        assert file_sha256(out) == sums["y"] and not os.path.exists(part)


def test_part_taken_for_a_leftover_before_its_run_locked_it(tmp):
    """The moment between creating FILE.part and locking it: the first run
    is stopped there (strace, SIGSTOP as its create returns), the second
    takes its part for a leftover and makes its own.  The first must see
    that and step back, not write on and publish the second's bytes.  The
    first run's share is faster, then slower, than the second's."""
    with two_shares(tmp, {"x": "1M", "y": RATE}) as (d, ports, sums):
        for first, second in (("x", "y"), ("y", "x")):
            out, part = setup_target(tmp)
            sizes = Sizes(out)
            rc_a, err_a, rc_b, err_b, running = stopped_then_overtaken(out, part, ports, first, second)
            seen = sizes.stop()
            assert seen <= {len(OLD), SIZE}, (first, rc_a, sorted(s for s in seen if s))
            assert rc_b == 0, (rc_b, err_b)
            assert file_sha256(out) == sums[second]
            second_failed_at_once(rc_a, err_a, part, running)
            assert not os.path.exists(part)
        recs = d.wait_records(2)
        assert [(r["share"], r["status"], r["verified"]) for r in recs] == \
            [("y", "acked", "yes"), ("x", "acked", "yes")], recs


def stopped_then_overtaken(out, part, ports, first, second):
    """Run first, stopped once FILE.part is made; run second meanwhile,
    and continue first once second is receiving.  Both exit statuses and
    messages, and whether second was still running when first ended."""
    tracer = subprocess.Popen(
        [need("strace"), "-qq", "-o", "/dev/null", "-P", part, "-e", "trace=openat",
         "-e", "inject=openat:signal=SIGSTOP:when=1",
         FETCH, "-q", "-o", out, "127.0.0.1:%d" % ports[first]],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        # LeakSanitizer cannot run under ptrace; the other runs check leaks
        env=dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0"))
    b = None
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(part):
            assert tracer.poll() is None, ("traced run ended", tracer.returncode, tracer.stderr.read())
            assert time.monotonic() < deadline, "the traced run made no part file"
            time.sleep(0.01)
        made = os.stat(part).st_ino
        with open("/proc/%d/task/%d/children" % (tracer.pid, tracer.pid)) as f:
            (pid,) = map(int, f.read().split())
        b = start(out, ports[second])
        receiving(b, part)
        assert os.stat(part).st_ino != made, "the second did not replace the part"
        with open("/proc/%d/status" % pid) as f:
            assert "State:\tt" in f.read(), "the first is not stopped"
        os.kill(pid, signal.SIGCONT)
        rc_a, err_a = finish(tracer)
        running = b.poll() is None
        rc_b, err_b = finish(b)
        return rc_a, err_a, rc_b, err_b, running
    finally:
        for p in (tracer, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()


if __name__ == "__main__":
    main(globals())
