#!/usr/bin/env python3
"""Socket activation: sockets passed by the service manager, matched to
shares by name or address; the mismatch errors; systemd-socket-activate."""

import os
import subprocess
import sys
import time

from fdtest import (FDISTD, Daemon, NotifySocket, connect, fetch, file_sha256,
                    free_port, main, make_file, need, read_all, sha256)

ACTIVATE = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "activate.py")]


def launcher(*specs):
    return ACTIVATE + list(specs) + ["--"]


def run_activated(tmp, shares, *specs):
    """Run the daemon expecting it to fail at start; return (rc, stderr)."""
    d = Daemon(tmp, shares, start=False, launcher=launcher(*specs))
    with open(d.config) as f:
        cfg = f.read()
    out = subprocess.run(launcher(*specs) + [FDISTD, "-c", d.config], capture_output=True, timeout=20,
                         env=dict(os.environ, NOTIFY_SOCKET=""))
    return out.returncode, out.stderr.decode(), cfg


def test_sockets_matched_by_name_and_by_address(tmp):
    a = make_file(os.path.join(tmp, "a"), 300000, seed=1)
    b = make_file(os.path.join(tmp, "b"), 200000, seed=2)
    p1, p2 = free_port(), free_port()
    shares = {
        # configured elsewhere, but the socket named "alpha" is its
        "alpha": {"listen": "127.0.0.9:%d" % free_port(), "file": a},
        # no socket name of a share: matched by its bound address
        "beta": {"listen": "[::1]:%d" % p2, "file": b},
    }
    with Daemon(tmp, shares, launcher=launcher("127.0.0.1:%d=alpha" % p1, "[::1]:%d=fdistd.socket" % p2)) as d:
        assert sha256(fetch(p1)) == file_sha256(a)
        assert sha256(fetch(p2, host="::1")) == file_sha256(b)
        recs = d.wait_records(2)
        assert sorted(r["share"] for r in recs) == ["alpha", "beta"]
        assert "socket activation: 2 sockets passed by the service manager" in d.log()
        # the daemon bound nothing of its own: alpha's configured address is not served
        assert "share [alpha]: %s (300000 bytes) on 127.0.0.1:%d\n" % (a, p1) in d.log()
        assert "127.0.0.9" not in d.log()
        # a reload keeps the inherited sockets
        d.reload()
        assert sha256(fetch(p1)) == file_sha256(a)


def test_socket_matching_no_share_is_a_start_error(tmp):
    f = make_file(os.path.join(tmp, "f"), 10)
    p1, p2 = free_port(), free_port()
    rc, err, _ = run_activated(tmp, {"s": {"listen": "127.0.0.1:%d" % p1, "file": f}},
                               "127.0.0.1:%d=s" % p1, "127.0.0.1:%d=stray" % p2)
    assert rc == 78     # the file and the socket units disagree: no restart mends it
    assert ("socket 'stray' on 127.0.0.1:%d passed by the service manager matches no share "
            "(bind it to a share's listen address, or set FileDescriptorName= to a share's name)" % p2) in err, err


def test_share_without_socket_is_a_start_error(tmp):
    f = make_file(os.path.join(tmp, "f"), 10)
    p1, p2 = free_port(), free_port()
    rc, err, _ = run_activated(tmp, {"s": {"listen": "127.0.0.1:%d" % p1, "file": f},
                                     "lonely": {"listen": "127.0.0.1:%d" % p2, "file": f}},
                               "127.0.0.1:%d=x" % p1)
    assert rc == 78
    assert ("share [lonely] has no socket: none passed by the service manager is bound to its "
            "listen addresses or named 'lonely'") in err, err


def test_datagram_socket_is_refused(tmp):
    f = make_file(os.path.join(tmp, "f"), 10)
    p1 = free_port()
    rc, err, _ = run_activated(tmp, {"s": {"listen": "127.0.0.1:%d" % p1, "file": f}},
                               "127.0.0.1:%d=s" % p1, "--udp", "dgram")
    assert rc == 1
    assert "socket 4 (dgram) passed by the service manager is not a listening TCP socket" in err, err


def test_reload_that_would_orphan_a_socket_is_refused(tmp):
    f = make_file(os.path.join(tmp, "f"), 1000)
    p1, p2 = free_port(), free_port()
    shares = {"a": {"listen": "127.0.0.1:%d" % p1, "file": f},
              "b": {"listen": "127.0.0.1:%d" % p2, "file": f}}
    with Daemon(tmp, shares, launcher=launcher("127.0.0.1:%d=a" % p1, "127.0.0.1:%d=b" % p2)) as d:
        d.write_config({"a": shares["a"]})
        d.reload()
        d.wait_log(r"reload failed, still serving the previous configuration: socket 'b' on 127\.0\.0\.1:%d "
                   r"passed by the service manager matches no share" % p2)
        assert len(fetch(p2)) == 1000


def test_systemd_socket_activate_two_named_sockets(tmp):
    tool = need("systemd-socket-activate")
    a = make_file(os.path.join(tmp, "a"), 123456, seed=3)
    b = make_file(os.path.join(tmp, "b"), 654321, seed=4)
    p1, p2 = free_port(), free_port()
    d = Daemon(tmp, {"iso": {"listen": "127.0.0.1:%d" % p1, "file": a},
                     "img": {"listen": "127.0.0.1:%d" % p2, "file": b}}, start=False)
    notify = NotifySocket(os.path.join(tmp, "notify.sock"))
    log = open(d.stderr_path, "wb")
    proc = subprocess.Popen([tool, "-l", "127.0.0.1:%d" % p1, "-l", "127.0.0.1:%d" % p2,
                             "--fdname=iso:img", "-E", "NOTIFY_SOCKET=" + notify.path,
                             FDISTD, "-c", d.config], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:  # the tool listens first; connect once it does
            try:
                s = connect(p2, timeout=10)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        data = read_all(s)
        s.sendall(b"Thank you\0")
        s.close()
        assert sha256(data) == file_sha256(b)
        notify.wait_for(lambda m: "READY=1" in m.split("\n"))
        assert sha256(fetch(p1)) == file_sha256(a)
        d.proc = proc
        recs = d.wait_records(2)
        assert sorted((r["share"], r["status"]) for r in recs) == [("img", "acked"), ("iso", "acked")]
    finally:
        proc.terminate()
        rc = proc.wait(15)
        log.close()
        notify.close()
    assert rc == 0, d.log()
    d.check_sanitizers()


if __name__ == "__main__":
    main(globals())
