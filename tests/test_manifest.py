#!/usr/bin/env python3
"""The manifest (fdistd(8) MANIFEST): its exact document, how it follows
digests and reloads, its own records, and fdist-fetch --manifest and
--if-changed against the real daemon over loopback."""

import contextlib
import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
import time

from fdtest import FDISTD, Daemon, connect, fetch, file_sha256, free_port, main, make_file, need, read_all

FETCH = os.environ.get("FDIST_FETCH", "build/fdist-fetch")
EXIT_DIGEST, EXIT_CURRENT, EXIT_PENDING, EXIT_MANIFEST = 5, 8, 9, 10
XATTR = "user.fdist.sha256"
BIG = 8 << 30       # sparse: hashing it keeps its digest pending for many seconds


def version_of(path):
    st = os.stat(path)
    return "%x-%x-%x-%x" % (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def line(name, path, listen, digest=None):
    return "share %s size=%d sha256=%s version=%s listen=%s\n" % (
        name, os.path.getsize(path), digest or file_sha256(path), version_of(path), listen)


def manifest(port, host="127.0.0.1"):
    return fetch(port, host=host, ack=b"Thank you\n").decode()


def wait_manifest(port, want, timeout=30):
    """Read the manifest until it is want (it changes as digests become known)."""
    deadline = time.monotonic() + timeout
    while True:
        got = manifest(port)
        if got == want:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("manifest never became\n%s\nlast:\n%s" % (want, got))
        time.sleep(0.05)


@contextlib.contextmanager
def announced(tmp, path):
    """The daemon serving path as share a, with a manifest, once the
    manifest announces its digest: the daemon, the manifest's port and
    the share's."""
    mport, pa = free_port(), free_port()
    with Daemon(tmp, {"a": {"listen": "127.0.0.1:%d" % pa, "file": path}},
                {"log": "stderr", "manifest": "127.0.0.1:%d" % mport}) as d:
        wait_manifest(mport, "fdist-manifest 1\n" + line("a", path, "127.0.0.1:%d" % pa) + "end\n")
        yield d, mport, pa


def run_fetch(*args, timeout=120):
    return subprocess.run([FETCH, *args], capture_output=True, timeout=timeout)


def recs(d, share):
    return [r for r in d.records() if r["share"] == share]


def big_file(tmp):
    path = os.path.join(tmp, "big.img")
    with open(path, "wb") as f:
        f.truncate(BIG)
    return path


def test_document_format_pending_and_reload(tmp):
    """Three shares, one still being hashed: the exact document; it
    follows the digests as they become known and a reload that replaces
    one share's file and drops another."""
    a = make_file(os.path.join(tmp, "a"), 100000, seed=1)
    b = make_file(os.path.join(tmp, "b"), 5000, seed=2)
    big = big_file(tmp)
    mport, pa, pb, pb6, pbig = free_port(), free_port(), free_port(), free_port(), free_port()
    shares = {"a": {"listen": "127.0.0.1:%d" % pa, "file": a},
              "b.2_x-y": {"listen": "127.0.0.1:%d, [::1]:%d" % (pb, pb6), "file": b},
              "big": {"listen": "127.0.0.1:%d" % pbig, "file": big}}
    with Daemon(tmp, shares, {"log": "stderr", "manifest": "127.0.0.1:%d" % mport}) as d:
        want = ("fdist-manifest 1\n" +
                line("a", a, "127.0.0.1:%d" % pa) +
                line("b.2_x-y", b, "127.0.0.1:%d,[::1]:%d" % (pb, pb6)) +
                line("big", big, "127.0.0.1:%d" % pbig, "pending") +
                "end\n")
        wait_manifest(mport, want)
        assert not re.search(r"digest share=big .*file_sha256=", d.log()), "big was hashed already: the test proves nothing"
        # a digest record for each document: the first, all pending, and this one
        d.wait_log(r"digest share=@manifest file=\"memfd:fdist-manifest\" version=\S+ "
                   r"file_sha256=%s size=%d\n" % (file_sha256_bytes(want.encode()), len(want)))
        assert len(re.findall(r"digest share=@manifest ", d.log())) >= 2

        make_file(a + ".new", 123456, seed=7)
        os.rename(a + ".new", a)
        del shares["b.2_x-y"]
        d.write_config(shares)
        d.reload()
        want = ("fdist-manifest 1\n" +
                line("a", a, "127.0.0.1:%d" % pa) +
                line("big", big, "127.0.0.1:%d" % pbig, "pending") +
                "end\n")
        wait_manifest(mport, want)
        # a reload that changes nothing keeps the document, and its version
        n = len(d.wait_records(1, share="@manifest"))
        assert manifest(mport) == want
        before = d.wait_records(n + 1, share="@manifest")[-1]
        d.reload()
        assert manifest(mport) == want
        after = d.wait_records(n + 2, share="@manifest")[-1]
        assert after["version"] == before["version"], (before, after)
        assert after["file_sha256"] == before["file_sha256"] == file_sha256_bytes(want.encode())


def test_reload_moves_drops_and_restores_it(tmp):
    """A reload may move the manifest to another address, drop it (its
    port is closed) and bring it back."""
    a = make_file(os.path.join(tmp, "a"), 1000)
    pa, m1, m2 = free_port(), free_port(), free_port()
    shares = {"a": {"listen": "127.0.0.1:%d" % pa, "file": a}}
    want = "fdist-manifest 1\n" + line("a", a, "127.0.0.1:%d" % pa) + "end\n"
    with Daemon(tmp, shares, {"log": "stderr", "manifest": "127.0.0.1:%d" % m1}) as d:
        wait_manifest(m1, want)
        for glob, up, down in (({"log": "stderr", "manifest": "127.0.0.1:%d" % m2}, m2, m1),
                               ({"log": "stderr"}, None, m2),
                               ({"log": "stderr", "manifest": "127.0.0.1:%d" % m1}, m1, m2)):
            d.write_config(global_opts=glob)
            d.reload()
            if up:
                assert manifest(up) == want
            try:
                fetch(down)
                raise AssertionError("port %d still open" % down)
            except ConnectionRefusedError:
                pass
        assert {r["status"] for r in d.wait_records(3, share="@manifest")} == {"acked"}


def file_sha256_bytes(data):
    import hashlib
    return hashlib.sha256(data).hexdigest()


def test_nc_reads_it_and_it_gets_records(tmp):
    """Any client reads the manifest as it reads a share (nc here); each
    connection gets a transfer record under the name @manifest, verified
    when the ack claims the digest; the manifest's port is the global
    settings' (allow, limits) and collides with shares like any address."""
    a = make_file(os.path.join(tmp, "a"), 1000)
    mport, pa = free_port(), free_port()
    shares = {"a": {"listen": "127.0.0.1:%d" % pa, "file": a}}
    with Daemon(tmp, shares, {"log": "stderr", "manifest": "127.0.0.1:%d" % mport}) as d:
        want = "fdist-manifest 1\n" + line("a", a, "127.0.0.1:%d" % pa) + "end\n"
        wait_manifest(mport, want)
        n = len(recs(d, "@manifest"))
        ack = os.path.join(tmp, "ack")
        with open(ack, "w") as f:
            f.write("Thank you sha256=%s host=edge-1\n" % file_sha256_bytes(want.encode()))
        with open(ack) as f:
            out = subprocess.run([need("nc"), "-N", "127.0.0.1", str(mport)], stdin=f, capture_output=True,
                                 timeout=30)
        assert out.returncode == 0 and out.stdout.decode() == want, out
        rec = d.wait_records(n + 1, share="@manifest")[-1]
        assert rec["status"] == "acked" and rec["verified"] == "yes", rec
        assert rec["file"] == "memfd:fdist-manifest" and rec["host_id"] == "edge-1", rec
        assert rec["bytes"] == rec["size"] == str(len(want)), rec
        assert rec["file_sha256"] == file_sha256_bytes(want.encode()), rec

    # fdistd -t -v shows it; no share can take its name, or its address
    path = os.path.join(tmp, "t.ini")
    with open(path, "w") as f:
        f.write("[fdistd]\nmanifest = *:%d\n[a]\nlisten = 127.0.0.1:%d\nfile = %s\n" % (mport, pa, a))
    out = subprocess.run([FDISTD, "-t", "-v", "-c", path], capture_output=True, timeout=20)
    assert out.returncode == 0, out
    assert "\nmanifest = 0.0.0.0:%d, [::]:%d\n" % (mport, mport) in out.stdout.decode(), out
    for text, msg in (("[@manifest]\nlisten = 127.0.0.1:%d\nfile = %s\n" % (pa, a),
                       "invalid share name '@manifest'"),
                      ("[fdistd]\nmanifest = 127.0.0.1:%d\n[a]\nlisten = *:%d\nfile = %s\n" % (pa, pa, a),
                       "t.ini:2: listen address 127.0.0.1:%d overlaps 0.0.0.0:%d of [a]" % (pa, pa)),
                      ("[a]\nlisten = 127.0.0.1:%d\nfile = %s\nmanifest = 127.0.0.1:%d\n" % (pa, a, mport),
                       "'manifest' is a global setting")):
        with open(path, "w") as f:
            f.write(text)
        out = subprocess.run([FDISTD, "-t", "-c", path], capture_output=True, timeout=20)
        assert out.returncode == 78 and msg in out.stderr.decode(), (text, out)   # EX_CONFIG


def test_behind_a_proxy(tmp):
    """With proxy_protocol in [fdistd], the manifest expects the PROXY
    header as the shares do, and its record names the client it gives."""
    a = make_file(os.path.join(tmp, "a"), 1000)
    mport, pa = free_port(), free_port()
    shares = {"a": {"listen": "127.0.0.1:%d" % pa, "file": a}}
    glob = {"log": "stderr", "manifest": "127.0.0.1:%d" % mport, "proxy_protocol": "yes",
            "proxy_from": "127.0.0.1"}
    with Daemon(tmp, shares, glob) as d:
        want = "fdist-manifest 1\n" + line("a", a, "127.0.0.1:%d" % pa) + "end\n"
        deadline = time.monotonic() + 30
        while True:
            s = connect(mport)
            s.sendall(b"PROXY TCP4 192.0.2.9 127.0.0.1 5555 %d\r\n" % mport)
            got = read_all(s).decode()
            s.sendall(b"Thank you\n")
            s.close()
            if got == want or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert got == want, got
        rec = d.wait_records(1, share="@manifest")[-1]
        assert rec["peer"] == "192.0.2.9:5555" and rec["status"] == "acked", rec


def test_fetch_by_manifest_is_verified(tmp):
    """fdist-fetch --manifest takes the share's address and digest from
    the manifest: a wildcard listen address is the manifest's host, over
    IPv4 and IPv6; both connections are acked with their digests and
    the host id; FILE is published with its mark."""
    a = make_file(os.path.join(tmp, "a"), 300000, seed=3)
    mport, pa = free_port(), free_port()
    shares = {"a": {"listen": "*:%d" % pa, "file": a}}
    glob = {"log": "stderr", "manifest": "127.0.0.1:%d, 127.0.0.2:%d, [::1]:%d" % (mport, mport, mport)}
    with Daemon(tmp, shares, glob) as d:
        want = "fdist-manifest 1\n" + line("a", a, "0.0.0.0:%d,[::]:%d" % (pa, pa)) + "end\n"
        wait_manifest(mport, want)
        out = os.path.join(tmp, "got")
        for n, target in enumerate(("127.0.0.1:%d" % mport, "[::1]:%d" % mport), 1):
            r = run_fetch("-q", "--host-id", "edge-%d" % n, "--manifest", target, "a", "-o", out)
            assert r.returncode == 0, r
            assert file_sha256(out) == file_sha256(a)
            assert os.getxattr(out, XATTR).decode().startswith("sha256=%s size=300000 " % file_sha256(a))
            rec = d.wait_records(n, share="a")[-1]
            assert rec["status"] == "acked" and rec["verified"] == "yes", rec
            assert rec["host_id"] == "edge-%d" % n, rec
            assert rec["peer"].startswith("127.0.0.1:" if n == 1 else "[::1]:"), rec
        m = d.wait_records(2, share="@manifest")[-2:]
        assert [r["status"] for r in m] == ["acked", "acked"], m
        assert [r["verified"] for r in m] == ["yes", "yes"], m
        assert [r["host_id"] for r in m] == ["edge-1", "edge-2"], m

        # the wildcard is the manifest's host, not the wildcard address
        r, dests = strace_connects(("-q", "--manifest", "127.0.0.2:%d" % mport, "a", "-o", out))
        assert r.returncode == 0, r
        assert dests == [("127.0.0.2", mport), ("127.0.0.2", pa)], (dests, r)
        r, dests = strace_connects(("-q", "--manifest", "[::1]:%d" % mport, "a", "-o", out))
        assert r.returncode == 0, r
        assert dests == [("::1", mport), ("::1", pa)], (dests, r)

        # a share the manifest does not list, and a bad SHARE
        r = run_fetch("-q", "--manifest", "127.0.0.1:%d" % mport, "nope", "-o", out)
        assert r.returncode == EXIT_MANIFEST and b"lists no share 'nope'" in r.stderr, r
        r = run_fetch("-q", "--manifest", "127.0.0.1:%d" % mport, "a/b", "-o", out)
        assert r.returncode == 1, r


def test_pending_digest_is_not_fetched(tmp):
    """A share whose digest the manifest does not have yet is not fetched
    at all (exit 9): no connection to it, no FILE.part."""
    big = big_file(tmp)
    mport, pbig = free_port(), free_port()
    shares = {"big": {"listen": "127.0.0.1:%d" % pbig, "file": big}}
    with Daemon(tmp, shares, {"log": "stderr", "manifest": "127.0.0.1:%d" % mport}) as d:
        out = os.path.join(tmp, "got")
        r = run_fetch("-q", "--manifest", "127.0.0.1:%d" % mport, "big", "-o", out)
        assert not re.search(r"digest share=big .*file_sha256=", d.log()), "big was hashed already: the test proves nothing"
        assert r.returncode == EXIT_PENDING, r
        assert b"has not computed its SHA-256 yet" in r.stderr, r
        assert not os.path.exists(out) and not os.path.exists(out + ".part")
        d.wait_records(1, share="@manifest")
        assert recs(d, "big") == [], d.records()


def test_copy_not_announced_is_refused(tmp):
    """A manifest whose digest is not what the share streams (as a file
    rewritten in place under a server that does not notice, or a stale or
    damaged manifest, would give): fdist-fetch refuses the copy whatever
    the share streams: FILE keeps the old copy and its mark, exit 5, and
    the daemon logs the rejection as ack-mismatch, with verified=yes (the
    copy was the daemon's file, which the client did not expect).  The
    manifest here is a real fdistd share serving such a document."""
    a = make_file(os.path.join(tmp, "a"), 200000, seed=4)
    other = make_file(os.path.join(tmp, "other"), 200000, seed=40)
    doc = os.path.join(tmp, "doc")
    pa, pdoc = free_port(), free_port()
    with open(doc, "w") as f:
        f.write("fdist-manifest 1\n" + line("a", a, "127.0.0.1:%d" % pa, file_sha256(other)) + "end\n")
    shares = {"a": {"listen": "127.0.0.1:%d" % pa, "file": a},
              "doc": {"listen": "127.0.0.1:%d" % pdoc, "file": doc}}
    with Daemon(tmp, shares, {"log": "stderr"}) as d:
        d.wait_log(r"digest share=a .*file_sha256=")
        out = os.path.join(tmp, "got")
        with open(out, "wb") as f:
            f.write(b"the copy this host has\n")
        os.setxattr(out, XATTR, b"sha256=%s size=23 mtime=1.000000000" % file_sha256(out).encode())
        mark = os.getxattr(out, XATTR)
        r = run_fetch("-q", "--manifest", "127.0.0.1:%d" % pdoc, "a", "-o", out)
        assert r.returncode == EXIT_DIGEST, r
        assert b"sha256 mismatch: got %s, expected %s" % (file_sha256(a).encode(),
                                                           file_sha256(other).encode()) in r.stderr, r
        with open(out, "rb") as f:
            assert f.read() == b"the copy this host has\n"
        assert os.getxattr(out, XATTR) == mark and not os.path.exists(out + ".part")
        (rec,) = d.wait_records(1, share="a")
        assert rec["status"] == "ack-mismatch" and rec["verified"] == "yes", rec
        assert rec["ack"].startswith("sha256-mismatch sha256=%s expected=%s" % (file_sha256(a), file_sha256(other)))


def test_rewritten_in_place(tmp):
    """The served file rewritten in place: while it is being written the
    manifest has no digest for it (exit 9; before the daemon has read the
    change, the share refuses or the copy is refused), and no fetch
    publishes its bytes before the manifest announces them; once it has
    settled, the daemon hashes it anew and the manifest announces the new
    version, which is fetched, verified, with no reload."""
    a = make_file(os.path.join(tmp, "a"), 200000, seed=4)
    old = file_sha256(a)
    with announced(tmp, a) as (d, mport, pa):
        out = os.path.join(tmp, "got")
        fetch_a = ("-q", "--manifest", "127.0.0.1:%d" % mport, "a", "-o", out)
        r = run_fetch(*fetch_a)
        assert r.returncode == 0, r
        mark = os.getxattr(out, XATTR)
        codes = set()
        with open(a, "r+b") as f:
            for i in range(8):                  # same size, other bytes, same inode, in flux
                f.seek(4096 * i)
                f.write(b"\xff" * 4096)
                f.flush()
                if old in manifest(mport):
                    r = run_fetch(*fetch_a)
                    codes.add(r.returncode)
                    assert r.returncode in (3, EXIT_DIGEST, EXIT_PENDING), r
                else:
                    assert "share a size=200000 sha256=pending " in manifest(mport)
                    r = run_fetch(*fetch_a)
                    codes.add(r.returncode)
                    assert r.returncode == EXIT_PENDING, r
                assert file_sha256(out) == old and os.getxattr(out, XATTR) == mark
                time.sleep(0.2)
        assert EXIT_PENDING in codes, codes
        new = file_sha256(a)
        assert new != old
        wait_manifest(mport, "fdist-manifest 1\n" + line("a", a, "127.0.0.1:%d" % pa, new) + "end\n")
        r = run_fetch(*fetch_a)
        assert r.returncode == 0 and file_sha256(out) == new, r
        for rec in recs(d, "a"):
            assert rec["status"] in ("acked", "ack-mismatch", "file-changed", "busy"), rec
        assert recs(d, "a")[-1]["verified"] == "yes"


def strace_connects(args, timeout=120):
    """Run fdist-fetch under strace; its exit status and the (address,
    port) it connected to.  LeakSanitizer cannot run under ptrace: the runs
    without strace check for leaks."""
    env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0")
    r = subprocess.run([need("strace"), "-qq", "-f", "-e", "trace=connect", "-o", "/dev/stdout", FETCH, *args],
                       capture_output=True, timeout=timeout, env=env)
    dests = [(h4 or h6, int(p)) for p, h4, h6 in
             re.findall(r"connect\(\d+, \{sa_family=AF_INET6?, sin6?_port=htons\((\d+)\), "
                        r"(?:sin_addr=inet_addr\(\"([^\"]+)\"\)|sin6_flowinfo=\S+ "
                        r"inet_pton\(AF_INET6, \"([^\"]+)\")", r.stdout.decode())]
    return r, dests


def test_if_changed(tmp):
    """--if-changed: a FILE that holds the announced digest is left alone
    (exit 8) with no connection to the share, only to the manifest, which
    is still acked; a new version published by rename and reload is
    fetched; a FILE changed here, or without its mark, is fetched again."""
    a = make_file(os.path.join(tmp, "a"), 150000, seed=5)
    with announced(tmp, a) as (d, mport, pa):
        out = os.path.join(tmp, "got")
        args = ("--host-id", "edge-9", "--manifest", "127.0.0.1:%d" % mport, "a", "-o", out, "--if-changed")
        r, ports = strace_connects(args)
        assert r.returncode == 0, r
        assert ports == [("127.0.0.1", mport), ("127.0.0.1", pa)], (ports, r)
        assert file_sha256(out) == file_sha256(a)
        st = os.stat(out)

        r, ports = strace_connects(args)
        assert r.returncode == EXIT_CURRENT, r
        assert b"(unchanged, not fetched)" in r.stderr, r
        assert ports == [("127.0.0.1", mport)], (ports, r)
        assert os.stat(out).st_mtime_ns == st.st_mtime_ns and os.stat(out).st_ino == st.st_ino
        m = d.wait_records(3, share="@manifest")     # wait_manifest's, and the two runs'
        assert m[-1]["status"] == "acked" and m[-1]["verified"] == "yes", m[-1]
        assert m[-1]["host_id"] == "edge-9", m[-1]
        # a client that connects after the skipped run is the share's next record
        fetch(pa)
        assert [x.get("host_id") for x in d.wait_records(2, share="a")] == ["edge-9", None], recs(d, "a")

        # a new version: written aside, renamed over, reloaded
        make_file(a + ".new", 150000, seed=6)
        os.rename(a + ".new", a)
        d.reload()
        wait_manifest(mport, "fdist-manifest 1\n" + line("a", a, "127.0.0.1:%d" % pa) + "end\n")
        r, ports = strace_connects(args)
        assert r.returncode == 0, r
        assert ports == [("127.0.0.1", mport), ("127.0.0.1", pa)], (ports, r)
        assert file_sha256(out) == file_sha256(a)
        rec = d.wait_records(3, share="a")[-1]
        assert rec["verified"] == "yes" and rec["sha256"] == file_sha256(a), rec

        # FILE changed here: same size, new bytes and mtime; then grown
        for change in (lambda f: f.write(b"local"), lambda f: (f.seek(0, 2), f.write(b"more"))):
            with open(out, "r+b") as f:
                change(f)
            r = run_fetch("-q", *args)
            assert r.returncode == 0, r
            assert file_sha256(out) == file_sha256(a)
        # the mark removed
        os.removexattr(out, XATTR)
        r = run_fetch("-q", *args)
        assert r.returncode == 0, r
        assert len(d.wait_records(6, share="a")) == 6
        r = run_fetch("-q", *args)
        assert r.returncode == EXIT_CURRENT, r

        # the digest to compare can come from --expect-sha256 too
        r = run_fetch("-q", "--if-changed", "--expect-sha256", file_sha256(a), "-o", out,
                      "127.0.0.1:%d" % pa)
        assert r.returncode == EXIT_CURRENT, r
        for bad in (("--if-changed", "-o", out, "127.0.0.1:%d" % pa),
                    ("--if-changed", "-o", "-", "--manifest", "127.0.0.1:%d" % mport, "a"),
                    ("--expect-sha256", "0" * 64, "--manifest", "127.0.0.1:%d" % mport, "a")):
            r = run_fetch("-q", *bad)
            assert r.returncode == 1, (bad, r)
        time.sleep(0.5)
        assert len(recs(d, "a")) == 6, recs(d, "a")


def test_if_changed_without_extended_attributes(tmp):
    """On a file system with no user extended attributes (ramfs, mounted
    in a mount namespace of the test's own), FILE is still fetched,
    checked and published, every time, with a warning."""
    a = make_file(os.path.join(tmp, "a"), 10000, seed=8)
    with announced(tmp, a) as (d, mport, pa):
        mnt = os.path.join(tmp, "ramfs")
        os.mkdir(mnt)
        script = ('mount -t ramfs ramfs "$1" && shift && '
                  '"$@"; a=$?; "$@"; b=$?; sha256sum "$0"; echo "$a $b"')
        out = os.path.join(mnt, "got")
        r = subprocess.run(["unshare", "-m", "sh", "-c", script, out, mnt, FETCH, "-q", "--if-changed",
                            "--manifest", "127.0.0.1:%d" % mport, "a", "-o", out],
                           capture_output=True, timeout=120)
        lines = r.stdout.decode().splitlines()
        assert r.returncode == 0 and lines[-1] == "0 0", r
        assert lines[-2].split()[0] == file_sha256(a), r
        assert r.stderr.decode().count("cannot keep its SHA-256 in user.fdist.sha256, so --if-changed "
                                       "will fetch it every time: Operation not supported") == 2, r
        assert [x["status"] for x in d.wait_records(2, share="a")] == ["acked", "acked"]
        assert not os.listdir(mnt), "the ramfs was not the namespace's own"


def ip(*args):
    subprocess.run([need("ip"), *args], check=True, capture_output=True, timeout=20)


def test_addresses_from_another_host(tmp):
    """The address rule where loopback is not the manifest's host: two
    network namespaces of the test's own joined by a veth pair (no route
    out; removed on every exit).  A wildcard is the manifest's host, a
    loopback address is the server's own and never taken, a specific
    address is taken as it is."""
    tag = "mf%d" % os.getpid()
    srv, cli = tag + "s", tag + "c"
    a = make_file(os.path.join(tmp, "a"), 50000, seed=9)
    shares = {"wild": {"listen": "*:9000", "file": a},
              "lo": {"listen": "127.0.0.1:9001", "file": a},
              "mixed": {"listen": "127.0.0.1:9002, 198.18.7.1:9002", "file": a}}
    try:
        ip("netns", "add", srv)
        ip("netns", "add", cli)
        ip("link", "add", tag + "a", "netns", srv, "type", "veth", "peer", "name", tag + "b", "netns", cli)
        for ns, dev, addr in ((srv, tag + "a", "198.18.7.1/30"), (cli, tag + "b", "198.18.7.2/30")):
            ip("-n", ns, "addr", "add", addr, "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        with Daemon(tmp, shares, {"log": "stderr", "manifest": "*:9100"},
                    launcher=["ip", "netns", "exec", srv]) as d:
            out = os.path.join(tmp, "got")
            client = ["ip", "netns", "exec", cli, FETCH, "-q", "--manifest", "198.18.7.1:9100"]
            deadline = time.monotonic() + 30
            while True:     # until the digests are known
                r = subprocess.run(client + ["wild", "-o", out], capture_output=True, timeout=60)
                if r.returncode != EXIT_PENDING or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert r.returncode == 0, r
            assert file_sha256(out) == file_sha256(a)
            r = subprocess.run(client + ["mixed", "-o", out], capture_output=True, timeout=60)
            assert r.returncode == 0, r
            r = subprocess.run(client + ["lo", "-o", out], capture_output=True, timeout=60)
            assert r.returncode == EXIT_MANIFEST and b"none of its addresses can be reached" in r.stderr, r
            for share in ("wild", "mixed"):
                (rec,) = d.wait_records(1, share=share)
                assert rec["status"] == "acked" and rec["verified"] == "yes", rec
                assert rec["peer"].startswith("198.18.7.2:"), rec
            assert recs(d, "lo") == []
            assert {r["peer"].split(":")[0] for r in recs(d, "@manifest")} == {"198.18.7.2"}
    finally:
        for ns in (srv, cli):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=20)


class Peer:
    """A broken or hostile server on loopback: handler(conn) for each
    connection, in a thread of its own; closed on exit."""

    def __init__(self, handler):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.done = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            try:
                self.handler(conn, self.done)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.sock.close()


def serve_doc(doc):
    """A manifest server: the document, then read the ack to EOF."""
    def handler(conn, done):
        conn.sendall(doc)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(4096):
            pass
    return handler


def share_line(name, data, port, **fields):
    f = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "version": "1-2-3-4",
         "listen": "127.0.0.1:%d" % port}
    f.update(fields)
    return "share %s %s\n" % (name, " ".join("%s=%s" % kv for kv in f.items() if kv[1] is not None))


def test_a_manifest_dripped_is_cut_off_at_the_timeout(tmp):
    """--timeout bounds the whole manifest, not each read: a server that
    drips it a byte at a time (each byte in time) gets exit 4, and no
    share is fetched."""
    doc = ("fdist-manifest 1\n" + share_line("a", b"x", 9) * 1000 + "end\n").encode()

    def drip(conn, done):
        for i in range(len(doc)):
            if done.wait(0.1):
                return
            conn.sendall(doc[i:i + 1])
    out = os.path.join(tmp, "got")
    with Peer(drip) as m:
        t0 = time.monotonic()
        r = run_fetch("-q", "--timeout=2s", "--manifest", "127.0.0.1:%d" % m.port, "a", "-o", out,
                      timeout=30)
        took = time.monotonic() - t0
    assert r.returncode == 4 and b"manifest: timed out after" in r.stderr, r
    assert 1.5 < took < 10, took
    assert not os.path.exists(out) and not os.path.exists(out + ".part")


def endless_after(data, streamed):
    """A share that sends data, then zeros without end (up to 256 MiB),
    counting in streamed what it sent past data."""
    def handler(conn, done):
        conn.sendall(data)
        while not done.is_set() and sum(streamed) < 256 << 20:
            conn.sendall(b"\0" * 65536)
            streamed.append(65536)
    return handler


def test_a_share_streaming_more_than_announced_is_cut_off(tmp):
    """The share streams far past the size the manifest announced (as one
    streaming without end would): fdist-fetch stops at once, writes none
    of the excess, publishes nothing, exit 5."""
    data = b"announced content\n" * 100
    streamed = []
    out = os.path.join(tmp, "got")
    with Peer(endless_after(data, streamed)) as share, \
            Peer(serve_doc(("fdist-manifest 1\n" + share_line("a", data, share.port) + "end\n").encode())) as m:
        r = run_fetch("-q", "--manifest", "127.0.0.1:%d" % m.port, "a", "-o", out, timeout=30)
    assert r.returncode == EXIT_DIGEST, r
    assert b"more than the %d bytes the manifest announced" % len(data) in r.stderr, r
    assert not os.path.exists(out) and not os.path.exists(out + ".part")
    assert sum(streamed) < 64 << 20, sum(streamed)


def test_max_size_bounds_a_plain_fetch(tmp):
    """--max-size: a share that streams past it is cut off at once, none
    of the excess written, nothing published, exit 5; one of exactly that
    size is fetched; with --manifest the lower bound applies."""
    data = b"announced content\n" * 100
    streamed = []
    out = os.path.join(tmp, "got")
    digest = hashlib.sha256(data).hexdigest()
    with Peer(endless_after(data, streamed)) as share:
        r = run_fetch("-q", "--max-size", "1M", "--expect-sha256", digest, "127.0.0.1:%d" % share.port,
                      "-o", out, timeout=30)
    assert r.returncode == EXIT_DIGEST, r
    assert b"127.0.0.1:%d: more than --max-size, %d bytes" % (share.port, 1 << 20) in r.stderr, r
    assert not os.path.exists(out) and not os.path.exists(out + ".part")
    assert sum(streamed) < 64 << 20, sum(streamed)
    with Peer(serve_doc(data)) as share:
        r = run_fetch("-q", "--max-size", str(len(data)), "127.0.0.1:%d" % share.port, "-o", out, timeout=30)
    assert r.returncode == 0 and open(out, "rb").read() == data, r
    os.unlink(out)
    with Peer(serve_doc(data)) as share, \
            Peer(serve_doc(("fdist-manifest 1\n" + share_line("a", data, share.port) + "end\n").encode())) as m:
        r = run_fetch("-q", "--max-size", str(len(data) - 1), "--manifest", "127.0.0.1:%d" % m.port, "a",
                      "-o", out, timeout=30)
    assert r.returncode == EXIT_DIGEST and b"more than --max-size, %d bytes" % (len(data) - 1) in r.stderr, r
    assert not os.path.exists(out)
    r = run_fetch("--max-size", "1T", "127.0.0.1:1", "-o", out, timeout=30)
    assert r.returncode == 1 and b"--max-size: invalid size '1T'" in r.stderr, r


def test_broken_manifests(tmp):
    """Documents that are not manifests of format 1, or damaged ones:
    exit 10 with a message of fdist-fetch's own (the document's bytes are
    never shown), and nothing fetched."""
    data = b"content\n"
    got = []

    def share_handler(conn, done):
        got.append(1)
        serve_doc(data)(conn, done)
    out = os.path.join(tmp, "got")
    with Peer(share_handler) as share:
        good = share_line("a", data, share.port)
        damaged = b"not an fdist manifest, or a damaged one"
        cases = [
            ("fdist-manifest 2\n" + good + "end\n", b"manifest format 2; this fdist-fetch reads format 1"),
            ("fdist-manifest 1\n" + good, damaged),                                 # no end
            ("fdist-manifest 1\n" + good + "end\nshare b\n", damaged),             # after end
            ("fdist-manifest 1\n" + good + good + "end\n", damaged),                # duplicate
            ("fdist-manifest 1\n" + good + "end", damaged),                         # no LF
            ("fdist-manifest 1\n" + good.replace("size=8", "size=08") + "end\n", damaged),
            ("fdist-manifest 1\n" + good.replace("size=8", "size=-8") + "end\n", damaged),
            ("fdist-manifest 1\n" + good.replace("size=8", "size=99999999999999999999") + "end\n",
             damaged),
            ("fdist-manifest 1\n" + share_line("a", data, share.port, size=None) + "end\n", damaged),
            ("fdist-manifest 1\n" + share_line("a", data, share.port, sha256="AB" * 32) + "end\n",
             b"not a SHA-256 in the manifest"),
            ("fdist-manifest 1\n" + good.replace("\n", "\0\n") + "end\n", damaged),
            ("\x1b[2J\xff" * 1000 + "\n", damaged),
            # a scope is an interface of this host, and is shown as given
            ("fdist-manifest 1\n" + share_line("a", data, 9, listen="[fe80::1%\x1b[31mX]:9") + "end\n",
             b"none of its addresses can be reached"),
            ("fdist-manifest 1\n" + share_line("a", data, 9, listen="[fe80::1%nosuch-if0]:9") + "end\n",
             b"none of its addresses can be reached"),
            ("fdist-manifest 1\n" + "x" * (5 << 20) + "\n", b"manifest of 4194304 bytes or more"),
        ]
        for doc, msg in cases:
            with Peer(serve_doc(doc.encode(errors="surrogateescape"))) as m:
                r = run_fetch("-q", "--manifest", "127.0.0.1:%d" % m.port, "a", "-o", out, timeout=30)
            assert r.returncode == EXIT_MANIFEST and msg in r.stderr, (doc[:200], r)
            assert b"\x1b" not in r.stderr and b"\xff" not in r.stderr, r
        # lines of other kinds and fields unknown are skipped
        doc = ("fdist-manifest 1\nnews 1\nshare b size=1\n" +
               good.replace(" listen=", " colour=blue listen=") + "end\n")
        with Peer(serve_doc(doc.encode())) as m:
            r = run_fetch("-q", "--manifest", "127.0.0.1:%d" % m.port, "a", "-o", out, timeout=30)
        assert r.returncode == 0, r
        assert len(got) == 1
    with open(out, "rb") as f:
        assert f.read() == data


ACTIVATE = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "activate.py")]


def test_socket_activation(tmp):
    """Under socket activation a socket named @manifest, or bound to a
    manifest address, serves the manifest; without one the daemon does
    not start."""
    a = make_file(os.path.join(tmp, "a"), 1000)
    pa, mport, other = free_port(), free_port(), free_port()
    shares = {"a": {"listen": "127.0.0.1:%d" % pa, "file": a}}
    glob = {"log": "stderr", "manifest": "127.0.0.1:%d" % other}
    want = "fdist-manifest 1\n" + line("a", a, "127.0.0.1:%d" % pa) + "end\n"
    for spec in ("127.0.0.1:%d=@manifest" % mport, "127.0.0.1:%d=fdistd.socket" % other):
        port = int(spec.split("=")[0].rpartition(":")[2])
        sub = os.path.join(tmp, str(port))
        os.mkdir(sub)
        with Daemon(sub, shares, glob, launcher=ACTIVATE + ["127.0.0.1:%d=x" % pa, spec, "--"]) as d:
            wait_manifest(port, want)
            assert d.wait_records(1, share="@manifest")[0]["status"] == "acked"
            assert re.search(r"share \[@manifest\]: memfd:fdist-manifest \(\d+ bytes\) on 127\.0\.0\.1:%d\n"
                             % port, d.log()), d.log()
    cfg = os.path.join(tmp, "fdistd.ini")
    Daemon(tmp, shares, glob, start=False)      # writes the configuration
    r = subprocess.run(ACTIVATE + ["127.0.0.1:%d=x" % pa, "--", FDISTD, "-c", cfg], capture_output=True,
                       timeout=20, env=dict(os.environ, NOTIFY_SOCKET=""))
    assert r.returncode == 78 and b"share [@manifest] has no socket" in r.stderr, r


if __name__ == "__main__":
    main(globals())
