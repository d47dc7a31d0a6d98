"""fdtest: run the real fdistd on loopback and drive real clients.

Each test starts the built binary with a generated configuration on free
ports, waits for READY=1 on a notify socket it owns (never a sleep),
drives clients over real sockets and asserts on payload digests and on
the one log record each client gets.  Every wait is bounded and every
process is stopped on every exit path.
"""

import contextlib
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

FDISTD = os.environ.get("FDISTD", "build/fdistd")
SRCDIR = os.environ.get("SRCDIR", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer",
                     "SUMMARY: UndefinedBehaviorSanitizer")
RECORD_RE = re.compile(r"^\S+ (?:info|warning): transfer (.*)$")
FIELD_RE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


# The programs the tests run that a minimal Debian 12 may lack, and the
# package of each.  .ci/run installs every one; README.md ("Tests")
# names them (test_readme.py checks both).
TOOLS = {
    "strace": "strace",
    "haproxy": "haproxy",
    "prometheus": "prometheus",
    "promtool": "prometheus",
    "jq": "jq",
    "nc": "netcat-openbsd",
    "mandoc": "mandoc",
    "ip": "iproute2",
    "ss": "iproute2",
    "tc": "iproute2",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "setpriv": "util-linux",
    "journalctl": "systemd",
    "systemd-analyze": "systemd",
    "systemd-socket-activate": "systemd",
    "systemd-cat": "systemd",
    "/lib/systemd/systemd-journald": "systemd",
    "/lib/systemd/systemd-journal-remote": "systemd-journal-remote",
    "/lib/systemd/systemd-journal-upload": "systemd-journal-remote",
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
}


class Skip(Exception):
    """The test cannot run here; the message says what it lacks."""


def on_ci():
    return os.environ.get("CI") == "true"


def unavailable(reason):
    """A test that cannot run here is skipped, saying why; but under
    CI=true, where .ci/run has installed everything and runs as root, it
    fails: a skip there would hide what the test checks."""
    if on_ci():
        raise AssertionError("%s (CI=true: a test may not skip)" % reason)
    raise Skip(reason)


def need(tool):
    """The path of tool, a program of TOOLS; if it is missing, the test
    is unavailable()."""
    path = tool if os.path.isabs(tool) and os.access(tool, os.X_OK) else shutil.which(tool)
    if not path:
        unavailable("%s is not installed (apt-get install %s)" % (tool, TOOLS[tool]))
    return path


def need_root(why):
    if os.geteuid() != 0:
        unavailable("needs root: %s" % why)


def require(*tools, root=None):
    """For a test program's start: every tool present (and root, if a
    reason for it is given), or the whole program is skipped (exit 77,
    meson's skip) or under CI=true failed, saying why."""
    try:
        if root:
            need_root(root)
        for tool in tools:
            need(tool)
    except Skip as e:
        print("SKIP: %s" % e)
        sys.exit(77)
    except AssertionError as e:
        print("FAIL: %s" % e)
        print("0 passed, 1 failed")
        sys.exit(1)


_given_ports = set()


def free_port(family=socket.AF_INET):
    """A TCP port nothing listens on right now (the kernel's pick), and
    not one this process was given before: the kernel may pick the same
    free port twice in a row, which two shares of one test cannot share."""
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given_ports:
            _given_ports.add(port)
            return port
    raise AssertionError("no port not given before in 100 tries")


def free_port_outside_ephemeral():
    """A free TCP port below the kernel's range for the source ports of
    outgoing connections: a port a test's daemon binds and lets go of
    again and again (a share that reloads add and remove), which a
    client's connect() could otherwise take meanwhile, failing the next
    bind with EADDRINUSE."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    for port in random.sample(range(max(1024, low - 8192), low), 200):
        if port in _given_ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given_ports.add(port)
        return port
    raise AssertionError("no free port below %d in 200 tries" % low)


def parse_record(line):
    """The fields of one stderr transfer line, or None."""
    m = RECORD_RE.match(line)
    if not m:
        return None
    rec = {}
    for key, value in FIELD_RE.findall(m.group(1)):
        if value.startswith('"'):
            value = value[1:-1]
        rec[key] = value
    return rec


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class NotifySocket:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages = []
        self.lock = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.closed:
            try:
                self.sock.settimeout(0.2)
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.messages.append((time.monotonic(), data.decode(errors="replace")))
                self.lock.notify_all()

    def wait_for(self, predicate, timeout=10, start=0):
        """Wait until a message (from index start on) satisfies predicate."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for i, (_, msg) in enumerate(self.messages[start:], start):
                    if predicate(msg):
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("notify: timed out; got %r" % [m for _, m in self.messages])
                self.lock.wait(left)

    def close(self):
        """Stop reading, but keep what is already queued on the socket."""
        self.closed = True
        self.thread.join(2)
        self.sock.setblocking(False)
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                break
            with self.lock:
                self.messages.append((time.monotonic(), data.decode(errors="replace")))
        self.sock.close()


class Daemon:
    """One fdistd process with a generated configuration."""

    def __init__(self, tmp, shares, global_opts=None, extra_args=(), env=None, start=True, launcher=()):
        self.tmp = tmp
        self.shares = shares
        self.global_opts = {"log": "stderr"}
        self.global_opts.update(global_opts or {})
        self.config = os.path.join(tmp, "fdistd.ini")
        self.stderr_path = os.path.join(tmp, "fdistd.stderr")
        self.extra_args = list(extra_args)
        self.launcher = list(launcher)
        self.env = env or {}
        self.proc = None
        self.notify = None
        self.write_config()
        if start:
            self.start()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.stop()
        self.close()

    def write_config(self, shares=None, global_opts=None):
        if shares is not None:
            self.shares = shares
        if global_opts is not None:
            self.global_opts = global_opts
        lines = ["[fdistd]"]
        lines += ["%s = %s" % kv for kv in self.global_opts.items()]
        for name, opts in self.shares.items():
            lines += ["", "[%s]" % name]
            lines += ["%s = %s" % kv for kv in opts.items()]
        tmp = self.config + ".new"
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.rename(tmp, self.config)

    def start(self, wait_ready=True):
        self.notify = NotifySocket(os.path.join(self.tmp, "notify.sock"))
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        env["NOTIFY_SOCKET"] = self.notify.path
        env.update(self.env)
        for name in [k for k, v in env.items() if v is None]:
            del env[name]            # env={"X": None}: no X at all
        self.stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(self.launcher + [FDISTD, "-c", self.config] + self.extra_args,
                                     stdin=subprocess.DEVNULL, stdout=self.stderr,
                                     stderr=self.stderr, env=env)
        if wait_ready:
            try:
                self.notify.wait_for(lambda m: "READY=1" in m.split("\n"), timeout=15)
            except AssertionError:
                raise AssertionError("daemon did not become ready; stderr:\n" + self.log())
        return self

    def log(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def records(self):
        return [r for r in map(parse_record, self.log().splitlines()) if r]

    def wait_records(self, n, timeout=20, share=None):
        """Wait until there are at least n records (of a share) and return them."""
        deadline = time.monotonic() + timeout
        while True:
            recs = [r for r in self.records() if share is None or r["share"] == share]
            if len(recs) >= n:
                return recs
            if time.monotonic() > deadline:
                raise AssertionError("expected %d records, have %d; log:\n%s" % (n, len(recs), self.log()[-4000:]))
            if self.proc.poll() is not None:
                raise AssertionError("daemon exited with %s; log:\n%s" % (self.proc.returncode, self.log()[-4000:]))
            time.sleep(0.02)

    def wait_log(self, pattern, timeout=10, count=1):
        deadline = time.monotonic() + timeout
        while True:
            hits = re.findall(pattern, self.log())
            if len(hits) >= count:
                return hits
            if time.monotonic() > deadline:
                raise AssertionError("log never matched %r:\n%s" % (pattern, self.log()[-4000:]))
            time.sleep(0.02)

    def signal(self, sig):
        self.proc.send_signal(sig)

    @contextlib.contextmanager
    def stopped(self):
        """The daemon held in SIGSTOP for the block, continued however it
        ends: the kernel queues connections and signals meanwhile."""
        self.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.proc.send_signal(signal.SIGCONT)

    def reload(self, timeout=10):
        """SIGHUP and wait for the READY=1 that follows RELOADING=1."""
        start = len(self.notify.messages)
        self.proc.send_signal(signal.SIGHUP)
        i = self.notify.wait_for(lambda m: "RELOADING=1" in m, timeout, start)
        self.notify.wait_for(lambda m: "READY=1" in m.split("\n"), timeout, i + 1)

    def stop(self, timeout=15):
        """SIGTERM and wait; returns the exit status.  Fails the test on
        any sanitizer report (leaks are checked at exit)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("daemon did not stop within %ss" % timeout)
        self.close()
        self.check_sanitizers()
        return rc

    def check_sanitizers(self):
        log = self.log()
        for marker in SANITIZER_MARKERS:
            if marker in log:
                raise AssertionError("sanitizer report in the daemon's log:\n" + log[-6000:])

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.notify is not None:
            self.notify.close()
            self.notify = None
        if getattr(self, "stderr", None):
            self.stderr.close()
            self.stderr = None


def name_launcher(tmp, hosts="", nameserver=None, resolv_options=""):
    """A launcher that runs the program in a mount namespace of its own,
    where /etc/hosts is the given text and, with a nameserver (an address
    on loopback), host names go to that DNS server and nowhere else; with
    none, names are looked up in that /etc/hosts only.  So a test never
    depends on how the machine resolves names."""
    d = tempfile.mkdtemp(prefix="names-", dir=tmp)
    with open(os.path.join(d, "hosts"), "w") as f:
        f.write(hosts)
    with open(os.path.join(d, "nsswitch.conf"), "w") as f:
        f.write("hosts: %s\n" % ("files dns" if nameserver else "files"))
    files = ["hosts", "nsswitch.conf"]
    if nameserver:
        assert os.path.exists("/etc/resolv.conf"), "no /etc/resolv.conf to mount over"
        files.append("resolv.conf")
        with open(os.path.join(d, "resolv.conf"), "w") as f:
            f.write("nameserver %s\n" % nameserver)
            if resolv_options:
                f.write("options %s\n" % resolv_options)
    script = "".join("mount --bind %s/%s /etc/%s && " % (d, n, n) for n in files)
    return [need("unshare"), "-m", "--propagation", "private", "sh", "-c", script + 'exec "$@"', "sh"]


def strace_attach(pid, *args, timeout=10):
    """strace (with args) attached to a running process; returns once the
    kernel shows it as the tracer, not after a guessed delay."""
    st = subprocess.Popen([need("strace"), "-qq", *args, "-p", str(pid)])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/%d/status" % pid) as f:
            if re.search(r"^TracerPid:\s+%d$" % st.pid, f.read(), re.M):
                time.sleep(0.05)            # past the attach's own stop
                return st
        if st.poll() is not None:
            raise AssertionError("strace exited with %d" % st.returncode)
        time.sleep(0.01)
    st.kill()
    raise AssertionError("strace did not attach to %d" % pid)


PIDS_CGROUPS = "/sys/fs/cgroup/pids"


class NoThreads:
    """A pids cgroup of the test's own that allows no thread: a program
    its launcher starts runs in it and cannot start one (pids.max 1)
    until allow().  Removed on the way out, once its processes are gone."""

    def __init__(self, name):
        if not os.access(os.path.join(PIDS_CGROUPS, "cgroup.procs"), os.W_OK):
            raise AssertionError("no writable pids cgroup hierarchy at " + PIDS_CGROUPS)
        self.group = os.path.join(PIDS_CGROUPS, "fdtest-%s-%d" % (name, os.getpid()))
        self.launcher = ["sh", "-c", 'echo $$ > %s/cgroup.procs && exec "$0" "$@"' % self.group]
        os.mkdir(self.group)
        try:
            self._limit("1")
        except BaseException:
            os.rmdir(self.group)
            raise

    def _limit(self, value):
        with open(os.path.join(self.group, "pids.max"), "w") as f:
            f.write(value)

    def allow(self):
        self._limit("max")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.rmdir(self.group)


def thread_names(pid):
    """{thread id: name} of a process's live threads, from /proc."""
    names = {}
    for task in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, task)) as f:
                names[int(task)] = f.read().strip()
        except FileNotFoundError:
            pass             # a thread that just ended
    return names


def cpu_seconds(pid, tids=None):
    """CPU seconds (user + system) the process pid has used, or only its
    threads tids."""
    paths = ["/proc/%d/stat" % pid] if tids is None else ["/proc/%d/task/%d/stat" % (pid, t) for t in tids]
    ticks = 0
    for path in paths:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def terminate(proc, timeout=15):
    """SIGTERM (if it still runs), then SIGKILL past timeout; returns the
    exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def connect(port, host="127.0.0.1", timeout=10, bind=None):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if bind:
        s.bind((bind, 0))
    s.connect((host, port))
    return s


def read_all(sock, first=b"", chunk=1 << 20, pause=0.0):
    """Read to EOF (pausing after each read, for a slow client)."""
    data = bytearray(first)
    while True:
        b = sock.recv(chunk)
        if not b:
            return bytes(data)
        data += b
        if pause:
            time.sleep(pause)


def send_ack(port, ack, timeout=60):
    """One client: read the file, send the ack, close.  Returns the
    client's port, which names its record (acks can be kept alike)."""
    s = connect(port, timeout=timeout)
    try:
        local = s.getsockname()[1]
        read_all(s)
        s.sendall(ack)
    finally:
        s.close()
    return local


def fetch(port, ack=b"Thank you\0", host="127.0.0.1", bufsize=1 << 20, timeout=20):
    """Read to EOF, send the ack, close; return the bytes."""
    s = connect(port, host, timeout)
    chunks = []
    try:
        while True:
            b = s.recv(bufsize)
            if not b:
                break
            chunks.append(b)
        if ack:
            s.sendall(ack)
    finally:
        s.close()
    return b"".join(chunks)


def make_file(path, size, seed=1):
    """A file of pseudo-random bytes (fast and reproducible)."""
    block = hashlib.sha512(str(seed).encode()).digest() * 16384  # 1 MiB
    with open(path, "wb") as f:
        left = size
        i = 0
        while left > 0:
            chunk = block[i % 61:] + block[: i % 61]
            f.write(chunk[:left])
            left -= min(left, len(chunk))
            i += 1
    return path


def linger_reset(sock):
    """Make close() send RST."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class Runner:
    """Run the test_* functions of a module, each with a fresh temp dir."""

    def __init__(self, module_globals):
        self.tests = [(n, f) for n, f in module_globals.items() if n.startswith("test_") and callable(f)]

    def run(self, argv):
        """0 if every test passed or skipped, 1 if one failed; 77 (meson's
        skip) if all were skipped, then without the "N passed, N failed"
        line, which .ci/count.py would take for a run."""
        only = set(argv[1:])
        passed = failed = skipped = 0
        for name, func in self.tests:
            if only and name not in only:
                continue
            t0 = time.monotonic()
            with tempfile.TemporaryDirectory(prefix="fdtest-") as tmp:
                try:
                    func(tmp)
                except Skip as e:
                    skipped += 1
                    print("skip %s: %s" % (name, e))
                except Exception:
                    failed += 1
                    print("FAIL %s (%.2fs)" % (name, time.monotonic() - t0))
                    traceback.print_exc(file=sys.stdout)
                else:
                    passed += 1
                    print("ok   %s (%.2fs)" % (name, time.monotonic() - t0))
                sys.stdout.flush()
        if skipped and not passed and not failed:
            print("SKIP: all %d tests skipped" % skipped)
            return 77
        if skipped:
            print("%d skipped" % skipped)
        print("%d passed, %d failed" % (passed, failed))
        return 1 if failed else 0


def main(module_globals):
    sys.exit(Runner(module_globals).run(sys.argv))
