"""fleetbed: one journal for many fdistd servers on a bed (tests/netbed.py),
set up as README.md's "Many servers" says.

A collector runs the real systemd-journal-remote with the ExecStart= of
the README's drop-in, on the port of the Debian socket unit (socket-
activated), writing into the test's /var/log/journal/remote.  Each server
host gets a hostname, machine id and /run of its own (Host.isolate), its
own journald, an fdistd logging to it, and systemd-journal-upload as the
Debian unit runs it, with the README's journal-upload.conf (its collector
name resolved by the server's own /etc/hosts) and its state file in the
default place, /var/lib/systemd/journal-upload: the host's /var/lib is a
directory of the test.  tests/test_fleet.py (servers behind a balancer)
and tests/test_tiers.py (a central server and edges following it) build
their fleets with it.
"""

import json
import os
import re
import subprocess
import time

import fdtest
from fdtest import SRCDIR, Daemon
from netbed import Bed, ip

JOURNALD = "/lib/systemd/systemd-journald"
JREMOTE = "/lib/systemd/systemd-journal-remote"
JUPLOAD = "/lib/systemd/systemd-journal-upload"
UNITS = "/lib/systemd/system"
REMOTE_DIR = "/var/log/journal/remote"
TRANSFER_ID = "68da270df4994c348ba467a048bebbc3"
REPORT = os.environ.get("FDIST_REPORT", "build/fdist-report")


def unit_value(unit, key):
    """The value of key= in a Debian unit file."""
    with open(os.path.join(UNITS, unit)) as f:
        (value,) = re.findall(r"^%s=(.*)$" % key, f.read(), re.M)
    return value


def readme_section(title):
    """The text of README.md's section "## title"."""
    with open(os.path.join(SRCDIR, "README.md")) as f:
        text = f.read()
    head = "\n## %s\n" % title
    assert head in text, "README.md has no section \"%s\"" % title
    return text.split(head, 1)[1].split("\n## ", 1)[0]


def printf(arg):
    """What sh's printf makes of a README line's quoted argument."""
    return subprocess.run("printf " + arg, shell=True, capture_output=True, text=True,
                          check=True).stdout


def readme_fleet():
    """What README.md's "Many servers" runs: journal-remote's command
    line, journal-upload.conf's text, and the report's command."""
    sec = readme_section("Many servers")
    m = re.search(r"ExecStart=(%s [^\\']*)" % re.escape(JREMOTE), sec)
    assert m, "no ExecStart= of journal-remote in README.md's Many servers"
    remote = m.group(1).split()
    m = re.search(r"printf ('[^']*') > /etc/systemd/journal-upload\.conf", sec)
    assert m, "no journal-upload.conf in README.md's Many servers"
    upload_conf = printf(m.group(1))
    (report,) = [l for l in sec.splitlines() if l.startswith("fdist-report -D ")]
    return remote, upload_conf, report.split()


def journal(directory, *match, fmt="json"):
    r = subprocess.run(["journalctl", "-D", directory, "-o", fmt, "--no-pager"] + list(match),
                       capture_output=True, text=True, timeout=60)
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def journal_file(path, *match):
    r = subprocess.run(["journalctl", "--file", path, "-o", "json", "--no-pager"] + list(match),
                       capture_output=True, text=True, timeout=60)
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def key(rec):
    """What identifies one record wherever it was copied to."""
    return (rec["_HOSTNAME"], rec["_MACHINE_ID"], rec["__REALTIME_TIMESTAMP"], rec["MESSAGE"])


def addr_of(peer):
    return peer.rsplit(":", 1)[0]


def wait_until(what, predicate, timeout, interval=0.2):
    """Poll predicate (returning a value, falsy while not yet) within timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(interval)


def assert_contained(bed):
    """No route out of any namespace, nothing of the bed in the root one."""
    for h in bed.hosts:
        for line in h.routes():
            assert not line.startswith("default"), (h.name, line)
            assert re.match(r"(198\.18\.0\.0/15|local |broadcast |fe80::/64|multicast )",
                            line), (h.name, line)
    assert ip("-o", "addr", "show", "to", "198.18.0.0/15") == ""
    assert bed.tag not in ip("-o", "link", "show")


def main(module_globals, what):
    """fdtest's main, as root and with the bed's tools only: skipped
    otherwise (failed under CI=true, fdtest.require)."""
    fdtest.require(JOURNALD, "ip", "ss", "nsenter", "unshare", root="%s builds network namespaces" % what)
    fdtest.main(module_globals)


class Fleet:
    """A bed and its collector and servers, as README's "Many servers"
    sets them up.  As a context manager it kills the daemons and closes
    the bed (stopping every other process, removing the namespaces) on
    the way out, however it goes."""

    def __init__(self, tmp):
        self.bed = Bed(tmp)
        try:
            self._setup(tmp)
        except BaseException:
            self.bed.close()
            raise

    def _setup(self, tmp):
        self.tmp = tmp
        self.remote_cmd, self.upload_conf, self.report_cmd = readme_fleet()
        self.collector_name = re.search(r"^URL=https?://([^:/]+)", self.upload_conf, re.M).group(1)
        self.jconf = os.path.join(tmp, "journald.conf")
        with open(self.jconf, "w") as f:
            f.write("[Journal]\nStorage=volatile\nRateLimitBurst=0\nReadKMsg=no\n")
        self.col_journal = os.path.join(tmp, "col", "journal")      # the collector's /var/log/journal
        self.remote_dir = self.col_journal + REMOTE_DIR[len("/var/log/journal"):]
        os.makedirs(self.remote_dir)
        self.col = None
        self.daemons = []
        self.hostnames = []

    def collector(self, col):
        """Make host col the collector: journal-remote as the README's
        drop-in runs it, on the Debian socket unit's port, socket-activated."""
        col.isolate("fdbed-collector", "c" * 32, [(self.col_journal, "/var/log/journal")])
        port = int(unit_value("systemd-journal-remote.socket", "ListenStream"))
        jr = col.popen(["systemd-socket-activate", "-l", str(port)] + self.remote_cmd,
                       log="journal-remote.log")
        col.wait_listening(port, proc=jr)
        self.col = col
        return col

    def server(self, host, hostname, machine_id, shares, global_opts=None, hosts=(), start=True):
        """Make host a server named hostname: its own journald, an fdistd
        (logging to that journal) with these shares and [fdistd] settings,
        and journal-upload to the collector.  hosts: more (address, name)
        lines for its /etc/hosts.  Returns the Daemon, started unless
        start is false; its /var/lib is the host's directory var-lib."""
        assert self.col is not None, "the collector first"
        d = os.path.join(self.tmp, host.name)
        os.makedirs(os.path.join(d, "journal"))
        os.makedirs(os.path.join(d, "var-lib", "systemd", "journal-upload"))
        with open(os.path.join(d, "journal-upload.conf"), "w") as f:
            f.write(self.upload_conf)
        with open(os.path.join(d, "hosts"), "w") as f:
            f.write("127.0.0.1 localhost\n%s %s\n%s %s\n" % (host.addr, hostname, self.col.addr,
                                                              self.collector_name))
            f.write("".join("%s %s\n" % line for line in hosts))
        host.isolate(hostname, machine_id,
                     [(self.jconf, "/etc/systemd/journald.conf"),
                      (os.path.join(d, "journal-upload.conf"), "/etc/systemd/journal-upload.conf"),
                      (os.path.join(d, "hosts"), "/etc/hosts"),
                      (os.path.join(d, "journal"), "/var/log/journal"),
                      (os.path.join(d, "var-lib"), "/var/lib")])
        jd = host.popen([JOURNALD], log="%s/journald.log" % host.name)
        wait_until("journald of " + hostname,
                   lambda: os.path.exists(host.root("/run/systemd/journal/socket")) or jd.poll() is not None,
                   20)
        assert jd.poll() is None, "journald of %s exited" % hostname
        opts = {"log": "journal"}
        opts.update(global_opts or {})
        fd = Daemon(d, shares, opts, launcher=host.prefix(), start=False)
        self.daemons.append(fd)
        self.hostnames.append(hostname)
        if start:
            fd.start()
        host.popen(unit_value("systemd-journal-upload.service", "ExecStart").split(),
                   log="%s/upload.log" % host.name)
        return fd

    def local_journal(self, host):
        """The directory of a server's own (volatile) journal."""
        return host.root("/run/log/journal")

    def report_command(self, share, hosts):
        """The README's fdist-report line, run on the collector, for this
        share and hosts file."""
        assert self.report_cmd[:3] == ["fdist-report", "-D", REMOTE_DIR], self.report_cmd
        cmd = [REPORT] + self.report_cmd[1:]
        cmd[cmd.index("--share") + 1] = share
        cmd[cmd.index("--hosts") + 1] = hosts
        return cmd

    def stop(self):
        for d in self.daemons:
            d.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for d in self.daemons:
            d.close()
        self.bed.close()

    def removed(self):
        """Whether no namespace of the bed is left."""
        return not [n for n in ip("netns", "list").split() if n.startswith(self.bed.tag)]
