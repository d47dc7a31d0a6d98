#!/usr/bin/env python3
"""The ack's digest claim and rejection, over every class and boundary.

fdistd(8): the ack is what the client sends up to the first NUL or LF
(a CR before the LF dropped), at most ack_max bytes.  It claims a digest
if it holds "sha256=" not preceded by an ASCII letter or digit and
followed by exactly 64 hex digits (either case) that no hex digit
follows in the ack; the first such claim counts.  It rejects the file if
it begins with "sha256-mismatch", alone or followed by a space or a tab.

Each case is one real client of the real daemon; its record says what
the daemon made of the ack: verified=yes or no (and status acked or
ack-mismatch) for a claim, no verified= for none, ack-mismatch without
verified= for a rejection.  Every byte value is tried before the key,
after the 64 digits, in the middle of the digits and after
"sha256-mismatch"; every digit count from 0 to 70; a non-digit at every
one of the 64 places; the key at the start, middle and end; NUL, LF,
CRLF, CR, end-of-file and ack_max as the end.
"""

import collections
import os

from fdtest import Daemon, file_sha256, free_port, main, make_file, send_ack

NUL, LF, CR = 0x00, 0x0A, 0x0D
ALNUM = set(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
HEX = set(b"0123456789abcdefABCDEF")
KEY = b"sha256="
REJECT = b"sha256-mismatch"

# What a record says, (verified, status): a claim of the right digest,
# of a wrong one, no claim, a rejection, a rejection with a claim.
YES, NO, NONE = ("yes", "acked"), ("no", "ack-mismatch"), (None, "acked")
REJECTED, REJECTED_YES = (None, "ack-mismatch"), ("yes", "ack-mismatch")


def esc(data):
    """fdistd(8)'s escape, to find each case's record by its ack."""
    short = {0x5C: "\\\\", 0x22: '\\"', 0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
    return "".join(short.get(b) or (chr(b) if 0x20 <= b <= 0x7E else "\\x%02x" % b) for b in data)


def kept(sent, ack_max):
    """The ack of fdistd(8): to the first NUL or LF (a CR before an LF
    dropped), at most ack_max bytes."""
    ack = sent[:ack_max]
    for i, b in enumerate(ack):
        if b in (NUL, LF):
            return ack[:i - 1] if b == LF and i > 0 and ack[i - 1] == CR else ack[:i]
    return ack


def cases(d, w):
    """(share, bytes sent, expected) for the digest d and a wrong one w."""
    D, W = d.encode(), w.encode()
    c = []
    add = lambda sent, want, share="a": c.append((share, sent, want))

    # The key at the start, in the middle, at the end; every end.
    for end in (b"", b"\0", b"\n", b"\r\n", b"\0 sha256=" + W, b"\nsha256=" + W, b"\r\nmore"):
        add(KEY + D + end, YES)
        add(b"Thank you " + KEY + D + end, YES)
        add(b"Thank you " + KEY + W + end, NO)
    add(b"a " + KEY + D + b" b", YES)
    add(KEY + D + b"\r", YES)                  # a CR not before an LF is a byte
    add(KEY + D + b"\r\0", YES)
    add(KEY + D + b"\r\r\n", YES)
    add(KEY + D[:63] + b"\n" + D[63:], NONE)  # cut by the LF: 63 digits
    add(KEY + D[:63] + b"\0" + D[63:], NONE)

    # Every byte before the key: a letter or digit makes it no key.
    for b in range(256):
        if b not in (NUL, LF):
            add(bytes([b]) + KEY + D, NONE if b in ALNUM else YES)
            add(b"x" + bytes([b]) + KEY + D, NONE if b in ALNUM else YES)
    # Every byte after the 64 digits: a hex digit makes them 65.
    for b in range(256):
        if b not in (NUL, LF):
            add(KEY + D + bytes([b]), NONE if b in HEX else YES)
            add(KEY + D + bytes([b]) + b" tail", NONE if b in HEX else YES)
    # Every byte in place of the 33rd digit: any hex digit, either case.
    for b in range(256):
        if b not in (NUL, LF):
            want = NONE if b not in HEX else YES if chr(b).lower() == d[32] else NO
            add(KEY + D[:32] + bytes([b]) + D[33:], want)
    # A non-digit at every place.
    for k in range(64):
        add(KEY + D[:k] + b"g" + D[k + 1:], NONE)
        add(KEY + D[:k] + b" " + D[k + 1:], NONE)
    # Every digit count.
    for n in range(71):
        add(KEY + (D + D)[:n] + b" end", YES if n == 64 else NONE)
        add(KEY + (D + D)[:n], YES if n == 64 else NONE)
    # Case: the digits in either case, the key in lower case only.
    add(KEY + D.upper(), YES)
    add(KEY + bytes(ch if i % 2 else ch ^ 0x20 if ch in b"abcdef" else ch for i, ch in enumerate(D)), YES)
    add(KEY + W.upper(), NO)
    for key in (b"SHA256=", b"Sha256=", b"sHA256=", b"sha256:", b"sha256 =", b"sha 256=", b"sha255=",
                b"sha2566=", b"sha256==", b"ha256=", b"sha256", b"ssha256=", b"sha-256="):
        add(key + D, NONE)
    add(b"=sha256=" + D, YES)
    add(b"sha256=sha256=" + D, YES)           # the second "sha256=" starts after '='
    # The first claim counts; what is no claim is skipped.
    add(KEY + W + b" " + KEY + D, NO)
    add(KEY + D + b" " + KEY + W, YES)
    add(b"x" + KEY + W + b" " + KEY + D, YES)
    add(KEY + W[:63] + b" " + KEY + D, YES)
    add(KEY + W + b"0 " + KEY + D, YES)
    add(KEY + D + b"0 " + KEY + W, NO)

    # ack_max: the claim is looked for in the ack as kept.
    add(KEY + D, NONE, "cut70")               # 63 digits kept
    add(KEY + D + b"\n", NONE, "cut70")
    add(KEY + D, YES, "cut71")                # 64 kept, at the end
    add(KEY + D + b"0", YES, "cut71")         # the 65th digit is not in the ack
    add(KEY + D + b"0", NONE, "cut72")
    add(KEY + D + b" ", YES, "cut72")

    # Rejection: at the start, alone or before a space or a tab.
    for end in (b"", b"\0", b"\n", b"\r\n", b"\0junk", b"\nmore"):
        add(REJECT + end, REJECTED)
    for b in range(256):
        if b not in (NUL, LF):
            add(REJECT + bytes([b]) + b"x", REJECTED if b in b" \t" else NONE)
            add(REJECT + bytes([b]), REJECTED if b in b" \t" else NONE)
    for s in (b" " + REJECT, b"x" + REJECT, b"\t" + REJECT, b"SHA256-MISMATCH", b"Sha256-mismatch",
              REJECT[:-1], REJECT[:-1] + b" ", b"sha256-mismatches", b"sha256_mismatch",
              b"Thank you " + REJECT, REJECT + b"\r\0", REJECT + b"\r\r\n"):
        add(s, NONE)
    add(REJECT + b" " + KEY + D, REJECTED_YES)   # the client expected another file
    add(REJECT + b" " + KEY + W, NO)          # a damaged copy
    add(REJECT + b"\t" + KEY + D + b" why", REJECTED_YES)
    add(REJECT, NONE, "cut14")
    add(REJECT + b"x", REJECTED, "cut15")
    add(REJECT + b"x", NONE, "cut16")
    add(REJECT + b" ", REJECTED, "cut16")
    return c


def test_claims_and_rejections_at_every_boundary(tmp):
    path = make_file(os.path.join(tmp, "data"), 1000)
    d = file_sha256(path)
    w = d[:10] + ("0" if d[10] != "0" else "1") + d[11:]
    maxes = {"a": 256, "cut70": 70, "cut71": 71, "cut72": 72, "cut14": 14, "cut15": 15, "cut16": 16}
    ports = {s: free_port() for s in maxes}
    shares = {s: {"listen": "127.0.0.1:%d" % ports[s], "file": path, "ack_max": str(m)}
              for s, m in maxes.items()}
    todo = cases(d, w)
    assert len(todo) > 1500, len(todo)
    # The cases by client, in the order they were sent: on loopback the
    # kernel may give a client's port again (tcp_tw_reuse), and the
    # daemon writes a record in the turn that closes its socket, so the
    # records of one peer come in the order of its connections.
    sent = collections.defaultdict(collections.deque)
    with Daemon(tmp, shares) as dm:
        dm.wait_log(r"sha256 [0-9a-f]{64}")    # else the claims' records wait
        for share, ack, expect in todo:
            sent[(share, "127.0.0.1:%d" % send_ack(ports[share], ack))].append((ack, expect))
        recs = dm.wait_records(len(todo), timeout=120)
    assert len(recs) == len(todo), (len(recs), len(todo))
    wrong = []
    for r in recs:
        ack, expect = sent[(r["share"], r["peer"])].popleft()
        got = (r.get("verified"), r["status"])
        if r.get("ack") != esc(kept(ack, maxes[r["share"]])):
            wrong.append("[%s] %r: ack logged as %r" % (r["share"], ack, r.get("ack")))
        elif got != expect:
            wrong.append("[%s] %r: verified=%s status=%s, expected verified=%s status=%s"
                         % ((r["share"], ack) + got + expect))
        elif expect[0] is not None:
            assert r["sha256"] == d, r
    assert not wrong, "%d of %d cases:\n%s" % (len(wrong), len(todo), "\n".join(wrong[:40]))


if __name__ == "__main__":
    main(globals())
