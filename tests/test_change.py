#!/usr/bin/env python3
"""A served file rewritten in place (cp new.img served.img) and a failed
digest: no client may take a clean end of file on bytes that are not the
version the daemon hashed, and the new content is hashed and served once
writing has stopped."""

import mmap
import os
import re
import shutil
import socket
import subprocess
import threading
import time

from fdtest import (Daemon, connect, file_sha256, free_port, main, make_file,
                    need, sha256)

FETCH = os.environ.get("FDIST_FETCH", "build/fdist-fetch")
MiB = 1024 * 1024


def raw_client(port, result):
    """A plain client (nc): read to EOF or reset, then ack and close."""
    data = bytearray()
    try:
        s = connect(port, timeout=60)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        while True:
            b = s.recv(1 << 16)
            if not b:
                break
            data += b
        s.sendall(b"Thank you\0")
        s.close()
        result["end"] = "eof"
    except ConnectionResetError:
        result["end"] = "reset"
    result["data"] = bytes(data)


def fetch_client(port, out, result):
    r = subprocess.run([FETCH, "-q", "-o", out, "--timeout", "60s",
                        "127.0.0.1:%d" % port], capture_output=True, timeout=120)
    result["rc"] = r.returncode
    result["stderr"] = r.stderr.decode(errors="replace")


def start_clients(tmp, port, n_raw, n_fetch, tag):
    clients = []
    for i in range(n_raw):
        res = {"kind": "raw"}
        t = threading.Thread(target=raw_client, args=(port, res), daemon=True)
        clients.append((t, res))
    for i in range(n_fetch):
        out = os.path.join(tmp, "got-%s-%d.img" % (tag, i))
        res = {"kind": "fetch", "out": out}
        t = threading.Thread(target=fetch_client, args=(port, out, res), daemon=True)
        clients.append((t, res))
    for t, _ in clients:
        t.start()
    return clients


def check_clients(clients, old_sum, old_size):
    """Each client has the whole old version with a clean end, or a reset
    and nothing published.  Returns (complete, reset) counts."""
    whole = cut = 0
    for t, res in clients:
        t.join(120)
        assert not t.is_alive(), "a client hung"
        if res["kind"] == "raw":
            if res["end"] == "eof":
                assert len(res["data"]) == old_size and sha256(res["data"]) == old_sum, \
                    "clean EOF on %d bytes that are not the hashed version" % len(res["data"])
                whole += 1
            else:
                cut += 1
        else:
            if res["rc"] == 0:
                assert file_sha256(res["out"]) == old_sum, "fdist-fetch published a mixed file"
                whole += 1
            else:
                assert res["rc"] == 3, res
                assert not os.path.exists(res["out"]), "a cut-short fetch published a file"
                cut += 1
    return whole, cut


def rewrite_in_place(src, dst):
    """What an administrator does instead of publishing by rename."""
    subprocess.run(["cp", src, dst], check=True)


def version_of(path):
    """FDIST_VERSION as fdistd(8) defines it, from stat(2)."""
    st = os.stat(path)
    return "%x-%x-%x-%x" % (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


CHANGED_WARNING = re.compile(r"changed in place while served: (\d+) transfers? ended as file-changed")


def run_round(tmp, d, port, path, old, new, tag):
    old_sum, old_size = file_sha256(old), os.path.getsize(old)
    old_version = version_of(path)
    start = len(d.records())
    clients = start_clients(tmp, port, 3, 2, tag)
    # All five are being sent to, at 1 MiB/s each: seconds from the end.
    d.wait_log(r"sha256 %s" % old_sum)
    deadline = time.monotonic() + 20
    while not _all_connected(port, 5):
        assert time.monotonic() < deadline, "the clients did not connect"
        time.sleep(0.05)
    time.sleep(0.3)                     # a few hundred KiB into each
    assert len(d.records()) == start, "a transfer ended before the rewrite"
    warned = len(CHANGED_WARNING.findall(d.log()))
    rewrite_in_place(new, path)
    whole, cut = check_clients(clients, old_sum, old_size)
    assert cut >= 1, "no transfer in flight was cut: the test did not test"
    recs = d.wait_records(start + 5)[start:]
    statuses = sorted(r["status"] for r in recs)
    assert statuses.count("file-changed") == cut, statuses
    assert statuses.count("acked") == whole, statuses
    for r in recs:
        assert r["version"] == old_version, r
        if r["status"] == "acked":
            assert int(r["bytes"]) == old_size, r
        else:
            # what the client's TCP took before the reset, a few hundred KiB
            assert 0 < int(r["bytes"]) < old_size, r
    # The warning counts them all, those that sendfile() ended (at the new
    # end of file) before the loop read the change's event too.
    deadline = time.monotonic() + 10
    while len(CHANGED_WARNING.findall(d.log())) == warned:
        assert time.monotonic() < deadline, "no warning of the change"
        time.sleep(0.05)
    counts = [int(n) for n in CHANGED_WARNING.findall(d.log())[warned:]]
    assert sum(counts) == cut, (counts, cut, d.log()[-3000:])
    # Writing over: the new content is hashed, logged and served.
    new_sum = file_sha256(new)
    d.wait_log(r"data: sha256 %s" % new_sum, timeout=30)
    assert "publish files by rename" in d.log()
    r = subprocess.run([FETCH, "-q", "-o", os.path.join(tmp, "after-" + tag),
                        "127.0.0.1:%d" % port], capture_output=True, timeout=120)
    assert r.returncode == 0, r
    assert file_sha256(os.path.join(tmp, "after-" + tag)) == new_sum
    (rec,) = d.wait_records(start + 6)[start + 5:]
    assert rec["status"] == "acked" and rec["verified"] == "yes", rec
    assert rec["sha256"] == new_sum and int(rec["size"]) == os.path.getsize(new), rec
    # The same inode, a new version: its own id and its digest record.
    assert rec["version"] == version_of(path) != old_version, rec
    assert re.search(r"digest share=v .*version=%s file_sha256=%s" % (rec["version"], new_sum),
                     d.log()), d.log()[-2000:]
    # named first by the share's record of it, its digest pending
    log = d.log()
    pending = log.find('digest share=v file="%s" version=%s digest=pending' % (path, rec["version"]))
    assert 0 <= pending < log.find("version=%s file_sha256=" % rec["version"]), log[-2000:]
    return cut


def _all_connected(port, n):
    """n established connections to the daemon's port (ss, not a guess)."""
    out = subprocess.run([need("ss"), "-Htn", "state", "established",
                          "( sport = :%d )" % port], capture_output=True, text=True).stdout
    return len(out.splitlines()) >= n


def test_cp_over_a_served_file_cuts_transfers_and_serves_the_new_content(tmp):
    """cp over the served file during slow transfers, growing it, then
    shrinking it: every client has either the whole hashed version with a
    clean end or a reset and a file-changed record; fdist-fetch never
    publishes a mixed file; then the new content is served."""
    v1 = make_file(os.path.join(tmp, "v1"), 6 * MiB, seed=1)
    v2 = make_file(os.path.join(tmp, "v2"), 12 * MiB, seed=2)
    v3 = make_file(os.path.join(tmp, "v3"), 3 * MiB, seed=3)
    path = os.path.join(tmp, "data")
    shutil.copyfile(v1, path)
    port = free_port()
    share = {"listen": "127.0.0.1:%d" % port, "file": path, "rate_limit": "1M"}
    with Daemon(tmp, {"v": share}) as d:
        run_round(tmp, d, port, path, v1, v2, "grow")
        run_round(tmp, d, port, path, v2, v3, "shrink")
        assert "Stale file handle" not in d.log()


def test_new_clients_are_refused_busy_while_the_file_is_written(tmp):
    """While a writer is still at it, a new client is reset before any
    byte with a busy record ("file changing"); once it closes the file,
    the new content is served."""
    path = make_file(os.path.join(tmp, "data"), MiB, seed=1)
    port = free_port()
    with Daemon(tmp, {"v": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        d.wait_log(r"data: sha256 %s" % file_sha256(path))
        new = make_file(os.path.join(tmp, "new"), 2 * MiB, seed=2)
        with open(new, "rb") as src, open(path, "r+b") as f:
            f.truncate(0)
            f.write(src.read(MiB))
            f.flush()
            d.wait_log(r"changed in place while served")
            f.write(src.read(4096))         # still writing: 2 s before it settles
            f.flush()
            try:
                with connect(port) as s:     # the reset may beat connect()'s return
                    got = s.recv(1)
                raise AssertionError("a client got %r of a file being written" % got)
            except ConnectionResetError:
                pass
            (rec,) = d.wait_records(1)
            assert rec["status"] == "busy" and rec["reason"] == "file changing", rec
            f.write(src.read())
        d.wait_log(r"writing stopped: serving its new content \(%d bytes\)" % (2 * MiB))
        d.wait_log(r"data: sha256 %s" % file_sha256(new))
        r = subprocess.run([FETCH, "-q", "-o", "-", "127.0.0.1:%d" % port],
                           capture_output=True, timeout=60)
        assert r.returncode == 0 and sha256(r.stdout) == file_sha256(new), r.returncode


def expect_reset(s, new_sum):
    """Read to the end: it must be a reset, never a clean end; closes s."""
    try:
        got = bytearray()
        while True:
            b = s.recv(1 << 16)
            if not b:
                break
            got += b
        raise AssertionError("clean end after %d bytes (%s)" % (
            len(got), "the new content" if sha256(bytes(got)) == new_sum else "?"))
    except ConnectionResetError:
        pass
    finally:
        s.close()


def test_a_change_the_loop_has_not_read_yet_gets_no_fin(tmp):
    """The daemon is stopped while a client connects and then the file is
    written in place: on resuming, the loop accepts the client before it
    reads the change (first ready, first served), and the whole small file
    fits the socket at once.  The client must still get a reset, not the
    new bytes with a clean end under the old version's name."""
    size = 100000
    path = make_file(os.path.join(tmp, "data"), size, seed=1)
    new = make_file(os.path.join(tmp, "new"), size, seed=2)
    port = free_port()
    with Daemon(tmp, {"v": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        d.wait_log(r"data: sha256 %s" % file_sha256(path))
        with d.stopped():
            s = connect(port)               # queued by the kernel meanwhile
            with open(new, "rb") as src, open(path, "r+b") as f:
                f.write(src.read())         # same size, no truncation
        expect_reset(s, file_sha256(new))
        (rec,) = d.wait_records(1)
        assert rec["status"] == "file-changed", rec


def test_publish_by_rename_is_not_a_change_in_place(tmp):
    """Renaming a new file over the path (the old inode's link count
    drops: an IN_ATTRIB) and reloading leaves the transfer in flight on the
    old file alone: it gets it whole, with a clean end."""
    old = make_file(os.path.join(tmp, "data"), 4 * MiB, seed=1)
    old_sum = file_sha256(old)
    port = free_port()
    share = {"listen": "127.0.0.1:%d" % port, "file": old, "rate_limit": "2M"}
    with Daemon(tmp, {"v": share}) as d:
        d.wait_log(r"data: sha256 %s" % old_sum)
        res = {}
        t = threading.Thread(target=raw_client, args=(port, res), daemon=True)
        t.start()
        while not _all_connected(port, 1):
            time.sleep(0.02)
        new = make_file(os.path.join(tmp, "data.new"), 2 * MiB, seed=2)
        os.rename(new, old)
        d.reload()
        t.join(60)
        assert res["end"] == "eof" and sha256(res["data"]) == old_sum
        (rec,) = d.wait_records(1)
        assert rec["status"] == "acked", rec
        d.wait_log(r"data: sha256 %s" % file_sha256(old))
        assert "changed in place" not in d.log()


def test_a_write_through_a_mapping_gets_no_clean_end(tmp):
    """A write through a shared memory mapping raises no inotify event
    (a writer that keeps the file mapped and open never closes it
    either): its new mtime is what tells.  A client that would take the
    changed bytes gets a reset, not a clean end under the old version;
    the content settles, is hashed and served as a new version."""
    size = 100000
    path = make_file(os.path.join(tmp, "data"), size, seed=1)
    old = file_sha256(path)
    port = free_port()
    with Daemon(tmp, {"v": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        d.wait_log(r"data: sha256 %s" % old)
        with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
            m[0:4096] = b"\xaa" * 4096
            new = file_sha256(path)
            try:
                s = connect(port)
            except ConnectionResetError:
                pass         # the reset came before connect() looked: as good
            else:
                expect_reset(s, new)
            (rec,) = d.wait_records(1)
            assert rec["status"] == "file-changed", rec
            d.wait_log(r"changed in place while served")
            d.wait_log(r"writing stopped: serving its new content \(%d bytes\)" % size)
            d.wait_log(r"data: sha256 %s" % new)
            r = subprocess.run([FETCH, "-q", "-o", "-", "127.0.0.1:%d" % port],
                               capture_output=True, timeout=60)
            assert r.returncode == 0 and sha256(r.stdout) == new, r.returncode
            rec = d.wait_records(2)[1]
            assert rec["status"] == "acked" and rec["verified"] == "yes", rec


def test_a_write_through_a_mapping_while_hashing_abandons_the_digest(tmp):
    """The same, while the daemon hashes the file (4 GiB, sparse: seconds):
    the digest of bytes read before and after the write is of neither
    content, and must not be logged as the file's."""
    path = os.path.join(tmp, "data")
    with open(path, "wb") as f:
        f.truncate(4 << 30)
    port = free_port()
    with Daemon(tmp, {"v": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        d.wait_log(r"digest share=v .* digest=pending")
        with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
            assert not re.search(r"data: sha256 [0-9a-f]{64}", d.log()), \
                "hashed already: the test proves nothing"
            m[0:4096] = m[len(m) - 4096:] = b"\xaa" * 4096
            got = d.wait_log(r"data: (sha256 [0-9a-f]{64}|sha256 abandoned: the file changed while "
                             r"being hashed)", timeout=120)
            assert got == ["sha256 abandoned: the file changed while being hashed"], got


if __name__ == "__main__":
    main(globals())
