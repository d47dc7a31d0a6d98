#!/usr/bin/env python3
"""fdist-fetch against the real daemon, and the daemon's check of every
digest an ack claims."""

import os
import signal
import socket
import subprocess
import threading
import time

from fdtest import (Daemon, connect, fetch, file_sha256, free_port, main,
                    make_file, read_all, sha256)

FETCH = os.environ.get("FDIST_FETCH", "build/fdist-fetch")


def run_fetch(*args, timeout=60):
    return subprocess.run([FETCH, "-q"] + list(args), capture_output=True, timeout=timeout)


def serve(tmp, size, **opts):
    path = make_file(os.path.join(tmp, "data"), size)
    port = free_port()
    share = {"listen": "127.0.0.1:%d, [::1]:%d" % (port, port), "file": path}
    share.update(opts)
    return Daemon(tmp, {"v": share}), port, path


def test_fetch_gets_identical_bytes_and_a_verified_record(tmp):
    d, port, path = serve(tmp, 5 * 1024 * 1024 + 1)
    want = file_sha256(path)
    out = os.path.join(tmp, "got.img")
    with d:
        d.wait_log(r"sha256 %s" % want)     # the digest is logged when ready
        r = run_fetch("-o", out, "--ack", "host-7", "127.0.0.1:%d" % port)
        assert r.returncode == 0, r
        assert file_sha256(out) == want
        assert not os.path.exists(out + ".part")
        (rec,) = d.wait_records(1)
        assert rec["status"] == "acked", rec
        assert rec["verified"] == "yes" and rec["sha256"] == want, rec
        assert rec["ack"] == "Thank you sha256=%s host=%s host-7" % (want, socket.gethostname())


def test_fetch_to_stdout(tmp):
    d, port, path = serve(tmp, 777777)
    with d:
        d.wait_log(r"sha256 ")
        r = run_fetch("-o", "-", "[::1]:%d" % port)
        assert r.returncode == 0
        assert sha256(r.stdout) == file_sha256(path)
        (rec,) = d.wait_records(1)
        assert rec["verified"] == "yes"


def test_expect_sha256_wrong_fails_and_daemon_logs_mismatch(tmp):
    d, port, path = serve(tmp, 100000)
    out = os.path.join(tmp, "got")
    with d:
        d.wait_log(r"sha256 ")
        r = run_fetch("-o", out, "--expect-sha256", "0" * 64, "127.0.0.1:%d" % port)
        assert r.returncode == 5, r
        assert not os.path.exists(out) and not os.path.exists(out + ".part")
        (rec,) = d.wait_records(1)
        # rejected by the client; its copy was the file, as verified= says
        assert rec["status"] == "ack-mismatch", rec
        assert rec["verified"] == "yes" and rec["sha256"] == file_sha256(path)
        assert rec["ack"] == "sha256-mismatch sha256=%s expected=%s host=%s" % (
            file_sha256(path), "0" * 64, socket.gethostname())


def test_file_written_in_place_mid_transfer_is_reset_not_a_damaged_copy(tmp):
    """The file is written in place mid-transfer (fdistd(8) CAVEATS): the
    client must not get the mixed bytes with a clean end, but a reset; it
    saves nothing, and the record says file-changed."""
    path = make_file(os.path.join(tmp, "data"), 300000)
    want = file_sha256(path)
    port = free_port()
    out = os.path.join(tmp, "got")
    with Daemon(tmp, {"v": {"listen": "127.0.0.1:%d" % port, "file": path,
                            "rate_limit": "100K"}}) as d:
        d.wait_log(r"sha256 ")
        p = subprocess.Popen([FETCH, "-q", "-o", out, "--expect-sha256", want,
                              "127.0.0.1:%d" % port],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.5)
        with open(path, "r+b") as f:
            f.seek(299000)
            f.write(b"XXXXXXXX")
        _, err = p.communicate(timeout=30)
        assert p.returncode == 3 and b"reset" in err, (p.returncode, err)
        assert not os.path.exists(out) and not os.path.exists(out + ".part")
        (rec,) = d.wait_records(1)
        assert rec["status"] == "file-changed", rec
        assert int(rec["bytes"]) < 300000, rec


def test_client_claiming_a_wrong_digest_is_ack_mismatch(tmp):
    d, port, path = serve(tmp, 4096)
    with d:
        d.wait_log(r"sha256 ")
        fetch(port, ack=b"Thank you sha256=" + b"ab" * 32 + b"\n")
        fetch(port, ack=b"Thank you sha256=" + file_sha256(path).upper().encode() + b"\n")
        fetch(port, ack=b"Thank you\0")                 # the textbook ack: no check
        fetch(port, ack=b"sha256=" + b"a" * 63 + b"\n")  # not a claim: too short
        fetch(port, ack=b"sha256-mismatch\n")            # a rejection, no claim
        fetch(port, ack=b"sha256-mismatched\n")          # not a rejection
        recs = d.wait_records(6)
        by_ack = {r["ack"]: (r["status"], r.get("verified")) for r in recs}
        assert by_ack == {
            "Thank you sha256=" + "ab" * 32: ("ack-mismatch", "no"),
            "Thank you sha256=" + file_sha256(path).upper(): ("acked", "yes"),
            "Thank you": ("acked", None),
            "sha256=" + "a" * 63: ("acked", None),
            "sha256-mismatch": ("ack-mismatch", None),
            "sha256-mismatched": ("acked", None)}, recs


def test_reset_mid_transfer_leaves_no_file_and_no_ack(tmp):
    # a sparse 4 GiB file takes seconds to send; a double SIGTERM ends it
    path = os.path.join(tmp, "big")
    with open(path, "wb") as f:
        f.truncate(4 << 30)
    port = free_port()
    out = os.path.join(tmp, "got")
    with open(out, "wb") as f:
        f.write(b"the previous version")
    with Daemon(tmp, {"v": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        p = subprocess.Popen([FETCH, "-q", "-o", out, "127.0.0.1:%d" % port],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not os.path.exists(out + ".part") or os.path.getsize(out + ".part") < (64 << 20):
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.01)
        d.signal(signal.SIGTERM)
        d.wait_log(r"stopping: 1 transfer in flight")   # signals do not queue:
        d.signal(signal.SIGTERM)                         # the second after the first
        _, err = p.communicate(timeout=30)
        assert p.returncode == 3, (p.returncode, err)
        with open(out, "rb") as f:
            assert f.read() == b"the previous version"
        assert not os.path.exists(out + ".part")
        assert d.proc.wait(15) == 0
        (rec,) = d.records()
        assert rec["status"] == "shutdown" and "ack" not in rec, rec


def test_replaced_file_old_clients_verified_against_old_digest(tmp):
    live = os.path.join(tmp, "live")
    make_file(live, 32 * 1024 * 1024, seed=1)
    old_sum = file_sha256(live)
    new = make_file(os.path.join(tmp, "new"), 1024 * 1024, seed=2)
    new_sum = file_sha256(new)
    port = free_port()
    with Daemon(tmp, {"v": {"listen": "127.0.0.1:%d" % port, "file": live}}) as d:
        d.wait_log(r"sha256 %s" % old_sum)
        s = connect(port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        first = s.recv(1)
        os.rename(new, live)
        d.reload()
        d.wait_log(r"sha256 %s" % new_sum)
        r = run_fetch("-o", "-", "127.0.0.1:%d" % port)
        assert sha256(r.stdout) == new_sum
        data = read_all(s, first)
        s.sendall(b"Thank you sha256=" + sha256(data).encode() + b"\n")
        s.close()
        recs = d.wait_records(2)
        assert [(r["verified"], r["sha256"]) for r in recs] == [("yes", new_sum), ("yes", old_sum)], recs


def test_claim_verified_even_when_the_transfer_beats_the_hash(tmp):
    """A client may finish before the worker has hashed a big file: its
    record waits for the digest instead of going unverified."""
    path = os.path.join(tmp, "big")
    with open(path, "wb") as f:
        f.truncate(3 << 30)
        f.seek(5)
        f.write(b"x")
    port = free_port()
    digest = file_sha256(path)
    with Daemon(tmp, {"v": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        s = connect(port)
        s.sendall(b"Thank you sha256=" + digest.encode() + b"\n")   # ack first, then read
        buf = bytearray(4 << 20)
        total = 0
        while True:
            n = s.recv_into(buf)
            if not n:
                break
            total += n
        s.close()
        assert total == 3 << 30
        (rec,) = d.wait_records(1, timeout=60)
        assert rec["status"] == "acked" and rec["verified"] == "yes" and rec["sha256"] == digest, rec


if __name__ == "__main__":
    main(globals())
