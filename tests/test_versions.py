#!/usr/bin/env python3
"""Which version of a share's file each client got: FDIST_VERSION and
FDIST_FILE_SHA256 in every transfer record, the digest record of each
share, and the client's host id (FDIST_HOST_ID), read back from a real,
private systemd-journald (test_journal's namespace) and from stderr.
"""

import hashlib
import os
import socket
import subprocess
import time

from fdtest import (Daemon, NoThreads, connect, fetch, file_sha256, free_port, linger_reset,
                    make_file, parse_record)
from test_journal import TRANSFER_ID, journal, journal_main

DIGEST_ID = "20aedb80c2af4366ad3a62a516409ae1"
FETCH = os.environ.get("FDIST_FETCH", "build/fdist-fetch")


def version_of(path):
    """FDIST_VERSION as fdistd(8) defines it, from stat(2)."""
    st = os.stat(path)
    return "%x-%x-%x-%x" % (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def transfers(d, *match, want=1, timeout=20):
    """The transfer records of daemon d (the journal is the module's)."""
    return journal("_PID=%d" % d.proc.pid, "MESSAGE_ID=" + TRANSFER_ID, *match, want=want,
                   timeout=timeout)


def digests(d, *match, want=1, timeout=20, state="known"):
    """Digest records of daemon d whose digest is known (FDIST_FILE_SHA256),
    pending or failed (FDIST_DIGEST), or of any state (None)."""
    deadline = time.monotonic() + timeout
    while True:
        recs = journal("_PID=%d" % d.proc.pid, "MESSAGE_ID=" + DIGEST_ID, *match, timeout=0)
        recs = [r for r in recs if state is None or
                r.get("FDIST_DIGEST", "known" if "FDIST_FILE_SHA256" in r else None) == state]
        if len(recs) >= want or time.monotonic() > deadline:
            return recs
        time.sleep(0.05)


def sparse(path, size):
    """A file of size zero bytes that takes no disk: hashing it takes
    seconds; returns its version."""
    with open(path, "wb") as f:
        f.truncate(size)
    return version_of(path)


def check_pending(rec, share, path, size):
    """rec is the record of share starting to serve path, before its digest."""
    assert rec["FDIST_SHARE"] == share and rec["FDIST_VERSION"] == version_of(path), rec
    assert rec["FDIST_DIGEST"] == "pending" and "FDIST_FILE_SHA256" not in rec, rec
    assert rec["FDIST_FILE"] == path and rec["FDIST_SIZE"] == str(size), rec
    assert rec["PRIORITY"] == "6" and rec["MESSAGE"].endswith(", sha256 pending"), rec


def hash_lines(d):
    """How many times daemon d has hashed a file (its info line)."""
    return sum(": sha256 " in r.get("MESSAGE", "") and "MESSAGE_ID" not in r
               for r in journal("_PID=%d" % d.proc.pid, timeout=0))


def run_fetch(*args, timeout=60):
    return subprocess.run([FETCH, "-q", *args], capture_output=True, timeout=timeout)


def test_every_record_names_the_version_and_digest(tmp):
    """Acked, no-ack and refused clients all get FDIST_VERSION, and
    FDIST_FILE_SHA256 once the digest is known; the digest record has the
    same version; a restart keeps the version of the unchanged file."""
    path = make_file(os.path.join(tmp, "data"), 300000)
    want_sum, want_ver = file_sha256(path), version_of(path)
    port, dport = free_port(), free_port()
    shares = {"open": {"listen": "127.0.0.1:%d" % port, "file": path},
              "shut": {"listen": "127.0.0.1:%d" % dport, "file": path, "deny": "127.0.0.1"}}
    with Daemon(tmp, shares, {"log": "journal"}) as d:
        recs = digests(d, want=2)
        assert sorted(r["FDIST_SHARE"] for r in recs) == ["open", "shut"], recs
        for r in recs:
            assert r["FDIST_VERSION"] == want_ver, (r, want_ver)
            assert r["FDIST_FILE_SHA256"] == want_sum, r
            assert r["FDIST_FILE"] == path and r["FDIST_SIZE"] == "300000", r
            assert r["PRIORITY"] == "6" and r["SYSLOG_IDENTIFIER"] == "fdistd", r
            assert want_sum in r["MESSAGE"] and want_ver in r["MESSAGE"], r
            assert "FDIST_DIGEST" not in r, r
        # at start-up, before the digest: a record per share saying it is pending
        recs = digests(d, state=None, want=4)
        assert [r.get("FDIST_DIGEST") for r in recs] == ["pending", "pending", None, None], recs
        assert sorted(r["FDIST_SHARE"] for r in recs[:2]) == ["open", "shut"], recs
        for r in recs[:2]:
            check_pending(r, r["FDIST_SHARE"], path, 300000)
        fetch(port)
        fetch(port, ack=None)
        try:
            with socket.create_connection(("127.0.0.1", dport), timeout=10) as s:
                assert s.recv(10) == b""
        except ConnectionResetError:
            pass
        recs = transfers(d, want=3)
        assert sorted(r["FDIST_STATUS"] for r in recs) == ["acked", "denied", "no-ack"], recs
        for r in recs:
            assert r["FDIST_VERSION"] == want_ver, r
            assert r["FDIST_FILE_SHA256"] == want_sum, r
            assert "FDIST_SHA256" not in r and "FDIST_VERIFIED" not in r, r   # no claim
            assert "FDIST_HOST_ID" not in r, r
    again = os.path.join(tmp, "again")
    os.mkdir(again)
    with Daemon(again, shares, {"log": "journal"}) as d:
        fetch(port)
        (rec,) = transfers(d)
        assert rec["FDIST_VERSION"] == want_ver, rec


def test_record_while_hashing_joins_the_digest_record(tmp):
    """A client that ends while the digest is pending gets a record
    without FDIST_FILE_SHA256; the digest record written later has the
    same FDIST_VERSION, and the digest of the file."""
    path = os.path.join(tmp, "big.img")
    want_ver = sparse(path, 4 << 30)
    port = free_port()
    with Daemon(tmp, {"big": {"listen": "127.0.0.1:%d" % port, "file": path}},
                {"log": "journal"}) as d:
        s = connect(port)
        assert s.recv(65536)
        linger_reset(s)
        s.close()
        (rec,) = transfers(d, "FDIST_STATUS=aborted")
        assert rec["FDIST_VERSION"] == want_ver, rec
        assert "FDIST_FILE_SHA256" not in rec, rec
        assert not digests(d, timeout=0), "the digest was known before the record"
        (pending,) = digests(d, state="pending", timeout=0)
        check_pending(pending, "big", path, 4 << 30)
        assert int(pending["__MONOTONIC_TIMESTAMP"]) < int(rec["__MONOTONIC_TIMESTAMP"])
        (dig,) = digests(d, timeout=300)
        assert dig["FDIST_VERSION"] == rec["FDIST_VERSION"], (dig, rec)
        assert dig["FDIST_SHARE"] == "big" and dig["FDIST_SIZE"] == str(4 << 30), dig
        h = hashlib.sha256()
        zeros = bytes(1 << 20)
        for _ in range(4 << 10):
            h.update(zeros)
        assert dig["FDIST_FILE_SHA256"] == h.hexdigest(), dig
        assert int(dig["__MONOTONIC_TIMESTAMP"]) > int(rec["__MONOTONIC_TIMESTAMP"])


def test_reload_that_swaps_the_file(tmp):
    """A file renamed over the served one and a reload: a new version and
    a new digest record.  A reload that keeps the file writes none; one
    that moves a share to a file hashed already writes one at once."""
    path = make_file(os.path.join(tmp, "data"), 100000, seed=1)
    other = make_file(os.path.join(tmp, "other"), 50000, seed=3)
    old_sum, old_ver = file_sha256(path), version_of(path)
    port, oport = free_port(), free_port()
    shares = {"s": {"listen": "127.0.0.1:%d" % port, "file": path},
              "o": {"listen": "127.0.0.1:%d" % oport, "file": other}}
    with Daemon(tmp, shares, {"log": "journal"}) as d:
        digests(d, "FDIST_SHARE=s")
        digests(d, "FDIST_SHARE=o")
        fetch(port)
        d.reload()                  # nothing changed: no digest record
        fetch(port)
        recs = transfers(d, "FDIST_SHARE=s", want=2)
        assert [r["FDIST_VERSION"] for r in recs] == [old_ver, old_ver], recs
        assert len(digests(d, "FDIST_SHARE=s", timeout=0, state=None)) == 2   # pending, known
        make_file(path + ".new", 100001, seed=2)
        os.rename(path + ".new", path)
        new_sum, new_ver = file_sha256(path), version_of(path)
        assert new_ver != old_ver
        d.reload()
        recs = digests(d, "FDIST_SHARE=s", want=2)
        assert len(recs) == 2, recs
        assert recs[0]["FDIST_VERSION"] == old_ver and recs[0]["FDIST_FILE_SHA256"] == old_sum
        assert recs[1]["FDIST_VERSION"] == new_ver and recs[1]["FDIST_FILE_SHA256"] == new_sum
        recs = digests(d, "FDIST_SHARE=s", want=4, state=None)
        assert [(r["FDIST_VERSION"], r.get("FDIST_DIGEST")) for r in recs] == [
            (old_ver, "pending"), (old_ver, None), (new_ver, "pending"), (new_ver, None)], recs
        fetch(port)
        recs = transfers(d, "FDIST_SHARE=s", want=3)
        assert recs[-1]["FDIST_VERSION"] == new_ver, recs
        assert recs[-1]["FDIST_FILE_SHA256"] == new_sum, recs
        # share s now serves o's file, already hashed: no hashing, a record
        hashed = hash_lines(d)
        shares["s"]["file"] = other
        d.write_config(shares)
        d.reload()
        recs = digests(d, "FDIST_SHARE=s", want=3, timeout=10)
        assert len(recs) == 3, recs
        assert recs[2]["FDIST_VERSION"] == version_of(other), recs
        assert recs[2]["FDIST_FILE_SHA256"] == file_sha256(other), recs
        assert len(digests(d, "FDIST_SHARE=o", timeout=0, state=None)) == 2
        assert hash_lines(d) == hashed, "the file was hashed again"
        # its digest known, the share's one record of it says so: none pending
        recs = digests(d, "FDIST_SHARE=s", want=5, timeout=2, state=None)
        assert len(recs) == 5 and "FDIST_DIGEST" not in recs[4], recs


def test_reload_names_the_version_before_serving_it(tmp):
    """A reload that swaps in a file whose hash takes seconds writes the
    share's record of the new version, digest pending, before the share
    takes a client: a refused client's record, written as it is accepted,
    and an aborted one's come after it, and the digest long after."""
    path = make_file(os.path.join(tmp, "data"), 100000, seed=1)
    port = free_port()
    shares = {"r": {"listen": "127.0.0.1:%d" % port, "file": path, "deny": "127.0.0.9"}}
    with Daemon(tmp, shares, {"log": "journal"}) as d:
        digests(d, "FDIST_SHARE=r")
        new = os.path.join(tmp, "data.new")
        new_ver = sparse(new, 4 << 30)
        os.rename(new, path)
        d.reload()
        try:
            with connect(port, bind="127.0.0.9") as s:
                assert s.recv(10) == b""
        except ConnectionResetError:
            pass
        s = connect(port)
        assert s.recv(65536)
        linger_reset(s)
        s.close()
        recs = journal("_PID=%d" % d.proc.pid, "FDIST_SHARE=r", "FDIST_VERSION=" + new_ver, want=3)
        assert [(r["MESSAGE_ID"], r.get("FDIST_DIGEST") or r.get("FDIST_STATUS")) for r in recs] == [
            (DIGEST_ID, "pending"), (TRANSFER_ID, "denied"), (TRANSFER_ID, "aborted")], recs
        check_pending(recs[0], "r", path, 4 << 30)
        assert not digests(d, "FDIST_VERSION=" + new_ver, timeout=0), "hashed in no time"


def test_a_file_that_cannot_be_hashed_gets_a_failed_record(tmp):
    """The daemon in a pids cgroup of its own that allows no thread: the
    hash cannot start, and the share's record says so (FDIST_DIGEST=failed,
    a warning, no digest).  A reload once threads are allowed computes it
    again: pending again, then the digest."""
    with NoThreads("versions") as cg:
        path = make_file(os.path.join(tmp, "data"), 1000)
        ver = version_of(path)
        port = free_port()
        # A bracketed IPv6 address is numeric: no thread looks it up.
        with Daemon(tmp, {"f": {"listen": "[::1]:%d" % port, "file": path}}, {"log": "journal"},
                    launcher=cg.launcher) as d:
            (rec,) = digests(d, state="failed")
            assert rec["FDIST_VERSION"] == ver and rec["FDIST_SIZE"] == "1000", rec
            assert "FDIST_FILE_SHA256" not in rec and rec["PRIORITY"] == "4", rec
            assert rec["MESSAGE"].endswith(", sha256 failed"), rec
            cg.allow()
            d.reload()
            (known,) = digests(d)
            assert known["FDIST_FILE_SHA256"] == file_sha256(path), known
            recs = digests(d, state=None, want=3)
            assert [r.get("FDIST_DIGEST") for r in recs] == ["failed", "pending", None], recs
            assert all(r["FDIST_VERSION"] == ver for r in recs), recs


def test_fetch_names_its_host(tmp):
    """fdist-fetch's host id, the default (the host name), a given one,
    none, and in the mismatch ack too, reaches FDIST_HOST_ID."""
    path = make_file(os.path.join(tmp, "data"), 200000)
    port = free_port()
    out = os.path.join(tmp, "got")
    target = "127.0.0.1:%d" % port
    with Daemon(tmp, {"h": {"listen": target, "file": path}}, {"log": "journal"}) as d:
        digests(d, )
        r = run_fetch("-o", out, target)
        assert r.returncode == 0, r
        r = run_fetch("-o", out, "--host-id", "web-17", "--ack", "x" * 200, target)
        assert r.returncode == 0, r
        r = run_fetch("-o", out, "--host-id", "", target)
        assert r.returncode == 0, r
        r = run_fetch("-o", out, "--host-id", "a" * 64, "--expect-sha256", "0" * 64, target)
        assert r.returncode == 5, r
        recs = transfers(d, want=4)
        assert len(recs) == 4, recs
        assert recs[0]["FDIST_HOST_ID"] == socket.gethostname(), recs[0]
        assert recs[0]["FDIST_ACK"].endswith(" host=" + socket.gethostname()), recs[0]
        # before --ack's text: the default ack_max (256) keeps it
        assert recs[1]["FDIST_HOST_ID"] == "web-17", recs[1]
        assert recs[1]["FDIST_ACK"].startswith("Thank you sha256=%s host=web-17 xxx" % recs[1]["FDIST_SHA256"])
        assert "FDIST_HOST_ID" not in recs[2] and "host=" not in recs[2]["FDIST_ACK"], recs[2]
        assert recs[3]["FDIST_STATUS"] == "ack-mismatch", recs[3]
        assert recs[3]["FDIST_HOST_ID"] == "a" * 64, recs[3]
        for r in recs:
            assert r["FDIST_FILE_SHA256"] == file_sha256(path), r


def test_default_ack_max_keeps_what_the_page_says(tmp):
    """fdist-fetch(1): with a host id of n bytes, the default ack_max keeps
    168 - n bytes of --ack text, 88 - n after a mismatch, and the id; and
    fdistd.ini(5)'s least ack_max for a 64-byte id holds."""
    path = make_file(os.path.join(tmp, "data"), 1000)
    port = free_port()
    target = "127.0.0.1:%d" % port
    out = os.path.join(tmp, "got")
    host = "h" * 64
    with Daemon(tmp, {"m": {"listen": target, "file": path}}, {"log": "journal"}) as d:
        digests(d)
        for text, expect in (("t" * (168 - 64), ()), ("u" * (168 - 63), ()),
                             ("v" * (88 - 64), ("--expect-sha256", "0" * 64)),
                             ("w" * (88 - 63), ("--expect-sha256", "0" * 64))):
            r = run_fetch("-o", out, "--host-id", host, "--ack", text, *expect, target)
            assert r.returncode == (5 if expect else 0), r
        recs = transfers(d, want=4)
        assert [len(r["FDIST_ACK"]) for r in recs] == [256] * 4, recs
        assert recs[0]["FDIST_ACK"].endswith(" host=%s %s" % (host, "t" * 104)), recs[0]
        assert recs[1]["FDIST_ACK"].endswith(" host=%s %s" % (host, "u" * 104)), recs[1]
        assert recs[2]["FDIST_ACK"].endswith(" host=%s %s" % (host, "v" * 24)), recs[2]
        assert recs[3]["FDIST_ACK"].endswith(" host=%s %s" % (host, "w" * 24)), recs[3]
        assert all(r["FDIST_HOST_ID"] == host for r in recs), recs
    # fdistd.ini(5): the id of 64 bytes needs an ack_max above 151 (231)
    again = os.path.join(tmp, "again")
    os.mkdir(again)
    ports = [free_port() for _ in range(4)]
    shares = {"s%d" % m: {"listen": "127.0.0.1:%d" % p, "file": path, "ack_max": str(m)}
              for m, p in zip((152, 151, 232, 231), ports)}
    with Daemon(again, shares, {"log": "journal"}) as d:
        digests(d, want=4)
        for p, mismatch in zip(ports, (False, False, True, True)):
            expect = ("--expect-sha256", "0" * 64) if mismatch else ()
            r = run_fetch("-o", out, "--host-id", host, *expect, "127.0.0.1:%d" % p)
            assert r.returncode == (5 if mismatch else 0), r
        recs = {r["FDIST_SHARE"]: r for r in transfers(d, want=4)}
        assert recs["s152"]["FDIST_HOST_ID"] == host and recs["s232"]["FDIST_HOST_ID"] == host, recs
        assert "FDIST_HOST_ID" not in recs["s151"] and "FDIST_HOST_ID" not in recs["s231"], recs


def test_fetch_rejects_a_bad_host_id(tmp):
    """A --host-id outside 1-64 bytes of [A-Za-z0-9._-] is a usage error
    (exit 1), before any connection; one inside is taken."""
    path = make_file(os.path.join(tmp, "data"), 1000)
    port = free_port()
    target = "127.0.0.1:%d" % port
    with Daemon(tmp, {"h": {"listen": target, "file": path}}, {"log": "journal"}) as d:
        for bad in ("a b", "a" * 65, "web/17", "h\u00e9te", "x=y", "-\t-"):
            r = run_fetch("-o", os.path.join(tmp, "got"), "--host-id", bad, target)
            assert r.returncode == 1, (bad, r)
            assert b"--host-id" in r.stderr, (bad, r)
        r = run_fetch("-o", os.path.join(tmp, "got"), "--host-id", "ok-1.b_C", target)
        assert r.returncode == 0, r     # the rule's every class is good
        recs = transfers(d, timeout=2, want=2)
        assert len(recs) == 1 and recs[0]["FDIST_HOST_ID"] == "ok-1.b_C", recs


def test_host_claims_in_raw_acks(tmp):
    """The daemon takes host=NAME only as a whole, well-formed token."""
    path = make_file(os.path.join(tmp, "data"), 1000)
    port, cport = free_port(), free_port()
    acks = [
        (b"Thank you host=web-17\n", "web-17"),
        (b"host=a\n", "a"),
        (b"x\thost=h.1_b-c y\n", "h.1_b-c"),
        (b"host=" + b"h" * 64 + b"\n", "h" * 64),
        (b"xhost=a\n", None),
        (b"Thank you xhost=a\n", None),
        (b"host=\n", None),
        (b"host= h\n", None),
        (b"host=" + b"h" * 65 + b"\n", None),
        (b"host=a\x01b\n", None),
        (b"host=a\xc3\xa9\n", None),
        (b"host=a,b\n", None),
        (b"host=a\x1b[2J\n", None),
        (b"host=bad! host=good\n", None),   # the first token counts
    ]
    shares = {"h": {"listen": "127.0.0.1:%d" % port, "file": path},
              "cut": {"listen": "127.0.0.1:%d" % cport, "file": path, "ack_max": "20"}}
    with Daemon(tmp, shares, {"log": "journal"}) as d:
        digests(d, want=2)
        for ack, _ in acks:
            fetch(port, ack=ack)
        recs = transfers(d, "FDIST_SHARE=h", want=len(acks))
        assert len(recs) == len(acks), recs
        for (ack, want), r in zip(acks, recs):
            assert r.get("FDIST_HOST_ID") == want, (ack, r)
        # cut at ack_max: a host id that may have lost bytes is none
        fetch(cport, ack=b"Thank you host=web-17\n")      # 21 bytes
        fetch(cport, ack=b"ok host=web-17 more\n")        # the token is whole
        recs = transfers(d, "FDIST_SHARE=cut", want=2)
        assert recs[0]["FDIST_ACK"] == "Thank you host=web-1", recs[0]
        assert "FDIST_HOST_ID" not in recs[0], recs[0]
        assert recs[1]["FDIST_HOST_ID"] == "web-17", recs[1]


def test_stderr_records(tmp):
    """With log=stderr: version=, file_sha256= and host_id= on the
    transfer line, and a digest line per share."""
    path = make_file(os.path.join(tmp, "data"), 1000)
    port = free_port()
    with Daemon(tmp, {"e": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        (line,) = d.wait_log(r"info: digest share=e .*file_sha256=.*")
        assert line.endswith('file="%s" version=%s file_sha256=%s size=1000' %
                             (path, version_of(path), file_sha256(path))), line
        # before it, the line of the share starting to serve the file
        lines = d.wait_log(r"info: digest share=e .*", count=2)
        assert lines[0].endswith('file="%s" version=%s digest=pending size=1000' %
                                 (path, version_of(path))), lines
        assert lines[1] == line, lines
        fetch(port, ack=b"Thank you host=web-17\n")
        (rec,) = d.wait_records(1)
        assert rec["version"] == version_of(path), rec
        assert rec["file_sha256"] == file_sha256(path), rec
        assert rec["host_id"] == "web-17", rec


if __name__ == "__main__":
    journal_main(globals())
