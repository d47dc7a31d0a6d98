#!/usr/bin/env python3
"""The SHA-256 of served files: every completion is taken however many
end at once, a failure says why in words, and a failed hash is computed
again."""

import fcntl
import hashlib
import os
import re
import threading
import time

from fdtest import Daemon, NoThreads, file_sha256, free_port, main, make_file

MiB = 1024 * 1024


def test_a_failed_digest_says_why_and_is_computed_again(tmp):
    """A file cut short while being hashed: the log says it shrank, in
    words, and once it is whole again (same size and mtime, so a reload
    keeps it as the same file) its digest is computed and logged."""
    size = 4 << 30
    path = os.path.join(tmp, "big.img")
    with open(path, "wb") as f:
        f.truncate(size)
    st = os.stat(path)
    want = {}

    def zeros_digest():
        h = hashlib.sha256()
        block = bytes(4 * MiB)
        for _ in range(size // len(block)):
            h.update(block)
        want["sum"] = h.hexdigest()

    calc = threading.Thread(target=zeros_digest, daemon=True)
    calc.start()
    port = free_port()
    with Daemon(tmp, {"b": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        os.truncate(path, MiB)
        d.wait_log(r"big.img: (?:cannot compute sha256: the file shrank from %d to %d "
                   r"bytes while being hashed|sha256 abandoned: the file changed)" % (size, MiB),
                   timeout=30)
        os.truncate(path, size)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        d.reload()
        calc.join(120)
        d.wait_log(r"big.img: sha256 %s" % want["sum"], timeout=120)
        assert "Stale file handle" not in d.log()


def shrink_pipes(pid):
    """Make every pipe the daemon holds as small as the kernel allows (one
    page): a completion channel that is a pipe then holds 512 pointers."""
    shrunk = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        link = "/proc/%d/fd/%s" % (pid, fd)
        try:
            if not os.readlink(link).startswith("pipe:"):
                continue
            f = os.open(link, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            fcntl.fcntl(f, 1031, 4096)           # F_SETPIPE_SZ
            shrunk += 1
        finally:
            os.close(f)
    return shrunk


def test_many_digests_finishing_at_once_are_all_taken(tmp):
    """A reload opens 600 small files: their hashes end while the loop is
    still busy with the reload, so all their completions wait at once.
    Every one must be taken, whatever the size of the channel they wait
    in (a pipe is made as small as the kernel allows)."""
    n = 600
    first = make_file(os.path.join(tmp, "first"), 1000)
    port = free_port()
    with Daemon(tmp, {"s0": {"listen": "127.0.0.1:%d" % port, "file": first}}) as d:
        d.wait_log(r"first: sha256 ")
        shrink_pipes(d.proc.pid)
        shares, ports = {}, {port}
        for i in range(n):
            path = make_file(os.path.join(tmp, "f%03d" % i), 64 + i, seed=i)
            while port in ports:
                port = free_port()
            ports.add(port)
            shares["s%d" % i] = {"listen": "127.0.0.1:%d" % port, "file": path}
        d.write_config(shares)
        d.reload(timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            got = len(re.findall(r"/f\d{3}: sha256 [0-9a-f]{64}", d.log()))
            if got == n:
                break
            time.sleep(0.1)
        assert got == n, "%d of %d digests were logged:\n%s" % (got, n, d.log()[-3000:])
        for i in (0, n // 2, n - 1):
            path = os.path.join(tmp, "f%03d" % i)
            assert "f%03d: sha256 %s" % (i, file_sha256(path)) in d.log()


def test_a_digest_that_could_not_start_is_computed_on_reload(tmp):
    """The daemon runs in a pids cgroup of its own that allows no thread:
    the hash cannot start.  Once threads are allowed again, a reload
    (which keeps the unchanged file) hashes it."""
    with NoThreads("digest") as cg:
        path = make_file(os.path.join(tmp, "data"), MiB)
        port = free_port()
        # A bracketed IPv6 address is numeric: no thread looks it up.
        with Daemon(tmp, {"v": {"listen": "[::1]:%d" % port, "file": path}},
                    launcher=cg.launcher) as d:
            d.wait_log(r"data: (?:cannot start computing )?sha256: Resource temporarily unavailable")
            cg.allow()
            d.reload()
            d.wait_log(r"data: sha256 %s" % file_sha256(path))
            assert "data: computing sha256 again" in d.log()
            # the share's records: failed, pending again at the reload, the digest
            d.wait_log(r"info: digest share=v .*file_sha256=")
            lines = re.findall(r"(?:info|warning): digest share=v .*", d.log())
            assert [re.search(r"digest=\w+|file_sha256=", l).group(0) for l in lines] == [
                "digest=failed", "digest=pending", "file_sha256="], lines


if __name__ == "__main__":
    main(globals())
