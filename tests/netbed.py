"""netbed: many hosts on one machine, each a network namespace of its own.

A Bed makes a namespace holding one bridge, and hangs every host it makes
on that bridge by a veth pair created straight inside the two namespaces:
nothing is added to the root namespace, no host gets a default route or
any route but its own subnet's, so no packet can leave the bed.  The
addresses come from 198.18.0.0/15, reserved for benchmarking.

A host can also be given a mount and UTS namespace of its own (Host.isolate):
a hostname, a machine id and a private /run/systemd and /run/log, where a
journald of its own runs; every process of such a host enters all three
namespaces with nsenter.

The namespaces are named PREFIX<pid>-NAME.  Every exit path removes them:
close() in a finally, atexit, and SIGTERM/SIGINT/SIGHUP turned into an exit
that runs both.  A run killed outright (SIGKILL) leaves its bed behind;
the next Bed removes any bed whose pid no longer runs, stopping its
processes by their ids first.
"""

import atexit
import ipaddress
import os
import re
import signal
import subprocess
import sys
import time

from fdtest import terminate

NET = ipaddress.ip_network("198.18.0.0/15")
PREFIX = "fdbed"
_NAME_RE = re.compile(r"^%s(\d+)-\S+" % PREFIX)


def ip(*args, check=True):
    r = subprocess.run(["ip"] + list(args), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError("ip %s: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout


def _bed_namespaces():
    """(name, pid of the run that made it) of every bed namespace."""
    out = []
    for line in ip("netns", "list").splitlines():
        m = _NAME_RE.match(line)
        if m:
            out.append((line.split()[0], int(m.group(1))))
    return out


def _alive(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"python" in f.read()
    except OSError:
        return False


def _kill_namespace(name):
    """Stop the processes left in a namespace (by their ids), then remove it."""
    for _ in range(50):
        pids = [int(p) for p in ip("netns", "pids", name, check=False).split()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    ip("netns", "del", name, check=False)


def cleanup_stale():
    """Remove the beds of runs that are gone; returns their names."""
    gone = [n for n, pid in _bed_namespaces() if not _alive(pid)]
    for name in gone:
        _kill_namespace(name)
    return gone


class Host:
    """One host: a network namespace with one address on the bed's bridge."""

    def __init__(self, bed, name, addr, index):
        self.bed = bed
        self.name = name
        self.ns = "%s-%s" % (bed.tag, name)
        self.addr = str(addr)
        self.holder = None          # the process holding the mount/UTS namespaces
        self.hostname = None
        ip("netns", "add", self.ns)
        bed.namespaces.append(self.ns)
        dev, port = "eth0", "p%d" % index
        ip("link", "add", dev, "netns", self.ns, "type", "veth", "peer", "name", port,
           "netns", bed.core)
        ip("-n", bed.core, "link", "set", port, "master", "br0", "up")
        ip("-n", self.ns, "addr", "add", "%s/%d" % (self.addr, NET.prefixlen), "dev", dev)
        ip("-n", self.ns, "link", "set", dev, "up")
        ip("-n", self.ns, "link", "set", "lo", "up")

    def isolate(self, hostname, machine_id, files=()):
        """Give the host its own mount and UTS namespaces: hostname, machine
        id, tmpfs on /run/systemd and /run/log, and each (src, dst) of files
        bind-mounted over dst (a file or directory that exists on both
        sides).  Processes started afterwards run in them."""
        d = os.path.join(self.bed.tmp, self.name)
        os.makedirs(d, exist_ok=True)
        mid = os.path.join(d, "machine-id")
        with open(mid, "w") as f:
            f.write(machine_id + "\n")
        binds = [(mid, "/etc/machine-id")] + list(files)
        script = ["set -e", "hostname %s" % hostname,
                  "mount -t tmpfs tmpfs /run/systemd", "mkdir -p /run/log",
                  "mount -t tmpfs tmpfs /run/log"]
        script += ["mount --bind %s %s" % (src, dst) for src, dst in binds]
        script += ["echo ready", "exec sleep 1000000"]
        self.holder = subprocess.Popen(
            # nsenter, not "ip netns exec": that one mounts a sysfs of the
            # namespace over /sys, which hides /sys/fs/cgroup from journald.
            ["nsenter", "--net=/run/netns/" + self.ns, "unshare", "-m", "-u", "--propagation", "private",
             "sh", "-c", "\n".join(script)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.bed.procs.append(self.holder)
        line = self.holder.stdout.readline()
        if line != b"ready\n":
            self.holder.wait(10)
            raise RuntimeError("isolate %s: %s" % (self.name, self.holder.stderr.read().decode()))
        self.hostname = hostname
        return self

    def prefix(self):
        """The command prefix that runs a program on this host."""
        if self.holder is not None:
            # in the caller's working directory, as ip netns exec keeps it
            return ["nsenter", "-t", str(self.holder.pid), "-m", "-u", "-n", "--wd=" + os.getcwd()]
        return ["ip", "netns", "exec", self.ns]

    def run(self, args, timeout=60, **kw):
        kw.setdefault("capture_output", True)
        return subprocess.run(self.prefix() + list(args), timeout=timeout, **kw)

    def popen(self, args, log=None, **kw):
        """A long-running process of the host; the bed stops it on close."""
        if log is not None:
            out = open(os.path.join(self.bed.tmp, log), "ab")
            kw.setdefault("stdout", out)
            kw.setdefault("stderr", subprocess.STDOUT)
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(self.prefix() + list(args), **kw)
        self.bed.procs.append(p)
        return p

    def root(self, path):
        """path as this host's processes see it (through the holder's root)."""
        if self.holder is None:
            return path
        return "/proc/%d/root%s" % (self.holder.pid, path)

    def wait_listening(self, port, timeout=20, proc=None):
        """Until something listens on TCP port here (read from the kernel's
        table, so no connection is made to find out)."""
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(["ip", "netns", "exec", self.ns, "ss", "-Hltn",
                                  "sport = :%d" % port], capture_output=True, text=True,
                                 timeout=20).stdout
            if out.strip():
                return
            if proc is not None and proc.poll() is not None:
                raise AssertionError("%s: process exited with %s before listening on %d"
                                     % (self.name, proc.returncode, port))
            if time.monotonic() > deadline:
                raise AssertionError("%s: nothing listens on %d after %ss" % (self.name, port, timeout))
            time.sleep(0.05)

    def routes(self):
        return ip("-n", self.ns, "-o", "route", "show", "table", "all").splitlines()


class Bed:
    """A bridge in a namespace of its own and the hosts on it."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.tag = "%s%d" % (PREFIX, os.getpid())
        self.namespaces = []
        self.procs = []
        self.hosts = []
        self.closed = False
        self.stale = cleanup_stale()
        # A bed of this very pid (an earlier Bed of this run) would clash.
        for name, pid in _bed_namespaces():
            if pid == os.getpid():
                _kill_namespace(name)
        atexit.register(self.close)
        self._old = {}
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, self._on_signal)
        self.core = "%s-core" % self.tag
        try:
            ip("netns", "add", self.core)
            self.namespaces.append(self.core)
            ip("-n", self.core, "link", "add", "br0", "type", "bridge")
            ip("-n", self.core, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def _on_signal(self, sig, frame):
        # An exit, so that every finally and atexit runs.
        raise SystemExit(128 + sig)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def host(self, name, addr):
        h = Host(self, name, addr, len(self.hosts) + 1)
        self.hosts.append(h)
        return h

    def close(self):
        if self.closed:
            return
        self.closed = True
        for sig in self._old:               # no second exit during the cleanup
            signal.signal(sig, signal.SIG_IGN)
        for p in reversed(self.procs):
            try:
                terminate(p, timeout=10)
            except Exception:
                pass
        for ns in reversed(self.namespaces):
            _kill_namespace(ns)
        for sig, old in self._old.items():
            signal.signal(sig, old)
        atexit.unregister(self.close)
