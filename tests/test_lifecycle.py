#!/usr/bin/env python3
"""Lifecycle: limits, signals, reload and the service manager protocol."""

import contextlib
import ctypes
import errno
import os
import re
import signal
import socket
import subprocess
import threading
import time

from fdtest import (FDISTD, Daemon, connect, fetch, file_sha256, free_port,
                    linger_reset, main, make_file, need, read_all, sha256, thread_names)

BIG = 64 * 1024 * 1024


def stalled_client(port):
    """Accepted (one byte read) and then reading nothing: holds a slot."""
    s = connect(port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    first = s.recv(1)
    assert first
    return s, first


@contextlib.contextmanager
def port_taken():
    """A loopback port another program listens on."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy


def expect_reset_before_data(port):
    try:
        s = connect(port)
    except ConnectionResetError:     # the reset can beat connect()'s return
        return
    try:
        data = s.recv(65536)
    except ConnectionResetError:
        return
    finally:
        s.close()
    raise AssertionError("expected a reset, got %d bytes" % len(data))


def test_max_clients_refuses_with_reset_then_recovers(tmp):
    path = make_file(os.path.join(tmp, "data"), BIG)
    port = free_port()
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": path}},
                {"max_clients": "2"}) as d:
        holders = [stalled_client(port)[0], stalled_client(port)[0]]
        for _ in range(25):
            expect_reset_before_data(port)
        # ten records a second, the other fifteen counted in a summary
        busy = d.wait_records(10)
        assert all(r["status"] == "busy" and r["reason"] == "max_clients" and r["bytes"] == "0" for r in busy)
        d.wait_log(r'refusals share=s status=busy reason="max_clients" count=15 window_ms=1000')
        d.notify.wait_for(lambda m: "25 refused" in m)
        for h in holders:
            h.close()
        d.wait_records(12)
        assert sha256(fetch(port)) == file_sha256(path)
        recs = d.wait_records(13)
        assert [r["status"] for r in recs[10:]] == ["aborted", "aborted", "acked"], recs


def test_sigterm_lets_transfers_in_flight_finish(tmp):
    stop_lets_transfers_finish(tmp, signal.SIGTERM)


def test_sigint_stops_the_same_and_sighup_while_stopping_is_ignored(tmp):
    stop_lets_transfers_finish(tmp, signal.SIGINT, then_sighup=True)


def stop_lets_transfers_finish(tmp, stop_signal, then_sighup=False):
    path = make_file(os.path.join(tmp, "data"), 16 * 1024 * 1024)
    port = free_port()
    want = file_sha256(path)
    results = []

    def slow_client(s, first):
        data = read_all(s, first, chunk=65536, pause=0.002)
        s.sendall(b"Thank you\0")
        s.close()
        results.append(sha256(data))

    rundir = os.path.join(tmp, "run")
    os.mkdir(rundir)
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": path}},
                env={"RUNTIME_DIRECTORY": rundir}) as d:
        # each client is accepted (has a byte) before the signal
        threads = [threading.Thread(target=slow_client, args=stalled_client(port)) for _ in range(3)]
        for t in threads:
            t.start()
        d.signal(stop_signal)
        d.notify.wait_for(lambda m: "STOPPING=1" in m)
        d.wait_log(r"stopping: 3 transfers in flight")
        if then_sighup:
            # as the unit's ExecReload= would: told it did not happen
            rc, out, err = reload_client(d.proc.pid, rundir)
            assert rc == 1 and err.endswith("previous configuration: stopping: reload ignored\n"), \
                (rc, out, err)
            d.wait_log(r"info: stopping: reload ignored")
        # no new connections once stopping
        try:
            connect(port, timeout=2).close()
            raise AssertionError("still accepting after SIGTERM")
        except ConnectionRefusedError:
            pass
        for t in threads:
            t.join(60)
        assert d.proc.wait(30) == 0
        assert results == [want] * 3
        recs = d.records()
        assert [r["status"] for r in recs] == ["acked"] * 3, recs
        assert "stopped" in d.log()
        if then_sighup:
            after = d.notify.messages[[i for i, m in enumerate(d.notify.messages)
                                       if "STOPPING=1" in m][0]:]
            assert not [m for m in after if "RELOADING=1" in m or "READY=1" in m], after
            assert "reload failed" not in d.log()


def test_second_sigterm_ends_transfers_now(tmp):
    path = make_file(os.path.join(tmp, "data"), BIG)
    port = free_port()
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        s, _ = stalled_client(port)
        d.signal(signal.SIGTERM)
        d.wait_log(r"stopping: 1 transfer in flight")
        d.signal(signal.SIGTERM)
        assert d.proc.wait(10) == 0
        s.close()
        (rec,) = d.records()
        assert rec["status"] == "shutdown"


def test_notify_ready_status_stopping(tmp):
    path = make_file(os.path.join(tmp, "data"), 1000)
    port = free_port()
    with Daemon(tmp, {"a": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        n = d.notify
        ready = n.wait_for(lambda m: "READY=1" in m)
        status = n.wait_for(lambda m: m.startswith("STATUS="))
        assert status < ready  # the first status is there when READY=1 comes
        assert n.messages[status][1] == "STATUS=1 share, 0 active, 0 acked, 0 failed, 0 refused"
        fetch(port)
        fetch(port, ack=None)
        d.wait_records(2)
        n.wait_for(lambda m: m == "STATUS=1 share, 0 active, 1 acked, 1 failed, 0 refused", timeout=5)
        assert d.stop() == 0
    msgs = [m for _, m in n.messages]
    assert "STOPPING=1" in msgs, msgs


def test_watchdog_pings_at_half_interval(tmp):
    path = make_file(os.path.join(tmp, "data"), 10)
    port = free_port()
    with Daemon(tmp, {"a": {"listen": "127.0.0.1:%d" % port, "file": path}},
                env={"WATCHDOG_USEC": "400000"}) as d:
        first = d.notify.wait_for(lambda m: m == "WATCHDOG=1", timeout=5)
        d.notify.wait_for(lambda m: m == "WATCHDOG=1", timeout=5, start=first + 1)
        pings = [t for t, m in d.notify.messages if m == "WATCHDOG=1"]
        assert 0.1 < pings[1] - pings[0] < 0.4, pings


def test_reload_new_file_keeps_old_for_transfers_in_flight(tmp):
    old = make_file(os.path.join(tmp, "old"), BIG, seed=1)
    old_sum = file_sha256(old)
    new = make_file(os.path.join(tmp, "new.tmp"), 1024 * 1024, seed=2)
    new_sum = file_sha256(new)
    live = os.path.join(tmp, "live")
    os.rename(old, live)
    port = free_port()
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": live}}) as d:
        s, first = stalled_client(port)
        os.rename(new, live)          # replaced by rename, as admins should
        d.reload()
        assert sha256(fetch(port)) == new_sum
        data = read_all(s, first)
        s.sendall(b"old one\n")
        s.close()
        assert sha256(data) == old_sum
        recs = d.wait_records(2)
        by_ack = {r.get("ack"): r for r in recs}
        assert by_ack["old one"]["size"] == str(BIG) and by_ack["old one"]["status"] == "acked"
        assert by_ack["Thank you"]["size"] == str(1024 * 1024)
        assert old_sum != new_sum


def test_reload_with_broken_config_keeps_serving(tmp):
    path = make_file(os.path.join(tmp, "data"), 5000)
    port = free_port()
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        with open(d.config, "a") as f:
            f.write("bogus_key = 1\n")
        d.reload()
        d.wait_log(r"reload failed, still serving the previous configuration: %s:\d+: unknown key 'bogus_key' in \[s\]" % d.config)
        assert len(fetch(port)) == 5000
        assert d.proc.poll() is None


def test_reload_adds_removes_and_keeps_listeners(tmp):
    a = make_file(os.path.join(tmp, "a"), 1000, seed=1)
    b = make_file(os.path.join(tmp, "b"), 2000, seed=2)
    pa, pb, pc = free_port(), free_port(), free_port()
    with Daemon(tmp, {"a": {"listen": "127.0.0.1:%d" % pa, "file": a},
                      "b": {"listen": "127.0.0.1:%d" % pb, "file": b}}) as d:
        # a keeps its port and gets b's file; b goes; c is new
        d.write_config({"a": {"listen": "127.0.0.1:%d" % pa, "file": b},
                        "c": {"listen": "127.0.0.1:%d" % pc, "file": a}})
        d.reload()
        assert len(fetch(pa)) == 2000
        assert len(fetch(pc)) == 1000
        try:
            connect(pb, timeout=2).close()
            raise AssertionError("removed share still listening")
        except ConnectionRefusedError:
            pass
        d.wait_log(r"no longer listening on 127\.0\.0\.1:%d" % pb)
        recs = d.wait_records(2)
        assert sorted((r["share"], r["size"]) for r in recs) == [("a", "2000"), ("c", "1000")]


def daemon_listener(pid, port):
    """A duplicate of the daemon's listening socket on port (pidfd_getfd)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        for name in os.listdir("/proc/%d/fd" % pid):
            if not os.readlink("/proc/%d/fd/%s" % (pid, name)).startswith("socket:"):
                continue
            fd = libc.syscall(438, pidfd, int(name), 0)   # pidfd_getfd
            if fd < 0:
                raise OSError(ctypes.get_errno(), "pidfd_getfd")
            s = socket.socket(fileno=fd)
            if (s.family in (socket.AF_INET, socket.AF_INET6) and
                    s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) and
                    s.getsockname()[1] == port):
                return s
            s.close()
    finally:
        os.close(pidfd)
    raise AssertionError("no listener on port %d" % port)


def test_reload_sets_the_new_ack_max_as_the_kept_listeners_rcvlowat(tmp):
    """Accepted sockets inherit SO_RCVLOWAT = ack_max from their listener,
    so a listener kept over a reload must take the share's new ack_max."""
    path = make_file(os.path.join(tmp, "f"), 1000)
    port = free_port()
    share = {"listen": "127.0.0.1:%d" % port, "file": path, "ack_max": "64"}
    with Daemon(tmp, {"s": share}) as d:
        before = daemon_listener(d.proc.pid, port)
        assert before.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 64
        d.write_config({"s": dict(share, ack_max="1K")})
        d.reload()
        after = daemon_listener(d.proc.pid, port)
        # the same socket, kept, with the new low-water mark
        assert os.fstat(after.fileno()).st_ino == os.fstat(before.fileno()).st_ino
        assert after.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1024
        before.close()
        after.close()
        assert len(fetch(port, ack=b"x" * 300)) == 1000
        (rec,) = d.wait_records(1)
        assert rec["status"] == "acked" and rec["ack"] == "x" * 300, rec


def test_reload_serves_clients_queued_on_a_listener_it_closes(tmp):
    """Clients whose connection the kernel completed on a port the reload
    drops are served, not reset by the close.  The daemon is stopped while
    they connect, so it wakes to a full queue and the SIGHUP together: one
    batch is accepted, then the reload closes the listener."""
    path = make_file(os.path.join(tmp, "data"), 1000)
    pa, pb = free_port(), free_port()
    n = 100                                  # more than one accept batch
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % pa, "file": path}}) as d:
        d.write_config({"s": {"listen": "127.0.0.1:%d" % pb, "file": path}})
        with d.stopped():
            socks = [connect(pa) for _ in range(n)]
            d.signal(signal.SIGHUP)
        d.wait_log(r"reloaded: 1 share")
        for s in socks:
            assert sha256(read_all(s)) == file_sha256(path)
            s.sendall(b"Thank you\0")
            s.close()
        recs = d.wait_records(n)
        assert [r["status"] for r in recs] == ["acked"] * n, recs
        assert len(fetch(pb)) == 1000


def test_sigterm_sent_while_stopped_stops_it_when_continued(tmp):
    """A stop signal that waits in the kernel while the daemon is stopped
    (SIGSTOP, a debugger) is read by the loop once it runs again."""
    path = make_file(os.path.join(tmp, "data"), 1000)
    port = free_port()
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        with d.stopped():
            d.signal(signal.SIGTERM)
            time.sleep(0.2)
            assert d.proc.poll() is None           # stopped: nothing read yet
        assert d.proc.wait(10) == 0
        d.wait_log(r"stopped")


def test_reload_with_port_taken_keeps_old_config(tmp):
    path = make_file(os.path.join(tmp, "data"), 100)
    pa = free_port()
    with port_taken() as busy:
        pbusy = busy.getsockname()[1]
        with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % pa, "file": path}}) as d:
            d.write_config({"s": {"listen": "127.0.0.1:%d, 127.0.0.1:%d" % (pa, pbusy), "file": path}})
            d.reload()
            d.wait_log(r"reload failed, still serving the previous configuration: listen on 127\.0\.0\.1:%d: Address already in use" % pbusy)
            assert len(fetch(pa)) == 100


def reload_client(pid, rundir, timeout=90):
    """fdistd -r PID, as the unit's ExecReload= runs it."""
    env = dict(os.environ)
    if rundir is None:
        env.pop("RUNTIME_DIRECTORY", None)
    else:
        env["RUNTIME_DIRECTORY"] = rundir
    out = subprocess.run([FDISTD, "-r", str(pid)], capture_output=True, timeout=timeout, env=env)
    return out.returncode, out.stdout.decode(), out.stderr.decode()


def test_reload_client_exits_with_the_daemons_result(tmp):
    """fdistd -r: 0 when the new file is in force, 1 with the daemon's
    reason when it kept the old one; the status says so until a reload
    succeeds."""
    path = make_file(os.path.join(tmp, "data"), 100)
    rundir = os.path.join(tmp, "run")
    os.mkdir(rundir)
    pa = free_port()
    with port_taken() as busy:
        pbusy = busy.getsockname()[1]
        with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % pa, "file": path}},
                    env={"RUNTIME_DIRECTORY": rundir}) as d:
            rc, out, err = reload_client(d.proc.pid, rundir)
            assert (rc, out, err) == (0, "fdistd: reloaded: 1 share\n", ""), (rc, out, err)
            d.write_config({"s": {"listen": "127.0.0.1:%d, 127.0.0.1:%d" % (pa, pbusy), "file": path}})
            start = len(d.notify.messages)
            rc, out, err = reload_client(d.proc.pid, rundir)
            why = "listen on 127.0.0.1:%d: Address already in use" % pbusy
            assert rc == 1 and out == "" and err == (
                "fdistd: reload failed, still serving the previous configuration: %s\n" % why), (rc, out, err)
            d.notify.wait_for(lambda m: m.startswith("STATUS=") and m.endswith("; last reload failed: " + why),
                              start=start)
            assert len(fetch(pa)) == 100
            # a broken file the daemon is sent anyway (no -t before): its file:line
            with open(d.config, "a") as f:
                f.write("bogus_key = 1\n")
            rc, out, err = reload_client(d.proc.pid, rundir)
            assert rc == 1 and re.search(r"previous configuration: %s:\d+: unknown key 'bogus_key'"
                                         % re.escape(d.config), err), (rc, out, err)
            d.write_config({"s": {"listen": "127.0.0.1:%d" % pa, "file": path}})
            start = len(d.notify.messages)
            rc, out, err = reload_client(d.proc.pid, rundir)
            assert rc == 0, (rc, out, err)
            d.notify.wait_for(lambda m: m.startswith("STATUS=") and "reload failed" not in m, start=start)
            with open(os.path.join(rundir, "reload")) as f:
                text = f.read()
            assert re.fullmatch(r"pid %d\ngeneration 4\nstarted \d+\nresult ok\nmessage reloaded: 1 share\n"
                                % d.proc.pid, text), text


def test_reload_client_gives_up_on_a_daemon_that_does_not_answer(tmp):
    """A daemon that cannot take the signal (stopped here) gets 60
    seconds: fdistd -r then exits 1 and says so, rather than hold
    systemctl reload for ever.  Let go, the daemon takes the signal it
    was sent and reloads."""
    path = make_file(os.path.join(tmp, "data"), 100)
    rundir = os.path.join(tmp, "run")
    os.mkdir(rundir)
    port = free_port()
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": path}},
                env={"RUNTIME_DIRECTORY": rundir}) as d:
        os.kill(d.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            rc, out, err = reload_client(d.proc.pid, rundir, timeout=90)
            took = time.monotonic() - t0
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        assert (rc, out) == (1, "") and err == ("fdistd: reload failed: pid %d did not report the reload "
                                                "within 60 seconds\n" % d.proc.pid), (rc, out, err)
        assert 60 <= took < 65, took
        d.wait_log(r"reloaded: 1 share")
        assert len(fetch(port)) == 100


def test_reload_client_ignores_a_load_that_began_before_its_signal(tmp):
    """A reload whose load began before fdistd -r signalled (here held in
    fopen() of a FIFO) and ends between the helper's read of the result
    file and its kill() (held by strace) is not the helper's: it waits
    for the load its own signal starts, which reads the mended file."""
    strace = need("strace")
    path = make_file(os.path.join(tmp, "data"), 100)
    rundir = os.path.join(tmp, "run")
    os.mkdir(rundir)
    port = free_port()
    shares = {"s": {"listen": "127.0.0.1:%d" % port, "file": path}}
    with Daemon(tmp, shares, env={"RUNTIME_DIRECTORY": rundir}) as d:
        assert reload_client(d.proc.pid, rundir)[0] == 0
        good = d.config + ".good"
        os.rename(d.config, good)
        os.mkfifo(d.config)
        os.kill(d.proc.pid, signal.SIGHUP)      # its load waits for a writer
        trace = os.path.join(tmp, "strace.out")
        # LeakSanitizer cannot run under ptrace: off for the traced helper
        env = dict(os.environ, RUNTIME_DIRECTORY=rundir,
                   ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0")
        helper = subprocess.Popen([strace, "-o", trace, "-e", "trace=kill",
                                   "-e", "inject=kill:delay_enter=8000000:when=1",
                                   FDISTD, "-r", str(d.proc.pid)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            deadline = time.monotonic() + 60
            while not (os.path.exists(trace) and "kill(%d, SIGHUP" % d.proc.pid in open(trace).read()):
                assert time.monotonic() < deadline and helper.poll() is None, "the helper never signalled"
                time.sleep(0.05)
            # the earlier load ends now, failed; then the file is mended
            with open(d.config, "w") as f:
                f.write("bogus_key = 1\n")
            result = os.path.join(rundir, "reload")
            deadline = time.monotonic() + 30
            while "result failed" not in open(result).read():
                assert time.monotonic() < deadline, "the earlier load never ended"
                time.sleep(0.05)
            os.rename(good, d.config)
            assert helper.poll() is None, "strace let the signal go before the earlier load ended"
            out, err = helper.communicate(timeout=90)
        finally:
            if helper.poll() is None:
                helper.kill()
                helper.wait()
        assert helper.returncode == 0 and out == b"fdistd: reloaded: 1 share\n", (helper.returncode, out, err)
        with open(result) as f:
            assert "generation 3\n" in f.read()


def test_a_reload_asked_during_a_load_answers_both_helpers_with_the_load_after(tmp):
    """Helper A's load waits (in fopen() of a FIFO); helper B signals
    meanwhile.  The daemon drops A's load, which may have read the file
    before B's change, loads again, and both helpers get that result."""
    path = make_file(os.path.join(tmp, "data"), 100)
    rundir = os.path.join(tmp, "run")
    os.mkdir(rundir)
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % free_port(), "file": path}},
                env={"RUNTIME_DIRECTORY": rundir}) as d:
        good = d.config + ".good"
        os.rename(d.config, good)
        os.mkfifo(d.config)
        env = dict(os.environ, RUNTIME_DIRECTORY=rundir)
        helpers = []
        try:
            helpers.append(subprocess.Popen([FDISTD, "-r", str(d.proc.pid)], stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, env=env))
            d.wait_log(r"info: reloading ")
            helpers.append(subprocess.Popen([FDISTD, "-r", str(d.proc.pid)], stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, env=env))
            d.wait_log(r"a reload is loading .*: another follows it")
            with open(d.config, "w") as f:          # A's load reads a broken file
                os.rename(good, d.config)           # the load after, the good one
                f.write("bogus_key = 1\n")
            d.wait_log(r"loading .* again: reloaded meanwhile")
            results = [h.communicate(timeout=90) + (h.returncode,) for h in helpers]
        finally:
            for h in helpers:
                if h.poll() is None:
                    h.kill()
                    h.wait()
        assert results == [(b"fdistd: reloaded: 1 share\n", b"", 0)] * 2, results
        assert d.log().count("reloaded: 1 share") == 1, d.log()


def test_reload_client_takes_no_stale_result_of_a_reused_pid(tmp):
    """A result file left with the daemon's pid (a pid reused after a
    restart that kept the directory), numbered past anything the new
    daemon will write, is older than the signal: not the answer, and no
    reason to wait for a higher number either."""
    path = make_file(os.path.join(tmp, "data"), 100)
    rundir = os.path.join(tmp, "run")
    os.mkdir(rundir)
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % free_port(), "file": path}},
                env={"RUNTIME_DIRECTORY": rundir}) as d:
        with open(os.path.join(rundir, "reload"), "w") as f:
            f.write("pid %d\ngeneration 9\nstarted 0\nresult failed\nmessage stale\n" % d.proc.pid)
        t0 = time.monotonic()
        rc, out, err = reload_client(d.proc.pid, rundir)
        assert (rc, out, err) == (0, "fdistd: reloaded: 1 share\n", ""), (rc, out, err, time.monotonic() - t0)


def reload_a_sleeper(rundir):
    """fdistd -r of a process that SIGHUP ends before it reports anything."""
    victim = subprocess.Popen(["sleep", "600"])
    reaper = threading.Thread(target=victim.wait)
    reaper.start()
    try:
        return (victim.pid,) + reload_client(victim.pid, rundir, timeout=30)
    finally:
        victim.kill()
        reaper.join()


def test_reload_client_bounded_when_the_daemon_cannot_answer(tmp):
    """No answer: not a hang, and no false "reloaded"."""
    rundir = os.path.join(tmp, "run")
    os.mkdir(rundir)
    pid, rc, out, err = reload_a_sleeper(rundir)
    assert rc == 1 and err == "fdistd: reload failed: pid %d exited before it reported the reload\n" \
        % pid, (rc, out, err)
    # a result file of another process is not this one's answer
    with open(os.path.join(rundir, "reload"), "w") as f:
        f.write("pid 1\ngeneration 9\nresult ok\nmessage reloaded: 1 share\n")
    pid, rc, out, err = reload_a_sleeper(rundir)
    assert rc == 1 and "exited before it reported" in err, (rc, out, err)
    # no such process, no RUNTIME_DIRECTORY, no pid
    rc, out, err = reload_client(pid, rundir)
    assert rc == 1 and "cannot signal pid %d: No such process" % pid in err, (rc, out, err)
    rc, out, err = reload_client(os.getpid(), None)
    assert rc == 2 and "RUNTIME_DIRECTORY is not set" in err, (rc, out, err)
    rc, out, err = reload_client("", rundir)
    assert rc == 2 and "invalid pid ''" in err, (rc, out, err)


def test_start_errors_exit_with_their_status_and_the_reason_as_status(tmp):
    """An invalid configuration: 78, which the unit does not restart; a
    port taken: 1, which it does.  Either way the reason is the STATUS=
    that systemctl status shows, and not only a log line."""
    missing = os.path.join(tmp, "none")
    d = Daemon(tmp, {"s": {"listen": "127.0.0.1:9", "file": missing}}, start=False)
    try:
        d.start(wait_ready=False)
        assert d.proc.wait(20) == 78
        why = "%s:6: file %s: No such file or directory" % (d.config, missing)
        d.notify.wait_for(lambda m: m == "STATUS=" + why)
        assert "fatal: " + why in d.log()
    finally:
        d.close()
    with port_taken() as busy:
        pbusy = busy.getsockname()[1]
        other = os.path.join(tmp, "second")
        os.mkdir(other)
        d = Daemon(other, {"s": {"listen": "127.0.0.1:%d" % pbusy, "file": make_file(missing, 10)}},
                   start=False)
        try:
            d.start(wait_ready=False)
            assert d.proc.wait(20) == 1
            d.notify.wait_for(lambda m: m == "STATUS=listen on 127.0.0.1:%d: Address already in use" % pbusy)
        finally:
            d.close()


def test_failed_reload_leaves_the_share_rate_limit_as_it_was(tmp):
    """The reload fails on its second share's port, after making its
    shares: the first share's new share_rate_limit must not apply."""
    path = make_file(os.path.join(tmp, "data"), 300 * 1024)
    pa = free_port()
    with port_taken() as busy:
        pbusy = busy.getsockname()[1]
        with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % pa, "file": path}}) as d:
            d.write_config({"s": {"listen": "127.0.0.1:%d" % pa, "file": path,
                                  "share_rate_limit": "100K"},
                            "t": {"listen": "127.0.0.1:%d" % pbusy, "file": path}})
            d.reload()
            d.wait_log(r"reload failed, still serving the previous configuration")
            t0 = time.monotonic()
            assert sha256(fetch(pa)) == file_sha256(path)
            took = time.monotonic() - t0
            assert took < 1, "a failed reload slowed the share: %.1f s" % took
            # the same reload with the port free: now the limit holds
            busy.close()
            d.reload()
            d.wait_log(r"reloaded: 2 shares")
            t0 = time.monotonic()
            assert sha256(fetch(pa)) == file_sha256(path)
            assert time.monotonic() - t0 > 1.5


def sparse_file(path, size):
    with open(path, "wb") as f:
        f.truncate(size)
    return path


# A ThreadSanitizer build runs a thread of its own in every process.
with open(FDISTD, "rb") as _f:
    TSAN_THREADS = 1 if b"__tsan_init" in _f.read() else 0


def threads(pid):
    """The daemon's threads but its sendfile workers: the loop's and its
    hashing workers."""
    n = sum(name != "fdistd-send" for name in thread_names(pid).values())
    return n - TSAN_THREADS


def assert_big_file_not_hashed(d, why):
    """The daemon is back to its one thread within 5 s, and big.img's
    digest was never logged: its worker was stopped, not let finish."""
    deadline = time.monotonic() + 5
    while threads(d.proc.pid) > 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert threads(d.proc.pid) == 1, why
    assert "big.img: sha256" not in d.log()


def test_reload_stops_hashing_a_file_nothing_serves(tmp):
    """A reload that replaces a file still being hashed stops its worker;
    the new file is hashed and logged, the old one never is."""
    big = sparse_file(os.path.join(tmp, "big.img"), 64 << 30)
    small = make_file(os.path.join(tmp, "small"), 1000)
    port = free_port()
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": big}}) as d:
        assert threads(d.proc.pid) == 2, "no worker hashing the big file"
        d.write_config({"s": {"listen": "127.0.0.1:%d" % port, "file": small}})
        d.reload()
        d.wait_log(r"small: sha256 ")
        assert_big_file_not_hashed(d, "the big file's worker still runs")
        assert "cannot compute sha256" not in d.log()


def test_failed_reload_stops_hashing_the_file_it_opened(tmp):
    """A reload that fails on a port after opening a new file must not
    leave that file's hash running."""
    small = make_file(os.path.join(tmp, "small"), 1000)
    big = sparse_file(os.path.join(tmp, "big.img"), 64 << 30)
    port = free_port()
    with port_taken() as busy:
        with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": small}}) as d:
            d.wait_log(r"small: sha256 ")
            d.write_config({"s": {"listen": "127.0.0.1:%d" % port, "file": small},
                            "b": {"listen": "127.0.0.1:%d" % busy.getsockname()[1],
                                  "file": big}})
            d.reload()
            d.wait_log(r"reload failed")
            assert_big_file_not_hashed(d, "the failed reload's file is still hashed")


def test_last_client_of_a_replaced_file_stops_its_hashing(tmp):
    """A replaced file still sent to a client is hashed on (its ack may
    claim a digest); once that client is gone, nothing needs it."""
    big = sparse_file(os.path.join(tmp, "big.img"), 64 << 30)
    small = make_file(os.path.join(tmp, "small"), 1000)
    port = free_port()
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": big}}) as d:
        s = connect(port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        assert s.recv(1)
        d.write_config({"s": {"listen": "127.0.0.1:%d" % port, "file": small}})
        d.reload()
        d.wait_log(r"small: sha256 ")
        time.sleep(0.2)
        assert threads(d.proc.pid) == 2, "the in-flight client's file is no longer hashed"
        linger_reset(s)
        s.close()
        d.wait_records(1)
        assert_big_file_not_hashed(d, "the replaced file's worker still runs")


def test_start_up_lines_reach_stderr_before_any_event(tmp):
    """The share and ready lines are written at once, not when the loop
    first wakes (here: when a long hash ends)."""
    big = sparse_file(os.path.join(tmp, "big.img"), 64 << 30)
    port = free_port()
    # no service manager either: its status timer would wake the loop
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": big}},
                env={"NOTIFY_SOCKET": None}, start=False) as d:
        d.start(wait_ready=False)
        d.wait_log(r"info: fdistd \S+ ready: 1 share", timeout=3)
        assert re.search(r"share \[s\]: \S+big\.img", d.log())
        assert "sha256" not in d.log()
        if TSAN_THREADS:
            # ThreadSanitizer holds a signal that comes as the thread goes
            # into a blocking call until its next call: here, with no
            # timer, until an event, which a client makes.
            d.signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while d.proc.poll() is None and time.monotonic() < deadline:
                try:
                    connect(port, timeout=1).close()
                except OSError:
                    pass
                time.sleep(0.1)


def test_reload_checks_max_clients_against_the_open_files_limit(tmp):
    path = make_file(os.path.join(tmp, "data"), 100)
    port = free_port()
    share = {"s": {"listen": "127.0.0.1:%d" % port, "file": path}}
    with Daemon(tmp, share, {"max_clients": 10},
                launcher=["prlimit", "--nofile=200:200", "--"]) as d:
        d.write_config(global_opts={"log": "stderr", "max_clients": 500})
        d.reload()
        d.wait_log(r"max_clients 500 does not fit the open files limit 200: "
                   r"raise LimitNOFILE \(or ulimit -n\) to at least 581")
        assert "max_clients 10 " not in d.log()


def test_daemon_killed_mid_transfer_resets_rather_than_eof(tmp):
    """SIGKILL (the watchdog's SIGABRT, the OOM killer): the kernel closes
    the daemon's sockets, and a client mid-file must see a reset, never
    an end-of-file that makes a part of the file look whole."""
    path = make_file(os.path.join(tmp, "data"), 8 * 1024 * 1024)
    port = free_port()
    d = Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": path,
                           "rate_limit": "1M"}})
    try:
        s = connect(port)
        got = len(s.recv(65536))
        d.proc.kill()
        d.proc.wait()
        try:
            got += len(read_all(s))
            raise AssertionError("clean EOF after %d of 8 MiB" % got)
        except ConnectionResetError:
            pass
        s.close()
    finally:
        d.close()


def test_daemon_killed_after_queueing_the_whole_file_still_delivers_it(tmp):
    """Once the whole file and the FIN are queued, the kernel finishes the
    transfer without the daemon: the client gets every byte and EOF."""
    path = make_file(os.path.join(tmp, "data"), 2 * 1024 * 1024)
    port = free_port()
    d = Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": path}},
               extra_args=["-v", "-v"])
    try:
        s = connect(port)
        first = s.recv(65536)
        d.wait_log(r"sending -> (flushing|awaiting-ack)")   # all queued
        d.proc.kill()
        d.proc.wait()
        assert sha256(read_all(s, first)) == file_sha256(path)
        s.close()
    finally:
        d.close()


def test_started_with_standard_fds_closed_holds_them_with_dev_null(tmp):
    """With 0, 1 and 2 closed, the next descriptors opened must not take
    their numbers: log lines would go into whatever got 2 (the served
    file, the digest pipe, a client's socket)."""
    path = make_file(os.path.join(tmp, "data"), 100000)
    port = free_port()
    config = os.path.join(tmp, "fdistd.ini")
    with open(config, "w") as f:
        f.write("[fdistd]\nlog = stderr\n[s]\nlisten = 127.0.0.1:%d\nfile = %s\n" % (port, path))
    proc = subprocess.Popen([FDISTD, "-c", config], env=dict(os.environ, NOTIFY_SOCKET=""),
                            preexec_fn=lambda: [os.close(fd) for fd in (0, 1, 2)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                got = fetch(port)
                break
            except (ConnectionRefusedError, ConnectionResetError):
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        for _ in range(3):
            got2 = fetch(port)
            assert sha256(got2) == file_sha256(path), len(got2)
        assert sha256(got) == file_sha256(path), len(got)
        for fd in (0, 1, 2):
            assert os.readlink("/proc/%d/fd/%d" % (proc.pid, fd)) == "/dev/null", fd
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_debug_flag_logs_to_stderr_with_state_changes(tmp):
    """-d sends everything to stderr even where the config says journal;
    -v -v adds a line per state change of a connection."""
    path = make_file(os.path.join(tmp, "data"), 5000)
    port = free_port()
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": path}},
                {"log": "journal"}, extra_args=["-d", "-v"]) as d:
        fetch(port)
        (rec,) = d.wait_records(1)
        assert rec["status"] == "acked"
        d.wait_log(r"127\.0\.0\.1:\d+ \[s\]: sending -> awaiting-ack")
        assert re.search(r"debug: ", d.log())


if __name__ == "__main__":
    main(globals())
