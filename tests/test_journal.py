#!/usr/bin/env python3
"""The journal: structured records in a real, private systemd-journald.

The test re-runs itself inside a private mount namespace (unshare -m) with
tmpfs on /run/systemd and /run/log and a journald.conf of its own, starts
the real systemd-journald there, and asserts on what journalctl reads
back.  Nothing of the host's journal is touched.
"""

import json
import os
import socket
import subprocess
import sys
import time

from fdtest import Daemon, fetch, free_port, main, make_file, require

JOURNALD = "/lib/systemd/systemd-journald"
JOURNAL_DIR = "/run/log/journal"
TRANSFER_ID = "68da270df4994c348ba467a048bebbc3"


def journal(*match, timeout=10, want=1):
    """Records matching the journalctl match arguments, as dicts."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(["journalctl", "-D", JOURNAL_DIR, "-o", "json", "--no-pager"] + list(match),
                             capture_output=True, timeout=20)
        recs = [json.loads(line) for line in out.stdout.decode().splitlines() if line.strip()]
        if len(recs) >= want or time.monotonic() > deadline:
            return recs
        time.sleep(0.05)


def daemon_with_journal_stream(tmp, shares, **kw):
    """A daemon whose stderr is 'the journal stream' by JOURNAL_STREAM.

    systemd marks the stream it connects to stderr with JOURNAL_STREAM=dev:ino;
    the daemon must recognise it (log = auto) and send structured records.
    """
    d = Daemon(tmp, shares, {"log": "auto"}, start=False, **kw)
    # the daemon's stderr will be this file; name it as the journal stream
    st = os.stat(d.stderr_path) if os.path.exists(d.stderr_path) else None
    if st is None:
        open(d.stderr_path, "wb").close()
        st = os.stat(d.stderr_path)
    d.env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
    return d


def test_records_are_structured_in_the_journal(tmp):
    path = make_file(os.path.join(tmp, "data"), 100000)
    port = free_port()
    d = daemon_with_journal_stream(tmp, {"jshare": {"listen": "127.0.0.1:%d" % port, "file": path}})
    with d:
        d.start()
        fetch(port)
        fetch(port, ack=b"evil\x1b[2J\xff ack\n")
        fetch(port, ack=None)
        recs = journal("FDIST_SHARE=jshare", "MESSAGE_ID=" + TRANSFER_ID, want=3)
        assert len(recs) == 3, recs
        acked = journal("FDIST_SHARE=jshare", "FDIST_STATUS=acked", want=2)
        assert len(acked) == 2
        # each by its ack: once in CI the two came out of journalctl the
        # other way round, and their order is not what this test is about
        (r,) = [x for x in acked if x.get("FDIST_ACK") == "Thank you"]
        (evil,) = [x for x in acked if x is not r]
        assert r["MESSAGE_ID"] == TRANSFER_ID
        assert r["PRIORITY"] == "6"
        assert r["SYSLOG_IDENTIFIER"] == "fdistd"
        assert r["FDIST_FILE"] == path
        assert r["FDIST_PEER"].startswith("127.0.0.1:")
        assert r["FDIST_BYTES"] == r["FDIST_SIZE"] == "100000"
        assert int(r["FDIST_DURATION_USEC"]) > 0
        assert r["FDIST_ACK"] == "Thank you"
        assert r["MESSAGE"].startswith(r["FDIST_PEER"] + " [jshare] acked: 100000/100000 bytes in ")
        assert r["MESSAGE"].endswith(', ack "Thank you"')
        assert evil["FDIST_ACK"] == "evil\\x1b[2J\\xff ack"
        (noack,) = journal("FDIST_SHARE=jshare", "FDIST_STATUS=no-ack")
        assert noack["PRIORITY"] == "4" and "FDIST_ACK" not in noack
        # daemon events are in the journal too, the ready one with its catalog id
        (ready,) = journal("SYSLOG_IDENTIFIER=fdistd", "MESSAGE_ID=819de2ce009b464d91664758b897bac1")
        assert "ready: 1 share," in ready["MESSAGE"]
        # and nothing went to stderr
        assert "transfer" not in d.log()


def test_reload_failure_event_and_log_journal_key(tmp):
    path = make_file(os.path.join(tmp, "data"), 10)
    port = free_port()
    with Daemon(tmp, {"k": {"listen": "127.0.0.1:%d" % port, "file": path}}, {"log": "journal"}) as d:
        with open(d.config, "a") as f:
            f.write("[k]\n")
        d.reload()
        (ev,) = journal("MESSAGE_ID=a5ec91e7b0144300bb78128c936fcf5b")
        assert ev["PRIORITY"] == "4"
        assert ev["MESSAGE"].endswith("%s:7: duplicate share [k] (first on line 4)" % d.config), ev["MESSAGE"]
        fetch(port)
        (rec,) = journal("FDIST_SHARE=k", "MESSAGE_ID=" + TRANSFER_ID)
        assert rec["FDIST_STATUS"] == "acked"


def test_refusal_summary_fields(tmp):
    """Past ten refusals a second, a summary with the share, status,
    reason and count, under its catalog id."""
    path = make_file(os.path.join(tmp, "data"), 10)
    port = free_port()
    with Daemon(tmp, {"flood": {"listen": "127.0.0.1:%d" % port, "file": path, "deny": "127.0.0.1"}},
                {"log": "journal"}) as d:
        for _ in range(13):                 # each one reset, maybe during connect()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    assert s.recv(10) == b""
            except ConnectionResetError:
                pass
        (summary,) = journal("MESSAGE_ID=7bb3f058988248d99412e299d3580d60")
        assert summary["FDIST_SHARE"] == "flood" and summary["FDIST_STATUS"] == "denied", summary
        assert summary["FDIST_REASON"] == "not allowed" and summary["FDIST_COUNT"] == "3", summary
        assert summary["PRIORITY"] == "4"
        assert summary["MESSAGE"] == ("3 more connections to [flood] refused (denied: not allowed) "
                                      "in the last 1000 ms, not logged one by one"), summary
        assert len(journal("FDIST_SHARE=flood", "FDIST_STATUS=denied", want=11)) == 11


def test_no_record_is_dropped_under_a_burst(tmp):
    """500 clients in a burst: 500 records (the private journald has no
    rate limit; test_service checks the unit's own limit against a low
    one of journald's)."""
    import threading
    path = make_file(os.path.join(tmp, "data"), 1000)
    port = free_port()
    with Daemon(tmp, {"burst": {"listen": "127.0.0.1:%d" % port, "file": path}}, {"log": "journal"}) as d:
        def worker():
            for _ in range(100):
                fetch(port)
        ts = [threading.Thread(target=worker) for _ in range(5)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        recs = journal("FDIST_SHARE=burst", "FDIST_STATUS=acked", want=500, timeout=30)
        assert len(recs) == 500, len(recs)


def test_proxy_fields(tmp):
    """Behind the PROXY protocol: FDIST_PEER is the client the header
    names, FDIST_PROXY the balancer; a probe is info, a bad header a
    warning, each with its reason."""
    path = make_file(os.path.join(tmp, "data"), 1000)
    port = free_port()
    share = {"listen": "127.0.0.1:%d" % port, "file": path, "proxy_protocol": "yes",
             "proxy_from": "127.0.0.1"}
    with Daemon(tmp, {"pp": share}, {"log": "journal"}):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"PROXY TCP4 192.0.2.7 192.0.2.1 40001 9000\r\n")
            while s.recv(65536):
                pass
            s.sendall(b"Thank you\0")
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"NOT A HEADER\r\n")
            try:
                assert s.recv(10) == b""
            except ConnectionResetError:
                pass
        (acked,) = journal("FDIST_SHARE=pp", "FDIST_STATUS=acked")
        assert acked["FDIST_PEER"] == "192.0.2.7:40001", acked
        assert acked["FDIST_PROXY"].startswith("127.0.0.1:") and acked["PRIORITY"] == "6", acked
        (probe,) = journal("FDIST_SHARE=pp", "FDIST_STATUS=probe")
        assert probe["PRIORITY"] == "6" and probe["FDIST_REASON"] == "closed before a byte", probe
        assert probe["FDIST_PEER"] == probe["FDIST_PROXY"], probe
        (bad,) = journal("FDIST_SHARE=pp", "FDIST_STATUS=proxy-error")
        assert bad["PRIORITY"] == "4" and bad["FDIST_REASON"] == "malformed PROXY header", bad
        assert bad["FDIST_BYTES"] == "0", bad


def inside_namespace(module_globals=None):
    """Private /run/systemd and /run/log, a journald of our own, then the tests."""
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/systemd"], check=True)
    os.makedirs("/run/log", exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/log"], check=True)
    conf = "/run/systemd/fdtest-journald.conf"
    with open(conf, "w") as f:
        f.write("[Journal]\nStorage=volatile\nRateLimitIntervalSec=0\nRateLimitBurst=0\n")
    subprocess.run(["mount", "--bind", conf, "/etc/systemd/journald.conf"], check=True)
    jd = subprocess.Popen([JOURNALD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists("/run/systemd/journal/socket"):
            if time.monotonic() > deadline or jd.poll() is not None:
                print("journald did not start")
                return 1
            time.sleep(0.01)
        from fdtest import Runner
        return Runner(module_globals or globals()).run(sys.argv)
    finally:
        jd.terminate()
        jd.wait(10)


def journal_main(module_globals):
    """Run a module's tests in a private journald's namespace."""
    if os.environ.get("FDTEST_JOURNAL_NS") == "1":
        sys.exit(inside_namespace(module_globals))
    require(JOURNALD, "unshare", root="a private journald in a mount namespace")
    env = dict(os.environ, FDTEST_JOURNAL_NS="1")
    sys.exit(subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable] + sys.argv,
                            env=env).returncode)


if __name__ == "__main__":
    journal_main(globals())
