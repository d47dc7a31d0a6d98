#!/usr/bin/env python3
"""A reload looks up listen host names off the event loop, within a bound.

The daemon runs in a mount namespace of its own whose /etc/resolv.conf
names a tiny DNS server this test runs on a loopback address; that server
holds its answers until the test lets them go (or never answers).  While
it holds them, a transfer in flight must keep receiving bytes and new
clients must be served; a resolver that never answers must fail the
reload in bounded time with file:line, and leave later reloads working.
"""

import os
import random
import socket
import struct
import subprocess
import threading
import time

from fdtest import FDISTD, Daemon, connect, fetch, free_port, main, make_file, name_launcher, need, sha256

RESOLVE_TIMEOUT = 10          # seconds, RESOLVE_TIMEOUT_MS in src/resolve.h
SLOW_NAME = "slow.fdistd.test"
DEAD_NAME = "dead.fdistd.test"


class HeldDNS:
    """A DNS server on 127.x.y.z:53 that answers A queries for its names
    with 127.0.0.1 (AAAA with no address), but only once released; with
    nxdomain, it answers every query at once: no such name."""

    def __init__(self, nxdomain=False):
        self.nxdomain = nxdomain
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(50):
            self.addr = "127.53.%d.%d" % (random.randint(1, 254), random.randint(1, 254))
            try:
                self.sock.bind((self.addr, 53))
                break
            except OSError:
                continue
        else:
            raise AssertionError("no free loopback address for port 53")
        self.sock.settimeout(0.1)
        self.queries = []            # (name, qtype)
        self.asked = threading.Event()
        self.released = threading.Event()
        self.held = []
        self.lock = threading.Lock()
        self.done = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def _parse(pkt):
        i, labels = 12, []
        while pkt[i]:
            labels.append(pkt[i + 1:i + 1 + pkt[i]].decode())
            i += 1 + pkt[i]
        qtype, = struct.unpack("!H", pkt[i + 1:i + 3])
        return ".".join(labels).lower(), qtype, i + 5

    def _answer(self, pkt, peer):
        name, qtype, end = self._parse(pkt)
        rr = b""
        if qtype == 1:
            rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
        flags = 0x8180           # a response, recursion, no error
        if self.nxdomain:
            flags, rr = 0x8183, b""
        hdr = pkt[:2] + struct.pack("!HHHHH", flags, 1, 1 if rr else 0, 0, 0)
        self.sock.sendto(hdr + pkt[12:end] + rr, peer)

    def _run(self):
        while not self.done:
            try:
                pkt, peer = self.sock.recvfrom(512)
            except socket.timeout:
                pkt = None
            except OSError:
                return
            with self.lock:
                if pkt is not None and len(pkt) > 12:
                    self.queries.append(self._parse(pkt)[:2])
                    self.held.append((pkt, peer))
                    self.asked.set()
                if self.released.is_set() or self.nxdomain:
                    for p, a in self.held:
                        self._answer(p, a)
                    self.held = []

    def release(self):
        self.released.set()

    def close(self):
        self.done = True
        self.thread.join(5)
        self.sock.close()


class Trickle:
    """A client of a rate-limited share, read in a thread: how many bytes
    have come, and when."""

    def __init__(self, port):
        self.sock = connect(port, timeout=30)
        self.got = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while True:
                b = self.sock.recv(65536)
                if not b:
                    break
                self.got += len(b)
        except OSError:
            pass

    def bytes_in(self, seconds):
        before = self.got
        time.sleep(seconds)
        return self.got - before

    def close(self):
        self.sock.close()
        self.thread.join(5)


def setup(tmp, dns, options):
    slow = make_file(os.path.join(tmp, "slow.bin"), 32 << 20)
    small = make_file(os.path.join(tmp, "small.bin"), 64 << 10, seed=2)
    pa, pb, pc = free_port(), free_port(), free_port()
    shares = {"trickle": {"listen": "127.0.0.1:%d" % pa, "file": slow, "rate_limit": "256K"},
              "small": {"listen": "127.0.0.1:%d" % pb, "file": small}}
    launcher = name_launcher(tmp, "127.0.0.1 localhost\n", dns.addr, options)
    return shares, small, (pa, pb, pc), launcher


def served_meanwhile(trickle, pb, small):
    """The loop is serving: the trickle gets bytes and a new client its file."""
    moved = trickle.bytes_in(1.0)
    assert moved >= 64 << 10, "the transfer in flight got %d bytes in 1 s of the lookup" % moved
    t0 = time.monotonic()
    got = fetch(pb, timeout=6)
    assert sha256(got) == sha256(open(small, "rb").read()), "short fetch during the lookup"
    return moved, time.monotonic() - t0


def test_reload_slow_resolver_keeps_serving(tmp):
    dns = HeldDNS()
    try:
        shares, small, (pa, pb, pc), launcher = setup(tmp, dns, "timeout:30 attempts:1")
        with Daemon(tmp, shares, launcher=launcher) as d:
            trickle = Trickle(pa)
            shares["named"] = {"listen": "%s:%d" % (SLOW_NAME, pc), "file": small}
            d.write_config(shares)
            start = len(d.notify.messages)
            d.signal(1)
            assert dns.asked.wait(RESOLVE_TIMEOUT / 2), "the DNS server was never asked"
            assert (SLOW_NAME, 1) in dns.queries, dns.queries
            moved, secs = served_meanwhile(trickle, pb, small)
            assert not any("READY=1" in m for _, m in d.notify.messages[start:]), \
                "reload finished before the answer came"
            # A SIGHUP meanwhile loads the file again after this load.
            d.signal(1)
            d.wait_log(r"a reload is loading .*: another follows it")
            dns.release()
            i = d.notify.wait_for(lambda m: "RELOADING=1" in m, 5, start)
            d.notify.wait_for(lambda m: "READY=1" in m.split("\n"), 15, i + 1)
            d.wait_log(r"reloaded: 3 shares")
            assert [q for q in dns.queries if q == (SLOW_NAME, 1)] == [(SLOW_NAME, 1)] * 2, dns.queries
            assert len(d.wait_log(r"reloaded: ")) == 1 and \
                sum("READY=1" in m.split("\n") for _, m in d.notify.messages[start:]) == 1, d.log()
            assert fetch(pc) == open(small, "rb").read(), "the looked-up listener does not serve"
            assert trickle.bytes_in(0.5) > 0
            trickle.close()
            print("while the answer was held: %d bytes in 1 s in flight, a new client served in %.2f s"
                  % (moved, secs))
    finally:
        dns.close()


def test_reload_dead_resolver_is_bounded(tmp):
    dns = HeldDNS()          # never released: no answer, ever
    try:
        # glibc alone would wait 30 s a try, five tries.
        shares, small, (pa, pb, pc), launcher = setup(tmp, dns, "timeout:30 attempts:5")
        with Daemon(tmp, shares, launcher=launcher) as d:
            trickle = Trickle(pa)
            good = dict(shares)
            shares["named"] = {"listen": "%s:%d" % (DEAD_NAME, pc), "file": small}
            d.write_config(shares)
            line = open(d.config).read().splitlines().index("listen = %s:%d" % (DEAD_NAME, pc)) + 1
            t0 = time.monotonic()
            d.signal(1)
            assert dns.asked.wait(RESOLVE_TIMEOUT / 2), "the DNS server was never asked"
            served_meanwhile(trickle, pb, small)
            hit = d.wait_log(r"reload failed, still serving the previous configuration: (.*)",
                             timeout=RESOLVE_TIMEOUT + 20)[0]
            secs = time.monotonic() - t0
            want = "%s:%d: listen: cannot resolve '%s': no answer within 10 s" % (d.config, line, DEAD_NAME)
            assert want in hit, (want, hit)
            assert RESOLVE_TIMEOUT - 1 <= secs <= RESOLVE_TIMEOUT + 20, secs
            assert trickle.bytes_in(0.5) > 0, "the transfer stalled after the failed reload"
            # Not wedged: the next reload, without the name, goes through.
            d.write_config(good)
            d.reload(timeout=15)
            d.wait_log(r"reloaded: 2 shares")
            trickle.close()
            print("dead resolver: reload failed after %.1f s: %s" % (secs, hit))

        # fdistd -t and the start stay synchronous, but bounded too.
        Daemon(tmp, shares, start=False)
        t0 = time.monotonic()
        r = subprocess.run(launcher + [FDISTD, "-t", "-c", d.config], capture_output=True, text=True,
                           timeout=RESOLVE_TIMEOUT + 30)
        secs = time.monotonic() - t0
        # no answer is not an invalid file: 1, which the unit retries
        assert r.returncode == 1 and "no answer within 10 s" in r.stderr, r
        assert secs <= RESOLVE_TIMEOUT + 20, secs
        print("fdistd -t: %.1f s: %s" % (secs, r.stderr.strip()))
    finally:
        dns.close()


def start_fails(tmp, d, nameserver, status, why):
    """fdistd -t, and a start (-d), of daemon d's configuration with names
    going to nameserver: each exits with status, saying that SLOW_NAME
    cannot be resolved, and why."""
    launcher = name_launcher(tmp, "127.0.0.1 localhost\n", nameserver, "timeout:1 attempts:1")
    for args in (["-t"], ["-d"]):
        r = subprocess.run(launcher + [FDISTD, *args, "-c", d.config], capture_output=True,
                           text=True, timeout=RESOLVE_TIMEOUT + 30)
        assert r.returncode == status, r
        assert "listen: cannot resolve '%s': %s" % (SLOW_NAME, why) in r.stderr, r


def test_start_tells_a_resolver_down_from_a_name_that_does_not_exist(tmp):
    """At start-up (and with -t), a name server that cannot be reached is
    exit status 1, which the unit restarts for, so that a daemon started
    before the network's name server comes up starts by itself later; a
    name the name server says does not exist is an invalid file, 78."""
    small = make_file(os.path.join(tmp, "small.bin"), 1000)
    shares = {"named": {"listen": "%s:%d" % (SLOW_NAME, free_port()), "file": small}}
    d = Daemon(tmp, shares, start=False)
    down = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(50):      # an address of our own, with no server on 53
        addr = "127.53.%d.%d" % (random.randint(1, 254), random.randint(1, 254))
        try:
            down.bind((addr, 53))
            break
        except OSError:
            continue
    down.close()
    start_fails(tmp, d, addr, 1, "Temporary failure in name resolution")
    dns = HeldDNS(nxdomain=True)
    try:
        start_fails(tmp, d, dns.addr, 78, "Name or service not known")
        assert (SLOW_NAME, 1) in dns.queries, dns.queries
    finally:
        dns.close()


def test_an_address_is_taken_without_a_lookup_thread(tmp):
    """A listen address (not a name) needs no resolver, so no thread:
    a detached lookup thread lingers a moment after its answer, and is
    one more thread than the digest workers the other tests count."""
    small = make_file(os.path.join(tmp, "small.bin"), 1000)
    d = Daemon(tmp, {"v4": {"listen": "127.0.0.1:%d" % free_port(), "file": small},
                     "v6": {"listen": "[::1]:%d" % free_port(), "file": small}}, start=False)
    # LeakSanitizer's exit check runs in a thread of its own (and fails
    # under ptrace): off here, the lookup's thread is what is counted.
    env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0")
    r = subprocess.run([need("strace"), "-f", "-qq", "-e", "trace=clone,clone3",
                        FDISTD, "-t", "-c", d.config], capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0 and "configuration OK" in r.stdout, r
    assert "clone" not in r.stderr, r.stderr


if __name__ == "__main__":
    main(globals())
