#!/usr/bin/env python3
"""Sendfile workers: large sends go to a pool of threads (workers = auto,
one per CPU the daemon may run on), so large transfers use every core;
workers = 1 keeps the single-threaded daemon.  Whatever thread sends,
every client gets the exact bytes and exactly one record, a client that
resets mid-file is aborted, and a stop takes every job back."""

import os
import re
import signal
import socket
import subprocess
import threading
import time

from fdtest import (FDISTD, Daemon, NoThreads, connect, cpu_seconds, fetch, file_sha256, free_port, linger_reset,
                    main, make_file, need, read_all, sha256, strace_attach, thread_names)

MIB = 1 << 20


def worker_tids(pid):
    """The daemon's sendfile threads (by their name), as thread ids."""
    return {tid for tid, name in thread_names(pid).items() if name == "fdistd-send"}


def workers_of(pid):
    return len(worker_tids(pid))


def one_share(path):
    port = free_port()
    return port, {"s": {"listen": "127.0.0.1:%d" % port, "file": path}}


def test_auto_starts_a_worker_per_cpu_and_taskset_limits_it(tmp):
    small = make_file(os.path.join(tmp, "small"), 1000)
    port, shares = one_share(small)
    cpus = len(os.sched_getaffinity(0))
    want = cpus if cpus > 1 else 0
    with Daemon(tmp, shares) as d:
        d.wait_log(r"ready: 1 share, max_clients \d+, workers %d\b" % cpus)
        assert workers_of(d.proc.pid) == want
        assert fetch(port) == open(small, "rb").read()
    # The CPUs systemd's CPUAffinity= (or taskset) leaves are what auto counts.
    other = os.path.join(tmp, "one-cpu")
    os.mkdir(other)
    with Daemon(other, shares, launcher=["taskset", "-c", "0"]) as d:
        d.wait_log(r"ready: 1 share, max_clients \d+, workers 1\b")
        assert workers_of(d.proc.pid) == 0


def test_workers_1_sends_from_the_loop_alone(tmp):
    big = make_file(os.path.join(tmp, "big"), 32 * MIB)
    port, shares = one_share(big)
    with Daemon(tmp, shares, {"workers": "1"}) as d:
        assert workers_of(d.proc.pid) == 0
        assert sha256(fetch(port)) == file_sha256(big)
        rec = d.wait_records(1)[0]
        assert rec["status"] == "acked" and int(rec["bytes"]) == 32 * MIB


def test_large_transfers_are_sent_by_the_workers(tmp):
    """Four clients of a 64 MiB file: the sendfile threads, not the loop,
    make the sendfile() calls (strace, by thread), and each client gets
    every byte."""
    big = make_file(os.path.join(tmp, "big"), 64 * MIB)
    want = file_sha256(big)
    port, shares = one_share(big)
    trace = os.path.join(tmp, "trace")
    with Daemon(tmp, shares, {"workers": "2"}) as d:
        tids = worker_tids(d.proc.pid)
        assert len(tids) == 2
        st = strace_attach(d.proc.pid, "-f", "-e", "trace=sendfile", "-e", "signal=none", "-o", trace)
        try:
            got = [None] * 4
            ts = [threading.Thread(target=lambda i: got.__setitem__(i, sha256(fetch(port, timeout=60))),
                                   args=(i,)) for i in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(120)
            assert got == [want] * 4
            recs = d.wait_records(4)
            assert [r["status"] for r in recs] == ["acked"] * 4
        finally:
            st.terminate()
            st.wait(10)
        sent = {}
        for line in open(trace):
            # a call another thread's line cut shows as "<... resumed>"
            m = re.match(r"(\d+) +(?:sendfile\(|<\.\.\. sendfile resumed>).* = (\d+)$", line)
            if m:
                sent[int(m.group(1))] = sent.get(int(m.group(1)), 0) + int(m.group(2))
        print("bytes sent by thread: %s (workers %s)" % (sent, sorted(tids)))
        assert sum(sent.values()) == 4 * 64 * MIB, sent
        by_workers = sum(n for tid, n in sent.items() if tid in tids)
        # the loop sends only each transfer's first send (a socket's
        # worth, 2 MiB at most) and a tail under POOL_SEND_MIN
        assert by_workers >= 0.95 * 4 * 64 * MIB, sent
        assert all(sent.get(tid, 0) > 0 for tid in tids), sent


def unsent_bytes(port):
    """The bytes the daemon's sockets of port have queued but TCP has not
    sent yet (ss's notsent), by client port."""
    out = subprocess.run([need("ss"), "-Htni", "state", "established", "( sport = :%d )" % port],
                         capture_output=True, text=True, check=True).stdout
    unsent = {}
    for sock in re.split(r"\n(?=\S)", out.strip()):
        peer = int(sock.split()[3].rsplit(":", 1)[1])
        m = re.search(r"\bnotsent:(\d+)", sock)
        unsent[peer] = int(m.group(1)) if m else 0
    return unsent


def test_a_client_that_stops_reading_while_workers_send_times_out(tmp):
    """A worker's job ends at a full socket, so a client that stops
    reading holds no worker: the loop's send_timeout ends it, one
    send-timeout record on time, the workers asleep meanwhile, and the
    other client, reading on, gets every byte.  Its socket holds under
    1 MiB unsent (the low-water mark of files of 16 MiB or more)."""
    big = make_file(os.path.join(tmp, "big"), 64 * MIB)
    port, shares = one_share(big)
    shares["s"]["send_timeout"] = "1s"
    with Daemon(tmp, shares, {"workers": "2"}) as d:
        tids = worker_tids(d.proc.pid)
        stalled = connect(port, timeout=30)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        got = 0
        while got < 8 * MIB:	# past the first send: the workers' now
            got += len(stalled.recv(1 << 20))
        t0 = time.monotonic()
        cpu0 = cpu_seconds(d.proc.pid, tids)
        time.sleep(0.2)		# the socket fills up to the mark
        unsent = unsent_bytes(port)[stalled.getsockname()[1]]
        # meanwhile a client that reads, from the same workers
        assert sha256(fetch(port, timeout=60)) == file_sha256(big)
        recs = d.wait_records(2, timeout=10)
        took = time.monotonic() - t0
        cpu = cpu_seconds(d.proc.pid, tids) - cpu0
        stalled.close()
        by = {r["status"]: r for r in recs}
        assert sorted(by) == ["acked", "send-timeout"], recs
        assert int(by["acked"]["bytes"]) == 64 * MIB
        assert got <= int(by["send-timeout"]["bytes"]) < 64 * MIB, by
        # 1 s without progress: the daemon's timer starts when it last
        # found the socket full, which can be a little before our last
        # recv() returned (0.9992 s was seen under TSan)
        assert 0.95 <= took <= 3.0, took
        # one sendfile() may go past the mark by a segment or so; without
        # it, the socket queues up to tcp_wmem's maximum (4 MiB)
        assert 0 < unsent <= MIB + 256 * 1024, unsent
        # the other client's 64 MiB cost a fraction of a second; a job
        # retried on a full socket would spin its worker all along
        assert cpu < 0.3, cpu


def test_every_client_one_record_while_workers_send_and_some_reset(tmp):
    """Sixty clients of an 8 MiB file, every third resetting after its
    first megabyte: the others get every byte and are acked, each reset
    is aborted with what it took, and no client has two records."""
    big = make_file(os.path.join(tmp, "big"), 8 * MIB)
    want = file_sha256(big)
    port, shares = one_share(big)
    results, errors = {}, []

    def client(i):
        try:
            s = connect(port, timeout=60)
            local = s.getsockname()[1]
            if i % 3 == 0:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                got = 0
                while got < MIB:
                    got += len(s.recv(65536))
                linger_reset(s)
                s.close()
                results[local] = "reset"
                return
            data = read_all(s)
            s.sendall(b"ok %d\n" % i)
            s.close()
            results[local] = sha256(data)
        except Exception as e:  # reported below
            errors.append(repr(e))

    with Daemon(tmp, shares, {"workers": "2"}) as d:
        ts = [threading.Thread(target=client, args=(i,)) for i in range(60)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        assert not errors, errors[:5]
        d.wait_records(60, timeout=60)
        time.sleep(0.3)      # a second record of one client would come now
        recs = d.records()
        assert len(recs) == 60, len(recs)
        by_port = {int(r["peer"].rsplit(":", 1)[1]): r for r in recs}
        assert sorted(by_port) == sorted(results)
        for p, r in by_port.items():
            if results[p] == "reset":
                assert r["status"] == "aborted", r
                # what the client's TCP acknowledged: most of what it read
                assert MIB // 2 <= int(r["bytes"]) < 8 * MIB, r
            else:
                assert results[p] == want
                assert r["status"] == "acked" and int(r["bytes"]) == 8 * MIB, r


def test_stop_waits_for_transfers_the_workers_send_and_a_second_stop_ends_them(tmp):
    """SIGTERM lets a transfer the workers are sending finish; a second
    SIGTERM ends the rest at once, each with its shutdown record, and the
    daemon exits 0 with its threads joined."""
    big = make_file(os.path.join(tmp, "big"), 64 * MIB)
    want = file_sha256(big)
    port, shares = one_share(big)
    with Daemon(tmp, shares, {"workers": "2", "shutdown_timeout": "30s"}) as d:
        fast = connect(port, timeout=30)
        first = fast.recv(1)
        assert first
        slow = [connect(port, timeout=30) for _ in range(3)]
        for s in slow:
            assert s.recv(1)
        d.signal(signal.SIGTERM)
        d.wait_log(r"stopping: 4 transfers in flight")
        data = read_all(fast, first)
        fast.sendall(b"done\n")
        fast.close()
        assert sha256(data) == want
        d.wait_records(1)
        d.signal(signal.SIGTERM)
        assert d.proc.wait(15) == 0
        for s in slow:
            s.close()
        recs = d.records()
        assert sorted(r["status"] for r in recs) == ["acked", "shutdown", "shutdown", "shutdown"], recs
        assert "stopped" in d.log()


def test_no_threads_to_be_had_the_loop_sends_alone(tmp):
    """Under a pids limit that allows no thread (TasksMax=), the daemon
    says so and serves large files from its loop: a start does not fail
    for want of workers."""
    big = make_file(os.path.join(tmp, "big"), 16 * MIB)
    port, shares = one_share(big)
    with NoThreads("workers") as cg:
        with Daemon(tmp, shares, {"workers": "4"}, launcher=cg.launcher) as d:
            d.wait_log(r"warning: sendfile workers: 0 of 4 started: Resource temporarily unavailable; "
                       r"the event loop sends alone")
            d.wait_log(r"ready: 1 share, max_clients \d+, workers 1\b")
            assert workers_of(d.proc.pid) == 0
            assert sha256(fetch(port)) == file_sha256(big)
            assert d.wait_records(1)[0]["status"] == "acked"
            # the file asks for what it asked before: nothing to warn of
            # (a reload's load runs in a thread of its own)
            cg.allow()
            d.reload()
            d.wait_log(r"reloaded: 1 share")
            assert "takes a restart" not in d.log()


def test_large_files_are_sent_uncorked_small_ones_corked(tmp):
    """The listener's TCP_CORK (a small file leaves in one packet with its
    FIN) is taken off a large file's socket once, at its start: corked,
    large transfers cost the daemon about twice the CPU per GiB.  A file
    of 16 MiB or more also gets a low-water mark for unsent bytes then;
    a smaller one is still queued whole."""
    small = make_file(os.path.join(tmp, "small"), 4096)
    big = make_file(os.path.join(tmp, "big"), 4 * MIB)
    huge = make_file(os.path.join(tmp, "huge"), 16 * MIB)
    ps, pb, ph = free_port(), free_port(), free_port()
    shares = {"small": {"listen": "127.0.0.1:%d" % ps, "file": small},
              "big": {"listen": "127.0.0.1:%d" % pb, "file": big},
              "huge": {"listen": "127.0.0.1:%d" % ph, "file": huge}}
    trace = os.path.join(tmp, "trace")
    uncork = r"setsockopt\(\d+, SOL_TCP, TCP_CORK, \[0\], 4\) = 0"
    lowat = r"setsockopt\(\d+, SOL_TCP, TCP_NOTSENT_LOWAT, \[1048576\], 4\) = 0"
    with Daemon(tmp, shares) as d:
        st = strace_attach(d.proc.pid, "-f", "-e", "trace=setsockopt", "-e", "signal=none", "-o", trace)
        try:
            for _ in range(3):
                assert fetch(ps) == open(small, "rb").read()
            small_calls = open(trace).read()
            for _ in range(2):
                assert sha256(fetch(pb)) == file_sha256(big)
            d.wait_records(5)
            big_calls = open(trace).read()[len(small_calls):]
            for _ in range(2):
                assert sha256(fetch(ph)) == file_sha256(huge)
            d.wait_records(7)
        finally:
            st.terminate()
            st.wait(10)
        huge_calls = open(trace).read()[len(small_calls) + len(big_calls):]
        assert "TCP_CORK" not in small_calls and "TCP_NOTSENT_LOWAT" not in small_calls, small_calls
        assert len(re.findall(uncork, big_calls)) == 2 and "TCP_NOTSENT_LOWAT" not in big_calls, big_calls
        assert len(re.findall(uncork, huge_calls)) == 2 and len(re.findall(lowat, huge_calls)) == 2, huge_calls


def test_reload_keeps_the_number_of_workers_and_says_so(tmp):
    small = make_file(os.path.join(tmp, "small"), 1000)
    port, shares = one_share(small)
    with Daemon(tmp, shares, {"workers": "2"}) as d:
        d.write_config(shares, {"log": "stderr", "workers": "3"})
        d.reload()
        d.wait_log(r"warning: workers: still 2; a change of workers takes a restart")
        assert workers_of(d.proc.pid) == 2
        assert fetch(port) == open(small, "rb").read()


def test_bad_workers_values_are_refused_with_file_and_line(tmp):
    small = make_file(os.path.join(tmp, "small"), 1000)
    port, shares = one_share(small)
    for value in ("0", "65", "two", "-1", "2.5", ""):
        d = Daemon(tmp, shares, {"log": "stderr", "workers": value}, start=False)
        line = [n for n, l in enumerate(open(d.config), 1) if l.startswith("workers =")][0]
        r = subprocess.run([FDISTD, "-t", "-c", d.config], capture_output=True, text=True, timeout=10)
        assert r.returncode == 78, (value, r)
        assert re.search(r"%s:%d: workers: invalid value '%s' \(use auto, or a number from 1 to 64\)"
                         % (re.escape(d.config), line, re.escape(value)), r.stderr), (value, r.stderr)
    d = Daemon(tmp, shares, {"log": "stderr", "workers": "auto"}, start=False)
    r = subprocess.run([FDISTD, "-t", "-v", "-c", d.config], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "\nworkers = auto\n" in r.stdout, r


if __name__ == "__main__":
    main(globals())
