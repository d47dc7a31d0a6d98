#!/usr/bin/env python3
"""The Prometheus endpoint (metrics = ADDR:PORT): counters that equal the
records of real transfers, an exposition promtool accepts, a real
Prometheus server scraping the daemon, hostile requests, reloads."""

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from fdtest import (FDISTD, Daemon, connect, fetch, file_sha256, free_port,
                    linger_reset, main, make_file, need, read_all, sha256, terminate)

ACTIVATE = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "activate.py")]
BIG = 64 * 1024 * 1024
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def unescape(v):
    return re.sub(r'\\(.)', lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse(text):
    """The exposition as {(name, ((label, value), ...)): float}; checks
    that every sample follows a TYPE line of its family."""
    samples, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE_RE.match(line)
        assert m, "not a sample line: %r" % line
        name, labels, value = m.groups()
        assert name in typed, "%s before its TYPE line" % name
        pairs = tuple(sorted((k, unescape(v)) for k, v in LABEL_RE.findall(labels or "")))
        samples[(name, pairs)] = float(value)
    return samples


def value(samples, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, "no sample %s%s in %s" % (name, labels, sorted(k for k in samples if k[0] == name))
    return samples[key]


def total(samples, name, **labels):
    """The sum over every sample of name whose labels include these."""
    return sum(v for (n, pairs), v in samples.items()
               if n == name and set(labels.items()) <= set(pairs))


def request(port, path="/metrics", method="GET", host="127.0.0.1", headers=None, body=None, source=None):
    c = http.client.HTTPConnection(host, port, timeout=15,
                                   source_address=(source, 0) if source else None)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def scrape(port, **kw):
    status, headers, body = request(port, **kw)
    assert status == 200, (status, body)
    assert headers["Content-Type"] == CONTENT_TYPE, headers
    return parse(body.decode())


def serve(tmp, shares, metrics_port, **global_opts):
    opts = {"metrics": "127.0.0.1:%d" % metrics_port}
    opts.update(global_opts)
    return Daemon(tmp, shares, opts)


def share(tmp, name, size, **opts):
    path = os.path.join(tmp, name + ".img")
    if not os.path.exists(path):
        make_file(path, size, seed=len(name))
    s = {"listen": "127.0.0.1:%d" % free_port(), "file": path}
    s.update(opts)
    return s


def port_of(s):
    return int(s["listen"].rsplit(":", 1)[1])


def refused(port, source):
    """A connection reset before any byte of the file (denied or busy)."""
    try:
        s = connect(port, bind=source)
        data = s.recv(1)
    except ConnectionResetError:
        return True
    s.close()
    return data == b""


def hold(port, rcvbuf=65536):
    """A client that took one byte and stalls."""
    s = connect(port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    assert s.recv(1)
    return s


def test_counters_equal_the_records_of_real_transfers(tmp):
    mport = free_port()
    shares = {"small": share(tmp, "small", 100000),
              "big": share(tmp, "big", BIG),
              "locked": share(tmp, "small", 100000, allow="127.0.0.2"),
              "one": share(tmp, "big", BIG, max_clients="1")}
    with serve(tmp, shares, mport) as d:
        small, big = port_of(shares["small"]), port_of(shares["big"])
        for _ in range(3):
            assert sha256(fetch(small)) == file_sha256(shares["small"]["file"])
        for _ in range(2):
            fetch(small, ack=None)
        s = connect(big)
        assert s.recv(65536)
        linger_reset(s)
        s.close()
        assert refused(port_of(shares["locked"]), "127.0.0.1")
        h = hold(port_of(shares["one"]))
        assert refused(port_of(shares["one"]), "127.0.0.1")
        recs = d.wait_records(8)
        m = scrape(mport)
        h.close()
        for name in shares:
            for status in ("acked", "ack-mismatch", "no-ack", "ack-timeout", "aborted",
                           "send-timeout", "file-changed", "shutdown"):
                mine = [r for r in recs if r["share"] == name and r["status"] == status]
                assert value(m, "fdistd_transfers_total", share=name, status=status) == len(mine), \
                    (name, status, recs)
                assert value(m, "fdistd_delivered_bytes_total", share=name, status=status) == \
                    sum(int(r["bytes"]) for r in mine), (name, status)
        assert value(m, "fdistd_transfers_total", share="small", status="acked") == 3
        assert value(m, "fdistd_transfers_total", share="small", status="no-ack") == 2
        assert value(m, "fdistd_delivered_bytes_total", share="small", status="acked") == 300000
        assert value(m, "fdistd_transfers_total", share="big", status="aborted") == 1
        assert 0 < value(m, "fdistd_delivered_bytes_total", share="big", status="aborted") < BIG
        assert value(m, "fdistd_refusals_total", share="locked", status="denied", reason="not allowed") == 1
        assert value(m, "fdistd_refusals_total", share="one", status="busy", reason="share max_clients") == 1
        assert total(m, "fdistd_refusals_total") == 2
        assert value(m, "fdistd_clients", share="one", state="sending") == 1
        assert value(m, "fdistd_accepted_connections_total") == 9
        assert value(m, "fdistd_file_size_bytes", share="big") == BIG
        for name in shares:
            assert value(m, "fdistd_file_digest_state", share=name, state="pending") + \
                value(m, "fdistd_file_digest_state", share=name, state="ready") == 1
        # the refusals' records give the same reason as the label
        assert {(r["share"], r["status"], r.get("reason")) for r in recs if r["status"] in ("denied", "busy")} == \
            {("locked", "denied", "not allowed"), ("one", "busy", "share max_clients")}


def test_clients_in_each_state(tmp):
    """One client sending, one being flushed (all queued, not all taken),
    one awaiting its ack: each share's gauge says so, and says 0 again
    once they are gone."""
    mport = free_port()
    shares = {"sending": share(tmp, "big", BIG),
              "flushing": share(tmp, "mid", 2 * 1024 * 1024),
              "acking": share(tmp, "small", 100000, ack_timeout="60s")}
    d = Daemon(tmp, shares, {"metrics": "127.0.0.1:%d" % mport}, extra_args=["-v", "-v"])
    with d:
        a = hold(port_of(shares["sending"]))
        b = hold(port_of(shares["flushing"]))
        d.wait_log(r"\[flushing\]: sending -> flushing")
        c = connect(port_of(shares["acking"]))
        assert len(read_all(c)) == 100000
        d.wait_log(r"\[acking\]: \S+ -> awaiting-ack")
        m = scrape(mport)
        want = {"sending": "sending", "flushing": "flushing", "acking": "awaiting-ack"}
        for name, state in want.items():
            for st in want.values():
                assert value(m, "fdistd_clients", share=name, state=st) == (st == state), \
                    (name, st, {k: v for k, v in m.items() if k[0] == "fdistd_clients"})
        for s in (a, b, c):
            linger_reset(s)
            s.close()
        d.wait_records(3)
        m = scrape(mport)
        assert total(m, "fdistd_clients") == 0


def test_promtool_accepts_the_output_and_labels_are_escaped(tmp):
    promtool = need("promtool")
    mport = free_port()
    odd = os.path.join(tmp, 'a "quoted" \\ name')
    make_file(odd, 1000)
    shares = {"odd.name-1": {"listen": "127.0.0.1:%d" % free_port(), "file": odd},
              "plain": share(tmp, "small", 1000)}
    with serve(tmp, shares, mport) as d:
        fetch(port_of(shares["plain"]))
        d.wait_records(1)
        d.wait_log(r"digest share=odd\.name-1 .*file_sha256=")
        status, headers, body = request(mport)
        text = body.decode()
        out = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
        assert out.returncode == 0, (out.stdout, out.stderr, text)
        assert out.stdout == b"" and out.stderr == b"", (out.stdout, out.stderr)
        # the path as the log shows it (escaped), escaped again for the label
        logged = odd.replace("\\", "\\\\").replace('"', '\\"')
        assert 'file="%s"' % logged.replace("\\", "\\\\").replace('"', '\\"') in text, text
        m = parse(text)
        (info,) = [dict(k[1]) for k in m if k[0] == "fdistd_file_info" and dict(k[1])["share"] == "odd.name-1"]
        assert info["file"] == logged, info
        assert 'file="%s"' % logged in d.log()
        assert info["sha256"] == file_sha256(odd)
        rec = d.wait_records(1)[0]
        assert rec["version"] == [dict(k[1]) for k in m if k[0] == "fdistd_file_info" and
                                  dict(k[1])["share"] == "plain"][0]["version"]
        # every family has HELP and TYPE, once, before its samples
        helps = re.findall(r"^# HELP (\S+) ", text, re.M)
        types = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
        assert len(helps) == len(set(helps)) == len(types)
        for name, kind in types:
            assert (kind == "counter") == name.endswith("_total"), (name, kind)
        assert value(m, "process_start_time_seconds") > 1.6e9
        # HEAD: the same headers, no body
        hs, hh, hb = request(mport, method="HEAD")
        assert hs == 200 and hb == b"" and hh["Content-Type"] == CONTENT_TYPE, (hs, hh)
        assert abs(int(hh["Content-Length"]) - len(body)) < 64, (hh, len(body))


def listening_addresses(pid):
    """Every TCP address the process listens on, from /proc."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, v6 in (("tcp", False), ("tcp6", True)):
        with open("/proc/%d/net/%s" % (pid, table)) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] != "0A" or fields[9] not in inodes:
                    continue
                addr, port = fields[1].split(":")
                raw = bytes.fromhex(addr)
                if v6:
                    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    host = socket.inet_ntop(socket.AF_INET6, raw)
                else:
                    host = socket.inet_ntop(socket.AF_INET, raw[::-1])
                found.append((host, int(port, 16)))
    return found


def prom_query(port, query):
    url = "http://127.0.0.1:%d/api/v1/query?%s" % (port, urllib.parse.urlencode({"query": query}))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # no proxy, ever
    with opener.open(url, timeout=10) as r:
        out = json.load(r)
    assert out["status"] == "success", out
    return out["data"]["result"]


def prom_wait(port, query, predicate, timeout=90):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = prom_query(port, query)
        except OSError:
            last = None              # not up yet
        if last and predicate(float(last[0]["value"][1])):
            return float(last[0]["value"][1])
        time.sleep(0.5)
    raise AssertionError("prometheus: %s never matched; last %r" % (query, last))


def test_a_real_prometheus_scrapes_the_daemon(tmp):
    prometheus = need("prometheus")
    mport, pport = free_port(), free_port()
    shares = {"small": share(tmp, "small", 100000)}
    with serve(tmp, shares, mport) as d:
        with open(os.path.join(tmp, "p.yml"), "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: fdistd\n"
                    "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % mport)
        log = open(os.path.join(tmp, "prometheus.log"), "wb")
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        p = subprocess.Popen([prometheus, "--config.file=" + os.path.join(tmp, "p.yml"),
                              "--storage.tsdb.path=" + os.path.join(tmp, "tsdb"),
                              "--web.listen-address=127.0.0.1:%d" % pport,
                              "--storage.tsdb.retention.time=1h"],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=tmp)
        try:
            for _ in range(3):
                fetch(port_of(shares["small"]))
            q = 'fdistd_transfers_total{share="small",status="acked"}'
            assert prom_wait(pport, q, lambda v: v == 3) == 3
            # it listens on loopback only
            addrs = listening_addresses(p.pid)
            assert addrs and all(h == "127.0.0.1" for h, _ in addrs), addrs
            for _ in range(4):
                fetch(port_of(shares["small"]))
            assert prom_wait(pport, q, lambda v: v == 7) == 7
            assert prom_wait(pport, 'up{job="fdistd"}', lambda v: v == 1) == 1
            assert prom_wait(pport, 'scrape_samples_scraped{job="fdistd"}', lambda v: v > 30) > 30
            # what it scraped is its target's own exposition (no errors logged)
        finally:
            terminate(p, 30)
            log.close()
        plog = open(os.path.join(tmp, "prometheus.log"), errors="replace").read()
        assert "level=error" not in plog or "fdistd" not in plog, plog[-3000:]


def closed_unanswered(port, source, send=b"GET /metrics HTTP/1.0\r\n\r\n"):
    """Connect from source, send a request: closed with no reply?"""
    s = connect(port, bind=source)
    try:
        try:
            s.sendall(send)
        except (BrokenPipeError, ConnectionResetError):
            return True
        try:
            return s.recv(100) == b""
        except ConnectionResetError:
            return True
    finally:
        s.close()


def test_hostile_requests(tmp):
    mport = free_port()
    shares = {"small": share(tmp, "small", 100000)}
    with serve(tmp, shares, mport, metrics_allow="127.0.0.2, 127.0.0.3") as d:
        ok = {"source": "127.0.0.2"}
        status, headers, body = request(mport, method="POST", body=b"x=1", **ok)
        assert status == 405 and headers.get("Allow") == "GET, HEAD", (status, headers)
        for method in ("PUT", "DELETE", "OPTIONS"):
            assert request(mport, method=method, **ok)[0] == 405
        assert request(mport, method="BREW", **ok)[0] == 501
        for path in ("/", "/metrics/", "/metricsx", "/../metrics", "/debug"):
            assert request(mport, path=path, **ok)[0] == 404, path
        assert request(mport, path="/metrics?x=1", **ok)[0] == 200
        # an oversized header: refused, and the daemon goes on
        s = connect(mport, bind="127.0.0.2")
        try:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
            reply = s.recv(100)
        except ConnectionResetError:
            reply = b""
        s.close()
        assert reply == b"" or reply.startswith(b"HTTP/1.1 4"), reply
        assert not reply.startswith(b"HTTP/1.1 200"), reply
        # a peer outside metrics_allow is closed unanswered, and not logged
        d.wait_log(r"digest share=small .*file_sha256=")  # the last line due by itself
        before = d.log()
        for _ in range(50):
            assert closed_unanswered(mport, "127.0.0.1")
        m = scrape(mport, **ok)
        assert value(m, "fdistd_metrics_refused_connections_total", reason="not allowed") == 50
        assert d.log() == before, d.log()[len(before):]
        # a slow client that sends nothing is closed at the timeout (10 s)
        t0 = time.monotonic()
        s = connect(mport, bind="127.0.0.3", timeout=40)
        assert s.recv(100) == b""
        waited = time.monotonic() - t0
        s.close()
        assert 8 < waited < 30, waited
        # at most 16 connections at once: the 17th is closed unanswered
        idle = [connect(mport, bind="127.0.0.2") for _ in range(16)]
        time.sleep(0.2)      # let the daemon take them all
        assert closed_unanswered(mport, "127.0.0.3")
        for s in idle:
            s.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                m = scrape(mport, **ok)
                break
            except (ConnectionError, http.client.HTTPException):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert value(m, "fdistd_metrics_refused_connections_total", reason="too many connections") >= 1
        # the transfers never noticed
        assert sha256(fetch(port_of(shares["small"]))) == file_sha256(shares["small"]["file"])
        assert d.wait_records(1)[0]["status"] == "acked"


def peak_rss_kib(pid):
    """The process's peak resident set (VmHWM), in KiB."""
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"^VmHWM:\s+(\d+) kB", f.read(), re.M).group(1))


def test_pipelined_requests_never_read_keep_memory_bounded(tmp):
    """A client that pipelines requests as fast as it can and never reads
    the replies: the daemon stops reading it (its memory stays put), then
    answers every request it read, in order, once the client reads."""
    mport = free_port()
    shares = {"small": share(tmp, "small", 100000)}
    with serve(tmp, shares, mport) as d:
        scrape(mport)
        before = peak_rss_kib(d.proc.pid)
        s = connect(mport)
        s.setblocking(False)
        req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        sent, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 4:
            try:
                sent += s.send(req * 64)
            except BlockingIOError:
                time.sleep(0.01)
        grown = peak_rss_kib(d.proc.pid) - before
        assert grown < 16 * 1024, "%d KiB more after %d bytes of requests" % (grown, sent)
        # the transfers never noticed
        assert sha256(fetch(port_of(shares["small"]))) == file_sha256(shares["small"]["file"])
        # then it reads on: fifty replies, one after the other
        s.setblocking(True)
        s.settimeout(15)
        got = b""
        while got.count(b"HTTP/1.1 200 OK\r\n") < 50:
            b = s.recv(1 << 16)
            assert b, got[-200:]
            got += b
        assert got.startswith(b"HTTP/1.1 200 OK\r\n"), got[:100]
        s.close()


def test_a_request_dripped_is_cut_off_after_10_seconds(tmp):
    """Slowloris: a byte of the request every half second restarts no
    clock; the request must be in within 10 s of the connect, or of the
    end of the previous reply on a kept-alive connection."""
    mport = free_port()
    shares = {"small": share(tmp, "small", 1000)}
    with serve(tmp, shares, mport) as d:
        first = connect(mport, timeout=40)
        kept = connect(mport, timeout=40)
        kept.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.split(b"\r\n\r\n", 1)[1]) < \
                int(re.search(rb"Content-Length: (\d+)", reply).group(1)):
            reply += kept.recv(65536)
        t0 = {first: time.monotonic(), kept: time.monotonic()}
        drip = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: a\r\n" * 40
        closed = {}
        for i in range(len(drip)):
            for s in (first, kept):
                if s in closed:
                    continue
                try:
                    s.send(drip[i:i + 1])
                except (BrokenPipeError, ConnectionResetError):
                    closed[s] = time.monotonic() - t0[s]
            if len(closed) == 2 or time.monotonic() - t0[first] > 25:
                break
            time.sleep(0.5)
        for s in (first, kept):
            if s not in closed:
                s.settimeout(0.2)
                try:
                    if s.recv(100) == b"":
                        closed[s] = time.monotonic() - t0[s]
                except (ConnectionResetError, socket.timeout):
                    pass
            s.close()
        assert first in closed and kept in closed, "still open after %.1f s" % (
            time.monotonic() - t0[first])
        for s, when in closed.items():
            assert 9 < when < 16, when
        scrape(mport)


def test_default_is_loopback_only_and_no_metrics_without_the_key(tmp):
    """Without metrics_allow only loopback may scrape (here: all of
    127/8); without metrics nothing listens beyond the shares."""
    mport = free_port()
    shares = {"small": share(tmp, "small", 1000)}
    with serve(tmp, shares, mport) as d:
        for source in ("127.0.0.1", "127.0.0.9"):
            scrape(mport, source=source)
        assert sorted(p for _, p in listening_addresses(d.proc.pid)) == sorted([mport, port_of(shares["small"])])
    os.mkdir(os.path.join(tmp, "plain"))
    with Daemon(os.path.join(tmp, "plain"), shares) as d:
        assert [p for _, p in listening_addresses(d.proc.pid)] == [port_of(shares["small"])]


def test_reload_keeps_counters_rebinds_and_drops_removed_shares(tmp):
    mport, mport2 = free_port(), free_port()
    shares = {"a": share(tmp, "a", 1000), "b": share(tmp, "b", 1000)}
    with serve(tmp, shares, mport) as d:
        for _ in range(3):
            fetch(port_of(shares["a"]))
        fetch(port_of(shares["b"]))
        d.wait_records(4)
        m = scrape(mport)
        assert value(m, "fdistd_transfers_total", share="a", status="acked") == 3
        t_loaded = value(m, "fdistd_config_last_reload_success_timestamp_seconds")
        # keep a, drop b, move the metrics
        d.write_config({"a": shares["a"]}, {"log": "stderr", "metrics": "127.0.0.1:%d" % mport2})
        time.sleep(0.01)
        d.reload()
        m = scrape(mport2)
        assert value(m, "fdistd_transfers_total", share="a", status="acked") == 3
        assert not [k for k in m if dict(k[1]).get("share") == "b"], "b is gone"
        assert value(m, "fdistd_reloads_total", result="success") == 1
        assert value(m, "fdistd_reloads_total", result="failure") == 0
        assert value(m, "fdistd_config_last_reload_success_timestamp_seconds") > t_loaded
        try:
            request(mport)
            raise AssertionError("the old metrics address still answers")
        except ConnectionRefusedError:
            pass
        fetch(port_of(shares["a"]))
        d.wait_records(5)
        assert value(scrape(mport2), "fdistd_transfers_total", share="a", status="acked") == 4
        # a metrics address taken by someone else: the reload fails whole
        squat = socket.socket()
        squat.bind(("127.0.0.1", mport))
        squat.listen(1)
        d.write_config(shares, {"log": "stderr", "metrics": "127.0.0.1:%d" % mport})
        d.reload()
        squat.close()
        d.wait_log(r"reload failed, still serving the previous configuration: metrics on 127\.0\.0\.1:%d: "
                   r"Address already in use" % mport)
        m = scrape(mport2)
        assert value(m, "fdistd_reloads_total", result="failure") == 1
        assert not [k for k in m if dict(k[1]).get("share") == "b"], "the failed reload added b"
        # b comes back: counted from zero; a's counters go on
        d.write_config(shares, {"log": "stderr", "metrics": "127.0.0.1:%d" % mport2})
        d.reload()
        m = scrape(mport2)
        assert value(m, "fdistd_transfers_total", share="a", status="acked") == 4
        assert value(m, "fdistd_transfers_total", share="b", status="acked") == 0
        # metrics removed: the port is closed
        d.write_config(shares, {"log": "stderr"})
        d.reload()
        d.wait_log(r"no longer serving metrics")
        try:
            request(mport2)
            raise AssertionError("metrics still served")
        except ConnectionRefusedError:
            pass


def test_socket_activation_with_metrics(tmp):
    """Activated, the daemon binds the metrics address itself; the passed
    sockets are the shares'."""
    mport, sport = free_port(), free_port()
    path = make_file(os.path.join(tmp, "f"), 1000)
    d = Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % sport, "file": path}},
               {"metrics": "127.0.0.1:%d" % mport}, start=False,
               launcher=ACTIVATE + ["127.0.0.1:%d=s" % sport, "--"])
    with d:
        d.start()
        fetch(sport)
        d.wait_records(1)
        assert value(scrape(mport), "fdistd_transfers_total", share="s", status="acked") == 1


def test_a_socket_passed_for_the_metrics_address_is_refused(tmp):
    """The metrics address is not taken from the service manager: passed,
    its socket holds the address, and the start fails saying so."""
    mport, sport = free_port(), free_port()
    path = make_file(os.path.join(tmp, "f"), 1000)
    d = Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % sport, "file": path}},
               {"metrics": "127.0.0.1:%d" % mport}, start=False)
    out = subprocess.run(ACTIVATE + ["127.0.0.1:%d=s" % sport, "127.0.0.1:%d=metrics" % mport, "--",
                                     FDISTD, "-c", d.config], capture_output=True, timeout=30,
                         env=dict(os.environ, NOTIFY_SOCKET=""))
    err = out.stderr.decode()
    assert out.returncode != 0, err
    assert "metrics on 127.0.0.1:%d: Address already in use (fdistd binds the metrics address itself, " \
        "also under socket activation: do not pass a socket for it)" % mport in err, err


def check_config(tmp, text):
    path = os.path.join(tmp, "c.ini")
    with open(path, "w") as f:
        f.write(text)
    out = subprocess.run([FDISTD, "-t", "-c", path], capture_output=True, timeout=20)
    return out.returncode, (out.stdout + out.stderr).decode()


def test_config_errors_name_the_line(tmp):
    f = make_file(os.path.join(tmp, "f"), 10)
    body = "[s]\nlisten = 127.0.0.1:9000\nfile = %s\n" % f
    cases = [
        ("[fdistd]\nmetrics = nonsense\n", r"c\.ini:2: metrics: invalid listen address 'nonsense'"),
        ("[fdistd]\nmetrics = *:9110\n", r"c\.ini:2: metrics: '\*:9110' is not one address"),
        ("[fdistd]\nmetrics = 127.0.0.1:9110, 127.0.0.2:9110\n", r"c\.ini:2: metrics: .* is not one address"),
        ("[fdistd]\nmetrics_allow = 127.0.0.1\n", r"c\.ini:2: metrics_allow without metrics"),
        ("[fdistd]\nmetrics = 127.0.0.1:9110\nmetrics = 127.0.0.1:9111\n", r"c\.ini:3: duplicate key 'metrics'"),
        ("[fdistd]\nmetrics = 127.0.0.1:9110\nmetrics_allow = 10.0.0.0/33\n",
         r"c\.ini:3: metrics_allow: invalid prefix length"),
        ("[fdistd]\n\nmetrics = 0.0.0.0:9000\n", r"c\.ini:3: metrics address 0\.0\.0\.0:9000 overlaps a listen "
         r"address of \[s\] \(line \d+\)"),
        ("[fdistd]\nmanifest = 127.0.0.1:9120\nmetrics = 127.0.0.1:9120\n",
         r"c\.ini:3: metrics address 127\.0\.0\.1:9120 overlaps a listen address of \[@manifest\] \(line 2\)"),
        ("[fdistd]\n[t]\nmetrics = 127.0.0.1:9110\n", r"c\.ini:3: 'metrics' is a global setting"),
    ]
    for head, want in cases:
        text = head + body if not head.startswith("[fdistd]\n[t]") else head
        rc, out = check_config(tmp, text)
        assert rc != 0 and re.search(want, out), (head, out)
    rc, out = check_config(tmp, "[fdistd]\nmetrics = [::1]:9110\nmetrics_allow = ::1, 127.0.0.0/8\n" + body)
    assert rc == 0, out
    out = subprocess.run([FDISTD, "-t", "-v", "-c", os.path.join(tmp, "c.ini")], capture_output=True,
                         timeout=20).stdout.decode()
    assert "metrics = [::1]:9110\nmetrics_allow = ::1/128\nmetrics_allow = 127.0.0.0/8\n" in out, out


if __name__ == "__main__":
    main(globals())
