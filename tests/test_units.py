#!/usr/bin/env python3
"""Check the systemd units and the journal catalog of fdistd.

Environment:
  FDISTD  the built fdistd binary; ExecStart= points at it. Unset: a
          stand-in executable is used, so the units can be checked before
          the daemon builds.
  SRCDIR  the repository root (default: the parent of tests/).

Runs systemd-analyze verify (exit 0, empty stderr) and security --offline
(exposure at most MAX_EXPOSURE) on the substituted units, and loads the
catalog with journalctl --update-catalog into a scratch root. Exits 0 when
every check passes, 1 otherwise, naming each failure.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

from fdtest import require

MAX_EXPOSURE = 1.5
TIMEOUT = 60			# seconds, for every subprocess
TRANSFER_ID = "68da270df4994c348ba467a048bebbc3"
READY_ID = "819de2ce009b464d91664758b897bac1"
RELOAD_FAILED_ID = "a5ec91e7b0144300bb78128c936fcf5b"
REFUSALS_ID = "7bb3f058988248d99412e299d3580d60"
DIGEST_ID = "20aedb80c2af4366ad3a62a516409ae1"
CATALOG_IDS = {TRANSFER_ID, READY_ID, RELOAD_FAILED_ID, REFUSALS_ID, DIGEST_ID}
STATUSES = ("acked", "no-ack", "ack-timeout", "ack-mismatch", "aborted",
            "send-timeout", "file-changed", "shutdown", "denied", "busy")
SHARE_SOCKET = "fdistd-iso.socket"	# the example, installed as documented

failures = []


def fail(what):
    failures.append(what)
    print("FAIL: " + what, flush=True)


def run(argv, cwd=None):
    """Run argv bounded by TIMEOUT; returns (rc, stdout, stderr)."""
    env = dict(os.environ, SYSTEMD_COLORS="0", SYSTEMD_PAGER="",
               LC_ALL="C.UTF-8")
    try:
        p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True,
                           timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, "", "timed out after %ds" % TIMEOUT
    except OSError as e:
        return None, "", str(e)
    return (p.returncode, p.stdout.decode("utf-8", "replace"),
            p.stderr.decode("utf-8", "replace"))


def describe(argv, rc, out, err):
    return "%s: exit %s\n  stdout: %s\n  stderr: %s" % (
        " ".join(argv), rc, out.strip() or "(empty)", err.strip() or "(empty)")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def bindir_for(tmp):
    """The directory ExecStart= uses; it holds an executable named fdistd."""
    binary = os.environ.get("FDISTD")
    if not binary:
        print("note: FDISTD unset, ExecStart= runs a stand-in", flush=True)
        d = os.path.join(tmp, "bin")
        os.makedirs(d)
        shutil.copy(shutil.which("true") or "/bin/true",
                    os.path.join(d, "fdistd"))
        return d
    binary = os.path.abspath(binary)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        fail("FDISTD=%s is not an executable file" % binary)
        return None
    if os.path.basename(binary) == "fdistd":
        return os.path.dirname(binary)
    d = os.path.join(tmp, "bin")
    os.makedirs(d)
    os.symlink(binary, os.path.join(d, "fdistd"))
    return d


def unit_settings(text):
    """Key to list of values, across sections; comments dropped."""
    keys = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[" or "=" not in line:
            continue
        k, v = line.split("=", 1)
        keys.setdefault(k.strip(), []).append(v.strip())
    return keys


def seconds(value):
    m = re.fullmatch(r"(\d+)\s*(s|sec|min|m)?", value)
    if not m:
        return None
    return int(m.group(1)) * (60 if m.group(2) in ("min", "m") else 1)


def check_service_settings(text):
    """What the analyzers do not score but the daemon relies on."""
    if re.search(r"@[A-Z_]+@", text):
        fail("fdistd.service: placeholder left after substitution")
    k = unit_settings(text)
    want = {"Type": "notify", "NotifyAccess": "main",
            "LogRateLimitIntervalSec": "1s", "LogRateLimitBurst": "1000000",
            "Restart": "on-failure",
            "DynamicUser": "yes", "PrivateUsers": "yes"}
    for key, value in want.items():
        if k.get(key, [None])[-1] != value:
            fail("fdistd.service: want %s=%s, have %s" %
                 (key, value, k.get(key)))
    # started once the network is up: a listen address may need it
    if "network-online.target" not in " ".join(k.get("After", [])) or \
            "network-online.target" not in " ".join(k.get("Wants", [])):
        fail("fdistd.service: want After= and Wants=network-online.target, have %s, %s"
             % (k.get("After"), k.get("Wants")))
    # the check first, then the signal and its result, in this order;
    # nothing outside fdistd's own package (no /bin/kill of procps)
    reload = k.get("ExecReload", [])
    if len(reload) != 2 or not re.match(r"/\S+/fdistd -t -c /\S+/fdistd\.ini$", reload[0]) \
            or not re.match(r"/\S+/fdistd -r \$MAINPID$", reload[1]):
        fail("fdistd.service: want ExecReload= fdistd -t, then fdistd -r $MAINPID; have %s" % reload)
    # where the daemon reports each reload's result to fdistd -r
    if k.get("RuntimeDirectory", [None])[-1] != "fdistd":
        fail("fdistd.service: want RuntimeDirectory=fdistd, have %s" % k.get("RuntimeDirectory"))
    # an invalid configuration (exit 78) is not restarted into the start limit
    if "78" not in " ".join(k.get("RestartPreventExitStatus", [])).split():
        fail("fdistd.service: want RestartPreventExitStatus=78, have %s"
             % k.get("RestartPreventExitStatus"))
    nofile = k.get("LimitNOFILE", ["0"])[-1].split(":")[-1]
    if not nofile.isdigit() or int(nofile) < 12000:
        fail("fdistd.service: LimitNOFILE=%s leaves no headroom over "
             "max_clients 10000" % nofile)
    stop = seconds(k.get("TimeoutStopSec", [""])[-1])
    if stop is None or stop <= 30:
        fail("fdistd.service: TimeoutStopSec must exceed the 30s "
             "shutdown_timeout, have %s" % k.get("TimeoutStopSec"))
    if seconds(k.get("WatchdogSec", [""])[-1]) is None:
        fail("fdistd.service: no WatchdogSec=")
    if not k.get("ExecStart", [""])[-1].endswith("/fdistd -c " +
                                                 "/etc/fdistd.ini"):
        fail("fdistd.service: ExecStart=%s" % k.get("ExecStart"))


def share_dropin(example):
    """The fdistd.service drop-in quoted in the share socket example."""
    lines = example.splitlines()
    for i, line in enumerate(lines):
        if line.rstrip().endswith("sockets.conf:"):
            break
    else:
        return None
    out = []
    for line in lines[i + 1:]:
        if line.startswith("#     "):
            out.append(line[6:])
        elif line.rstrip() == "#" and (not out or out[-1] != ""):
            out.append("")
        elif out:
            break
    return "\n".join(out).strip() + "\n"


def install_units(src, d, bindir):
    service = read(os.path.join(src, "systemd", "fdistd.service.in"))
    service = service.replace("@SBINDIR@", bindir)
    service = service.replace("@SYSCONFDIR@", "/etc")
    write(os.path.join(d, "fdistd.service"), service)
    shutil.copy(os.path.join(src, "systemd", "fdistd.socket"), d)
    example = read(os.path.join(src, "systemd",
                                "fdistd-share.socket.example"))
    write(os.path.join(d, SHARE_SOCKET), example)
    return service, example


def check_verify(d, units, what):
    argv = ["systemd-analyze", "verify", "--man=no"] + units
    rc, out, err = run(argv, cwd=d)
    if rc != 0 or err.strip():
        fail("verify %s: %s" % (what, describe(argv, rc, out, err)))
        return False
    print("ok: verify %s" % what, flush=True)
    return True


def exposure(d, unit):
    argv = ["systemd-analyze", "security", "--offline=true", "--no-pager",
            unit]
    rc, out, err = run(argv, cwd=d)
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out)
    if rc is None or not m:
        return None, describe(argv, rc, out, err)
    return float(m.group(1)), describe(argv, rc, out[-300:], err)


def check_units(src, tmp, bindir):
    d = os.path.join(tmp, "units")
    os.makedirs(d)
    service, example = install_units(src, d, bindir)
    check_service_settings(service)
    check_verify(d, ["fdistd.service", "fdistd.socket"],
                 "fdistd.service fdistd.socket")

    dropin = share_dropin(example)
    if not dropin or "Sockets=" + SHARE_SOCKET not in dropin:
        fail("fdistd-share.socket.example: no fdistd.service drop-in "
             "with Sockets=%s found in its comments" % SHARE_SOCKET)
    else:
        write(os.path.join(d, "fdistd.service.d", "sockets.conf"), dropin)
    if "FileDescriptorName=iso" not in example:
        fail("fdistd-share.socket.example: no FileDescriptorName=iso")
    check_verify(d, ["fdistd.service", "fdistd.socket", SHARE_SOCKET],
                 "the share socket example with its drop-in")

    score, detail = exposure(d, "fdistd.service")
    if score is None:
        fail("security: no exposure level\n  " + detail)
    elif score > MAX_EXPOSURE:
        fail("security: exposure %.1f > %.1f\n  %s" %
             (score, MAX_EXPOSURE, detail))
    else:
        print("ok: security exposure %.1f" % score, flush=True)


def check_sync_units(src, tmp):
    """fdist-sync@.service and .timer, as an instance: verify (with the
    built fdist-fetch in ExecStart=) and the sandbox's exposure."""
    fetch = os.environ.get("FDIST_FETCH")
    if not fetch:
        print("note: FDIST_FETCH unset, fdist-sync units not checked", flush=True)
        return
    d = os.path.join(tmp, "sync")
    service = read(os.path.join(src, "systemd", "fdist-sync@.service.in"))
    service = service.replace("@BINDIR@", os.path.dirname(os.path.abspath(fetch)))
    service = service.replace("@SYSCONFDIR@", "/etc")
    if re.search(r"@[A-Z_]+@", service):
        fail("fdist-sync@.service: placeholder left after substitution")
    if os.path.basename(fetch) != "fdist-fetch":
        fail("FDIST_FETCH=%s is not named fdist-fetch" % fetch)
    write(os.path.join(d, "fdist-sync@.service"), service)
    shutil.copy(os.path.join(src, "systemd", "fdist-sync@.timer"), d)
    k = unit_settings(service)
    for key, want in (("Type", "oneshot"), ("SuccessExitStatus", "8"), ("ProtectSystem", "strict"),
                      ("StateDirectoryMode", "0755"), ("UMask", "0022"), ("NoNewPrivileges", "yes")):
        if want not in k.get(key, []):
            fail("fdist-sync@.service: %s= is %s, want %s" % (key, k.get(key), want))
    privileged = [v for key in ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecStopPost")
                  for v in k.get(key, []) if v.startswith(("+", "!"))]
    if len(privileged) != 1 or "systemctl try-reload-or-restart fdistd.service" not in privileged[0]:
        fail("fdist-sync@.service: one privileged command, the reload; have %s" % privileged)
    check_verify(d, ["fdist-sync@img.service", "fdist-sync@img.timer"], "fdist-sync@img.service and .timer")
    score, detail = exposure(d, "fdist-sync@img.service")
    if score is None:
        fail("security fdist-sync: no exposure level\n  " + detail)
    elif score > MAX_EXPOSURE:
        fail("security fdist-sync: exposure %.1f > %.1f\n  %s" % (score, MAX_EXPOSURE, detail))
    else:
        print("ok: fdist-sync@ security exposure %.1f" % score, flush=True)


def check_harness(tmp, bindir):
    """The checks above must be able to fail: feed them known-bad units."""
    d = os.path.join(tmp, "bad")
    os.makedirs(d)
    write(os.path.join(d, "fdistd.service"),
          "[Service]\nType=notify\nExecStart=%s/fdistd\nFrobnicate=yes\n"
          % bindir)
    rc, out, err = run(["systemd-analyze", "verify", "--man=no",
                        "fdistd.service"], cwd=d)
    if rc is None or "Frobnicate" not in err:
        fail("harness: verify did not report an unknown key (exit %s, "
             "stderr %r)" % (rc, err))
    score, detail = exposure(d, "fdistd.service")
    if score is None or score <= MAX_EXPOSURE:
        fail("harness: an unhardened unit scored %s\n  %s" % (score, detail))


def catalog_entries(text):
    """Id to the header fields of its entry; fails on duplicate ids."""
    entries, cur = {}, None
    for line in text.splitlines():
        m = re.fullmatch(r"-- ([0-9a-f]{32})(?: \S+)?", line)
        if m:
            if m.group(1) in entries:
                fail("catalog: id %s defined twice" % m.group(1))
            cur = entries[m.group(1)] = {}
            continue
        h = re.fullmatch(r"([A-Za-z-]+): (.*)", line)
        if cur is not None and h and "_body" not in cur:
            cur[h.group(1)] = h.group(2)
        elif cur is not None and line == "":
            cur["_body"] = True
    return entries


def check_catalog(src, tmp):
    path = os.path.join(src, "systemd", "fdistd.catalog")
    text = read(path)
    entries = catalog_entries(text)
    if set(entries) != CATALOG_IDS:
        fail("catalog: ids %s, want %s" % (sorted(entries),
                                           sorted(CATALOG_IDS)))
    for mid, h in entries.items():
        for field in ("Subject", "Defined-By", "Support"):
            if not h.get(field):
                fail("catalog: %s has no %s:" % (mid, field))
        if h.get("Defined-By") != "fdistd":
            fail("catalog: %s Defined-By: %s" % (mid, h.get("Defined-By")))

    used = set()
    srcdir = os.path.join(src, "src")
    for name in sorted(os.listdir(srcdir)) if os.path.isdir(srcdir) else []:
        if name.endswith((".c", ".h")):
            used |= set(re.findall(r"\b[0-9a-f]{32}\b",
                                   read(os.path.join(srcdir, name))))
    for mid in sorted(used - CATALOG_IDS):
        fail("catalog: src/ uses message id %s, which has no entry" % mid)

    root = os.path.join(tmp, "root")
    catdir = os.path.join(root, "usr", "lib", "systemd", "catalog")
    os.makedirs(catdir)
    shutil.copy(path, catdir)
    argv = ["journalctl", "--root=" + root, "--update-catalog"]
    rc, out, err = run(argv)
    if rc != 0 or err.strip():
        fail("catalog: " + describe(argv, rc, out, err))
        return
    argv = ["journalctl", "--root=" + root, "--list-catalog"]
    rc, out, err = run(argv)
    listed = {}
    for line in out.splitlines():
        mid, _, rest = line.partition(" ")
        listed[mid] = rest
    for mid in sorted(CATALOG_IDS):
        if mid not in listed or listed[mid].endswith(": n/a"):
            fail("catalog: %s missing or without subject in\n  %s" %
                 (mid, describe(argv, rc, out, err)))
    argv = ["journalctl", "--root=" + root, "--dump-catalog", TRANSFER_ID]
    rc, out, err = run(argv)
    if rc != 0 or "@FDIST_STATUS@" not in out:
        fail("catalog: " + describe(argv, rc, out, err))
        return
    for status in STATUSES:
        if not re.search(r"^%s: " % re.escape(status), out, re.M):
            fail("catalog: the transfer entry does not explain status %s"
                 % status)
    print("ok: catalog", flush=True)


def main():
    src = os.path.abspath(os.environ.get("SRCDIR") or
                          os.path.join(os.path.dirname(__file__), ".."))
    require("systemd-analyze", "journalctl")
    with tempfile.TemporaryDirectory(prefix="fdistd-units.") as tmp:
        bindir = bindir_for(tmp)
        if bindir:
            check_units(src, tmp, bindir)
            check_harness(tmp, bindir)
        check_sync_units(src, tmp)
        check_catalog(src, tmp)
    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    print("all unit and catalog checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
