#!/usr/bin/env python3
"""Transfers: byte-exact delivery, the ack record, many clients at once."""

import os
import re
import socket
import subprocess
import threading
import time

from fdtest import (Daemon, connect, fetch, file_sha256, free_port, main,
                    make_file, read_all, sha256, strace_attach)

SEED_CLIENT = os.environ.get("SEED_CLIENT", "build/tests/file_client")


def seed_like_fetch(port):
    """What the textbook client does: blocking 30-byte reads, then the ack."""
    s = connect(port)
    data = read_all(s, chunk=30)
    s.sendall(b"Thank you\0")
    s.close()
    return data


def test_seed_like_client_gets_file_and_acked_record(tmp):
    path = make_file(os.path.join(tmp, "data"), 300 * 1024 + 7)
    port = free_port()
    with Daemon(tmp, {"seed": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        data = seed_like_fetch(port)
        assert sha256(data) == file_sha256(path)
        (rec,) = d.wait_records(1)
        assert rec["status"] == "acked", rec
        assert rec["ack"] == "Thank you", rec
        assert rec["share"] == "seed" and rec["file"] == path
        assert rec["bytes"] == rec["size"] == str(os.path.getsize(path))
        assert rec["peer"].startswith("127.0.0.1:")
        assert d.stop() == 0


def test_textbook_client_binary_unchanged(tmp):
    """The seed's own file_client.c, compiled as it is, is the reference peer."""
    path = make_file(os.path.join(tmp, "data"), 1024 * 1024 + 3)
    port = free_port()
    work = os.path.join(tmp, "client")
    os.mkdir(work)
    with Daemon(tmp, {"book": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        out = subprocess.run([os.path.abspath(SEED_CLIENT), "127.0.0.1", str(port)], cwd=work,
                             capture_output=True, timeout=30)
        assert out.returncode == 0, out
        assert b"Received file data" in out.stdout
        assert file_sha256(os.path.join(work, "receive.dat")) == file_sha256(path)
        (rec,) = d.wait_records(1)
        assert rec["status"] == "acked" and rec["ack"] == "Thank you", rec


def test_ack_then_fin_costs_one_read(tmp):
    """The daemon is woken for the ack when it is complete (FIN), not per
    segment: an ack and a FIN 300 ms apart cost the daemon one read()."""
    path = make_file(os.path.join(tmp, "data"), 4096)
    port = free_port()
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        s = connect(port)
        while s.recv(65536):
            pass
        trace = os.path.join(tmp, "strace")
        st = strace_attach(d.proc.pid, "-e", "trace=read", "-o", trace)
        s.sendall(b"Thank you")
        time.sleep(0.3)
        s.sendall(b"\0")
        time.sleep(0.3)
        s.close()
        (rec,) = d.wait_records(1)
        st.terminate()
        st.wait(10)
        assert rec["status"] == "acked" and rec["ack"] == "Thank you", rec
        with open(trace) as f:
            reads = [line for line in f if re.match(r"read\(\d+", line)]
        # the client's socket only: the digest worker may signal its fd too
        (ack,) = [line for line in reads if '"Thank you\\0"' in line]
        fd = re.match(r"read\((\d+)", ack).group(1)
        conn_reads = [line for line in reads if line.startswith("read(%s," % fd)]
        assert conn_reads == [ack], reads



def tcp_segs_in_and_state(s):
    """tcpi_segs_in and tcpi_state of a socket (struct tcp_info, linux/tcp.h)."""
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 144)
    return int.from_bytes(info[140:144], "little"), info[0]


def test_ack_and_fin_answered_by_one_packet(tmp):
    """The daemon delays its ACK of the ack text: the client's FIN follows
    at once, and one ACK answers both (a packet fewer per transfer)."""
    path = make_file(os.path.join(tmp, "data"), 4096)
    port = free_port()
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        counted = tries = 0
        while counted < 3:
            tries += 1
            assert tries <= 20, "never sent the ack and the FIN within 20 ms"
            s = connect(port)
            while s.recv(65536):
                pass
            before, _ = tcp_segs_in_and_state(s)
            t0 = time.monotonic()
            s.sendall(b"Thank you\0")
            s.shutdown(socket.SHUT_WR)
            gap = time.monotonic() - t0
            deadline = time.monotonic() + 10
            while tcp_segs_in_and_state(s)[1] != 7:  # TCP_CLOSE: our FIN is acked
                assert time.monotonic() < deadline, "FIN never acknowledged"
                time.sleep(0.001)
            after, _ = tcp_segs_in_and_state(s)
            s.close()
            # a client stalled past the kernel's delayed-ACK time (40 ms)
            # rightly gets an ACK of its ack first: not counted
            if gap < 0.02:
                assert after - before == 1, (before, after)
                counted += 1
        recs = d.wait_records(tries)
        assert [r["status"] for r in recs] == ["acked"] * tries, recs

def test_200_concurrent_clients_identical_bytes(tmp):
    path = make_file(os.path.join(tmp, "data"), 4 * 1024 * 1024 + 11)
    want = file_sha256(path)
    port = free_port()
    results = [None] * 200
    errors = []

    def client(i):
        try:
            results[i] = sha256(fetch(port, ack=b"ok %d\n" % i, timeout=60))
        except Exception as e:  # reported below
            errors.append(repr(e))

    with Daemon(tmp, {"many": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors[:5]
        assert all(r == want for r in results)
        recs = d.wait_records(200, timeout=60)
        assert len(recs) == 200
        assert all(r["status"] == "acked" for r in recs)
        assert sorted(r["ack"] for r in recs) == sorted("ok %d" % i for i in range(200))


def test_two_shares_on_two_ports_at_once(tmp):
    a = make_file(os.path.join(tmp, "a"), 2 * 1024 * 1024, seed=1)
    b = make_file(os.path.join(tmp, "b"), 3 * 1024 * 1024, seed=2)
    pa, pb = free_port(), free_port()
    shares = {"alpha": {"listen": "127.0.0.1:%d" % pa, "file": a},
              "beta": {"listen": "127.0.0.1:%d, [::1]:%d" % (pb, pb), "file": b}}
    got = {}
    with Daemon(tmp, shares) as d:
        ts = [threading.Thread(target=lambda k, p, h: got.__setitem__(k, fetch(p, host=h)), args=args)
              for args in (("a", pa, "127.0.0.1"), ("b4", pb, "127.0.0.1"), ("b6", pb, "::1"))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert sha256(got["a"]) == file_sha256(a)
        assert sha256(got["b4"]) == sha256(got["b6"]) == file_sha256(b)
        recs = d.wait_records(3)
        assert sorted(r["share"] for r in recs) == ["alpha", "beta", "beta"]
        assert any(r["peer"].startswith("[::1]:") for r in recs)


def test_empty_file(tmp):
    path = os.path.join(tmp, "empty")
    open(path, "w").close()
    port = free_port()
    with Daemon(tmp, {"empty": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        assert fetch(port) == b""
        (rec,) = d.wait_records(1)
        assert rec["status"] == "acked" and rec["bytes"] == "0" and rec["size"] == "0", rec


def test_sparse_file_over_4gib(tmp):
    path = os.path.join(tmp, "big")
    size = (4 << 30) + 12345
    marks = {0: b"head", (1 << 32) - 2: b"edge", (1 << 32) + 100: b"past", size - 4: b"tail"}
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in marks.items():
            f.seek(off)
            f.write(data)
    port = free_port()
    with Daemon(tmp, {"big": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        s = connect(port, timeout=60)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        total = 0
        seen = {}
        buf = bytearray(4 << 20)
        view = memoryview(buf)
        while True:
            n = s.recv_into(view)
            if n == 0:
                break
            for off, data in marks.items():
                lo, hi = max(off, total), min(off + len(data), total + n)
                if lo < hi:
                    seen.setdefault(off, bytearray(len(data)))[lo - off:hi - off] = buf[lo - total:hi - total]
            total += n
        s.sendall(b"Thank you\0")
        s.close()
        assert total == size, total
        assert {k: bytes(v) for k, v in seen.items()} == marks
        (rec,) = d.wait_records(1, timeout=30)
        assert rec["status"] == "acked" and rec["bytes"] == str(size), rec


if __name__ == "__main__":
    main(globals())
