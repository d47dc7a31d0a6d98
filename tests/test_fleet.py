#!/usr/bin/env python3
"""A fleet on one machine: one journal for many fdistd servers.

Every host is a network namespace on one bridge (tests/netbed.py), with
addresses from 198.18.0.0/15 and no route out.  A collector runs the real
systemd-journal-remote (--split-mode=host) and Prometheus; three servers
each run their own journald, fdistd and systemd-journal-upload in a mount
and UTS namespace of their own (own hostname, machine id and /run); a real
HAProxy balances them round robin with send-proxy-v2; and 40
clients, each with its own address, fetch the file through HAProxy with
fdist-fetch.  One client's address is denied by the servers, one client
is kept off the network, and one host sends a PROXY header of its own
straight to the servers.

The records must carry each client's own address; the collector must
hold every record of every server, told apart by _HOSTNAME; fdist-report
-D on the collector's directory must list every client done with the
server that served it, the denied one failed and the one kept away as
missing; and Prometheus scraping the servers must count the same.

The collector and the servers (tests/fleetbed.py) run what README.md's
"Many servers" says: journal-remote with the ExecStart= of its drop-in,
on the port of the Debian socket unit (socket-activated); journal-upload
as the Debian unit runs it, with the journal-upload.conf the README
writes (its collector name resolved by the server's own /etc/hosts) and
its state file in the default place, which is the test's temp dir there;
and fdist-report on the collector with -D /var/log/journal/remote, also
the test's.
"""

import json
import os
import re
import subprocess
import sys
import time

from fdtest import file_sha256, make_file, need
from fleetbed import (JREMOTE, JUPLOAD, REMOTE_DIR, TRANSFER_ID, Fleet, addr_of, assert_contained,
                      journal, journal_file, key, main, wait_until)
from netbed import ip

FETCH = os.environ.get("FDIST_FETCH", "build/fdist-fetch")

COLLECTOR = "198.18.0.2"
BALANCER = "198.18.0.5"
SERVERS = ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
CLIENTS = ["198.18.1.%d" % i for i in range(1, 41)]     # 40 clients
DENIED = CLIENTS[-2]                # denied by the servers' access list
KEPT_AWAY = CLIENTS[-1]             # its link is down: never connects
FAKER = "198.18.2.1"                # a PROXY header of its own, straight to a server
PORT = 9000
PROM_PORT = 9090
METRICS_PORT = 9101
SIZE = 1536 * 1024


def prometheus_query(col, query):
    """The result vector of an instant query, as {instance: value}."""
    prog = ("import sys, urllib.parse, urllib.request\n"
            "u = 'http://%s:%d/api/v1/query?' + urllib.parse.urlencode({'query': sys.argv[1]})\n"
            "print(urllib.request.urlopen(u, timeout=10).read().decode())\n" % (COLLECTOR, PROM_PORT))
    r = col.run([sys.executable, "-c", prog, query], text=True, timeout=30)
    if r.returncode != 0:
        return None                 # not up yet
    answer = json.loads(r.stdout)
    assert answer["status"] == "success", answer
    return {v["metric"].get("instance", ""): float(v["value"][1]) for v in answer["data"]["result"]}


def fake_proxy_client(host, server, claimed):
    """From host, straight to server: a PROXY v2 header that claims to come
    from claimed, then an ack.  Returns the bytes received."""
    prog = r"""
import socket, struct, sys
sig = b"\r\n\r\n\0\r\nQUIT\n"
body = socket.inet_aton(sys.argv[2]) + socket.inet_aton(sys.argv[1]) + struct.pack("!HH", 40000, %d)
got = b""
s = None
try:
    # refused at accept, the reset may come while connecting
    s = socket.create_connection((sys.argv[1], %d), timeout=20)
    s.sendall(sig + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body)
    while True:
        b = s.recv(65536)
        if not b:
            break
        got += b
    s.sendall(b"Thank you\0")
except (ConnectionResetError, BrokenPipeError):
    pass
if s is not None:
    s.close()
print(len(got))
""" % (PORT, PORT)
    r = host.run([sys.executable, "-c", prog, server, claimed], timeout=60, text=True)
    assert r.returncode == 0, r
    return int(r.stdout.strip())


def test_fleet(tmp):
    for prog in (JREMOTE, JUPLOAD, "haproxy", "prometheus", "systemd-socket-activate"):
        need(prog)
    t0 = time.monotonic()
    path = make_file(os.path.join(tmp, "image"), SIZE, seed=7)
    digest = file_sha256(path)

    with Fleet(tmp) as fleet:
        bed = fleet.bed
        col = bed.host("col", COLLECTOR)
        lb = bed.host("lb", BALANCER)
        srvs = [bed.host("srv%d" % (i + 1), a) for i, a in enumerate(SERVERS)]
        clients = [bed.host("c%02d" % (i + 1), a) for i, a in enumerate(CLIENTS)]
        faker = bed.host("faker", FAKER)
        fleet.collector(col)
        remote_dir = fleet.remote_dir

        # Prometheus on the collector, scraping each server every second.
        pcfg = os.path.join(tmp, "prometheus.yml")
        with open(pcfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: fdistd\n    static_configs:\n"
                    "      - targets: [%s]\n" % ", ".join('"%s:%d"' % (a, METRICS_PORT) for a in SERVERS))
        prom = col.popen([need("prometheus"), "--config.file=" + pcfg,
                          "--storage.tsdb.path=" + os.path.join(tmp, "prometheus"),
                          "--web.listen-address=%s:%d" % (COLLECTOR, PROM_PORT)], log="prometheus.log")

        # Each server: its own hostname, machine id, journald, fdistd, and
        # journal-upload (fleetbed).
        daemons = [fleet.server(srv, "fdbed-srv%d" % (i + 1), ("%x" % (i + 1)) * 32,
                                {"fleet": {"listen": "%s:%d" % (srv.addr, PORT), "file": path,
                                           "proxy_protocol": "yes", "proxy_from": "%s/32" % BALANCER,
                                           "deny": DENIED}},
                                {"metrics": "%s:%d" % (srv.addr, METRICS_PORT), "metrics_allow": COLLECTOR})
                   for i, srv in enumerate(srvs)]
        hostnames = fleet.hostnames

        # HAProxy in front, round robin, the client's address in a v2 header.
        hcfg = os.path.join(tmp, "haproxy.cfg")
        with open(hcfg, "w") as f:
            f.write("defaults\n    mode tcp\n    timeout connect 10s\n"
                    "    timeout client 60s\n    timeout server 60s\n"
                    "frontend fleet\n    bind %s:%d\n    default_backend servers\n"
                    "backend servers\n    balance roundrobin\n" % (BALANCER, PORT))
            for i, a in enumerate(SERVERS):
                f.write("    server s%d %s:%d send-proxy-v2\n" % (i + 1, a, PORT))
        hap = lb.popen([need("haproxy"), "-f", hcfg, "-db"], log="haproxy.log")
        lb.wait_listening(PORT, proc=hap)

        # The one kept away: its link is down, so it never reaches the balancer.
        away = clients[CLIENTS.index(KEPT_AWAY)]
        ip("-n", away.ns, "link", "set", "eth0", "down")
        r = away.run([FETCH, "-q", "-o", os.path.join(tmp, "away.out"), "--timeout=10s",
                      "%s:%d" % (BALANCER, PORT)], text=True)
        assert r.returncode != 0 and "unreachable" in r.stderr, r

        # Every other client at once, through the balancer.
        t_fetch = time.monotonic()
        fetches = []
        for c in clients:
            if c is away:
                continue
            out = os.path.join(tmp, c.name + ".out")
            p = c.popen([FETCH, "-q", "-o", out, "--host-id=" + c.name,
                         "--expect-sha256=" + digest, "--timeout=60s", "%s:%d" % (BALANCER, PORT)],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            fetches.append((c, out, p))
        for c, out, p in fetches:
            stdout, stderr = p.communicate(timeout=120)
            if c.addr == DENIED:
                assert p.returncode != 0 and not os.path.exists(out), (c.name, stderr)
            else:
                assert p.returncode == 0, (c.name, p.returncode, stderr)
                assert file_sha256(out) == digest, c.name
        t_fetch = time.monotonic() - t_fetch

        # A header of its own, straight to each server: not from proxy_from.
        for a in SERVERS:
            assert fake_proxy_client(faker, a, KEPT_AWAY) == 0

        # Each server's own journal: one record per connection, each with
        # the client's own address and the balancer as the proxy.
        served = {}             # client address -> hostname of its server
        local = []
        forwarded = []
        for srv, name, d in zip(srvs, hostnames, daemons):
            jdir = fleet.local_journal(srv)

            def records(jdir=jdir):
                # the faker's refusal comes last
                recs = journal(jdir, "MESSAGE_ID=" + TRANSFER_ID, "FDIST_SHARE=fleet")
                return recs if any(addr_of(r["FDIST_PEER"]) == FAKER for r in recs) else None
            recs = wait_until(name + "'s records", records, 30)
            for rec in recs:
                assert rec["_HOSTNAME"] == name, rec
                peer = addr_of(rec["FDIST_PEER"])
                if peer == FAKER:
                    assert rec["FDIST_STATUS"] == "denied", rec
                    assert rec["FDIST_REASON"] == "not in proxy_from", rec
                    assert "FDIST_PROXY" not in rec, rec
                    continue
                assert addr_of(rec["FDIST_PROXY"]) == BALANCER, rec
                forwarded.append(rec)
                if peer == DENIED:
                    assert rec["FDIST_STATUS"] == "denied" and rec["FDIST_REASON"] == "not allowed", rec
                    continue
                assert peer in CLIENTS, rec
                assert rec["FDIST_STATUS"] == "acked", rec
                assert rec["FDIST_VERIFIED"] == "yes", rec
                assert rec["FDIST_HOST_ID"] == "c%02d" % (CLIENTS.index(peer) + 1), rec
                assert peer not in served, ("served twice", rec)
                served[peer] = name
            local += recs
        fetched = [c.addr for c, _, _ in fetches if c.addr != DENIED]
        assert sorted(served) == sorted(fetched), (sorted(served), fetched)
        assert not [r for r in local if addr_of(r["FDIST_PEER"]) == KEPT_AWAY], \
            "a record names the address the faker claimed"
        per_server = [sum(1 for r in forwarded if r["_HOSTNAME"] == n) for n in hostnames]
        assert max(per_server) - min(per_server) <= 1, ("not round robin", per_server)
        assert len(forwarded) == len(fetches)
        assert len(local) == len(fetches) + len(SERVERS)

        # The collector: every record of every server, one file per server.
        def collected():
            recs = journal(remote_dir, "MESSAGE_ID=" + TRANSFER_ID, "FDIST_SHARE=fleet")
            return recs if len(recs) >= len(local) else None
        t_ship = time.monotonic()
        remote = wait_until("the collector to hold every record", collected, 60)
        t_ship = time.monotonic() - t_ship
        assert sorted(map(key, remote)) == sorted(map(key, local))
        assert {r["_HOSTNAME"] for r in remote} == set(hostnames)
        assert len({r["_MACHINE_ID"] for r in remote}) == len(SERVERS)
        for srv in srvs:        # the upload's cursor, where the unit keeps it
            state = srv.root("/var/lib/systemd/journal-upload/state")
            wait_until(state, lambda: os.path.exists(state) and os.path.getsize(state) > 0, 20)
        files = sorted(os.listdir(remote_dir))
        assert files == ["remote-%s.journal" % a for a in SERVERS], files
        for a, name in zip(SERVERS, hostnames):
            recs = journal_file(os.path.join(remote_dir, "remote-%s.journal" % a),
                                "MESSAGE_ID=" + TRANSFER_ID)
            assert recs and {r["_HOSTNAME"] for r in recs} == {name}, (a, name)

        # On the collector, the README's checks: the servers' host names,
        # and fdist-report on its directory answers for every server.
        r = col.run(["journalctl", "-D", REMOTE_DIR, "-F", "_HOSTNAME"], text=True)
        assert set(hostnames) <= set(r.stdout.split()), r
        hosts = os.path.join(tmp, "hosts")
        with open(hosts, "w") as f:
            for i, a in enumerate(CLIENTS):
                f.write("%s c%02d\n" % (a, i + 1))
        cmd = fleet.report_command("fleet", hosts)
        r = col.run(cmd, text=True)
        assert r.returncode == 1, r            # not every host is done
        assert re.search(r"^share fleet sha256 %s\S*: %d/%d done, 1 failed, 1 missing$"
                         % (digest[:8], len(CLIENTS) - 2, len(CLIENTS)), r.stdout, re.M), r.stdout
        r = col.run(cmd + ["--sha256", digest, "--json"], text=True)
        assert r.returncode == 1, r
        rep = json.loads(r.stdout)
        s = rep["summary"]
        assert s["sha256"] == digest, s
        assert (s["total"], s["done"], s["failed"], s["missing"]) == \
            (len(CLIENTS), len(CLIENTS) - 2, 1, 1), s
        assert s["records"] == len(local) and s["unlisted_records"] == len(SERVERS), s
        assert sorted(s["servers"]) == sorted(hostnames), s
        by_host = {h["host"]: h for h in rep["hosts"]}
        for a in fetched:
            h = by_host[a]
            assert h["state"] == "done" and h["verified"] is True, h
            assert h["server"] == served[a], (h, served[a])
        assert by_host[DENIED]["state"] == "failed", by_host[DENIED]
        assert by_host[DENIED]["last_failure"]["status"] == "denied", by_host[DENIED]
        assert by_host[KEPT_AWAY]["state"] == "missing", by_host[KEPT_AWAY]

        # Prometheus, scraping the servers, counts what their records say.
        instances = {"%s:%d" % (a, METRICS_PORT): name for a, name in zip(SERVERS, hostnames)}
        want = {}
        for inst, name in instances.items():
            mine = [r for r in local if r["_HOSTNAME"] == name]
            want[inst] = (sum(1 for r in mine if r["FDIST_STATUS"] == "acked"),
                          sum(1 for r in mine if r["FDIST_STATUS"] == "denied"))
        assert sum(a for a, _ in want.values()) == len(fetched)
        assert sum(d for _, d in want.values()) == 1 + len(SERVERS)

        def scraped():
            up = prometheus_query(col, "up")
            acked = prometheus_query(col, 'fdistd_transfers_total{share="fleet",status="acked"}')
            denied = prometheus_query(col, 'sum by (instance) (fdistd_refusals_total{share="fleet",status="denied"})')
            if up is None or acked is None or denied is None:
                return None
            got = {i: (acked.get(i), denied.get(i)) for i in instances}
            return got if got == want and all(up.get(i) == 1 for i in instances) else None
        t_prom = time.monotonic()
        try:
            wait_until("Prometheus to count the records", scraped, 60)
        except AssertionError:
            raise AssertionError("Prometheus: up %s, acked %s, denied %s; the records say %s; log:\n%s" % (
                prometheus_query(col, "up"),
                prometheus_query(col, 'fdistd_transfers_total{share="fleet",status="acked"}'),
                prometheus_query(col, 'fdistd_refusals_total{share="fleet",status="denied"}'),
                want, open(os.path.join(tmp, "prometheus.log")).read()[-3000:]))
        t_prom = time.monotonic() - t_prom
        total = prometheus_query(col, 'sum(fdistd_transfers_total{share="fleet",status="acked"})')
        assert list(total.values()) == [len(fetched)], total
        sent = prometheus_query(col, 'sum(fdistd_delivered_bytes_total{share="fleet",status="acked"})')
        assert list(sent.values()) == [len(fetched) * SIZE], sent

        assert_contained(bed)
        fleet.stop()
        print("fleet: %d hosts (%d clients, %d servers), %d records collected, "
              "fetch %.1fs, shipping %.1fs, Prometheus %.1fs more, total %.1fs"
              % (len(bed.hosts), len(CLIENTS), len(SERVERS), len(remote), t_fetch, t_ship, t_prom,
                 time.monotonic() - t0))
    assert fleet.removed()


if __name__ == "__main__":
    main(globals(), "the fleet test")
