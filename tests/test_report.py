#!/usr/bin/env python3
"""fdist-report against a real, private systemd-journald and real transfers.

Real clients (Python sockets bound to 127.0.0.2, 127.0.0.3, ... and
fdist-fetch from 127.0.0.1) fetch from the real daemon: verified, no-digest
acks as nc sends them, resets mid-file, one before a reload swapped the
file, one never.  The report's table, JSON and exit status are asserted for
each state; --wait against clients that ack while it follows; a user
without journal access; records another user forges, which do not count,
and those of daemons in unit cgroups (fdistd.service's, another unit's
with --unit); two daemons (each with its own journald and host name, in
unshare -m -u) whose journals the real systemd-journal-remote merges.
"""

import contextlib
import hashlib
import json
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from fdtest import (SANITIZER_MARKERS, Daemon, connect, file_sha256, free_port, linger_reset, make_file,
                    name_launcher, read_all, require, sha256)
from test_journal import JOURNALD, TRANSFER_ID, inside_namespace, journal

REPORT = os.environ.get("FDIST_REPORT", "build/fdist-report")
FETCH = os.environ.get("FDIST_FETCH", "build/fdist-fetch")
DIGEST_ID = "20aedb80c2af4366ad3a62a516409ae1"
JOURNAL_REMOTE = "/lib/systemd/systemd-journal-remote"
BIG = 8 * 1024 * 1024           # more than loopback's socket buffers hold


def report(*args, user=None, stdin=None, timeout=60, launcher=()):
    """Run fdist-report; (exit status, stdout, stderr)."""
    cmd = [os.path.abspath(REPORT)] + list(args)
    if user:
        cmd = ["setpriv", "--reuid=" + user, "--regid=nogroup", "--clear-groups"] + cmd
    cmd = list(launcher) + cmd
    r = subprocess.run(cmd, capture_output=True, timeout=timeout, input=stdin)
    err = r.stderr.decode()
    assert not any(m in err for m in SANITIZER_MARKERS), err
    return r.returncode, r.stdout.decode(), err


def rows(out):
    """The table's rows after the summary and header: lists of cells
    split on the two-space column gaps."""
    lines = out.splitlines()
    assert lines[1].startswith("STATE"), out
    return [[c.strip() for c in line.split("  ") if c.strip()] for line in lines[2:]]


def client(port, src, ack=None, reset_after=None, host="127.0.0.1"):
    """A real client from source address src: reads the file, acks it
    (by default as fdist-fetch does, with its digest), or resets the
    connection after reset_after bytes."""
    s = connect(port, host, timeout=30, bind=src)
    try:
        if reset_after is not None:
            got = 0
            while got < reset_after:
                b = s.recv(65536)
                assert b, "EOF before %d bytes" % reset_after
                got += len(b)
            linger_reset(s)
            return None
        data = read_all(s)
        if ack is None:
            ack = ("Thank you sha256=%s\n" % sha256(data)).encode()
        s.sendall(ack)
        s.shutdown(1)
        s.recv(1)
        return data
    finally:
        s.close()


def transfers(n, share="img"):
    return journal("MESSAGE_ID=" + TRANSFER_ID, "FDIST_SHARE=" + share, want=n, timeout=30)


def wait_digest(sha, share="img"):
    recs = journal("MESSAGE_ID=" + DIGEST_ID, "FDIST_SHARE=" + share, "FDIST_FILE_SHA256=" + sha,
                   timeout=30)
    assert recs, "no digest record of %s" % sha


@contextlib.contextmanager
def serving(tmp, share, path, port):
    """fdistd serving path as share on 127.0.0.1:port, logging to the
    journal, once the digest record of the file is in."""
    with Daemon(tmp, {share: {"listen": "127.0.0.1:%d" % port, "file": path}},
                {"log": "journal"}) as d:
        wait_digest(file_sha256(path), share)
        yield d


@contextlib.contextmanager
def waiting(*args):
    """fdist-report args (a --wait) running: the process and the first
    summary it writes, read within 30 s; killed on the way out if it
    still runs."""
    w = subprocess.Popen([REPORT] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([w.stderr], [], [], 30)
        assert ready, "no summary from --wait"
        yield w, w.stderr.readline().decode()
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()


def hosts_file(tmp, text, name="hosts.txt"):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


LAB = """# the lab
127.0.0.1   fetcher
127.0.0.2   rack "2"       # a label with a quote
127.0.0.3   nc-client

127.0.0.4
127.0.0.5   never
127.0.0.6   before-reload
127.0.0.7   later-reset
::1         v6 ✓
"""


def lab(tmp, d, port, path):
    """The rollout the state tests report on; returns the digests of the
    version before the reload and the one after, and a time between."""
    v1 = file_sha256(path)
    wait_digest(v1)
    client(port, "127.0.0.6")
    transfers(1)
    time.sleep(0.05)
    before_reload = time.time()
    time.sleep(0.05)
    new = make_file(os.path.join(tmp, "img.new"), BIG, seed=2)
    v2 = file_sha256(new)
    os.rename(new, path)                    # publish by rename, then reload
    d.reload()
    wait_digest(v2)
    r = subprocess.run([FETCH, "-q", "-o", os.path.join(tmp, "got"), "127.0.0.1:%d" % port],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r
    assert file_sha256(os.path.join(tmp, "got")) == v2
    client(port, "127.0.0.2")
    client(port, "127.0.0.3", ack=b'Thank you "nc" \\\xff\0')   # no digest, as nc sends
    client(port, "127.0.0.4", reset_after=65536)
    client(port, "127.0.0.4", reset_after=65536)
    client(port, "127.0.0.7")
    client(port, "127.0.0.7", reset_after=65536)
    client(port, None, host="::1")
    transfers(9)
    return v1, v2, before_reload


def test_states_table_json_and_exit_status(tmp):
    path = os.path.join(tmp, "img")
    make_file(path, 300000, seed=1)
    port = free_port()
    with Daemon(tmp, {"img": {"listen": "127.0.0.1:%d, [::1]:%d" % (port, port), "file": path}},
                {"log": "journal"}) as d:
        v1, v2, before_reload = lab(tmp, d, port, path)
        hosts = hosts_file(tmp, LAB)
        rc, out, err = report("--share", "img", "--hosts", hosts)
        assert rc == 1, (rc, out, err)
        assert err == "", err
        first = out.splitlines()[0]
        assert first == ("share img sha256 %s\u2026: 4/8 done, 1 unverified, 1 old, 1 failed, "
                         "1 missing" % v2[:8]), first
        t = rows(out)
        assert [r[0] for r in t] == ["missing", "failed", "old", "unverified",
                                     "done", "done", "done", "done"], out
        by = {r[1]: r for r in t}
        assert by["127.0.0.5"][2:] == ["never", "-", "-", "0", "-", "no record"], out
        f = by["127.0.0.4"]
        assert f[2] == "fdtest-a" and f[4] == "2", out      # server, tries
        bytes_, size = map(int, f[5].split("/"))
        assert size == BIG and 0 < bytes_ < BIG and f[6] == "aborted", out
        assert by["127.0.0.6"][-1] == "has sha256 %s" % v1[:12], out
        assert by["127.0.0.3"][-1] == "no digest claimed", out
        assert by["127.0.0.7"][0] == "done" and by["127.0.0.7"][-1].startswith("later aborted at "), out
        assert by["::1"][2] == "v6 \u2713" and by["127.0.0.1"][2] == "fetcher", out
        # the table is aligned (in characters: a label has a UTF-8 one): every
        # column starts where the header's does
        lines = out.splitlines()[1:]
        for name in ("LABEL", "SERVER", "WHEN", "TRIES", "BYTES", "DETAIL"):
            col = lines[0].index(name)
            assert all(len(l) <= col or (l[col - 2:col] == "  " and
                                         (l[col] != " " or name == "LABEL"))
                       for l in lines), (name, out)

        rc, out, _ = report("--share", "img", "--hosts", hosts, "--json")
        assert rc == 1
        doc = json.loads(out)
        s = doc["summary"]
        assert (s["share"], s["sha256"], s["total"], s["done"], s["unverified"], s["old"],
                s["failed"], s["missing"], s["complete"]) == ("img", v2, 8, 4, 1, 1, 1, 1, False), s
        assert s["servers"] == ["fdtest-a"] and s["records"] == 9, s
        h = {x["host"]: x for x in doc["hosts"]}
        assert h["127.0.0.2"]["label"] == 'rack "2"', h["127.0.0.2"]
        assert h["127.0.0.5"]["state"] == "missing" and h["127.0.0.5"]["server"] is None
        assert h["127.0.0.4"]["state"] == "failed" and h["127.0.0.4"]["attempts"] == 2
        assert h["127.0.0.4"]["last_failure"]["status"] == "aborted"
        assert h["127.0.0.4"]["last_failure"]["size"] == BIG
        assert h["127.0.0.6"]["state"] == "old" and h["127.0.0.6"]["has_sha256"] == v1
        assert h["127.0.0.3"]["state"] == "unverified" and not h["127.0.0.3"]["verified"]
        assert h["127.0.0.3"]["ack"] == 'Thank you \\"nc\\" \\\\\\xff', h["127.0.0.3"]   # as logged
        assert h["127.0.0.7"]["state"] == "done" and h["127.0.0.7"]["verified"]
        assert h["127.0.0.7"]["last_failure"]["status"] == "aborted"
        assert h["127.0.0.7"]["last_failure"]["time_usec"] > h["127.0.0.7"]["time_usec"]
        assert h["127.0.0.1"]["ack"] == "Thank you sha256=%s host=fdtest-a" % v2, h["127.0.0.1"]
        assert h["::1"]["state"] == "done" and h["::1"]["server"] == "fdtest-a"

        rc, out, _ = report("--share", "img", "--hosts", hosts, "--accept-unverified")
        assert rc == 1 and out.startswith("share img sha256 %s\u2026: 5/8 done," % v2[:8]), out
        rc, out, _ = report("--share", "img", "--hosts", hosts, "--only", "failed,missing")
        assert [r[1] for r in rows(out)] == ["127.0.0.5", "127.0.0.4"], out
        # the older version: only the host that fetched before the reload has it
        rc, out, _ = report("--share", "img", "--hosts", hosts, "--sha256", v1.upper(), "--json")
        h = {x["host"]: x["state"] for x in json.loads(out)["hosts"]}
        assert h == {"127.0.0.1": "old", "127.0.0.2": "old", "127.0.0.3": "old",
                     "127.0.0.4": "failed", "127.0.0.5": "missing", "127.0.0.6": "done",
                     "127.0.0.7": "old", "::1": "old"}, h
        # up to before the reload: the version served then, which one host had
        rc, out, err = report("--share", "img", "--hosts", hosts, "--json",
                              "--until=@%.6f" % before_reload)
        doc = json.loads(out)
        assert doc["summary"]["sha256"] == v1 and doc["summary"]["records"] == 1, doc["summary"]
        assert [(x["host"], x["state"]) for x in doc["hosts"] if x["state"] != "missing"] == \
            [("127.0.0.6", "done")], out
        # every host done: exit 0
        done = hosts_file(tmp, "127.0.0.1\n127.0.0.2\n[::1]\n", "done.txt")
        rc, out, _ = report("--share", "img", "--hosts", done)
        assert rc == 0 and out.startswith("share img sha256 %s\u2026: 3/3 done\n" % v2[:8]), out
        # from stdin, and a name resolved once, at start, to all its addresses (a
        # name of the test's own /etc/hosts: the machine's resolver does not matter)
        names = name_launcher(tmp, "127.0.0.1 lab-host.test\n::1 lab-host.test\n")
        rc, out, _ = report("--share", "img", "--hosts", "-", "--json", launcher=names,
                            stdin=b"lab-host.test  both\n127.0.0.2\n")
        h = {x["host"]: (x["state"], x["attempts"]) for x in json.loads(out)["hosts"]}
        assert rc == 0 and h == {"lab-host.test": ("done", 2), "127.0.0.2": ("done", 1)}, out
        # without --hosts every peer seen is listed, none missing
        rc, out, _ = report("--share", "img")
        assert rc == 1 and "7/" not in out and "missing" not in out, out
        assert sorted(r[1] for r in rows(out)) == sorted(
            ["127.0.0.%d" % i for i in (1, 2, 3, 4, 6, 7)] + ["::1"]), out
        # by the id fdist-fetch claims (its host name here)
        ids = hosts_file(tmp, "FDTEST-A  the fetcher\nother\n", "ids.txt")
        rc, out, _ = report("--share", "img", "--hosts", ids, "--match", "host-id", "--json")
        h = {x["host"]: x["state"] for x in json.loads(out)["hosts"]}
        assert rc == 1 and h == {"FDTEST-A": "done", "other": "missing"}, out
        # from an hour from now on: no records, said on stderr, all missing
        rc, out, err = report("--share", "img", "--hosts", done, "--since", "@%d" % (time.time() + 3600))
        assert rc == 1 and out.startswith("share img sha256 %s\u2026: 0/3 done, 3 missing" % v2[:8])
        assert err == "fdist-report: no transfer records of share img in that time range\n", err


def test_usage_and_read_errors(tmp):
    since = "--since=@%.6f" % time.time()   # the journal has the other tests' records too
    time.sleep(0.01)
    path = make_file(os.path.join(tmp, "img"), 1000)
    p1, p2 = free_port(), free_port()
    with Daemon(tmp, {"img": {"listen": "127.0.0.1:%d" % p1, "file": path},
                      "iso": {"listen": "127.0.0.1:%d" % p2, "file": path}}, {"log": "journal"}):
        client(p1, "127.0.0.2")
        client(p2, "127.0.0.2")
        transfers(1, "img")
        transfers(1, "iso")
        rc, out, err = report(since)
        assert rc == 2 and out == "", (rc, out, err)
        assert "records of 2 shares; choose one with --share:\n  img\n  iso\n" in err, err
        raw = os.path.join(tmp, "raw.txt")
        with open(raw, "wb") as f:         # a label of a tab, a stray byte and UTF-8
            f.write(b"127.0.0.2  a\tb\xffc \xe2\x9c\x93\n")
        rc, out, err = report("--share", "iso", "--hosts", raw, "--json")
        assert rc == 0 and '"label":"a\\u0009b\\ufffdc \u2713"' in out, out
        assert json.loads(out)["hosts"][0]["label"] == "a\tb\ufffdc \u2713", out
        rc, out, err = report("--share", "iso")
        assert rc == 0 and out.startswith("share iso sha256 "), (out, err)
        # a share of no record: said so, with the shares there are (exit 2:
        # without a digest record nothing says which version to report on)
        nosuch = ('fdist-report: no records of share "nosuch" in that time range; the journal '
                  'has records of these shares:\n  img\n  iso\n')
        rc, out, err = report(since, "--share", "nosuch")
        assert (rc, out, err) == (2, "", nosuch), (rc, out, err)
        # with the version given, the report of hosts that are all missing
        rc, out, err = report(since, "--share", "nosuch", "--sha256", "0" * 64, "--hosts",
                              hosts_file(tmp, "127.0.0.2\n", "one.txt"))
        assert rc == 1 and err == nosuch and out.startswith("share nosuch sha256 00000000\u2026: "
                                                              "0/1 done, 1 missing\n"), (rc, out, err)
        bad = hosts_file(tmp, "127.0.0.2\n# ok\n\nno-such-host.test  lab\n")
        rc, out, err = report("--share", "img", "--hosts", bad, launcher=name_launcher(tmp))
        assert rc == 2 and "hosts.txt:4: cannot resolve no-such-host.test" in err, err
        dup = hosts_file(tmp, "127.0.0.2\n127.0.0.2\n", "dup.txt")
        rc, _, err = report("--share", "img", "--hosts", dup)
        assert rc == 2 and "dup.txt:2: 127.0.0.2 is 127.0.0.2, already listed on line 1" in err, err
        # a v4-mapped address is the IPv4 one the daemon logs (addr.c)
        mapped = hosts_file(tmp, "::ffff:127.0.0.2  mapped\n", "mapped.txt")
        rc, out, err = report("--share", "img", "--hosts", mapped, "--json")
        h = [(x["host"], x["state"]) for x in json.loads(out)["hosts"]]
        assert rc == 0 and h == [("::ffff:127.0.0.2", "done")], (rc, out, err)
        dup = hosts_file(tmp, "127.0.0.2\n::ffff:127.0.0.2\n", "dup6.txt")
        rc, _, err = report("--share", "img", "--hosts", dup)
        assert rc == 2 and "dup6.txt:2: ::ffff:127.0.0.2 is 127.0.0.2, already listed on line 1" in err, err
        for args in (["--only", "gone"], ["--wait=0"], ["--sha256", "12"], ["--since", "soon"], ["--since", "2026-02-30"], ["--until", "2026-04-31 10:00"],
                     ["--wait", "--until", "now"], ["-D", tmp, "--file", path], ["extra"]):
            rc, out, err = report("--share", "img", *args)
            assert rc == 2 and out == "" and err, (args, rc, out, err)
        # --help tells the exit statuses as fdist-report(1) does
        rc, out, _ = report("--help")
        assert rc == 0 and "1  some host is not done (or no host was seen)\n" in out and \
            "2  usage error, or the journal or the hosts file could not be read\n" in out, out
        empty = tempfile.mkdtemp(dir=tmp)
        rc, _, err = report("-D", empty)
        assert rc == 2 and err == "fdist-report: %s: no journal files\n" % empty, err


def export_journal(tmp, name):
    """This namespace's journal, through journalctl -o export and the real
    systemd-journal-remote, as a file in a directory of its own."""
    exp = os.path.join(tmp, name + ".export")
    with open(exp, "wb") as f:
        subprocess.run(["journalctl", "-D", "/run/log/journal", "-o", "export"], stdout=f,
                       check=True, timeout=60)
    return exp


def remote(exports, outdir):
    os.makedirs(outdir, exist_ok=True)
    for name, exp in exports:
        subprocess.run([JOURNAL_REMOTE, "-o", os.path.join(outdir, "remote-%s.journal" % name),
                        exp], check=True, capture_output=True, timeout=60)


def test_no_access_is_an_error_not_an_empty_report(tmp):
    """sd-journal skips files it may not read: a user without journal
    access gets exit 2 and what to do, for -D and the local journal."""
    path = make_file(os.path.join(tmp, "img"), 1000)
    port = free_port()
    with Daemon(tmp, {"acc": {"listen": "127.0.0.1:%d" % port, "file": path}}, {"log": "journal"}):
        client(port, "127.0.0.2")
        transfers(1, "acc")
        exp = export_journal(tmp, "a")
    pub = tempfile.mkdtemp(prefix="fdreport-")
    try:
        os.chmod(pub, 0o755)
        remote([("a", exp)], os.path.join(pub, "j"))
        os.chmod(os.path.join(pub, "j"), 0o755)
        jf = os.path.join(pub, "j", "remote-a.journal")
        shutil.chown(jf, "root", "systemd-journal")
        os.chmod(jf, 0o640)
        rc, out, err = report("--share", "acc", "-D", os.path.join(pub, "j"))
        assert rc == 0 and "1/1 done" in out, (rc, out, err)
        rc, out, err = report("--share", "acc", "-D", os.path.join(pub, "j"), user="nobody")
        assert rc == 2 and out == "", (rc, out, err)
        hint = "run as root or as a member of the systemd-journal or adm group\n"
        assert ("fdist-report: %s: permission denied (1 of the journal's files and directories "
                "unreadable); %s" % (jf, hint)) == err, err
        # a directory that cannot be listed: its files are not counted
        os.chmod(os.path.join(pub, "j"), 0o750)
        rc, out, err = report("--share", "acc", "-D", os.path.join(pub, "j"), user="nobody")
        assert rc == 2 and out == "", (rc, out, err)
        assert ("fdist-report: %s: permission denied (1 of the journal's files and directories "
                "unreadable); %s" % (os.path.join(pub, "j"), hint)) == err, err
        os.chmod(os.path.join(pub, "j"), 0o755)
        # in the journal's group it is readable
        r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup",
                            "--groups=systemd-journal", os.path.abspath(REPORT), "--share", "acc", "-D",
                            os.path.join(pub, "j")], capture_output=True, timeout=60)
        assert r.returncode == 0, r
        # the local journal (this namespace's journald's files)
        local = [os.path.join(dp, f) for dp, _, fs in os.walk("/run/log/journal") for f in fs]
        assert local, "journald wrote no files"
        for f in local:
            shutil.chown(f, "root", "systemd-journal")
            os.chmod(f, 0o640)
        rc, out, err = report("--share", "acc", user="nobody")
        assert rc == 2 and "permission denied" in err and "systemd-journal or adm" in err, err
        # with the version and the hosts given, nothing else would stop an empty report
        hosts = hosts_file(pub, "127.0.0.2\n")
        os.chmod(hosts, 0o644)
        rc, out, err = report("--share", "acc", "--sha256", file_sha256(path), "--hosts", hosts,
                              user="nobody")
        assert rc == 2 and out == "" and "permission denied" in err, (rc, out, err)
    finally:
        shutil.rmtree(pub)


def test_balancer_probes_are_no_host(tmp):
    """Behind a balancer (proxy_protocol), hosts are the clients the
    PROXY headers name; the balancer's health checks are no host."""
    path = make_file(os.path.join(tmp, "img"), 100000)
    v = file_sha256(path)
    port = free_port()
    share = {"listen": "127.0.0.1:%d" % port, "file": path, "proxy_protocol": "yes",
             "proxy_from": "127.0.0.1"}
    with Daemon(tmp, {"pp": share}, {"log": "journal"}):
        wait_digest(v, "pp")
        s = connect(port, timeout=30)
        s.sendall(b"PROXY TCP4 192.0.2.8 127.0.0.1 40000 %d\r\n" % port)
        data = read_all(s)
        s.sendall(("Thank you sha256=%s\n" % sha256(data)).encode())
        s.close()
        with socket.create_connection(("127.0.0.1", port), timeout=30):
            pass                                # a TCP health check
        transfers(2, "pp")
        rc, out, err = report("--share", "pp", "--json")
        assert rc == 0, (rc, out, err)
        doc = json.loads(out)
        assert [(h["host"], h["state"]) for h in doc["hosts"]] == [("192.0.2.8", "done")], doc


def test_wait_returns_when_the_last_host_acks(tmp):
    path = make_file(os.path.join(tmp, "img"), 200000)
    v = file_sha256(path)
    port = free_port()
    with serving(tmp, "w", path, port):
        hosts = hosts_file(tmp, "127.0.0.2\n127.0.0.3\n")
        # its first summary: reading
        with waiting("--share", "w", "--hosts", hosts, "--wait=120s") as (w, first):
            client(port, "127.0.0.2")
            transfers(1, "w")
            time.sleep(1)
            assert w.poll() is None, "returned with a host missing"
            client(port, "127.0.0.3")
            t0 = time.monotonic()
            out, err = w.communicate(timeout=60)
            took = time.monotonic() - t0
        assert w.returncode == 0, (w.returncode, out, err)
        assert not any(m in err.decode() for m in SANITIZER_MARKERS), err
        assert took < 15, took          # it follows the journal, it does not poll slowly
        assert out.decode().startswith("share w sha256 %s\u2026: 2/2 done\n" % v[:8]), out
        err = err.decode().splitlines()
        assert first == "share w sha256 %s\u2026: 0/2 done, 2 missing\n" % v[:8], first
        assert [l.split()[2:4] for l in err] == [["127.0.0.2", "done"],
                                                     ["127.0.0.3", "done"]], err
        # one that never comes: exit 1 at the timeout, with the report
        hosts = hosts_file(tmp, "127.0.0.2\n127.0.0.5\n", "never.txt")
        t0 = time.monotonic()
        rc, out, err = report("--share", "w", "--hosts", hosts, "--wait=2s")
        took = time.monotonic() - t0
        assert rc == 1 and 2 <= took < 30, (rc, took)
        assert out.startswith("share w sha256 %s\u2026: 1/2 done, 1 missing\n" % v[:8]), out


def test_wait_follows_the_new_version_of_a_reload(tmp):
    """With the default version, a wait switches to the version of the
    digest record a reload brings: a host that had the old one is old
    again until it fetches the new one."""
    path = make_file(os.path.join(tmp, "img"), 100000, seed=1)
    v1 = file_sha256(path)
    port = free_port()
    with serving(tmp, "sw", path, port) as d:
        client(port, "127.0.0.2")
        transfers(1, "sw")
        hosts = hosts_file(tmp, "127.0.0.2\n127.0.0.3\n")
        with waiting("--share", "sw", "--hosts", hosts, "--wait=120s") as (w, first):
            assert first == "share sw sha256 %s\u2026: 1/2 done, 1 missing\n" % v1[:8], first
            new = make_file(os.path.join(tmp, "img.new"), 200000, seed=2)
            v2 = file_sha256(new)
            os.rename(new, path)
            d.reload()
            wait_digest(v2, "sw")
            client(port, "127.0.0.3")
            transfers(2, "sw")
            time.sleep(1)
            assert w.poll() is None, "returned before 127.0.0.2 had the new version"
            client(port, "127.0.0.2")
            out, err = w.communicate(timeout=60)
        assert w.returncode == 0, (w.returncode, out, err)
        assert out.decode().startswith("share sw sha256 %s\u2026: 2/2 done\n" % v2[:8]), out
        err = err.decode().splitlines()
        changes = [l.split()[2:4] for l in err if not l.startswith("share ")]
        assert changes == [["127.0.0.2", "old"], ["127.0.0.3", "done"], ["127.0.0.2", "done"]], err
        # the version's change is said, with the new digest once known
        assert any(l.startswith("share sw sha256 %s\u2026: " % v2[:8]) for l in err), err


ZEROS_SHA256 = {}


def zeros_sha256(size):
    """The digest of size zero bytes (a sparse file's)."""
    if size not in ZEROS_SHA256:
        h, zero = hashlib.sha256(), bytes(1 << 20)
        for _ in range(size >> 20):
            h.update(zero)
        ZEROS_SHA256[size] = h.hexdigest()
    return ZEROS_SHA256[size]


def zero_client(port, src, size, result):
    """A client of a file of zeros from source address src: reads every
    byte and checks it, then acks with the file's digest, as fdist-fetch
    does.  Appends what went wrong, or None, to result."""
    try:
        s = connect(port, timeout=120, bind=src)
        try:
            buf, zero, got = bytearray(1 << 20), bytes(1 << 20), 0
            view = memoryview(buf)
            while True:
                n = s.recv_into(buf)
                if not n:
                    break
                assert view[:n] == zero[:n], "a byte that is not zero"
                got += n
            assert got == size, got
            s.sendall(("Thank you sha256=%s\n" % zeros_sha256(size)).encode())
            s.shutdown(socket.SHUT_WR)
            s.recv(1)
        finally:
            s.close()
        result.append(None)
    except Exception as e:          # the main thread asserts
        result.append("%s: %r" % (src, e))


def rolled_out(tmp, port, share):
    """The version served now at two hosts: 127.0.0.2 and 127.0.0.3
    fetch it; the hosts file of the two."""
    client(port, "127.0.0.2")
    client(port, "127.0.0.3")
    transfers(2, share)
    return hosts_file(tmp, "127.0.0.2\n127.0.0.3\n")


def test_wait_right_after_a_reload_waits_for_the_new_version(tmp):
    """The rollout: publish by rename, reload, and at once --wait without
    --sha256, while the daemon takes seconds to hash the new file.  The
    share's record of the new version (digest pending) is what the wait
    follows, so the hosts that have only the old version are old, never
    done; it returns 0 once both have fetched the new version and the
    digest is known."""
    path = make_file(os.path.join(tmp, "img"), 100000, seed=1)
    v1 = file_sha256(path)
    size = 2 << 30                  # sparse: a second or more of hashing
    port = free_port()
    with serving(tmp, "race", path, port) as d:
        hosts = rolled_out(tmp, port, "race")
        rc, out, _ = report("--share", "race", "--hosts", hosts)
        assert rc == 0 and out.startswith("share race sha256 %s\u2026: 2/2 done\n" % v1[:8]), out
        new = os.path.join(tmp, "img.new")
        with open(new, "wb") as f:
            f.truncate(size)
        st = os.stat(new)
        new_ver = "%x-%x-%x-%x" % (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        os.rename(new, path)
        d.reload()
        fetchers, result = [], []
        try:
            with waiting("--share", "race", "--hosts", hosts, "--wait=300s") as (w, first):
                assert first == "share race sha256 pending: 0/2 done, 2 old\n", first
                time.sleep(1)
                assert w.poll() is None, "returned while the hosts had only the old version"
                (rec,) = journal("MESSAGE_ID=" + DIGEST_ID, "FDIST_SHARE=race", "FDIST_DIGEST=pending",
                                 "FDIST_VERSION=" + new_ver, timeout=0)
                assert "FDIST_FILE_SHA256" not in rec, rec
                for src in ("127.0.0.2", "127.0.0.3"):
                    fetchers.append(threading.Thread(target=zero_client, args=(port, src, size, result)))
                    fetchers[-1].start()
                out, err = w.communicate(timeout=300)
        finally:
            for t in fetchers:
                t.join(300)
        assert result == [None, None], result
        assert w.returncode == 0, (w.returncode, out, err)
        v2 = zeros_sha256(size)
        assert out.decode().startswith("share race sha256 %s\u2026: 2/2 done\n" % v2[:8]), out
        err = err.decode()
        assert not any(m in err for m in SANITIZER_MARKERS), err
        err = err.splitlines()
        assert sorted(l.split()[2:4] for l in err if not l.startswith("share ")) == [
            ["127.0.0.2", "done"], ["127.0.0.3", "done"]], err
        assert any(l.startswith("share race sha256 %s\u2026: " % v2[:8]) for l in err), err
        # the journal: the new version named before its clients, the digest before their acks
        recs = journal("FDIST_SHARE=race", "FDIST_VERSION=" + new_ver, want=4)
        assert [(r["MESSAGE_ID"], r.get("FDIST_DIGEST"), r.get("FDIST_VERIFIED")) for r in recs] == [
            (DIGEST_ID, "pending", None), (DIGEST_ID, None, None),
            (TRANSFER_ID, None, "yes"), (TRANSFER_ID, None, "yes")], recs
        assert recs[1]["FDIST_FILE_SHA256"] == v2, recs[1]


def our_journald():
    """The pid of the namespace's journald, a child of this process."""
    for task in os.listdir("/proc/self/task"):
        with open("/proc/self/task/%s/children" % task) as f:
            for pid in f.read().split():
                if os.path.realpath("/proc/%s/exe" % pid) == os.path.realpath(JOURNALD):
                    return int(pid)
    raise AssertionError("no journald of ours")


def test_wait_right_after_a_reload_while_journald_lags(tmp):
    """journald stopped (a busy one, at worst) when the reload completes:
    the new version's records reach the journal after --wait has read
    it, finding every host done with the old version.  The wait does not
    take that for complete at once; it sees the new version a moment
    later and returns 0 only when the hosts have it."""
    path = make_file(os.path.join(tmp, "img"), 100000, seed=1)
    v1 = file_sha256(path)
    port = free_port()
    jd = our_journald()
    with serving(tmp, "lag", path, port) as d:
        hosts = rolled_out(tmp, port, "lag")
        new = make_file(os.path.join(tmp, "img.new"), 100001, seed=2)
        v2 = file_sha256(new)
        os.rename(new, path)
        os.kill(jd, signal.SIGSTOP)
        try:
            d.reload()
            with waiting("--share", "lag", "--hosts", hosts, "--wait=120s") as (w, first):
                time.sleep(0.3)         # journald still behind: long enough to exit
                os.kill(jd, signal.SIGCONT)
                assert first == "share lag sha256 %s\u2026: 2/2 done\n" % v1[:8], first
                wait_digest(v2, "lag")
                time.sleep(1.5)
                assert w.poll() is None, "returned 0 before the hosts had the new version"
                client(port, "127.0.0.2")
                client(port, "127.0.0.3")
                out, err = w.communicate(timeout=60)
        finally:
            os.kill(jd, signal.SIGCONT)
        assert w.returncode == 0, (w.returncode, out, err)
        assert out.decode().startswith("share lag sha256 %s\u2026: 2/2 done\n" % v2[:8]), out


def test_pending_and_failed_versions(tmp):
    """What the report says of a share whose newest digest record is
    pending or failed (records sent to the real journald as fdistd sends
    them): hosts that acked another version are old, acks of the pending
    version are unverified until the digest record lets them be checked,
    and nothing is complete without the digest."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect("/run/systemd/journal/socket")

    def send(**f):
        s.send("".join("%s=%s\n" % kv for kv in f.items()).encode())

    def digest(share, version, sha=None, state=None):
        f = dict(MESSAGE="digest", MESSAGE_ID=DIGEST_ID, FDIST_SHARE=share, FDIST_VERSION=version,
                 FDIST_SIZE="10")
        f.update({"FDIST_FILE_SHA256": sha} if sha else {"FDIST_DIGEST": state})
        send(**f)

    def ack(share, host, version, status="acked", verified=None, sha=None, claim=None):
        f = dict(MESSAGE="t", MESSAGE_ID=TRANSFER_ID, FDIST_SHARE=share, FDIST_PEER=host + ":1",
                 FDIST_BYTES="10", FDIST_SIZE="10", FDIST_STATUS=status, FDIST_VERSION=version)
        if verified:
            f.update(FDIST_VERIFIED=verified, FDIST_SHA256=sha or "")
        if sha:
            f.update(FDIST_FILE_SHA256=sha)
        if claim:
            f.update(FDIST_ACK="Thank you sha256=" + claim)
        send(**f)

    s1, s2 = sha256(b"pend one"), sha256(b"pend two")
    digest("pend", "p1", sha=s1)
    ack("pend", "10.1.0.1", "p1", verified="yes", sha=s1)
    ack("pend", "10.1.0.2", "p1", verified="yes", sha=s1)
    digest("pend", "p2", state="pending")
    ack("pend", "10.1.0.2", "p2")                                     # as nc acks
    f = dict(MESSAGE="t", MESSAGE_ID=TRANSFER_ID, FDIST_SHARE="pend", FDIST_PEER="10.1.0.3:1",
             FDIST_BYTES="10", FDIST_SIZE="10", FDIST_STATUS="acked", FDIST_VERSION="p2",
             FDIST_VERIFIED="unknown", FDIST_ACK="Thank you sha256=" + s2)
    send(**f)                       # the daemon stopped before its digest
    ack("pend", "10.1.0.4", "p2", status="aborted")
    transfers(5, "pend")
    hosts = hosts_file(tmp, "10.1.0.1\n10.1.0.2\n10.1.0.3\n10.1.0.4\n10.1.0.5\n")
    rc, out, err = report("--share", "pend", "--hosts", hosts)
    assert rc == 1 and err == "", (rc, out, err)
    assert out.startswith("share pend sha256 pending: 0/5 done, 2 unverified, 1 old, 1 failed, "
                          "1 missing\n"), out
    by = {r[1]: r for r in rows(out)}
    assert by["10.1.0.1"][0] == "old" and by["10.1.0.1"][-1] == "has sha256 %s" % s1[:12], out
    assert by["10.1.0.2"][0] == "unverified" and by["10.1.0.2"][-1] == "sha256 pending", out
    assert by["10.1.0.3"][0] == "unverified" and by["10.1.0.3"][-1] == "sha256 pending", out
    rc, out, _ = report("--share", "pend", "--hosts", hosts, "--json", "--accept-unverified")
    doc = json.loads(out)["summary"]
    assert rc == 1 and (doc["sha256"], doc["digest"], doc["version"], doc["done"],
                        doc["complete"]) == (None, "pending", "p2", 2, False), doc
    # named, the old version is what two hosts have
    rc, out, _ = report("--share", "pend", "--hosts", hosts, "--sha256", s1, "--json")
    doc = json.loads(out)
    assert (doc["summary"]["digest"], doc["summary"]["version"], doc["summary"]["done"]) == \
        ("given", None, 2), doc["summary"]
    # --wait on the two that acked the pending version: done when the digest lets
    # the claim be checked, and the other when it acks with a digest
    two = hosts_file(tmp, "10.1.0.2\n10.1.0.3\n", "two.txt")
    with waiting("--share", "pend", "--hosts", two, "--wait=120s") as (w, first):
        assert first == "share pend sha256 pending: 0/2 done, 2 unverified\n", first
        before_digest = time.time()
        time.sleep(0.05)
        digest("pend", "p2", sha=s2)
        time.sleep(1)
        assert w.poll() is None, "returned with a host unverified"
        ack("pend", "10.1.0.2", "p2", verified="yes", sha=s2)
        out, err = w.communicate(timeout=60)
    assert w.returncode == 0, (w.returncode, out, err)
    err = err.decode().splitlines()
    assert len(err) == 3 and err[1] == "share pend sha256 %s\u2026: 1/2 done, 1 unverified" % s2[:8], err
    assert [l.split()[2:4] for l in (err[0], err[2])] == [["10.1.0.3", "done"],
                                                          ["10.1.0.2", "done"]], err
    # up to before the digest record: the report as it was then
    rc, out, _ = report("--share", "pend", "--hosts", two, "--until=@%.6f" % before_digest)
    assert rc == 1 and out.startswith("share pend sha256 pending: 0/2 done, 2 unverified\n"), out
    # a restart with the file unchanged: pending again, but the version was hashed before
    digest("pend", "p2", state="pending")
    journal("MESSAGE_ID=" + DIGEST_ID, "FDIST_SHARE=pend", want=4)
    rc, out, _ = report("--share", "pend", "--hosts", two)
    assert rc == 0 and out.startswith("share pend sha256 %s\u2026: 2/2 done\n" % s2[:8]), out
    # a version the daemon could not hash: said, and never complete without --sha256
    digest("fail", "f1", sha=s1)
    ack("fail", "10.2.0.1", "f1", verified="yes", sha=s1)
    digest("fail", "f2", state="failed")
    f.update(FDIST_SHARE="fail", FDIST_PEER="10.2.0.1:2", FDIST_VERSION="f2")
    send(**f)
    s.close()
    transfers(2, "fail")
    rc, out, err = report("--share", "fail", "--accept-unverified")
    assert rc == 1 and out.startswith("share fail sha256 failed: 1/1 done\n"), out
    assert "could not compute the digest of the version share fail serves (f2)" in err, err
    rc, out, _ = report("--share", "fail", "--sha256", s2)
    assert rc == 0 and out.startswith("share fail sha256 %s\u2026: 1/1 done\n" % s2[:8]), out


def test_wait_on_a_terminal_shows_progress(tmp):
    """On a terminal --wait redraws one progress line; at the timeout it
    exits 1."""
    path = make_file(os.path.join(tmp, "img"), 1000)
    port = free_port()
    with serving(tmp, "tty", path, port):
        client(port, "127.0.0.2")
        transfers(1, "tty")
        hosts = hosts_file(tmp, "127.0.0.2\n127.0.0.3\n")
        master, slave = pty.openpty()
        p = subprocess.Popen([REPORT, "--share", "tty", "--hosts", hosts, "--wait=2s"],
                             stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        out, _ = p.communicate(timeout=60)
        screen = b""
        while True:
            try:
                b = os.read(master, 4096)
            except OSError:
                break
            if not b:
                break
            screen += b
        os.close(master)
        assert p.returncode == 1, (p.returncode, out, screen)
        assert screen.startswith(b"\r1/2 done, 0 failed, 1 missing, 0.0 hosts/min\x1b[K"), screen
        assert screen.endswith(b"\x1b[K\r\n"), screen     # the line is ended before the report
        assert out.startswith(b"share tty sha256 "), out


def test_a_long_history_is_read_whole(tmp):
    """25,000 records of 500 hosts, sent to the real journald as
    sd_journal_send does (no daemon: that many transfers would take
    minutes): every one is counted once, across the journal reopenings
    fdist-report does every 10,000 entries."""
    sha = sha256(b"hist")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect("/run/systemd/journal/socket")
    def send(**f):
        s.send("".join("%s=%s\n" % kv for kv in f.items()).encode())
    send(MESSAGE="digest", MESSAGE_ID=DIGEST_ID, FDIST_SHARE="hist", FDIST_VERSION="v1",
         FDIST_FILE_SHA256=sha, FDIST_SIZE="10")
    attempts = [0] * 500
    acked = set()
    for i in range(25000):
        h = (i * 7919) % 500
        attempts[h] += 1
        ok = i % 3 == 0 and h % 5 != 0          # hosts 0, 5, 10, ... never ack
        f = dict(MESSAGE="t", MESSAGE_ID=TRANSFER_ID, FDIST_SHARE="hist",
                 FDIST_PEER="10.0.%d.%d:%d" % (h // 256, h % 256, 1000 + i % 60000),
                 FDIST_BYTES="10" if ok else "3", FDIST_SIZE="10",
                 FDIST_STATUS="acked" if ok else "aborted", FDIST_VERSION="v1",
                 FDIST_FILE_SHA256=sha)
        if ok:
            acked.add(h)
            f.update(FDIST_VERIFIED="yes", FDIST_SHA256=sha, FDIST_ACK="Thank you sha256=" + sha)
        send(**f)
    s.close()
    transfers(25000, "hist")
    rc, out, err = report("--share", "hist", "--json")
    assert rc == 1, (rc, err)
    doc = json.loads(out)
    assert doc["summary"]["records"] == 25000, doc["summary"]
    assert (doc["summary"]["done"], doc["summary"]["failed"]) == (len(acked), 500 - len(acked))
    got = {x["host"]: x["attempts"] for x in doc["hosts"]}
    assert got == {"10.0.%d.%d" % (h // 256, h % 256): attempts[h] for h in range(500)}

    # a host keeps four versions; the one asked for is never the one dropped
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect("/run/systemd/journal/socket")
    sums = [sha256(b"many %d" % i) for i in range(6)]
    for i, v in enumerate(sums):
        send(MESSAGE="digest", MESSAGE_ID=DIGEST_ID, FDIST_SHARE="many", FDIST_VERSION="m%d" % i,
             FDIST_FILE_SHA256=v, FDIST_SIZE="10")
        send(MESSAGE="t", MESSAGE_ID=TRANSFER_ID, FDIST_SHARE="many", FDIST_PEER="10.9.9.9:1",
             FDIST_BYTES="10", FDIST_SIZE="10", FDIST_STATUS="acked", FDIST_VERSION="m%d" % i,
             FDIST_FILE_SHA256=v, FDIST_VERIFIED="yes", FDIST_SHA256=v)
    s.close()
    transfers(6, "many")
    for v in (sums[0], sums[5]):
        rc, out, err = report("--share", "many", "--sha256", v, "--json")
        assert rc == 0 and json.loads(out)["hosts"][0]["state"] == "done", (v, out, err)


SYSTEM_PYTHON = "/usr/bin/python3"     # the suite's may be under /root, out of other users' reach
FORGER = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect("/run/systemd/journal/socket")
for rec in json.loads(sys.argv[1]):
    s.send("".join("%s=%s\\n" % kv for kv in rec.items()).encode())
"""


def forge(records, uid="nobody", gid="nogroup"):
    """Send records to the real journald as sd_journal_send does, from a
    process of another user than root and in no unit's cgroup: what any
    local user can do.  Each record also claims the fields journald sets
    (_UID, _SYSTEMD_UNIT), which it must not take from a client."""
    claims = {"_UID": "0", "_SYSTEMD_UNIT": "fdistd.service", "_HOSTNAME": "fdtest-a"}
    subprocess.run(["setpriv", "--reuid=%s" % uid, "--regid=%s" % gid, "--clear-groups", SYSTEM_PYTHON,
                    "-c", FORGER, json.dumps([dict(r, **claims) for r in records])],
                   check=True, timeout=30)


def forged_transfer(share, peer, sha, version):
    """A verified ack as the daemon logs it."""
    return dict(MESSAGE="%s: forged" % peer, MESSAGE_ID=TRANSFER_ID, PRIORITY="6", FDIST_SHARE=share,
                FDIST_PEER=peer + ":40000", FDIST_BYTES="1000", FDIST_SIZE="1000",
                FDIST_STATUS="acked", FDIST_VERSION=version, FDIST_FILE_SHA256=sha,
                FDIST_VERIFIED="yes", FDIST_SHA256=sha, FDIST_ACK="Thank you sha256=" + sha)


def forged_digest(share, sha, version):
    return dict(MESSAGE="digest", MESSAGE_ID=DIGEST_ID, PRIORITY="6", FDIST_SHARE=share,
                FDIST_VERSION=version, FDIST_SIZE="1000", FDIST_FILE_SHA256=sha)


def assert_forged(want, uid, *match):
    """The forged records are in the journal, with the forger's uid and
    unit: journald dropped what they claimed."""
    recs = journal("_UID=%d" % uid, *match, want=want, timeout=30)
    assert len(recs) == want, recs
    for r in recs:
        unit = r.get("_SYSTEMD_UNIT", "")
        assert r["_UID"] == str(uid) and isinstance(unit, str) and not unit.startswith("fdist"), r


def test_forged_records_do_not_count(tmp):
    """Any local user can send records with fdistd's MESSAGE_IDs and
    FDIST_* fields to journald.  Only those journald stamps as root's
    (_UID=0) or fdistd.service's count: a forged ack leaves its host
    missing, a forged digest record does not change the version, and a
    forged share is none to choose from."""
    since = "--since=@%.6f" % time.time()
    time.sleep(0.01)
    path = make_file(os.path.join(tmp, "img"), 1000)
    v = file_sha256(path)
    port = free_port()
    with serving(tmp, "forge", path, port):
        client(port, "127.0.0.2")
        (real,) = transfers(1, "forge")
        assert real["_UID"] == "0", real
    nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, check=True).stdout)
    fake = sha256(b"forged")
    forge([forged_transfer("forge", "127.0.0.5", v, real["FDIST_VERSION"]),    # the real version
           forged_digest("forge", fake, "f-1"),                                # newer than the real one
           forged_transfer("forge", "127.0.0.6", fake, "f-1"),
           forged_digest("phantom", fake, "p-1"),                              # a share of its own
           forged_transfer("phantom", "127.0.0.7", fake, "p-1")])
    assert_forged(3, nobody, "MESSAGE_ID=" + TRANSFER_ID)
    assert_forged(2, nobody, "MESSAGE_ID=" + DIGEST_ID)

    hosts = hosts_file(tmp, "127.0.0.2\n127.0.0.5\n127.0.0.6\n")
    rc, out, err = report("--share", "forge", "--hosts", hosts, "--json")
    assert rc == 1 and err == "", (rc, out, err)
    doc = json.loads(out)
    s = doc["summary"]
    assert (s["sha256"], s["digest"], s["version"], s["records"], s["done"], s["missing"]) == \
        (v, "known", real["FDIST_VERSION"], 1, 1, 2), s
    assert {h["host"]: h["state"] for h in doc["hosts"]} == {
        "127.0.0.2": "done", "127.0.0.5": "missing", "127.0.0.6": "missing"}, doc["hosts"]
    # the version named: the forged ack of it is no ack either
    rc, out, err = report("--share", "forge", "--hosts", hosts, "--sha256", fake)
    assert rc == 1 and out.startswith("share forge sha256 %s\u2026: 0/3 done, 1 old, 2 missing\n"
                                      % fake[:8]), (rc, out, err)
    # the share is the one of fdistd's records, not a choice with the forged one
    rc, out, err = report(since)
    assert rc == 0 and err == "" and out.startswith("share forge sha256 %s\u2026: 1/1 done\n" % v[:8]), \
        (rc, out, err)
    rc, out, err = report(since, "--share", "phantom", "--json")
    assert rc == 2 and out == "", (rc, out, err)
    assert err == ('fdist-report: no records of share "phantom" in that time range; the journal has '
                   'records of these shares:\n  forge\n'
                   'fdist-report: share phantom has records that neither root nor unit fdistd.service '
                   'wrote: they do not count (see --unit)\n'), err


def unit_cgroup(unit):
    """A cgroup of a unit's name, under a slice of this test's, in the
    cgroup2 hierarchy: journald stamps the records of a process in it
    with _SYSTEMD_UNIT=unit, as it does those of a unit systemd runs."""
    with open("/proc/self/mounts") as f:
        roots = [line.split()[1] for line in f if line.split()[2] == "cgroup2"]
    assert roots, "no cgroup2 hierarchy"
    group = os.path.join(roots[0], "fdtest-report-%d.slice" % os.getpid(), unit)
    os.makedirs(group)
    return group


def remove_cgroups(groups):
    """The unit cgroups, then their slice (once their processes are reaped)."""
    deadline = time.monotonic() + 10
    for path in list(groups) + sorted({os.path.dirname(g) for g in groups}):
        while True:
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:         # EBUSY until the last process is reaped
                assert time.monotonic() < deadline, "cgroup %s stays busy" % path
                time.sleep(0.05)


def test_records_count_by_the_unit_that_wrote_them(tmp):
    """fdistd run by its unit as a user of its own (DynamicUser=), here in
    a cgroup of the unit's name: fdistd.service's records count whatever
    its uid, those of another unit only with --unit (a name or a
    pattern), and a process of the same uid outside the unit forges
    nothing."""
    since = "--since=@%.6f" % time.time()
    time.sleep(0.01)
    os.chmod(tmp, 0o755)                # the daemon's user reads its configuration and file
    uid = 61998
    path = make_file(os.path.join(tmp, "img"), 1000)
    os.chmod(path, 0o644)
    v = file_sha256(path)
    p1, p2 = free_port(), free_port()
    groups = []
    try:
        daemons = []
        for unit, share, port in (("fdistd.service", "dyn", p1), ("fdist-lab.service", "lab", p2)):
            groups.append(unit_cgroup(unit))
            into = ('echo $$ > %s/cgroup.procs && chmod 666 "$NOTIFY_SOCKET" && '
                    'exec setpriv --reuid=%d --regid=%d --clear-groups "$0" "$@"' % (groups[-1], uid, uid))
            sub = os.path.join(tmp, share)
            os.mkdir(sub)
            os.chmod(sub, 0o755)
            daemons.append(Daemon(sub, {share: {"listen": "127.0.0.1:%d" % port, "file": path}},
                                  {"log": "journal"}, launcher=["sh", "-c", into]))
        try:
            for share, port in (("dyn", p1), ("lab", p2)):
                wait_digest(v, share)
                client(port, "127.0.0.2")
                (rec,) = transfers(1, share)
                assert rec["_UID"] == str(uid) and rec["_SYSTEMD_UNIT"] == (
                    "fdistd.service" if share == "dyn" else "fdist-lab.service"), rec
            for d in daemons:
                d.stop()
        finally:
            for d in daemons:
                d.close()
        forge([forged_transfer("dyn", "127.0.0.5", v, rec["FDIST_VERSION"]),
               forged_transfer("lab", "127.0.0.5", v, rec["FDIST_VERSION"])], uid=uid, gid=uid)
        assert_forged(2, uid, "FDIST_PEER=127.0.0.5:40000", since)
    finally:
        remove_cgroups(groups)

    hosts = hosts_file(tmp, "127.0.0.2\n127.0.0.5\n")
    for unit in ((), ("--unit", "fdist-*")):        # a pattern is checked record by record
        rc, out, err = report("--share", "dyn", "--hosts", hosts, *unit)
        assert rc == 1 and err == "" and out.startswith(
            "share dyn sha256 %s\u2026: 1/2 done, 1 missing\n" % v[:8]), (unit, rc, out, err)
    rc, out, err = report(since)
    assert rc == 0 and out.startswith("share dyn sha256 %s\u2026: 1/1 done\n" % v[:8]), (rc, out, err)
    # another unit's records: not without --unit
    rc, out, err = report(since, "--share", "lab", "--hosts", hosts)
    assert rc == 2 and out == "", (rc, out, err)
    assert err == ('fdist-report: no records of share "lab" in that time range; the journal has '
                   'records of these shares:\n  dyn\n'
                   'fdist-report: share lab has records that neither root nor unit fdistd.service '
                   'wrote: they do not count (see --unit)\n'), err
    for unit in ("fdist-lab", "fdist-lab.service", "fdist-l*"):
        rc, out, err = report(since, "--share", "lab", "--hosts", hosts, "--unit", unit)
        assert rc == 1 and err == "" and out.startswith(
            "share lab sha256 %s\u2026: 1/2 done, 1 missing\n" % v[:8]), (unit, rc, out, err)
    rc, out, err = report(since, "--unit", "fdist-lab")
    assert rc == 2 and "records of 2 shares; choose one with --share:\n  dyn\n  lab\n" in err, err
    rc, out, err = report(since, "--share", "lab", "--unit", "fdistd@*")
    assert rc == 2 and "neither root nor units fdistd.service, fdistd@*.service wrote" in err, err
    for bad in ("", "x" * 300):
        rc, out, err = report("--share", "lab", "--unit", bad)
        assert rc == 2 and out == "" and "--unit" in err, (bad, rc, err)


def serve_b(state):
    """Server B: its own host name, journald and daemon (in unshare -m -u,
    started by test_two_servers_merged_by_journal_remote)."""
    subprocess.run(["hostname", "fdtest-b"], check=True)
    del sys.argv[1:]                # no test names for the runner

    def run(tmp):
        path = os.path.join(state, "img")
        port = int(open(os.path.join(state, "port")).read())
        with serving(tmp, "fleet", path, port):
            open(os.path.join(state, "ready"), "w").close()
            deadline = time.monotonic() + 120
            while not os.path.exists(os.path.join(state, "stop")):
                assert time.monotonic() < deadline, "never told to stop"
                time.sleep(0.05)
            transfers(int(open(os.path.join(state, "stop")).read()), "fleet")
        export_journal(state, "b")
    return inside_namespace({"test_serve_b": run})


def test_two_servers_merged_by_journal_remote(tmp):
    path = make_file(os.path.join(tmp, "img"), 300000)
    v = file_sha256(path)
    state = os.path.join(tmp, "b")
    os.makedirs(state)
    shutil.copy(path, os.path.join(state, "img"))
    pa, pb = free_port(), free_port()
    with open(os.path.join(state, "port"), "w") as f:
        f.write(str(pb))
    b = subprocess.Popen(["unshare", "-m", "-u", "--propagation", "private", sys.executable,
                          os.path.abspath(__file__), "serve-b", state],
                         env=dict(os.environ, FDTEST_REPORT_NS="b"))
    try:
        with Daemon(tmp, {"fleet": {"listen": "127.0.0.1:%d" % pa, "file": path}},
                    {"log": "journal"}):
            deadline = time.monotonic() + 60
            while not os.path.exists(os.path.join(state, "ready")):
                assert time.monotonic() < deadline and b.poll() is None, "server B did not start"
                time.sleep(0.05)
            client(pa, "127.0.0.2")
            client(pb, "127.0.0.3")
            client(pb, "127.0.0.4")
            transfers(1, "fleet")
            with open(os.path.join(state, "stop"), "w") as f:
                f.write("2")
            assert b.wait(120) == 0, "server B failed"
            exp_a = export_journal(tmp, "a")
    finally:
        if b.poll() is None:
            b.kill()
            b.wait()
    merged = os.path.join(tmp, "merged")
    remote([("a", exp_a), ("b", os.path.join(state, "b.export"))], merged)
    hosts = hosts_file(tmp, "127.0.0.2\n127.0.0.3\n127.0.0.4\n127.0.0.5\n")
    rc, out, err = report("--share", "fleet", "-D", merged, "--hosts", hosts, "--json")
    assert rc == 1, (rc, out, err)
    doc = json.loads(out)
    assert sorted(doc["summary"]["servers"]) == ["fdtest-a", "fdtest-b"], doc["summary"]
    h = {x["host"]: (x["state"], x["server"]) for x in doc["hosts"]}
    assert h == {"127.0.0.2": ("done", "fdtest-a"), "127.0.0.3": ("done", "fdtest-b"),
                 "127.0.0.4": ("done", "fdtest-b"), "127.0.0.5": ("missing", None)}, h
    assert doc["summary"]["sha256"] == v
    # the same from the two files named one by one
    rc, out, _ = report("--share", "fleet", "--file", os.path.join(merged, "remote-a.journal"),
                        "--file", os.path.join(merged, "remote-b.journal"), "--hosts", hosts)
    assert rc == 1 and out.startswith("share fleet sha256 %s\u2026: 3/4 done, 1 missing" % v[:8]), out
    t = {r[1]: r[2] for r in rows(out)}
    assert t["127.0.0.2"] == "fdtest-a" and t["127.0.0.3"] == "fdtest-b", out


if __name__ == "__main__":
    ns = os.environ.get("FDTEST_REPORT_NS")
    if ns == "b":
        sys.exit(serve_b(sys.argv[2]))
    if ns == "a":
        subprocess.run(["hostname", "fdtest-a"], check=True)
        sys.exit(inside_namespace(globals()))
    require(JOURNALD, JOURNAL_REMOTE, "unshare", "setpriv", root="a private journald in a mount namespace")
    env = dict(os.environ, FDTEST_REPORT_NS="a")
    sys.exit(subprocess.run(["unshare", "-m", "-u", "--propagation", "private", sys.executable] +
                            sys.argv, env=env).returncode)
