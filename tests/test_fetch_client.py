#!/usr/bin/env python3
"""Regress fdist-fetch against an in-process fdistd protocol server.

The server here speaks the protocol only (stream the file, SHUT_WR, read
the ack until EOF) and can misbehave on purpose, so the client is tested
without the daemon. Usage: FDIST_FETCH=/path/to/fdist-fetch python3 $0
Exits 0 when every check passes, 1 otherwise. Stdlib only.
"""

import fcntl
import hashlib
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from fdtest import name_launcher, terminate

WAIT = 20           # upper bound for any single wait, seconds
LINGER_RST = struct.pack("ii", 1, 0)
HOST_ID = " host=" + socket.gethostname()  # the default --host-id, in every ack


class Server(threading.Thread):
    """Accept one client and behave as mode says; record what it sent."""

    def __init__(self, payload, mode="serve", family=socket.AF_INET):
        super().__init__(daemon=True)
        self.payload = payload
        self.mode = mode
        self.ack = None         # bytes read after our SHUT_WR
        self.ack_error = None   # exception while reading the ack
        self.accepted = False
        self.release = threading.Event()
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.start()

    def run(self):
        # Short accept timeouts so finish() ends a server nobody called.
        self.sock.settimeout(0.05)
        deadline = time.monotonic() + WAIT
        while True:
            try:
                conn, _ = self.sock.accept()
                self.accepted = True
                break
            except socket.timeout:
                if self.release.is_set() or time.monotonic() > deadline:
                    return
            except OSError:
                return
        with conn:
            conn.settimeout(WAIT)
            getattr(self, "mode_" + self.mode)(conn)
        self.sock.close()

    def read_ack(self, conn):
        data = b""
        try:
            while len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            self.ack_error = e
        self.ack = data

    def mode_serve(self, conn):
        conn.sendall(self.payload)
        conn.shutdown(socket.SHUT_WR)
        self.read_ack(conn)

    def mode_refuse(self, conn):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)

    def mode_reset(self, conn):
        conn.sendall(self.payload[: len(self.payload) // 2])
        time.sleep(0.2)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)

    def mode_stall(self, conn):
        conn.sendall(self.payload[:65536])
        self.release.wait(WAIT)
        self.read_ack(conn)

    def mode_noread(self, conn):
        conn.sendall(self.payload)
        conn.shutdown(socket.SHUT_WR)

    def finish(self):
        """Stop waiting for a client or stalling, and wait for the end."""
        self.release.set()
        self.join(WAIT)
        self.sock.close()


class Checks:
    def __init__(self):
        self.failed = 0
        self.passed = 0

    def check(self, name, cond, detail=""):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print("FAIL: %s %s" % (name, detail))


def fetch(args, **kw):
    cmd = [os.environ["FDIST_FETCH"]] + args
    return subprocess.run(cmd, capture_output=True, timeout=WAIT, **kw)


def fetch_from(s, args, **kw):
    """fdist-fetch ARGS from the fake server s, with the standard
    descriptors given in kw; waits for s to finish."""
    r = subprocess.run([os.environ["FDIST_FETCH"]] + args + ["127.0.0.1:%d" % s.port],
                       timeout=WAIT, **kw)
    s.finish()
    return r


def slurp(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def spew(path, data):
    with open(path, "wb") as f:
        f.write(data)


def check_no_stdout(c, name, r, s):
    """A run whose stdout cannot be written: exit 6 with a message that
    says so, and no ack to server s for bytes nobody kept."""
    c.check(name + " exit", r.returncode == 6, (r.returncode, r.stderr))
    c.check(name + " message", b"stdout" in r.stderr, r.stderr)
    c.check(name + " no ack", not s.ack, s.ack)


def leftovers(d):
    return [n for n in os.listdir(d) if n.endswith(".part")]


def main():
    if "FDIST_FETCH" not in os.environ:
        print("FDIST_FETCH is not set")
        return 1
    c = Checks()
    tmp = tempfile.mkdtemp(prefix="fetch-test-")
    servers = []

    def server(*a, **kw):
        s = Server(*a, **kw)
        servers.append(s)
        return s

    try:
        run_all(c, tmp, server)
    except Exception:
        traceback.print_exc()
        c.check("no exception", False)
    finally:
        for s in servers:
            s.finish()
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (c.passed, c.failed))
    return 1 if c.failed else 0


def run_all(c, tmp, server):
    payload = os.urandom(3 * 1024 * 1024 + 17)
    digest = hashlib.sha256(payload).hexdigest()
    out = os.path.join(tmp, "out.bin")

    # A normal transfer: bytes, digest line, ack text, no part file.
    s = server(payload)
    r = fetch(["-o", out, "--ack", "host-a ok", "127.0.0.1:%d" % s.port])
    s.finish()
    c.check("serve exit", r.returncode == 0, r.stderr)
    c.check("serve bytes", slurp(out) == payload)
    c.check("serve digest line",
            ("sha256=%s  %s\n" % (digest, out)).encode() in r.stderr,
            r.stderr)
    c.check("serve ack", s.ack == ("Thank you sha256=%s%s host-a ok\n"
                                   % (digest, HOST_ID)).encode(), s.ack)
    c.check("serve no part", leftovers(tmp) == [])
    c.check("serve mode", os.stat(out).st_mode & 0o777 ==
            0o644 & ~current_umask())

    # -o - streams to stdout; -q keeps stderr empty.
    s = server(payload)
    r = fetch(["-q", "-o", "-", "127.0.0.1:%d" % s.port])
    s.finish()
    c.check("stdout exit", r.returncode == 0, r.stderr)
    c.check("stdout bytes", r.stdout == payload)
    c.check("stdout quiet", r.stderr == b"", r.stderr)
    c.check("stdout ack", s.ack == ("Thank you sha256=%s%s\n"
                                    % (digest, HOST_ID)).encode(), s.ack)

    # Without -o, a pipe on stdout is the output.
    s = server(payload)
    r = fetch(["127.0.0.1:%d" % s.port])
    s.finish()
    c.check("default stdout", r.returncode == 0 and r.stdout == payload,
            r.stderr)

    # A nonblocking stdout pipe whose reader is slow: fetch waits for room
    # instead of failing with EAGAIN.
    s = server(payload)
    rfd, wfd = os.pipe()
    os.set_blocking(wfd, False)
    p = subprocess.Popen([os.environ["FDIST_FETCH"], "-q",
                          "127.0.0.1:%d" % s.port], stdout=wfd,
                         stderr=subprocess.PIPE)
    os.close(wfd)
    time.sleep(0.3)
    with os.fdopen(rfd, "rb") as reader:
        got = reader.read()
    err = p.communicate(timeout=WAIT)[1]
    s.finish()
    c.check("nonblocking stdout exit", p.returncode == 0, err)
    c.check("nonblocking stdout bytes", got == payload, len(got))

    # A stdout whose reader went away: an error and exit 6, not SIGPIPE,
    # and no ack for bytes nobody kept.
    rfd, wfd = os.pipe()
    os.close(rfd)
    s = server(payload)
    r = fetch_from(s, [], stdout=wfd, stderr=subprocess.PIPE)
    os.close(wfd)
    check_no_stdout(c, "closed stdout", r, s)

    # Stdout closed by the caller (>&-): exit 6 before connecting, never
    # the socket on descriptor 1 and the file sent back as the "ack".
    s = server(payload)
    r = fetch_from(s, ["-o", "-"], stderr=subprocess.PIPE,
                   preexec_fn=lambda: os.close(1))
    check_no_stdout(c, "stdout closed", r, s)

    # Stderr closed (2>&-): the digest line must not become the ack.
    s = server(payload)
    r = fetch_from(s, ["-o", "-"], stdout=subprocess.PIPE,
                   preexec_fn=lambda: os.close(2))
    c.check("stderr closed exit", r.returncode == 0, r.returncode)
    c.check("stderr closed bytes", r.stdout == payload, len(r.stdout))
    c.check("stderr closed ack", s.ack == ("Thank you sha256=%s%s\n" % (digest, HOST_ID)).encode(), s.ack)

    # An empty file is a valid share.
    s = server(b"")
    r = fetch(["-o", out, "127.0.0.1:%d" % s.port])
    s.finish()
    c.check("empty", r.returncode == 0 and os.path.getsize(out) == 0,
            r.stderr)

    # A reset mid-transfer keeps the old FILE, leaves no part, exits 3.
    spew(out, b"old")
    s = server(payload, "reset")
    r = fetch(["-o", out, "127.0.0.1:%d" % s.port])
    c.check("reset exit", r.returncode == 3, (r.returncode, r.stderr))
    c.check("reset old file", slurp(out) == b"old")
    c.check("reset no part", leftovers(tmp) == [])

    # A refused connection (RST before any byte) exits 3 and says so.
    s = server(payload, "refuse")
    r = fetch(["-o", out, "127.0.0.1:%d" % s.port])
    c.check("refuse exit", r.returncode == 3, (r.returncode, r.stderr))
    c.check("refuse message", b"refused" in r.stderr, r.stderr)
    c.check("refuse no part", leftovers(tmp) == [])

    # Nothing listening: exit 2.
    port = free_port()
    r = fetch(["-o", out, "127.0.0.1:%d" % port])
    c.check("connect exit", r.returncode == 2, (r.returncode, r.stderr))
    c.check("connect no part", leftovers(tmp) == [])

    # Unknown host name: exit 2.
    r = fetch(["-o", out, "no-such-host.invalid:80"])
    c.check("resolve exit", r.returncode == 2, (r.returncode, r.stderr))

    # A wrong digest: exit 5, old FILE kept, mismatch ack with the digest.
    wrong = "AB" * 32
    s = server(payload)
    r = fetch(["-o", out, "--expect-sha256", wrong, "127.0.0.1:%d" % s.port])
    s.finish()
    c.check("mismatch exit", r.returncode == 5, (r.returncode, r.stderr))
    c.check("mismatch old file", slurp(out) == b"old")
    c.check("mismatch no part", leftovers(tmp) == [])
    c.check("mismatch ack", s.ack == ("sha256-mismatch sha256=%s expected=%s%s\n"
                                      % (digest, wrong.lower(), HOST_ID)).encode(), s.ack)

    # The right digest in upper case passes.
    s = server(payload)
    r = fetch(["-q", "-o", out, "--expect-sha256", digest.upper(),
               "127.0.0.1:%d" % s.port])
    s.finish()
    c.check("expect ok", r.returncode == 0, r.stderr)
    c.check("expect ok bytes", slurp(out) == payload)

    # A stalled server: exit 4 near the timeout, no part, no ack.  The
    # unit in upper case, as fdistd.ini takes it.
    spew(out, b"old")
    s = server(payload, "stall")
    t = time.monotonic()
    r = fetch(["-o", out, "--timeout", "500MS", "127.0.0.1:%d" % s.port])
    took = time.monotonic() - t
    s.finish()
    c.check("stall exit", r.returncode == 4, (r.returncode, r.stderr))
    c.check("stall time", 0.4 < took < 5, took)
    c.check("stall old file", slurp(out) == b"old")
    c.check("stall no part", leftovers(tmp) == [])
    c.check("stall no ack", not s.ack, s.ack)

    # SIGTERM mid-transfer removes the part file and dies of the signal.
    s = server(payload, "stall")
    p = subprocess.Popen([os.environ["FDIST_FETCH"], "-q", "-o", out,
                          "127.0.0.1:%d" % s.port],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    part = out + ".part"
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if os.path.exists(part) and os.path.getsize(part) >= 65536:
            break
        time.sleep(0.01)
    c.check("sigterm part seen", os.path.exists(part))
    terminate(p, WAIT)
    p.stderr.close()
    s.finish()
    c.check("sigterm status", p.returncode == -signal.SIGTERM, p.returncode)
    c.check("sigterm no part", leftovers(tmp) == [])
    c.check("sigterm old file", slurp(out) == b"old")
    c.check("sigterm no ack", not s.ack, s.ack)

    # A symlink or a hard link planted at FILE.part is not written
    # through: exit 6, and no ack.
    victim = os.path.join(tmp, "victim")
    spew(victim, b"keep")
    for kind, plant in (("symlink", os.symlink), ("hardlink", os.link)):
        plant(victim, part)
        s = server(payload)
        r = fetch(["-o", out, "127.0.0.1:%d" % s.port])
        s.finish()
        c.check(kind + " exit", r.returncode == 6, (r.returncode, r.stderr))
        c.check(kind + " victim", slurp(victim) == b"keep")
        c.check(kind + " no ack", not s.ack, s.ack)
        os.unlink(part)

    # A leftover FILE.part is replaced, not reused: the published file
    # gets a fresh mode (no setuid bit, nobody else's permissions), and a
    # descriptor someone kept open on the leftover never sees the data.
    spew(part, b"leftover")
    os.chmod(part, 0o4777)
    with open(part, "rb") as held:
        s = server(payload)
        r = fetch(["-o", out, "127.0.0.1:%d" % s.port])
        s.finish()
        c.check("leftover exit", r.returncode == 0, r.stderr)
        c.check("leftover mode", stat.S_IMODE(os.stat(out).st_mode) == 0o644 & ~current_umask(),
                oct(os.stat(out).st_mode))
        c.check("leftover bytes", slurp(out) == payload)
        c.check("leftover held", held.read() == b"leftover")

    # A FILE.part another run holds locked is that run's: exit 7 at once,
    # before connecting, and its part and FILE are left alone.  Once the
    # lock is gone it is a leftover like any other.
    spew(out, b"old")
    with open(part, "wb") as live:
        live.write(b"live")
        live.flush()
        fcntl.flock(live, fcntl.LOCK_EX)
        s = server(payload)
        r = fetch(["-o", out, "127.0.0.1:%d" % s.port])
        s.finish()
        c.check("locked exit", r.returncode == 7, (r.returncode, r.stderr))
        c.check("locked message", ("%s: another fdist-fetch is writing %s\n"
                                   % (part, out)).encode() in r.stderr, r.stderr)
        c.check("locked not connected", not s.accepted)
        c.check("locked part kept", slurp(part) == b"live" and
                os.stat(part).st_ino == os.fstat(live.fileno()).st_ino)
        c.check("locked old file", slurp(out) == b"old")
    s = server(payload)
    r = fetch(["-o", out, "127.0.0.1:%d" % s.port])
    s.finish()
    c.check("unlocked exit", r.returncode == 0, r.stderr)
    c.check("unlocked bytes", slurp(out) == payload and leftovers(tmp) == [])

    # A device is written in place, never renamed over.
    s = server(payload)
    r = fetch(["-o", os.devnull, "127.0.0.1:%d" % s.port])
    s.finish()
    c.check("devnull exit", r.returncode == 0, r.stderr)
    c.check("devnull device", stat.S_ISCHR(os.stat(os.devnull).st_mode))
    c.check("devnull ack", s.ack == ("Thank you sha256=%s%s\n"
                                     % (digest, HOST_ID)).encode(), s.ack)

    # A server that does not read the ack: FILE is still complete.
    s = server(payload, "noread")
    r = fetch(["-o", out, "127.0.0.1:%d" % s.port])
    s.finish()
    c.check("noread exit", r.returncode == 0, r.stderr)
    c.check("noread bytes", slurp(out) == payload)

    # IPv6 with brackets, when the host has ::1.
    if has_ipv6():
        s = server(payload, family=socket.AF_INET6)
        r = fetch(["-o", out, "[::1]:%d" % s.port])
        s.finish()
        c.check("ipv6", r.returncode == 0 and
                slurp(out) == payload, r.stderr)
    else:
        print("SKIP: no IPv6 loopback")

    # Host names go through the resolver: a name of this test's own
    # /etc/hosts, so the machine's resolver set-up does not matter.
    os.unlink(out)
    s = server(payload)
    r = subprocess.run(name_launcher(tmp, "127.0.0.1 fetch-host.test\n") +
                       [os.environ["FDIST_FETCH"], "-o", out, "fetch-host.test:%d" % s.port],
                       capture_output=True, timeout=WAIT)
    s.finish()
    c.check("a host name", r.returncode == 0 and slurp(out) == payload, r.stderr)

    # Usage errors: exit 1 and nothing contacted.
    for args in (["--timeout", "0", "h:1"], ["--timeout", "5x", "h:1"],
                 ["--timeout", "-1", "h:1"], ["--timeout", "25h", "h:1"],
                 ["--expect-sha256", "abc", "h:1"],
                 ["--expect-sha256", "g" * 64, "h:1"],
                 ["--ack", "a\nb", "h:1"], ["--ack", "x" * 201, "h:1"],
                 ["--bogus", "h:1"], ["h"], ["h:0"], ["h:65536"],
                 ["h:+80"], ["::1:80"], ["[::1]80"], []):
        r = fetch(["-o", out] + args)
        c.check("usage %r" % args, r.returncode == 1,
                (r.returncode, r.stderr))
    # Each kind of malformed target is named as such.
    for target, says in (("::1:80", b"write IPv6 addresses as [ADDR]:PORT"),
                         ("h:http", b"port must be a number from 1 to 65535"),
                         ("[::1]80", b"expected HOST:PORT or [ADDR]:PORT"),
                         (":80", b"expected HOST:PORT or [ADDR]:PORT"),
                         ("h" * 300 + ":80", b"host name too long"),
                         # brackets hold an IPv6 address, never a name
                         ("[127.0.0.1]:80", b"'127.0.0.1' is not a numeric IPv6 address"),
                         ("[nosuch]:80", b"'nosuch' is not a numeric IPv6 address")):
        r = fetch(["-o", out, target])
        c.check("target %s" % target, r.returncode == 1 and says in r.stderr,
                (r.returncode, r.stderr))
    r = fetch(["--help"])
    c.check("help", r.returncode == 0 and b"Exit status" in r.stdout)
    r = fetch(["-V"])
    c.check("version", r.returncode == 0 and
            r.stdout.startswith(b"fdist-fetch "))


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def has_ipv6():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
