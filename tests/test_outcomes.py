#!/usr/bin/env python3
"""Every outcome, each produced by a purposely misbehaving client."""

import os
import re
import socket
import time

from fdtest import (Daemon, connect, fetch, file_sha256, free_port,
                    linger_reset, main, make_file, parse_record, read_all,
                    sha256, strace_attach)

BIG = 64 * 1024 * 1024


def serve(tmp, size=1024 * 1024, **opts):
    path = make_file(os.path.join(tmp, "data"), size)
    port = free_port()
    share = {"listen": "127.0.0.1:%d" % port, "file": path}
    share.update(opts)
    return Daemon(tmp, {"s": share}), port, path


def test_never_acks_is_ack_timeout(tmp):
    d, port, path = serve(tmp, ack_timeout="300ms")
    with d:
        s = connect(port)
        assert sha256(read_all(s)) == file_sha256(path)
        t0 = time.monotonic()
        (rec,) = d.wait_records(1, timeout=5)
        waited = time.monotonic() - t0
        s.close()
        assert rec["status"] == "ack-timeout", rec
        assert "ack" not in rec
        assert rec["bytes"] == rec["size"]
        assert 0.2 < waited < 2.5, waited


def test_partial_ack_is_in_the_ack_timeout_record(tmp):
    """An ack never ended (no NUL, LF or FIN) is logged as far as it came."""
    d, port, path = serve(tmp, ack_timeout="300ms")
    with d:
        s = connect(port)
        assert sha256(read_all(s)) == file_sha256(path)
        s.sendall(b"Thank")
        (rec,) = d.wait_records(1, timeout=5)
        s.close()
        assert rec["status"] == "ack-timeout" and rec["ack"] == "Thank", rec


def test_empty_ack_is_acked(tmp):
    d, port, path = serve(tmp)
    with d:
        assert sha256(fetch(port, ack=b"\0")) == file_sha256(path)
        (rec,) = d.wait_records(1)
        assert rec["status"] == "acked" and rec["ack"] == "", rec


def test_close_without_ack_is_no_ack(tmp):
    d, port, path = serve(tmp)
    with d:
        assert sha256(fetch(port, ack=None)) == file_sha256(path)
        (rec,) = d.wait_records(1)
        assert rec["status"] == "no-ack" and "ack" not in rec, rec


def test_reset_mid_transfer_is_aborted(tmp):
    d, port, _ = serve(tmp, size=BIG)
    with d:
        s = connect(port)
        got = len(s.recv(65536))
        assert got > 0
        linger_reset(s)
        s.close()
        (rec,) = d.wait_records(1)
        assert rec["status"] == "aborted", rec
        assert int(rec["bytes"]) < BIG


def test_stalled_reader_is_send_timeout(tmp):
    d, port, _ = serve(tmp, size=BIG, send_timeout="400ms")
    with d:
        s = connect(port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        t0 = time.monotonic()
        (rec,) = d.wait_records(1, timeout=10)
        assert time.monotonic() - t0 < 5
        s.close()
        assert rec["status"] == "send-timeout", rec
        # bytes is what the client's TCP took, not what was queued
        assert 0 < int(rec["bytes"]) < 8 * 1024 * 1024, rec


def test_garbage_instead_of_ack_is_capped(tmp):
    d, port, path = serve(tmp, ack_max="64")
    junk = bytes((i * 7 + 1) % 256 for i in range(1 << 20)).replace(b"\n", b"x").replace(b"\0", b"y")
    with d:
        s = connect(port)
        assert sha256(read_all(s)) == file_sha256(path)
        s.sendall(junk)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(1) == b""   # the daemon read it all and closed cleanly
        s.close()
        (rec,) = d.wait_records(1)
        assert rec["status"] == "acked", rec
        # 64 bytes of input; every byte outside printable ASCII escaped
        assert len(rec["ack"]) <= 4 * 64
        assert all(0x20 <= ord(ch) < 0x7f for ch in rec["ack"]), rec["ack"]
        assert rec["ack"].startswith("\\x01\\x08\\x0f")
        lines = d.log().splitlines()
        assert all(re.match(r"^\d{4}-\d\d-\d\dT[\d:.]+Z (info|warning): ", l) for l in lines), lines
        assert sum(" transfer " in l for l in lines) == 1


def test_log_injection_is_escaped(tmp):
    d, port, _ = serve(tmp)
    evil = (b'ok\x1b[31m red\r\x7f"quote" \\back \xc2\x85 \xe2\x80\xa8 \xe2\x80\xae '
            b'\xff\xc0\xaf caf\xc3\xa9\0 after the NUL is not the ack')
    with d:
        fetch(port, ack=evil)
        fetch(port, ack="zero\u200bwidth \u200e\u200f\u061c\ufeff marks\n".encode())
        fetch(port, ack=b"first line\r\n2026-01-01T00:00:00Z info: transfer share=s status=acked ack=\"forged\"\n")
        recs = d.wait_records(3)
        assert len(recs) == 3
        acks = sorted(r["ack"] for r in recs)
        assert acks == sorted([
            'ok\\x1b[31m red\\r\\x7f\\"quote\\" \\\\back \\xc2\\x85 '
            '\\xe2\\x80\\xa8 \\xe2\\x80\\xae \\xff\\xc0\\xaf caf\\xc3\\xa9',
            "zero\\xe2\\x80\\x8bwidth \\xe2\\x80\\x8e\\xe2\\x80\\x8f\\xd8\\x9c\\xef\\xbb\\xbf marks",
            "first line"]), acks
        assert "forged" not in d.log()


def test_longest_ack_is_logged_whole_and_escaped(tmp):
    """ack_max = 64K of bytes that escape to four each: the stderr line is
    still whole (closing quote, the fields after the ack) and ASCII."""
    d, port, path = serve(tmp, size=5, ack_max="64K")
    digest = file_sha256(path)
    acks = [b"sha256=" + digest.encode() + b" " + b"\x01" * (65536 - 72),
            "\u00e9".encode() * 32768]
    with d:
        d.wait_log(r"sha256 [0-9a-f]{64}")   # else the claim's record waits
        for ack in acks:
            fetch(port, ack=ack)
        # whole lines only: a reader can catch a 260 KB write half done
        deadline = time.monotonic() + 10
        while True:
            with open(d.stderr_path, "rb") as f:
                raw = f.read()
            lines = [l for l in raw.split(b"\n")[:-1] if b" transfer " in l]
            if len(lines) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        recs = [parse_record(l.decode()) for l in lines]
        assert len(recs) == 2, raw[-300:]
    assert recs[0]["status"] == "acked" and recs[0].get("verified") == "yes", {k: v[:90] for k, v in recs[0].items()}
    assert recs[0]["ack"] == "sha256=" + digest + " " + "\\x01" * (65536 - 72), len(recs[0]["ack"])
    assert recs[1]["ack"] == "\\xc3\\xa9" * 32768, len(recs[1]["ack"])
    raw.decode("ascii")


def test_file_name_is_escaped_in_the_record(tmp):
    path = make_file(os.path.join(tmp, 'odd "name" \\ here'), 1000)
    port = free_port()
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        fetch(port)
        (rec,) = d.wait_records(1)
        assert rec["file"] == path.replace("\\", "\\\\").replace('"', '\\"'), rec["file"]


def test_file_name_is_escaped_in_every_log_line(tmp):
    """Not only the record: the share, sha256 and file-shrank lines name
    the file too, and none may carry its control bytes or bad UTF-8."""
    path = os.path.join(tmp, "img\x1b[31mRED\u202etxt\x7f")
    with open(path, "wb") as f:
        f.truncate(BIG)                  # more than any socket buffers
    port = free_port()
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        d.wait_log(r"sha256 [0-9a-f]{64}")
        s = connect(port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.recv(1)
        os.truncate(path, 1000)
        try:
            read_all(s, pause=0.01)
        except ConnectionResetError:
            pass
        s.close()
        # The loop sees the truncation (inotify) or sendfile() does.
        d.wait_log(r"file shrank|changed in place")
        with open(d.stderr_path, "rb") as f:
            raw = f.read()
    for line in raw.splitlines():
        assert not re.search(rb"[\x00-\x08\x0b-\x1f\x7f]", line), line
        line.decode("ascii")             # strict: printable ASCII only
    names = [l for l in raw.splitlines() if b"img\\x1b[31mRED" in l]
    assert len(names) >= 4, raw.decode(errors="replace")   # share, sha256, changed, record


def test_ack_sent_before_reading_counts(tmp):
    d, port, path = serve(tmp, size=8 * 1024 * 1024)
    with d:
        s = connect(port)
        s.sendall(b"early bird\n")
        assert sha256(read_all(s)) == file_sha256(path)
        s.close()
        (rec,) = d.wait_records(1)
        assert rec["status"] == "acked" and rec["ack"] == "early bird", rec


def test_ack_without_fin_is_read_at_the_deadline(tmp):
    """A client that sends its ack and keeps the connection open: the ack
    (shorter than ack_max, so no wake-up before) is read at ack_timeout."""
    d, port, path = serve(tmp, ack_timeout="800ms")
    with d:
        s = connect(port)
        assert sha256(read_all(s)) == file_sha256(path)
        eof = time.time()   # the daemon's ack wait began just before
        trace = os.path.join(tmp, "strace")
        st = strace_attach(d.proc.pid, "-ttt", "-e", "trace=read", "-o", trace)
        sent = time.time()
        s.sendall(b"Thank you\0")
        (rec,) = d.wait_records(1, timeout=5)
        st.terminate()
        st.wait(10)
        s.close()
        assert rec["status"] == "acked" and rec["ack"] == "Thank you", rec
        with open(trace) as f:
            (got,) = [float(line.split()[0]) for line in f if '"Thank you\\0"' in line]
        # read at the deadline, not when the ack came (attaching strace
        # takes part of the 800 ms, so the ack comes late in the wait)
        assert 0.6 < got - eof < 3, (got - eof, sent - eof)
        assert got - sent > 0.1, (got - eof, sent - eof)


def test_ack_then_reset_is_acked(tmp):
    """The ack, then a reset instead of a FIN: the ack still counts."""
    d, port, path = serve(tmp)
    with d:
        s = connect(port)
        assert sha256(read_all(s)) == file_sha256(path)
        s.sendall(b"got it\n")
        time.sleep(0.1)
        linger_reset(s)
        s.close()
        (rec,) = d.wait_records(1)
        assert rec["status"] == "acked" and rec["ack"] == "got it", rec


def test_half_closed_client_still_gets_whole_file(tmp):
    d, port, path = serve(tmp, size=8 * 1024 * 1024)
    with d:
        s = connect(port)
        s.sendall(b"sent first\0")
        s.shutdown(socket.SHUT_WR)
        assert sha256(read_all(s)) == file_sha256(path)
        s.close()
        (rec,) = d.wait_records(1)
        assert rec["status"] == "acked" and rec["ack"] == "sent first", rec


def test_file_shrinking_mid_transfer_is_file_changed(tmp):
    d, port, path = serve(tmp, size=BIG)
    with d:
        s = connect(port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        time.sleep(0.2)        # let the socket buffers fill
        os.truncate(path, 1024 * 1024)
        # the client must not see a clean EOF after part of the file
        try:
            read_all(s)
            raise AssertionError("a cut-short transfer ended with a clean EOF")
        except ConnectionResetError:
            pass
        s.close()
        (rec,) = d.wait_records(1)
        assert rec["status"] == "file-changed", rec
        assert int(rec["bytes"]) < BIG
        assert re.search(r"file shrank|changed in place", d.log())


def test_send_timeout_resets_rather_than_eof(tmp):
    d, port, _ = serve(tmp, size=BIG, send_timeout="300ms")
    with d:
        s = connect(port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        d.wait_records(1)
        try:
            read_all(s)
            raise AssertionError("a timed-out transfer ended with a clean EOF")
        except ConnectionResetError:
            pass
        s.close()


def test_slow_reader_behind_big_buffers_is_not_an_ack_timeout(tmp):
    """The ack deadline starts when the client's TCP has every byte, not
    when the last byte is queued: buffers can hold seconds of a slow read."""
    d, port, path = serve(tmp, size=8 * 1024 * 1024, ack_timeout="500ms")
    with d:
        s = connect(port)
        data = bytearray()
        t0 = time.monotonic()
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
            # about 4 MiB/s: two seconds for the file, four ack_timeouts
            ahead = len(data) / (4 << 20) - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        s.sendall(b"Thank you\0")
        s.close()
        assert sha256(bytes(data)) == file_sha256(path)
        (rec,) = d.wait_records(1)
        assert rec["status"] == "acked" and rec["bytes"] == rec["size"], rec


def test_reset_after_all_was_queued_is_aborted_with_delivered_bytes(tmp):
    size = 2 * 1024 * 1024           # fits in the socket buffers
    d, port, _ = serve(tmp, size=size)
    with d:
        s = connect(port)
        got = len(s.recv(65536))
        time.sleep(0.3)             # the daemon has queued it all by now
        linger_reset(s)
        s.close()
        (rec,) = d.wait_records(1)
        assert rec["status"] == "aborted", rec
        assert got <= int(rec["bytes"]) < size, rec



def test_reset_after_half_close_while_flushing_is_aborted_at_once(tmp):
    """A client that acks and half-closes first, then resets with the file
    still in the buffers (nc ... | head -c 4096): the daemon has stopped
    reading after that FIN, and must still see the reset at once, not at
    send_timeout."""
    size = 2 * 1024 * 1024           # fits in the socket buffers
    d, port, _ = serve(tmp, size=size, send_timeout="20s")
    with d:
        s = connect(port)
        s.sendall(b"thank you\n")
        s.shutdown(socket.SHUT_WR)
        got = len(s.recv(65536))
        # queued it all; its flush poll looks at 0.63 s, 1.27 s, 1.91 s
        # (doubling to 640 ms): a reset at 1.4 s is 0.5 s from the next
        time.sleep(1.4)
        linger_reset(s)
        s.close()
        t0 = time.monotonic()
        (rec,) = d.wait_records(1, timeout=15)
        waited = time.monotonic() - t0
        assert rec["status"] == "aborted", rec
        assert got <= int(rec["bytes"]) < size, rec
        assert rec["ack"] == "thank you", rec
        assert waited < 0.2, waited

def stop_with_a_stalled_client(tmp, shutdown_timeout):
    """Stop while a client stalls mid-file: its record, and how long the
    stop took."""
    path = make_file(os.path.join(tmp, "data"), BIG)
    port = free_port()
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": path}},
                {"shutdown_timeout": shutdown_timeout}) as d:
        s = connect(port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.recv(1)
        t0 = time.monotonic()
        assert d.stop() == 0
        took = time.monotonic() - t0
        s.close()
        (rec,) = d.records()
        return rec, took


def test_stop_ends_stalled_transfer_as_shutdown(tmp):
    rec, took = stop_with_a_stalled_client(tmp, "300ms")
    assert rec["status"] == "shutdown", rec
    assert took < 5, took


def test_stop_with_shutdown_timeout_0_does_not_wait(tmp):
    rec, took = stop_with_a_stalled_client(tmp, "0")
    assert rec["status"] == "shutdown", rec
    assert took < 1, took


def test_early_ack_is_kept_when_the_transfer_fails(tmp):
    """An ack shorter than ack_max waits unread in the socket
    (SO_RCVLOWAT); an ending that is not its FIN still reads and logs it:
    a reset mid-transfer, and a stop while the client holds on."""
    d, port, _ = serve(tmp, size=BIG)
    with d:
        s = connect(port)
        s.sendall(b"early\n")
        assert s.recv(65536)
        time.sleep(0.1)
        linger_reset(s)
        s.close()
        (rec,) = d.wait_records(1)
        assert rec["status"] == "aborted" and rec.get("ack") == "early", rec
    tmp2 = os.path.join(tmp, "second")
    os.mkdir(tmp2)
    path = make_file(os.path.join(tmp2, "small"), 1000)
    port = free_port()
    with Daemon(tmp2, {"h": {"listen": "127.0.0.1:%d" % port, "file": path}},
                {"shutdown_timeout": "300ms"}) as d2:
        s = connect(port)
        assert len(read_all(s)) == 1000
        s.sendall(b"Thank you\0")
        time.sleep(0.2)
        assert d2.stop() == 0
        s.close()
        recs = [r for r in d2.records() if r["share"] == "h"]
        assert len(recs) == 1 and recs[0]["status"] == "shutdown", recs
        assert recs[0].get("ack") == "Thank you", recs

if __name__ == "__main__":
    main(globals())
