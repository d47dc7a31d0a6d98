#!/usr/bin/env python3
"""The PROXY protocol: headers written here by hand (version 1 and 2),
and a real HAProxy (send-proxy, send-proxy-v2) in front of the daemon.

The daemon's clients connect from 127.0.0.1 (the "balancer"); the
headers name other clients, and the records, access lists and limits
must be about those.  Every connection that gets no file gets exactly
one record with a reason, and no byte of the file."""

import contextlib
import os
import socket
import struct
import subprocess
import sys
import time

from fdtest import (Daemon, connect, file_sha256, free_port, linger_reset, main,
                    make_file, need, read_all, sha256, terminate)

FETCH = os.environ.get("FDIST_FETCH", "build/fdist-fetch")
V2_SIG = b"\r\n\r\n\0\r\nQUIT\n"
ACK = b"Thank you\0"


def v1(src="192.0.2.7", sport=40001, dst="192.0.2.1", dport=9000, proto=None):
    proto = proto or ("TCP6" if ":" in src else "TCP4")
    return ("PROXY %s %s %s %d %d\r\n" % (proto, src, dst, sport, dport)).encode()


def v2(src="192.0.2.7", sport=40001, dst="192.0.2.1", dport=9000, cmd=1, tlvs=b"",
       fam=None):
    if ":" in src:
        body = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
                + struct.pack("!HH", sport, dport))
        fam = 0x21 if fam is None else fam
    else:
        body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
        fam = 0x11 if fam is None else fam
    body += tlvs
    return V2_SIG + bytes([0x20 | cmd, fam]) + struct.pack("!H", len(body)) + body


def serve(tmp, size=256 * 1024, host="127.0.0.1", glob=None, **opts):
    path = make_file(os.path.join(tmp, "data"), size)
    port = free_port(socket.AF_INET6 if ":" in host else socket.AF_INET)
    share = {"listen": ("[%s]:%d" if ":" in host else "%s:%d") % (host, port), "file": path,
             "proxy_protocol": "yes", "proxy_from": "127.0.0.1/32, ::1"}
    share.update(opts)
    return Daemon(tmp, {"s": share}, global_opts=glob), port, path


def proxied_fetch(port, header, host="127.0.0.1", ack=ACK, split=None, bind=None):
    """Send header (in pieces of split bytes, if given), read the file, ack."""
    s = connect(port, host, bind=bind)
    try:
        if split:
            for i in range(0, len(header), split):
                s.sendall(header[i:i + split])
                time.sleep(0.05)
        else:
            s.sendall(header)
        data = read_all(s)
        if ack:
            s.sendall(ack)
    finally:
        s.close()
    return data


def refused_bytes(s):
    """What a refused connection gets: nothing, then EOF or a reset."""
    s.settimeout(15)
    try:
        return read_all(s)
    except ConnectionResetError:
        return b""
    finally:
        s.close()


def refused_send(port, data, bind=None):
    """Send data to a connection that is to be refused, maybe before the
    connect even returns (on loopback the reset can beat it); return what
    it got: nothing, if all is well."""
    try:
        s = connect(port, bind=bind)
        s.sendall(data)
    except (ConnectionResetError, BrokenPipeError):
        return b""
    return refused_bytes(s)


def awaiting_header(port, start):
    """A connection that has sent the start of a header and waits for
    the rest (long enough for the daemon to have read it)."""
    s = connect(port)
    s.sendall(start)
    time.sleep(0.2)
    return s


def own_address_check(port):
    """A check as HAProxy's check-send-proxy makes it: a version 1 header
    naming the connection itself, corked so that the FIN goes with it;
    it gets nothing.  The address it named."""
    s = connect(port)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    src, sport = s.getsockname()
    s.sendall(v1(src, sport, "127.0.0.1", port))
    s.shutdown(socket.SHUT_WR)
    assert refused_bytes(s) == b""
    return src, sport


def check_served(d, path, rec, peer, proxy_host="127.0.0.1"):
    assert rec["status"] == "acked", rec
    assert rec["peer"] == peer, rec
    assert rec["proxy"].rsplit(":", 1)[0] == proxy_host, rec
    assert rec["bytes"] == rec["size"] == str(os.path.getsize(path)), rec
    assert rec["ack"] == "Thank you", rec


def test_v1_tcp4_and_tcp6(tmp):
    d, port, path = serve(tmp)
    with d:
        assert sha256(proxied_fetch(port, v1("192.0.2.7", 40001))) == file_sha256(path)
        assert sha256(proxied_fetch(port, v1("2001:db8::7", 40002, "2001:db8::1"))) == \
            file_sha256(path)
        # As HAProxy writes an IPv4 client of an IPv6 socket: mapped.
        assert sha256(proxied_fetch(port, v1("::ffff:192.0.2.8", 40003, "::1"))) == \
            file_sha256(path)
        r1, r2, r3 = d.wait_records(3)
        check_served(d, path, r1, "192.0.2.7:40001")
        check_served(d, path, r2, "[2001:db8::7]:40002")
        check_served(d, path, r3, "192.0.2.8:40003")


def test_v2_tcp4_and_tcp6_with_tlvs(tmp):
    """Version 2, to an IPv6 listener; TLVs after the addresses are skipped."""
    d, port, path = serve(tmp, host="::1")
    tlv = bytes([0x05]) + struct.pack("!H", 20) + b"u" * 20 + bytes([0x04, 0, 0])
    with d:
        assert sha256(proxied_fetch(port, v2("198.51.100.9", 5000), host="::1")) == \
            file_sha256(path)
        assert sha256(proxied_fetch(port, v2("2001:db8::9", 5001, "2001:db8::1", tlvs=tlv),
                                    host="::1")) == file_sha256(path)
        r1, r2 = d.wait_records(2)
        check_served(d, path, r1, "198.51.100.9:5000", "[::1]")
        check_served(d, path, r2, "[2001:db8::9]:5001", "[::1]")


def test_header_split_over_segments(tmp):
    d, port, path = serve(tmp)
    with d:
        assert sha256(proxied_fetch(port, v1("192.0.2.8", 1234), split=5)) == file_sha256(path)
        assert sha256(proxied_fetch(port, v2("192.0.2.9", 1235), split=3)) == file_sha256(path)
        r1, r2 = d.wait_records(2)
        check_served(d, path, r1, "192.0.2.8:1234")
        check_served(d, path, r2, "192.0.2.9:1235")


def test_bytes_right_after_the_header_are_the_ack(tmp):
    """Header and ack in one send: the daemon reads only the header, and
    the ack that followed it is the client's, not lost."""
    d, port, path = serve(tmp)
    with d:
        for hdr in (v1("192.0.2.10", 7), v2("192.0.2.11", 8)):
            s = connect(port)
            s.sendall(hdr + ACK)
            assert sha256(read_all(s)) == file_sha256(path)
            s.close()
        r1, r2 = d.wait_records(2)
        check_served(d, path, r1, "192.0.2.10:7")
        check_served(d, path, r2, "192.0.2.11:8")


def test_acl_acts_on_the_carried_address(tmp):
    d, port, path = serve(tmp, allow="10.0.0.0/8", deny="10.9.0.0/16")
    with d:
        assert sha256(proxied_fetch(port, v1("10.1.2.3", 1000))) == file_sha256(path)
        for src in ("192.0.2.50", "10.9.1.1"):
            assert refused_send(port, v2(src, 1001)) == b""
        recs = d.wait_records(3)
        check_served(d, path, recs[0], "10.1.2.3:1000")
        for rec, src in zip(recs[1:], ("192.0.2.50", "10.9.1.1")):
            assert rec["status"] == "denied" and rec["reason"] == "not allowed", rec
            assert rec["peer"] == src + ":1001" and rec["bytes"] == "0", rec
            assert rec["proxy"].startswith("127.0.0.1:"), rec


def test_max_per_ip_counts_the_carried_address(tmp):
    """Three clients behind one balancer: only the second from the same
    client address is refused."""
    d, port, path = serve(tmp, size=64 * 1024 * 1024, max_per_ip="1")
    with d:
        a = connect(port)
        a.sendall(v1("192.0.2.20", 1))
        assert a.recv(1024)             # sending to it now
        assert refused_send(port, v1("192.0.2.20", 2)) == b""
        (rec,) = d.wait_records(1)
        assert rec["status"] == "busy" and rec["reason"] == "max_per_ip", rec
        assert rec["peer"] == "192.0.2.20:2", rec
        c = connect(port)
        c.sendall(v1("192.0.2.21", 3))
        got = read_all(c)
        c.sendall(ACK)
        c.close()
        assert sha256(got) == file_sha256(path)
        recs = d.wait_records(2)
        check_served(d, path, recs[1], "192.0.2.21:3")
        a.close()
        d.wait_records(3)


def test_max_clients_counts_connections_awaiting_a_header(tmp):
    """max_clients holds descriptors: one waiting for its header counts."""
    d, port, path = serve(tmp, glob={"log": "stderr", "max_clients": "1"})
    with d:
        a = awaiting_header(port, b"PROXY TCP4 ")
        assert refused_send(port, v1("192.0.2.70", 1)) == b""
        rec = expect_refusal(d, 1, "busy", "max_clients")
        assert rec["proxy"] == rec["peer"], rec
        a.sendall(b"192.0.2.71 192.0.2.1 2 9000\r\n")
        assert sha256(read_all(a)) == file_sha256(path)
        a.sendall(ACK)
        a.close()
        check_served(d, path, d.wait_records(2)[1], "192.0.2.71:2")


def expect_refusal(d, n, status, reason, peer_host="127.0.0.1"):
    rec = d.wait_records(n)[n - 1]
    assert rec["status"] == status and rec["reason"] == reason, rec
    assert rec["bytes"] == "0", rec
    assert rec["peer"].rsplit(":", 1)[0] == peer_host, rec
    return rec


BAD_HEADERS = [
        (b"GET / HTTP/1.0\r\n\r\n", False, "malformed PROXY header"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", False, "malformed PROXY header"),
        (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", False, "malformed PROXY header"),
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", False, "malformed PROXY header"),
        (V2_SIG + b"\x22\x11\x00\x0c" + b"\0" * 12, False, "malformed PROXY header"),
        (V2_SIG + b"\x21\x11\x00\x04" + b"\0" * 4, False, "malformed PROXY header"),
        (b"PROXY TCP4 " + b"1" * 120, False, "oversized PROXY header"),
        (V2_SIG + b"\x21\x11\x13\x88", False, "oversized PROXY header"),
        (b"PROXY TCP4 1.2.3.4 5.6", True, "truncated PROXY header"),
        (v2()[:20], True, "truncated PROXY header"),
        (b"PROXY TCP4 1.2.3.4", False, "proxy_timeout"),
        (b"", False, "proxy_timeout"),
]


def check_bad_headers(tmp, cases):
    """Ten at most: past ten a second of one status, refusals are counted."""
    d, port, path = serve(tmp, proxy_timeout="400ms")
    with d:
        for i, (data, eof, reason) in enumerate(cases, 1):
            s = connect(port)
            if data:
                s.sendall(data)
            if eof:
                s.shutdown(socket.SHUT_WR)
            t0 = time.monotonic()
            assert refused_bytes(s) == b"", (data, reason)
            if reason == "proxy_timeout":
                assert 0.3 < time.monotonic() - t0 < 5, time.monotonic() - t0
            rec = expect_refusal(d, i, "proxy-error", reason)
            assert rec["proxy"] == rec["peer"], rec
        assert len(d.records()) == len(cases)
        assert "warning: transfer" in d.log()


def test_malformed_and_oversized_headers(tmp):
    check_bad_headers(tmp, BAD_HEADERS[:8])


def test_truncated_and_slow_headers(tmp):
    check_bad_headers(tmp, BAD_HEADERS[8:])


def test_outside_proxy_from_is_denied_at_accept(tmp):
    """A header from an address not in proxy_from is never believed."""
    d, port, path = serve(tmp)
    with d:
        assert refused_send(port, v1("192.0.2.30", 1), bind="127.0.0.2") == b""
        rec = expect_refusal(d, 1, "denied", "not in proxy_from", "127.0.0.2")
        assert "proxy" not in rec, rec


def test_health_checks_are_probes(tmp):
    """A connection closed without a byte, or after a LOCAL header, is a
    balancer's check: a probe record at info level, not a warning."""
    d, port, path = serve(tmp)
    with d:
        s = connect(port)
        s.close()
        rec = expect_refusal(d, 1, "probe", "closed before a byte")
        s = connect(port)
        # Corked, the FIN goes out with the header: closed, as a check is.
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        s.sendall(v2(cmd=0, fam=0))
        s.shutdown(socket.SHUT_WR)
        assert refused_bytes(s) == b""
        rec = expect_refusal(d, 2, "probe", "closed after its header")
        # HAProxy's version 1 checks name the connection itself.
        src, sport = own_address_check(port)
        rec = expect_refusal(d, 3, "probe", "closed after its header")
        assert rec["peer"] == "%s:%d" % (src, sport), rec
        # One that resets only after the file has started is a probe too.
        s = connect(port)
        s.sendall(v2(cmd=0, fam=0))
        assert s.recv(1)
        linger_reset(s)
        s.close()
        rec = d.wait_records(4)[3]
        assert rec["status"] == "probe" and "reason" not in rec, rec
        assert "warning" not in d.log(), d.log()


def test_local_unknown_and_unspec_use_the_connection(tmp):
    """LOCAL, UNKNOWN and an AF_UNSPEC PROXY are served as the balancer."""
    d, port, path = serve(tmp)
    hdrs = [V2_SIG + b"\x20\x00\x00\x00", b"PROXY UNKNOWN\r\n",
            b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", V2_SIG + b"\x21\x00\x00\x03abc",
            v2(fam=0x12)]
    with d:
        for h in hdrs:
            assert sha256(proxied_fetch(port, h)) == file_sha256(path), h
        for rec in d.wait_records(len(hdrs)):
            assert rec["status"] == "acked", rec
            assert rec["peer"] == rec["proxy"] and rec["peer"].startswith("127.0.0.1:"), rec


def test_plain_share_unchanged(tmp):
    """Without proxy_protocol a header is file content's business: the
    client gets the file at once, and the record has no proxy field."""
    path = make_file(os.path.join(tmp, "data"), 4096)
    port = free_port()
    with Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        s = connect(port)
        assert sha256(read_all(s)) == file_sha256(path)
        s.sendall(ACK)
        s.close()
        (rec,) = d.wait_records(1)
        assert rec["status"] == "acked" and "proxy" not in rec, rec
        assert rec["peer"].startswith("127.0.0.1:"), rec


def test_global_defaults_and_reload(tmp):
    """proxy_* in [fdistd] are defaults; a reload that turns the protocol
    off leaves a connection already waiting for its header as it was."""
    path = make_file(os.path.join(tmp, "data"), 4096)
    port = free_port()
    glob = {"log": "stderr", "proxy_protocol": "yes", "proxy_from": "127.0.0.1",
            "proxy_timeout": "20s"}
    shares = {"s": {"listen": "127.0.0.1:%d" % port, "file": path}}
    with Daemon(tmp, shares, global_opts=glob) as d:
        s = connect(port)
        s.sendall(b"PROXY TCP4 192.0.2.40 ")
        time.sleep(0.1)
        d.write_config(global_opts={"log": "stderr"})
        d.reload()
        s.sendall(b"192.0.2.1 4000 9000\r\n")
        assert sha256(read_all(s)) == file_sha256(path)
        s.sendall(ACK)
        s.close()
        (rec,) = d.wait_records(1)
        assert rec["status"] == "acked" and rec["peer"] == "192.0.2.40:4000", rec
        # New connections: no header expected any more.
        s = connect(port)
        assert sha256(read_all(s)) == file_sha256(path)
        s.sendall(ACK)
        s.close()
        rec = d.wait_records(2)[1]
        assert rec["status"] == "acked" and "proxy" not in rec, rec


def test_socket_activation_and_reload(tmp):
    """An inherited dual-stack socket: the balancer comes as an
    IPv4-mapped address and is still in proxy_from 127.0.0.1; a reload
    that changes proxy_from applies to the next connection."""
    path = make_file(os.path.join(tmp, "data"), 65536)
    port = free_port()
    share = {"listen": "[::]:%d" % port, "file": path, "proxy_protocol": "yes",
             "proxy_from": "127.0.0.1"}
    activate = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                             "activate.py"), "dual:[::]:%d=s" % port, "--"]
    with Daemon(tmp, {"s": share}, launcher=activate) as d:
        assert sha256(proxied_fetch(port, v1("192.0.2.60", 6000))) == file_sha256(path)
        (rec,) = d.wait_records(1)
        check_served(d, path, rec, "192.0.2.60:6000")
        share["proxy_from"] = "10.0.0.0/8"
        d.write_config({"s": share})
        d.reload()
        assert refused_send(port, v1("192.0.2.61", 6001)) == b""
        rec = expect_refusal(d, 2, "denied", "not in proxy_from")
        assert "socket activation: 1 socket passed" in d.log()
        # A check naming its own (IPv4) address is the balancer's own.
        share["proxy_from"] = "127.0.0.1"
        d.write_config({"s": share})
        d.reload()
        own_address_check(port)
        rec = expect_refusal(d, 3, "probe", "closed after its header")


def test_stop_with_a_header_pending(tmp):
    """A stop that ends transfers ends a wait for a header with a record."""
    d, port, path = serve(tmp, glob={"log": "stderr", "shutdown_timeout": "0"})
    with d:
        s = awaiting_header(port, b"PROXY ")
        d.stop()
        rec = d.records()
        assert len(rec) == 1 and rec[0]["status"] == "shutdown", rec
        assert rec[0]["reason"] == "awaiting the PROXY header", rec
        s.close()


def test_config_needs_proxy_from(tmp):
    path = make_file(os.path.join(tmp, "data"), 16)
    cfg = os.path.join(tmp, "bad.ini")
    with open(cfg, "w") as f:
        f.write("[fdistd]\nlog = stderr\n\n[s]\nlisten = 127.0.0.1:%d\nfile = %s\n"
                "proxy_protocol = yes\n" % (free_port(), path))
    r = subprocess.run([os.environ.get("FDISTD", "build/fdistd"), "-t", "-c", cfg],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode != 0, r
    assert "%s:7: share [s]: proxy_protocol = yes needs proxy_from" % cfg in r.stderr, r.stderr
    with open(cfg, "a") as f:
        f.write("proxy_from = 10.0.0.0/8\nproxy_timeout = 2s\n")
    r = subprocess.run([os.environ.get("FDISTD", "build/fdistd"), "-t", "-v", "-c", cfg],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r
    assert "proxy_protocol = yes\nproxy_from = 10.0.0.0/8\nproxy_timeout = 2000ms" in r.stdout, \
        r.stdout
    # From [fdistd]: the default of every share; the error is at its line.
    with open(cfg, "w") as f:
        f.write("[fdistd]\nproxy_protocol = yes\n[s]\nlisten = 127.0.0.1:1\nfile = %s\n"
                % path)
    r = subprocess.run([os.environ.get("FDISTD", "build/fdistd"), "-t", "-c", cfg],
                       capture_output=True, text=True, timeout=10)
    assert "%s:2: share [s]: proxy_protocol = yes needs proxy_from" % cfg in r.stderr, r.stderr
    with open(cfg, "w") as f:
        f.write("[fdistd]\nproxy_protocol = yes\nproxy_from = 10.0.0.1\n"
                "[s]\nlisten = 127.0.0.1:1\nfile = %s\n"
                "[t]\nlisten = 127.0.0.1:2\nfile = %s\nproxy_from = 10.0.0.2, 10.0.0.3\n"
                "[u]\nlisten = 127.0.0.1:3\nfile = %s\nproxy_protocol = no\n" % (path, path, path))
    r = subprocess.run([os.environ.get("FDISTD", "build/fdistd"), "-t", "-v", "-c", cfg],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r
    out = r.stdout
    assert "proxy_protocol = yes\nproxy_from = 10.0.0.1/32\nproxy_timeout = 5000ms\n\n[s]" in out, out
    assert "proxy_protocol = yes\nproxy_from = 10.0.0.2/32\nproxy_from = 10.0.0.3/32\n" \
        "proxy_timeout = 5000ms\n\n[u]" in out, out
    assert out.endswith("proxy_protocol = no\nproxy_from = 10.0.0.1/32\nproxy_timeout = 5000ms\n"
                        "configuration OK\n"), out
    for bad in ("proxy_protocol = maybe", "proxy_timeout = 0", "proxy_from = 10.0.0.300"):
        with open(cfg, "w") as f:
            f.write("[fdistd]\n%s\n[s]\nlisten = 127.0.0.1:1\nfile = %s\n" % (bad, path))
        r = subprocess.run([os.environ.get("FDISTD", "build/fdistd"), "-t", "-c", cfg],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode != 0 and "%s:2: " % cfg in r.stderr, (bad, r.stderr)


@contextlib.contextmanager
def haproxy(tmp, config, ports):
    """HAProxy with HAPROXY_DEFAULTS and config, once it has bound every
    one of ports; stopped on the way out."""
    cfg = os.path.join(tmp, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(HAPROXY_DEFAULTS + config)
    hp = subprocess.Popen([need("haproxy"), "-f", cfg, "-db"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not all(port_taken(p) for p in ports):
            if hp.poll() is not None or time.monotonic() > deadline:
                terminate(hp, 10)
                raise AssertionError("haproxy did not bind %s (exit %s)" % (ports, hp.returncode))
            time.sleep(0.05)
        yield
    finally:
        terminate(hp, 10)


def behind_haproxy(port, path):
    """A share on 127.0.0.1:port that takes PROXY headers from HAProxy
    on the same host."""
    return {"listen": "127.0.0.1:%d" % port, "file": path, "proxy_protocol": "yes",
            "proxy_from": "127.0.0.1"}


HAPROXY_DEFAULTS = """defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
"""


def test_haproxy_health_checks_are_probes(tmp):
    """HAProxy's checks, with send-proxy-v2 (LOCAL) and send-proxy with
    check-send-proxy (a header naming the check itself), for a while:
    every record is a probe, none a warning."""
    path = make_file(os.path.join(tmp, "data"), 1024 * 1024)
    ports = [free_port() for _ in range(3)]
    fport = free_port()
    shares = {"c%d" % i: behind_haproxy(p, path) for i, p in enumerate(ports)}
    config = """frontend f
    bind 127.0.0.1:%d
    default_backend b0
backend b0
    server s 127.0.0.1:%d send-proxy-v2 check inter 100ms
backend b1
    server s 127.0.0.1:%d send-proxy-v2 check check-send-proxy inter 100ms
backend b2
    server s 127.0.0.1:%d send-proxy check check-send-proxy inter 100ms
""" % (fport, ports[0], ports[1], ports[2])
    with Daemon(tmp, shares) as d:
        with haproxy(tmp, config, [fport]):
            for share in shares:
                d.wait_records(5, share=share)
        recs = d.records()
        assert recs and all(r["status"] == "probe" for r in recs), \
            [r for r in recs if r["status"] != "probe"]
        assert "warning" not in d.log(), d.log()


def port_taken(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def test_haproxy_in_front(tmp):
    """Real HAProxy, send-proxy-v2 and send-proxy, in front of two shares;
    the third frontend is dual-stack, so its IPv4 clients are IPv4-mapped
    and HAProxy writes them as "TCP6 ::ffff:127.0.0.5"."""
    path = make_file(os.path.join(tmp, "data"), 3 * 1024 * 1024)
    d1, d2, f1, f2 = free_port(), free_port(), free_port(), free_port()
    f3 = free_port(socket.AF_INET6)
    shares = {"v2": behind_haproxy(d2, path), "v1": behind_haproxy(d1, path)}
    config = """frontend f2
    bind 127.0.0.1:%d
    default_backend b2
frontend f1
    bind 127.0.0.1:%d
    default_backend b1
frontend f3
    bind :::%d v4v6
    default_backend b1
backend b2
    server s1 127.0.0.1:%d send-proxy-v2
backend b1
    server s1 127.0.0.1:%d send-proxy
""" % (f2, f1, f3, d2, d1)
    with Daemon(tmp, shares) as d:
        with haproxy(tmp, config, [f1, f2, f3]):
            n = 0
            for fport, share in ((f2, "v2"), (f1, "v1"), (f3, "v1")):
                # A client of its own address, which only the header can tell.
                data = proxied_fetch(fport, b"", bind="127.0.0.5")
                assert sha256(data) == file_sha256(path)
                n += 1
                rec = d.wait_records(n)[n - 1]
                assert rec["share"] == share and rec["status"] == "acked", rec
                assert rec["peer"].startswith("127.0.0.5:"), rec
                assert rec["proxy"].startswith("127.0.0.1:"), rec
                out = os.path.join(tmp, "out-" + share)
                r = subprocess.run([FETCH, "-q", "-o", out, "--expect-sha256", file_sha256(path),
                                    "127.0.0.1:%d" % fport], capture_output=True, timeout=60)
                assert r.returncode == 0, r
                assert file_sha256(out) == file_sha256(path)
                n += 1
                rec = d.wait_records(n)[n - 1]
                assert rec["share"] == share and rec["status"] == "acked", rec
                assert rec["verified"] == "yes", rec
                assert rec["peer"].startswith("127.0.0.1:") and rec["proxy"].startswith("127.0.0.1:")


if __name__ == "__main__":
    main(globals())
