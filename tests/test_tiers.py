#!/usr/bin/env python3
"""Edge tiers that sync themselves: a central fdistd, three edges that
follow it as fdist-sync@.service does, clients behind each edge, one
journal for all of them on a collector.

Every host is a network namespace on one bridge (tests/netbed.py, no route
out).  The collector runs systemd-journal-remote, and the central server
and each edge run their own journald, fdistd and systemd-journal-upload
(tests/fleetbed.py, as README's "Many servers" says).  What README's
"Tiers" sets up is read from it: the central's manifest setting, an
edge's environment file (its upstream by name, resolved by the edge's own
/etc/hosts) and its share.  Each edge runs the very command line of
systemd/fdist-sync@.service.in's ExecStart=, expanded with that file as
systemd does, its output in the edge's journal; the edge's fdistd is
reloaded only after exit 0 (the unit's ExecStopPost=), and the next run
comes INTERVAL after a run ends (the timer's OnUnitInactiveSec=, here a
few seconds).  The first copy is made before the edge's fdistd starts,
as the README's steps do.

Checked against the real programs:
- version 1, published on the central, reaches every client with its
  SHA-256, and fdist-report -D on the collector shows every edge done
  against the central and every client done against its own edge;
- version 2, renamed into place and reloaded, reaches every client within
  one interval plus the transfer times (printed);
- an edge cut off from the central keeps serving version 1, its syncs
  fail with exit status 2 and fdist-fetch's message naming the central's
  address and the cause, in its journal and on the collector; back on the
  network, it catches up within one interval;
- a file rewritten in place on the central (dd conv=notrunc) while every
  edge is fetching it: each edge's copy is refused (the central resets
  it as file-changed, or its digest is not the announced one) and none is
  published, the clients get the version before; once writing stops the
  central serves the new content as a version of its own (fdistd(8),
  FILES CHANGED IN PLACE) and the edges take that, and only that;
- over the whole run, each edge published exactly the versions the
  central announced, each once, and was reloaded once for each.
"""

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time

from fdtest import SRCDIR, file_sha256, make_file, need
from fleetbed import (JREMOTE, JUPLOAD, TRANSFER_ID, Fleet, addr_of, assert_contained, journal, main,
                      printf, readme_section, wait_until)
from netbed import ip
from test_units import unit_settings

FETCH = os.path.abspath(os.environ.get("FDIST_FETCH", "build/fdist-fetch"))
INTERVAL = 3.0          # the edges' polling interval: OnUnitInactiveSec= of the timer
FIRST = 1.0             # OnActiveSec=: the first timer run after it starts
SLACK = 1.5             # scheduling on a loaded machine; less than INTERVAL
COLLECTOR = "198.18.0.2"
CENTRAL = "198.18.0.10"
EDGES = ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
CLIENTS = [["198.18.%d.%d" % (e + 1, c + 1) for c in range(3)] for e in range(len(EDGES))]
CUT = 2                 # the edge cut off from the central while version 2 goes out
SIZE = 2 * 1024 * 1024
SLOW = "2mbit"          # the central's uplink while it is rewritten: copies in flight for seconds


def readme_tiers():
    """What README.md's "Tiers" sets up: the upstream's manifest setting,
    an edge's fdist-sync environment file (path and text), the share's
    name and the edge's [share] section."""
    sec = readme_section("Tiers")
    m = re.search(r"`manifest = ([^`]+)` in `\[fdistd\]`", sec)
    assert m, "no manifest setting in README.md's Tiers"
    manifest = m.group(1)
    m = re.search(r"^printf ('UPSTREAM=[^']*') > (/etc/fdist-sync/([\w.-]+)\.conf)", sec, re.M)
    assert m, "no fdist-sync environment file in README.md's Tiers"
    env_text, env_path, share = printf(m.group(1)), m.group(2), m.group(3)
    m = re.search(r"^printf ('[^']*') >>? /etc/fdistd\.ini", sec, re.M)
    assert m, "no edge share in README.md's Tiers"
    cp = configparser.ConfigParser()
    cp.read_string(printf(m.group(1)))
    assert cp.sections() == [share], cp.sections()
    return manifest, env_path, env_text, share, dict(cp[share])


def environment_file(text):
    """KEY=VALUE lines, as systemd's EnvironmentFile= reads them."""
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if line and line[0] not in "#;":
            k, v = line.split("=", 1)
            env[k.strip()] = " ".join(shlex.split(v))
    return env


def unit_command(unit, instance, env):
    """ExecStart= of the unit's instance, expanded as systemd does: %i the
    instance, a word $VAR the variable's words, ${VAR} its value as one
    word; @BINDIR@ is the build's."""
    (line,) = unit["ExecStart"]
    assert line.startswith("@BINDIR@/fdist-fetch "), line
    argv = [FETCH]
    for word in shlex.split(line)[1:]:
        word = word.replace("%i", instance)
        m = re.fullmatch(r"\$(\w+)", word)
        if m:
            argv += env.get(m.group(1), "").split()
            continue
        word = re.sub(r"\$\{(\w+)\}", lambda v: env[v.group(1)], word)
        assert not re.search(r"[%$@]", word), ("unexpanded", word)
        argv.append(word)
    return argv


class Run:
    """One ended run of the sync."""

    def __init__(self, pid, rc, start, end, reloaded, digest):
        self.pid, self.rc, self.start, self.end = pid, rc, start, end
        self.reloaded = reloaded        # when the edge's fdistd was ready again, or None
        self.digest = digest            # of the served file after exit 0

    def __repr__(self):
        return "Run(pid %d, exit %d, %.2f-%.2f)" % (self.pid, self.rc, self.start, self.end)


class Sync(threading.Thread):
    """fdist-sync@SHARE.timer and .service on an edge: the unit's command
    line (its output to the edge's journal, as the unit's goes), then the
    edge's fdistd reloaded after exit 0 if it runs (ExecStopPost='s
    try-reload-or-restart), again INTERVAL after each run ended."""

    def __init__(self, host, fdistd, argv, journal_id, served):
        super().__init__(daemon=True)
        self.host, self.fdistd, self.argv = host, fdistd, argv
        self.journal_id, self.served = journal_id, served
        self.runs = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.error = None

    def once(self):
        start = time.monotonic()
        # systemd-cat execs the command: its pid is the pid of the
        # journal's lines (nsenter execs too)
        p = self.host.popen(["systemd-cat", "-t", self.journal_id] + self.argv)
        rc = p.wait(120)
        end = time.monotonic()
        reloaded = digest = None
        if rc == 0:
            digest = file_sha256(self.host.root(self.served))
            if self.fdistd.proc is not None and self.fdistd.proc.poll() is None:
                self.fdistd.reload(timeout=30)
                reloaded = time.monotonic()
        run = Run(p.pid, rc, start, end, reloaded, digest)
        with self.lock:
            self.runs.append(run)
        return run

    def run(self):
        try:
            wait = FIRST
            while not self.stopping.wait(wait):
                self.once()
                wait = INTERVAL
        except Exception as e:          # the main thread checks it
            self.error = e

    def snapshot(self):
        with self.lock:
            return list(self.runs)

    def published_since(self, t):
        """The first run started at t or later that published (exit 0)."""
        return next((r for r in self.snapshot() if r.start >= t and r.rc == 0), None)


class Fetch:
    """A client's fdist-fetch from its edge."""

    def __init__(self, host, edge, port, tmp):
        self.host, self.edge = host, edge
        self.out = os.path.join(tmp, host.name + ".img")
        self.start = time.monotonic()
        self.end = None
        self.p = host.popen([FETCH, "-q", "-o", self.out, "--host-id=" + host.name, "--timeout=20s",
                             "%s:%d" % (edge.addr, port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def poll(self):
        if self.end is None and self.p.poll() is not None:
            self.end = time.monotonic()
        return self.end is not None

    def result(self):
        """The digest of what the client holds, after checking it succeeded."""
        _, err = self.p.communicate(timeout=60)
        assert self.p.returncode == 0, (self.host.name, self.p.returncode, err)
        return file_sha256(self.out)


def fetch_all(groups, edges, port, tmp, idx=None):
    """Every client of the edges idx fetches at once; returns the Fetches."""
    idx = range(len(edges)) if idx is None else idx
    fetches = [Fetch(c, edges[i], port, tmp) for i in idx for c in groups[i]]
    wait_until("the clients' fetches", lambda: all([f.poll() for f in fetches]), 60, interval=0.02)
    return fetches


def rollout(syncs, groups, edges, idx, after, port, tmp, timeout):
    """Start each edge's clients as soon as that edge has published a
    version (a run started at after or later) and been reloaded; returns
    {edge index: (its run, its clients' Fetches)} once all have ended."""
    out = {}
    deadline = time.monotonic() + timeout
    while True:
        for i in idx:
            if i not in out:
                r = syncs[i].published_since(after)
                if r is not None:
                    out[i] = (r, [Fetch(c, edges[i], port, tmp) for c in groups[i]])
        done = [f.poll() for _, fs in out.values() for f in fs]
        if len(out) == len(idx) and all(done):
            return out
        if time.monotonic() > deadline:
            raise AssertionError("rollout: after %ds, edges published: %s; runs: %s" % (
                timeout, sorted(out), {i: syncs[i].snapshot()[-4:] for i in idx}))
        time.sleep(0.02)


def hash_time(fleet, host, digest):
    """How long the central took to hash a version (its log line)."""
    for rec in journal(fleet.local_journal(host)):
        m = re.search(r": sha256 %s \((\d+\.\d+) s\)$" % digest, str(rec.get("MESSAGE", "")))
        if m:
            return float(m.group(1))
    raise AssertionError("the central never logged the sha256 %s" % digest)


def check_rollout(what, out, t0, hashing):
    """Each client verified within one interval plus the transfer times of
    the central's hashing, its edge's sync and reload and its own fetch."""
    figures = []
    for i, (run, fetches) in sorted(out.items()):
        for f in fetches:
            took = f.end - t0
            transfer = hashing + (run.end - run.start) + (run.reloaded - run.end) + (f.end - f.start)
            assert took <= INTERVAL + transfer + SLACK, \
                ("%s: %s got it %.2f s after, more than interval %.1f + transfers %.2f + %.1f"
                 % (what, f.host.name, took, INTERVAL, transfer, SLACK))
            figures.append((took, transfer))
    last, transfer = max(figures)
    print("%s: last client verified %.2f s after (interval %.1f s, its transfers %.2f s: "
          "hashing %.2f s, edges' syncs %.2f-%.2f s)" % (
              what, last, INTERVAL, transfer, hashing,
              min(r.end - r.start for r, _ in out.values()), max(r.end - r.start for r, _ in out.values())))
    sys.stdout.flush()
    return last


def sync_messages(fleet, host, ident, run):
    """fdist-fetch's lines of one run, from the edge's own journal."""
    def lines():
        recs = journal(fleet.local_journal(host), "SYSLOG_IDENTIFIER=" + ident, "_PID=%d" % run.pid)
        return [str(r["MESSAGE"]) for r in recs] or None
    return wait_until("the journal lines of %s on %s" % (run, host.name), lines, 20)


def report(fleet, share, hosts, digest):
    """fdist-report's JSON on the collector, once every host is done."""
    def done():
        r = fleet.col.run(fleet.report_command(share, hosts) + ["--sha256", digest, "--json"], text=True)
        assert r.returncode in (0, 1), r
        return r if r.returncode == 0 else None
    return json.loads(wait_until("fdist-report -D on the collector: all of %s done" % os.path.basename(hosts),
                                 done, 40, interval=0.5).stdout)


def check_report(rep, servers, digest):
    """Every host of the report done and verified, each by its server."""
    s = rep["summary"]
    assert s["sha256"] == digest and s["complete"], s
    assert s["total"] == s["done"] == len(servers), s
    for h in rep["hosts"]:
        assert h["state"] == "done" and h["verified"] is True, h
        assert h["server"] == servers[h["host"]], (h, servers[h["host"]])


class EdgeSetup:
    """What README's "Tiers" and the unit say an edge runs, checked to
    agree with each other."""

    def __init__(self):
        self.manifest, env_path, env_text, self.share, self.edge_share = readme_tiers()
        with open(os.path.join(SRCDIR, "systemd", "fdist-sync@.service.in")) as f:
            unit = unit_settings(f.read())
        env = environment_file(env_text)
        self.upstream_name, self.upstream_port = env["UPSTREAM"].rsplit(":", 1)
        assert self.manifest.rsplit(":", 1)[1] == self.upstream_port, (self.manifest, env)
        # the unit reads the README's file, writes the README's share file
        # in its StateDirectory=, succeeds on 8, and reloads after exit 0 only
        assert unit["EnvironmentFile"] == ["@SYSCONFDIR@/fdist-sync/%i.conf"], unit["EnvironmentFile"]
        assert env_path == "/etc/fdist-sync/%s.conf" % self.share, env_path
        (state_dir,) = unit["StateDirectory"]
        self.state_dir = "/var/lib/" + state_dir.replace("%i", self.share)
        self.served = self.edge_share["file"]
        assert os.path.dirname(self.served) == self.state_dir, (self.served, self.state_dir)
        assert unit["SuccessExitStatus"] == ["8"], unit["SuccessExitStatus"]
        (post,) = unit["ExecStopPost"]
        assert '"$$EXIT_STATUS" = 0' in post and "try-reload-or-restart fdistd.service" in post, post
        self.argv = unit_command(unit, self.share, env)
        self.ident = "fdist-sync@" + self.share
        self.port = int(self.edge_share["listen"].rsplit(":", 1)[1])


class Tier:
    """The bed: the collector, the central, the edges with their syncs
    and their clients; each phase of the test is a method."""

    def __init__(self, fleet, setup, tmp):
        self.fleet, self.sd, self.tmp = fleet, setup, tmp
        self.versions = {}
        for name, size, seed in (("v1", SIZE, 31), ("v2", SIZE + 4099, 32), ("v3", SIZE, 33),
                                 ("v4", SIZE, 34)):
            self.versions[name] = make_file(os.path.join(tmp, name), size, seed=seed)
        self.digest = {name: file_sha256(p) for name, p in self.versions.items()}
        self.cdir = os.path.join(tmp, "srv")
        os.makedirs(self.cdir)
        self.cpath = os.path.join(self.cdir, setup.share + ".img")
        shutil.copyfile(self.versions["v1"], self.cpath)
        bed = fleet.bed
        col = bed.host("col", COLLECTOR)
        self.central = bed.host("central", CENTRAL)
        self.edges = [bed.host("edge%d" % (i + 1), a) for i, a in enumerate(EDGES)]
        self.groups = [[bed.host("c%d%d" % (i + 1, j + 1), a) for j, a in enumerate(g)]
                       for i, g in enumerate(CLIENTS)]
        fleet.collector(col)
        self.cd = fleet.server(self.central, "fdbed-central", "a" * 32,
                               {setup.share: {"listen": setup.edge_share["listen"], "file": self.cpath}},
                               {"manifest": setup.manifest})
        self.names = ["fdbed-edge%d" % (i + 1) for i in range(len(EDGES))]
        self.daemons, self.syncs = [], []
        for i, e in enumerate(self.edges):
            fd = fleet.server(e, self.names[i], ("e%d" % (i + 1)) * 16, {setup.share: setup.edge_share},
                              hosts=[(CENTRAL, setup.upstream_name)], start=False)
            os.makedirs(e.root(setup.state_dir), mode=0o755)      # what StateDirectory= makes
            self.daemons.append(fd)
            self.syncs.append(Sync(e, fd, setup.argv, setup.ident, setup.served))
        self.edges_txt = os.path.join(tmp, "edges.txt")
        with open(self.edges_txt, "w") as f:
            f.write("".join("%s %s\n" % (e.addr, e.name) for e in self.edges))
        self.clients_txt = os.path.join(tmp, "clients.txt")
        with open(self.clients_txt, "w") as f:
            f.write("".join("%s %s\n" % (c.addr, c.name) for g in self.groups for c in g))

    def stop_syncs(self):
        for s in self.syncs:
            s.stopping.set()
        for s in self.syncs:
            if s.is_alive():
                s.join(10)      # a run's processes are the bed's to stop

    def messages(self, s, run):
        return sync_messages(self.fleet, s.host, self.sd.ident, run)

    def publish(self, version):
        """As README says: a new file renamed into place, then a reload.
        Returns the time of the rename."""
        new = os.path.join(self.cdir, "." + self.sd.share + ".img.new")
        shutil.copyfile(self.versions[version], new)
        t = time.monotonic()
        os.rename(new, self.cpath)
        self.cd.reload()
        return t

    def fetch(self, idx=None):
        return fetch_all(self.groups, self.edges, self.sd.port, self.tmp, idx)

    def rollout(self, idx, after, timeout, clients=True):
        groups = self.groups if clients else [[] for _ in self.edges]
        return rollout(self.syncs, groups, self.edges, idx, after, self.sd.port, self.tmp, timeout)

    def check_reports(self, version, clients=True):
        """fdist-report -D on the collector: every edge done against the
        central, every client against its own edge."""
        d = self.digest[version]
        check_report(report(self.fleet, self.sd.share, self.edges_txt, d),
                     {e.addr: "fdbed-central" for e in self.edges}, d)
        if clients:
            check_report(report(self.fleet, self.sd.share, self.clients_txt, d),
                         {c.addr: self.names[i] for i, g in enumerate(self.groups) for c in g}, d)

    def version1(self):
        """Each edge's first copy (exit 9 while the central is still
        hashing: try again), then its fdistd, then its timer; every client
        gets version 1; polls that find it current fetch nothing."""
        for s, fd in zip(self.syncs, self.daemons):
            deadline = time.monotonic() + 30
            while True:
                run = s.once()
                if run.rc != 9 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert run.rc == 0 and run.digest == self.digest["v1"], (s.host.name, run, self.messages(s, run))
            fd.start()
            s.start()
        for f in self.fetch():
            assert f.result() == self.digest["v1"], f.host.name
        t = time.monotonic()
        self.check_reports("v1")
        print("version 1: on every client, fdist-report -D on the collector says so %.1f s later"
              % (time.monotonic() - t))
        for s, fd in zip(self.syncs, self.daemons):
            run = wait_until("a poll of %s that finds version 1 current" % s.host.name,
                             lambda s=s: next((r for r in s.snapshot()[1:] if r.rc == 8), None),
                             2 * INTERVAL + 10)
            lines = self.messages(s, run)
            assert any(l.endswith("%s (unchanged, not fetched)" % self.sd.served) for l in lines), lines
            assert [r.rc for r in s.snapshot()[1:]] == [8] * (len(s.snapshot()) - 1), s.snapshot()
            assert not [m for _, m in fd.notify.messages if "RELOADING=1" in m], s.host.name

    def version2(self):
        """Version 2 with one edge cut off from the central: the others
        and their clients get it within an interval; the cut one serves
        version 1 and says why; back, it catches up within an interval."""
        d = self.digest
        cut, e_cut = self.syncs[CUT], self.edges[CUT]
        ip("-n", e_cut.ns, "route", "add", "unreachable", CENTRAL + "/32")
        self.t_pub = t_pub = self.publish("v2")
        out = self.rollout([i for i in range(len(self.edges)) if i != CUT], t_pub, 3 * INTERVAL + 30)
        for i, (run, fetches) in out.items():
            assert run.digest == d["v2"], (self.edges[i].name, run)
            for f in fetches:
                assert f.result() == d["v2"], f.host.name
        check_rollout("version 2", out, t_pub, hash_time(self.fleet, self.central, d["v2"]))

        failed = wait_until("a failed sync of the cut edge",
                            lambda: [r for r in cut.snapshot() if r.start >= t_pub], 2 * INTERVAL + 10)
        assert all(r.rc == 2 for r in failed), failed          # fdist-fetch(1): no address accepted
        why = r"fdist-fetch: connect to %s:%s: No route to host" % (re.escape(CENTRAL), self.sd.upstream_port)
        lines = self.messages(cut, failed[0])
        assert any(re.search(why, l) for l in lines), lines
        wait_until("the cut edge's reason on the collector", lambda: [
            r for r in journal(self.fleet.remote_dir, "_HOSTNAME=" + self.names[CUT],
                               "SYSLOG_IDENTIFIER=" + self.sd.ident)
            if re.search(why, str(r["MESSAGE"]))], 30)
        assert file_sha256(e_cut.root(self.sd.served)) == d["v1"]
        assert not os.path.exists(e_cut.root(self.sd.served + ".part"))
        for f in self.fetch([CUT]):
            assert f.result() == d["v1"], f.host.name
        print("cut edge: %d syncs failed with exit 2, serving version 1; in its journal and on the "
              "collector: %s" % (len(failed), [l for l in lines if re.search(why, l)][0]))

        self.t_back = t_back = time.monotonic()
        ip("-n", e_cut.ns, "route", "del", "unreachable", CENTRAL + "/32")
        out = self.rollout([CUT], t_back, 2 * INTERVAL + 30)
        assert out[CUT][0].digest == d["v2"], out
        for f in out[CUT][1]:
            assert f.result() == d["v2"], f.host.name
        check_rollout("cut edge back", out, t_back, 0.0)
        self.check_reports("v2")

    def rewritten(self):
        """Version 3 over a slow uplink, rewritten in place with version 4's
        bytes while every edge is fetching it: no copy is published, the
        clients keep version 2; once writing stops the edges take the
        central's new content, and only that."""
        d, sd = self.digest, self.sd
        self.central.run(["tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", SLOW, "burst", "64kb",
                          "latency", "50ms"], check=True)
        self.t3 = t3 = self.publish("v3")

        def in_flight():
            for s in self.syncs:
                assert s.published_since(t3) is None, ("a copy of version 3 ended before the others "
                                                       "started: the uplink is not slow enough", s.host.name)
            parts = [s.host.root(sd.served + ".part") for s in self.syncs]
            return all(os.path.exists(p) and os.path.getsize(p) > 0 for p in parts)
        wait_until("every edge fetching version 3", in_flight, INTERVAL + 20, interval=0.05)
        t_rw = time.monotonic()
        self.central.run(["dd", "if=" + self.versions["v4"], "of=" + self.cpath, "bs=64k", "conv=notrunc",
                          "status=none"], check=True)
        said = []
        for s in self.syncs:
            run = wait_until("%s's copy in flight to end" % s.host.name,
                             lambda s=s: next((r for r in s.snapshot() if r.start < t_rw <= r.end), None),
                             30, interval=0.05)
            lines = self.messages(s, run)
            # 3: reset by the central (file-changed); 5: not the announced digest
            assert run.rc in (3, 5), (s.host.name, run, lines)
            (why,) = [l for l in lines if l.startswith("fdist-fetch: ")]
            assert re.search(r"connection lost|reset|sha256 mismatch", why), lines
            said.append("%s exit %d, %s" % (s.host.name, run.rc, why))
        self.central.run(["tc", "qdisc", "del", "dev", "eth0", "root"], check=True)
        for e in self.edges:
            assert file_sha256(e.root(sd.served)) == d["v2"], e.name
            assert not os.path.exists(e.root(sd.served + ".part")), e.name
        fetches = self.fetch()
        for s in self.syncs:
            assert s.published_since(t3) is None, ("published before its clients fetched", s.snapshot()[-3:])
        for f in fetches:
            assert f.result() == d["v2"], f.host.name
        # the central: each edge's copy ended as file-changed (or its ack
        # refused it), and the central said to publish by rename
        clocal = self.fleet.local_journal(self.central)
        crecs = journal(clocal, "MESSAGE_ID=" + TRANSFER_ID, "FDIST_SHARE=" + sd.share)
        for e in self.edges:
            last = [r for r in crecs if addr_of(r["FDIST_PEER"]) == e.addr][-1]
            assert last["FDIST_STATUS"] in ("file-changed", "ack-mismatch"), last
            if last["FDIST_STATUS"] == "file-changed":      # with what the edge's TCP took
                assert 0 < int(last["FDIST_BYTES"]) < int(last["FDIST_SIZE"]), last
            said.append("%s's record: %s, %s/%s bytes" % (e.name, last["FDIST_STATUS"], last["FDIST_BYTES"],
                                                         last["FDIST_SIZE"]))
        clog = [str(r.get("MESSAGE")) for r in journal(clocal)]
        assert any(re.search(r"changed in place while served: \d+ transfers? ended as file-changed.*"
                             "publish files by rename", l) for l in clog), clog[-20:]
        print("rewritten in place under %d copies in flight:\n  %s" % (len(self.edges), "\n  ".join(said)))

        wait_until("the central to serve the rewritten content", lambda: any(
            "writing stopped: serving its new content" in str(r.get("MESSAGE")) for r in journal(clocal)), 30)
        out = self.rollout(range(len(self.edges)), t_rw, 2 * INTERVAL + 30, clients=False)
        for i, (run, _) in out.items():
            assert run.digest == d["v4"] == file_sha256(self.cpath), (self.edges[i].name, run)
        hash_time(self.fleet, self.central, d["v4"])
        self.check_reports("v4", clients=False)

    def history(self):
        """Over the whole run: each edge published what the central
        announced, each version once, was reloaded once for each after
        the first copy, and failed only where the test made it fail."""
        d = self.digest
        self.stop_syncs()
        for i, (s, fd, name) in enumerate(zip(self.syncs, self.daemons, self.names)):
            assert s.error is None, (name, s.error)
            runs = s.snapshot()
            published = [r.digest for r in runs if r.rc == 0]
            assert published == [d["v1"], d["v2"], d["v4"]], (name, runs)
            assert [r for r in runs if r.rc == 0 and r.reloaded is None] == runs[:1], (name, runs)
            reloads = sum(1 for _, m in fd.notify.messages if "RELOADING=1" in m)
            assert reloads == len(published) - 1, (name, reloads, runs)
            for r in runs:
                assert r.rc in (0, 8) or (r.rc == 2 and i == CUT and self.t_pub <= r.start < self.t_back) or \
                    (r.rc in (3, 5, 9) and r.start >= self.t3), (name, r, self.messages(s, r))


def test_tiers(tmp):
    for prog in (JREMOTE, JUPLOAD, "tc", "systemd-cat", "systemd-socket-activate"):
        need(prog)
    t0 = time.monotonic()
    setup = EdgeSetup()
    print("an edge's sync: %s" % " ".join(setup.argv))
    with Fleet(tmp) as fleet:
        tier = Tier(fleet, setup, tmp)
        try:
            tier.version1()
            tier.version2()
            tier.rewritten()
            tier.history()
        finally:
            tier.stop_syncs()
        assert_contained(fleet.bed)
        fleet.stop()
        print("tiers: %d hosts (1 central, %d edges, %d clients), interval %.0f s, total %.1f s"
              % (len(fleet.bed.hosts), len(EDGES), sum(map(len, tier.groups)), INTERVAL,
                 time.monotonic() - t0))
    assert fleet.removed()


if __name__ == "__main__":
    main(globals(), "the tiers test")
