#!/usr/bin/env python3
"""Escaping: every code point and every byte, as the real daemon logs them.

fdistd(8) says: printable ASCII (0x20 to 0x7e) passes but for backslash
and double quote, which become \\\\ and \\"; tab, LF and CR become \\t, \\n
and \\r; every other byte becomes \\xhh.  These tests send every code
point U+0000..U+10FFFF (UTF-8; the surrogates as their three bytes) and
every byte value, in acks of ack_max = 64K, and check each logged ack
against that rule: in the stderr line, and in FDIST_ACK and MESSAGE of a
private, real systemd-journald.  They also name the characters that once
passed or would pass a list of Unicode categories (format, invisible,
look-alike; the categories are those of this Python's unicodedata, the
rule itself needs none) and show that none can make an ack show a digest
claim that is not one, and serve files named with every byte but NUL,
LF, CR and '/'.

The test re-runs itself in a private mount namespace as test_journal
does; nothing of the host's journal is touched.
"""

import collections
import json
import os
import re
import signal
import subprocess
import time
import unicodedata

from fdtest import FDISTD, Daemon, fetch, file_sha256, free_port, make_file, parse_record, send_ack
from test_journal import journal_main

JOURNAL_DIR = "/run/log/journal"
ACK_MAX = 65536
NUL, LF = 0x00, 0x0A            # they end an ack: never inside one


def esc_byte(b):
    """The escape of one byte, written from fdistd(8)."""
    short = {0x5C: "\\\\", 0x22: '\\"', 0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
    if b in short:
        return short[b]
    if 0x20 <= b <= 0x7E:
        return chr(b)
    return "\\x%02x" % b


def esc(data):
    return "".join(esc_byte(b) for b in data)


def esc_cut(data, room):
    """The longest run of whole escapes that fits in room bytes."""
    out, n = [], 0
    for b in data:
        e = esc_byte(b)
        if n + len(e) > room:
            break
        out.append(e)
        n += len(e)
    return "".join(out)


def utf8(cp):
    """The UTF-8 bytes of a code point; a surrogate as its three bytes."""
    return chr(cp).encode("utf-8", "surrogatepass")


def code_point_acks():
    """Every code point but NUL and LF, in acks of at most ACK_MAX bytes,
    each tagged with its first code point.  Returns (tag, [cp], bytes)."""
    acks, cps, body = [], [], bytearray()
    tag = lambda first: b"cp%06x:" % first
    for cp in range(0x110000):
        if cp in (NUL, LF):
            continue
        b = utf8(cp)
        if cps and len(tag(cps[0])) + len(body) + len(b) > ACK_MAX:
            acks.append((tag(cps[0]), cps, tag(cps[0]) + bytes(body)))
            cps, body = [], bytearray()
        cps.append(cp)
        body += b
    acks.append((tag(cps[0]), cps, tag(cps[0]) + bytes(body)))
    return acks


def byte_acks():
    """Every byte value alone (so 0x80..0xff also as no UTF-8 at all), and
    malformed UTF-8: overlong, truncated, past U+10FFFF, stray bytes."""
    every = bytes(b for b in range(256) if b not in (NUL, LF))
    bad = (b"\xc0\xaf \xe0\x80\xaf \xf0\x80\x80\xaf \xc1\xbf \xed\xa0\x80 \xed\xbf\xbf "
           b"\xf4\x90\x80\x80 \xf5\x80\x80\x80 \xf8\x88\x80\x80\x80 \xfe\xff \xc3 \xe2\x80 "
           b"\x80\xbf \xc3\xa9\x80 \xef\xbb")
    return [(b"raw:", None, b"raw:" + every), (b"bad:", None, b"bad:" + bad)]


def spoofs():
    """Characters that once passed the escaper or still would pass a
    list of Unicode categories: every Cf, Zl, Zp, Zs and Cc past ASCII of
    this Python's Unicode, the default-ignorable ones of other categories
    (U+034F, the Hangul fillers, variation selectors, the tags that are
    unassigned), a blank symbol, and letters that look like s, h, a, c, e."""
    cps = [cp for cp in range(0x80, 0x110000)
           if unicodedata.category(chr(cp)) in ("Cf", "Zl", "Zp", "Zs", "Cc")]
    cps += [0x034F, 0x115F, 0x1160, 0x3164, 0xFFA0, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D,
            0x180F, 0x2065, 0x2800, 0xE0080, 0xE00FF, 0xE0100, 0xE01EF, 0xFFF0]
    cps += list(range(0xFE00, 0xFE10)) + list(range(0xE0000, 0xE0080))
    cps += [0x0455, 0x04BB, 0x0430, 0x0441, 0x0435, 0xFF53, 0x1D42C]   # s h a c e look-alikes
    return sorted(set(cps))


def text(field):
    """A log line or journal field as str; bytes that are no UTF-8 (the
    journal gives them as a list of numbers) as surrogate escapes."""
    if isinstance(field, list):
        field = bytes(field)
    if isinstance(field, bytes):
        field = field.decode("utf-8", "surrogateescape")
    return field


def transfer_lines(path):
    with open(path, "rb") as f:
        return [l for l in f.read().split(b"\n")[:-1] if b" transfer " in l]


def wait_lines(d, n, timeout=60):
    """The stderr transfer lines once there are n of them (whole lines)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = transfer_lines(d.stderr_path)
        if len(lines) >= n:
            return lines
        if time.monotonic() > deadline or d.proc.poll() is not None:
            raise AssertionError("%d of %d records; log tail:\n%s" % (len(lines), n, d.log()[-3000:]))
        time.sleep(0.05)


# transfer records only: digest records name the share too
TRANSFER = "MESSAGE_ID=68da270df4994c348ba467a048bebbc3"


def journal(*match, want, timeout=60):
    """Journal records matching; --all, or fields past 4 KB read as null."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(["journalctl", "-D", JOURNAL_DIR, "-o", "json", "--all", "--no-pager"]
                             + list(match), capture_output=True, timeout=60)
        recs = [json.loads(l) for l in out.stdout.decode().splitlines() if l.strip()]
        if len(recs) >= want or time.monotonic() > deadline:
            return recs
        time.sleep(0.1)


def first_wrong(cps, tag, logged):
    """The first code point of a batch whose escape is not in its place."""
    pos = len(esc(tag))
    for cp in cps:
        e = esc(utf8(cp))
        if logged[pos:pos + len(e)] != e:
            return "U+%04X: want %r, logged %r" % (cp, e, logged[pos:pos + len(e) + 8])
        pos += len(e)
    return "tail: %r" % logged[pos:pos + 40]


def check_acks(acks, logged, where):
    """logged: tag -> escaped ack as the log has it."""
    assert len(logged) == len(acks), "%s: %d acks logged of %d" % (where, len(logged), len(acks))
    for tag, cps, data in acks:
        got = logged.get(esc(tag))
        assert got is not None, "%s: no record of %r" % (where, tag)
        if got != esc(data):
            raise AssertionError("%s, %r: %s" % (where, tag, first_wrong(cps or [], tag, got)
                                                 if cps else "want %r, logged %r" % (esc(data), got)))
        assert all(0x20 <= ord(c) <= 0x7E for c in got), "%s: %r not printable ASCII" % (where, tag)


def run_acks(d, port, acks):
    for _, _, data in acks:
        assert not data.endswith(b"\r")      # the LF would take it
        fetch(port, ack=data + b"\n", timeout=60)


def test_every_code_point_and_byte_on_stderr(tmp):
    acks = code_point_acks() + byte_acks()
    assert sum(len(cps) for _, cps, _ in acks if cps) == 0x110000 - 2
    path = make_file(os.path.join(tmp, "data"), 10)
    port = free_port()
    with Daemon(tmp, {"cp": {"listen": "127.0.0.1:%d" % port, "file": path, "ack_max": "64K"}}) as d:
        run_acks(d, port, acks)
        lines = wait_lines(d, len(acks))
    logged = {}
    for line in lines:
        rec = parse_record(text(line))
        assert rec["status"] == "acked" and "verified" not in rec, {k: v[:60] for k, v in rec.items()}
        ack = rec["ack"]
        logged[ack[:ack.index(":") + 1]] = ack
    check_acks(acks, logged, "stderr")
    for line in lines:
        assert all(0x20 <= b <= 0x7E for b in line), "a raw byte on stderr: %r" % line[:200]


def test_every_code_point_and_byte_in_the_journal(tmp):
    acks = code_point_acks() + byte_acks()
    path = make_file(os.path.join(tmp, "data"), 10)
    port = free_port()
    with Daemon(tmp, {"jcp": {"listen": "127.0.0.1:%d" % port, "file": path, "ack_max": "64K"}},
                {"log": "journal"}) as d:
        run_acks(d, port, acks)
        recs = journal("FDIST_SHARE=jcp", TRANSFER, want=len(acks))
    logged = {}
    for r in recs:
        ack = text(r["FDIST_ACK"])
        logged[ack[:ack.index(":") + 1]] = ack
    check_acks(acks, logged, "journal FDIST_ACK")
    for r in recs:
        ack = text(r["FDIST_ACK"])
        # the summary shows the ack cut at 200 bytes, between escapes
        m = re.fullmatch(r'.* bytes in \d+\.\d{3} s, ack "(.*)"', r["MESSAGE"], re.S)
        assert m, r["MESSAGE"][:300]
        assert all(0x20 <= ord(c) <= 0x7E for c in r["MESSAGE"]), r["MESSAGE"][:300]
        short = m.group(1)
        want = [a for a in acks if esc(a[0]) == ack[:len(esc(a[0]))]][0][2]
        assert short == esc_cut(want, 200), (short, esc_cut(want, 200))


def spoof_acks(digest):
    """For each character X: "Thank you s<X>ha256=<digest>", no claim,
    and "Thank you <X>sha256=<digest>", a claim (X ends in a byte past
    ASCII, no letter or digit)."""
    acks = []
    for cp in spoofs():
        x = utf8(cp)
        acks.append((cp, False, b"Thank you s" + x + b"ha256=" + digest.encode()))
        acks.append((cp, True, b"Thank you " + x + b"sha256=" + digest.encode()))
    return acks


def check_spoof(cp, claim, data, ack, verified, status, digest):
    """What is wrong with one record of spoof_acks(), or None."""
    what = "U+%04X %s" % (cp, unicodedata.name(chr(cp), unicodedata.category(chr(cp))))
    if any(ord(c) > 0x7E for c in ack):
        return "%s: passed raw; without it the line reads %r" % (
            what, "".join(c for c in ack if ord(c) <= 0x7E))
    if ack != esc(data):
        return "%s: logged %r" % (what, ack)
    if claim and not (verified == "yes" and status == "acked"):
        return "%s: a claim, but verified=%s status=%s" % (what, verified, status)
    if not claim and not (verified is None and status == "acked"):
        return "%s: no claim, but verified=%s status=%s" % (what, verified, status)
    if not claim and "sha256=" in ack:
        return "%s: shows as a claim: %r" % (what, ack)
    return None


def test_no_character_makes_an_ack_show_a_claim(tmp):
    """Every format, invisible and look-alike character, stderr and journal."""
    path = make_file(os.path.join(tmp, "data"), 1000)
    digest = file_sha256(path)
    acks = spoof_acks(digest)
    assert len(acks) > 2 * 200, len(acks)
    port = free_port()
    os.mkdir(os.path.join(tmp, "j"))
    jport = free_port()
    with Daemon(tmp, {"sp": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d, \
            Daemon(os.path.join(tmp, "j"), {"jsp": {"listen": "127.0.0.1:%d" % jport, "file": path}},
                   {"log": "journal"}) as j:
        d.wait_log(r"sha256 [0-9a-f]{64}")
        # By client, in the order sent: on loopback the kernel may give
        # a client's port again, and one peer's records keep the order of
        # its connections (written in the turn that closes the socket).
        sent, jsent = collections.defaultdict(collections.deque), collections.defaultdict(collections.deque)
        for case in acks:
            sent["127.0.0.1:%d" % send_ack(port, case[2] + b"\0")].append(case)
            jsent["127.0.0.1:%d" % send_ack(jport, case[2] + b"\r\n")].append(case)
        lines = wait_lines(d, len(acks))
        recs = journal("FDIST_SHARE=jsp", TRANSFER, want=len(acks))
    nsent, njsent = sum(map(len, sent.values())), sum(map(len, jsent.values()))
    assert len(lines) == len(recs) == nsent == njsent == len(acks), \
        (len(lines), len(recs), nsent, njsent, len(acks))
    wrong = []
    for line in lines:
        rec = parse_record(text(line))
        cp, claim, data = sent[rec["peer"]].popleft()
        wrong.append(check_spoof(cp, claim, data, rec["ack"], rec.get("verified"), rec["status"], digest))
    for r in recs:
        cp, claim, data = jsent[r["FDIST_PEER"]].popleft()
        wrong.append(check_spoof(cp, claim, data, text(r["FDIST_ACK"]), r.get("FDIST_VERIFIED"),
                                 r["FDIST_STATUS"], digest))
        if not text(r["MESSAGE"]).endswith(', ack "%s"' % esc_cut(data, 200)):
            wrong.append("U+%04X: MESSAGE %r" % (cp, r["MESSAGE"]))
    wrong = [w for w in wrong if w]
    assert not wrong, "%d faults in %d records (stderr, journal):\n%s" % (
        len(wrong), 2 * len(acks), "\n".join(wrong[:30]))


def byte_daemon(tmp, names, log):
    """A daemon with one share per file name; the configuration is
    written as bytes (the names are no UTF-8)."""
    ports = [free_port() for _ in names]
    paths = [os.path.join(os.fsencode(tmp), n) for n in names]
    for p in paths:
        make_file(p, 100)
    d = Daemon(tmp, {}, {"log": log}, start=False)
    conf = b"[fdistd]\nlog = %s\n" % log.encode()
    for i, (port, p) in enumerate(zip(ports, paths)):
        conf += b"[f%d]\nlisten = 127.0.0.1:%d\nfile = %s\n" % (i, port, p)
    with open(d.config, "wb") as f:
        f.write(conf)
    return d.start(), ports, paths


def test_file_name_with_every_byte(tmp):
    """Files named with every byte but NUL, LF and CR (no configuration
    line can hold them) and '/', in two names for the 200-byte line, and
    a name of characters that once passed: the share, sha256 and record
    lines on stderr, FDIST_FILE and MESSAGE in the journal."""
    names = [bytes(b for b in range(1, 0x80) if b not in (LF, 0x0D, 0x2F)), bytes(range(0x80, 0x100)),
             "caf\u00e9 \u200d\u2066\u0455\u034f\U000e0041\u2028".encode()]
    os.mkdir(os.path.join(tmp, "j"))
    d, ports, paths = byte_daemon(tmp, names, "stderr")
    with d:
        j, jports, jpaths = byte_daemon(os.path.join(tmp, "j"), names, "journal")
        with j:
            d.wait_log(r"sha256 [0-9a-f]{64}", count=len(names))
            for p in ports:
                fetch(p)
            for p in jports:
                fetch(p)
            lines = wait_lines(d, len(names))
            recs = journal("FDIST_SHARE=f0", "FDIST_SHARE=f1", "FDIST_SHARE=f2", TRANSFER,
                           want=3)
            deadline = time.monotonic() + 60
            while True:
                msgs = [text(r["MESSAGE"]) for r in journal("SYSLOG_IDENTIFIER=fdistd", want=1)]
                done = [p for p in jpaths if any(m.startswith(esc(p) + ": sha256 ") for m in msgs)]
                if len(done) == len(jpaths) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
    with open(d.stderr_path, "rb") as f:
        raw = f.read()
    for l in raw.split(b"\n")[:-1]:
        assert all(0x20 <= b <= 0x7E for b in l), l
    files = sorted(parse_record(text(l))["file"] for l in lines)
    assert files == sorted(esc(p) for p in paths), files
    for i, p in enumerate(paths):
        want = esc(p).encode()
        assert b"share [f%d]: %s (100 bytes) on " % (i, want) in raw, raw[:800]
        assert b"info: %s: sha256 %s " % (want, file_sha256(p).encode()) in raw, raw[:800]
    assert sorted(text(r["FDIST_FILE"]) for r in recs) == sorted(esc(p) for p in jpaths), recs
    for p in jpaths:
        assert any(m.startswith("%s: sha256 %s " % (esc(p), file_sha256(p))) for m in msgs), msgs
        assert any(m.startswith("share [f") and ("]: %s (100 bytes) on " % esc(p)) in m for m in msgs), msgs


def test_config_path_and_the_check_warnings_are_escaped(tmp):
    """The operator's bytes too: -c's path in the reload lines, and -t's
    warning (ExecReload= runs -t: the journal has it) of a file named
    with a control byte and a stray one, under the /tmp the unit hides."""
    tb = os.fsencode(tmp)
    name = b"f\x1b[31m\xff"
    path = make_file(os.path.join(tb, name), 100)
    conf = os.path.join(tb, b"conf\x1b]0;x\x07\nfake: line.ini")
    port = free_port()
    with open(conf, "wb") as f:
        f.write(b"[s]\nlisten = 127.0.0.1:%d\nfile = %s\n" % (port, path))

    def printable(out):
        return all(0x20 <= b <= 0x7E for line in out.split(b"\n") for b in line)

    r = subprocess.run([FDISTD, "-t", "-c", conf], capture_output=True, timeout=60)
    assert r.returncode == 0, r
    warn = b"fdistd: warning: %s:3: share [s]: file %s: " % (esc(conf).encode(), esc(path).encode())
    assert r.stderr.startswith(warn) and r.stderr.count(b"\n") == 1, r.stderr
    assert printable(r.stderr), r.stderr
    errpath = os.path.join(tb, b"stderr")
    with open(errpath, "wb") as err:
        p = subprocess.Popen([FDISTD, "-d", "-c", conf], stderr=err)
    try:
        deadline = time.monotonic() + 60
        while b" ready: " not in open(errpath, "rb").read():
            assert time.monotonic() < deadline and p.poll() is None, open(errpath, "rb").read()
            time.sleep(0.05)
        p.send_signal(signal.SIGHUP)
        while b"reloaded: 1 share" not in open(errpath, "rb").read():
            assert time.monotonic() < deadline and p.poll() is None, open(errpath, "rb").read()
            time.sleep(0.05)
    finally:
        p.terminate()
        p.wait(60)
    log = open(errpath, "rb").read()
    assert b"info: reloading %s\n" % esc(conf).encode() in log, log
    assert printable(log), log


if __name__ == "__main__":
    journal_main(globals())
