#!/usr/bin/env python3
"""fdistd as a real systemd service: systemd as PID 1 in systemd-nspawn.

The build is installed (meson install --destdir) into a throwaway Debian
container, and everything an administrator does is done for real:
systemctl start, fetch, journalctl, reload with a changed file and with a
broken configuration, stop with a transfer in flight, socket activation.
The container shares the host's network, so clients run on the host.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "nspawn"))

import nspawn  # noqa: E402
from nspawn import check  # noqa: E402
from fdtest import (FDISTD, file_sha256, free_port, make_file,  # noqa: E402
                    read_all, sha256)

BUILDDIR = os.environ.get("BUILDDIR", os.path.join(os.path.dirname(HERE), "build"))
FETCH = os.environ.get("FDIST_FETCH", os.path.join(BUILDDIR, "fdist-fetch"))
def install_tree(dest):
    out = subprocess.run(["meson", "install", "-C", BUILDDIR, "--destdir", dest, "--no-rebuild", "--quiet"],
                         capture_output=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError("meson install failed: %s" % out.stderr.decode()[-2000:])


def installed_path(dest, name):
    for root, _, files in os.walk(dest):
        if name in files:
            return "/" + os.path.relpath(os.path.join(root, name), dest)
    raise RuntimeError("%s not installed" % name)


def sanitized():
    out = subprocess.run(["ldd", FDISTD], capture_output=True, timeout=30)
    return b"libasan" in out.stdout or b"libubsan" in out.stdout


BURST = 200


def config(port, extra=""):
    return ("[fdistd]\nack_timeout = 5s\n%s\n[svc]\nlisten = 127.0.0.1:%d\nfile = /srv/fdist/image\n"
            % (extra, port))


def fetch_file(port, out):
    return subprocess.run([FETCH, "-q", "-o", out, "127.0.0.1:%d" % port], capture_output=True, timeout=60)


def records(ct, *match):
    text = ct.journal("-u", "fdistd.service", "-o", "json", *match)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wait_records(ct, n, *match, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        recs = records(ct, "MESSAGE_ID=68da270df4994c348ba467a048bebbc3", *match)
        if len(recs) >= n or time.monotonic() > deadline:
            return recs
        time.sleep(0.1)


def slow_download(port, result):
    """Read slowly (the transfer is still in flight at the stop), then ack."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        data = read_all(s, chunk=65536, pause=0.01)
        s.sendall(b"Thank you\0")
        s.close()
        result.append(data)
    except Exception as e:  # reported by the caller
        result.append(e)


def status_text(ct):
    return ct.systemctl("status", "-l", "-n", "15", "fdistd.service").stdout


def reload_failures(ct, conf_path, port, out):
    """The daemon refuses what fdistd -t cannot see: the reload fails."""
    pid = ct.show("fdistd.service", "MainPID")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        pbusy = busy.getsockname()[1]
        ct.write_file(conf_path, config(port).replace(
            "127.0.0.1:%d" % port, "127.0.0.1:%d, 127.0.0.1:%d" % (port, pbusy)))
        rc, _, err = ct.run(["systemctl", "reload", "fdistd"], timeout=60)
        why = "listen on 127.0.0.1:%d: Address already in use" % pbusy
        check("reload with a port taken fails", rc != 0, (rc, err))
        st = status_text(ct)
        check("systemctl status: the daemon's reason, in the status and the log",
              "last reload failed: " + why in st and
              "fdistd: reload failed, still serving the previous configuration: " + why in st, st)
        check("same process, still active, after a refused reload",
              ct.show("fdistd.service", "MainPID") == pid and ct.is_active("fdistd.service") == "active")
        r = fetch_file(port, out)
        check("still serving the old configuration", r.returncode == 0, r)
    # a new file the service may not read: the unit's check, in the
    # sandbox, says why
    ct.write_file("/srv/fdist/private", "secret", 0o600)
    ct.write_file(conf_path, config(port).replace("/srv/fdist/image", "/srv/fdist/private"))
    rc, _, err = ct.run(["systemctl", "reload", "fdistd"], timeout=60)
    st = status_text(ct)
    check("reload to a file the service cannot read fails, saying why", rc != 0 and
          "file /srv/fdist/private: Permission denied (the service's dynamic user (DynamicUser=yes)" in st, st)
    ct.write_file(conf_path, config(port))
    rc, _, err = ct.run(["systemctl", "reload", "fdistd"], timeout=60)
    check("reload after mending succeeds", rc == 0, err)
    check("and the failure is gone from the status",
          "reload failed" not in ct.show("fdistd.service", "StatusText"), ct.show("fdistd.service", "StatusText"))


def start_failures(ct, fdistd, conf_path, port):
    """A bad file at start: exit 78, no restart loop, the reason shown, and
    a start as soon as the file is mended."""
    ct.check(["systemctl", "stop", "fdistd"], timeout=90)
    ct.write_file(conf_path, config(port, "ack_max = lots\n"))
    rc, _, err = ct.run(["systemctl", "start", "fdistd"], timeout=60)
    check("start with an invalid configuration fails", rc != 0, err)
    # RestartSec=3s: by now a restart would have come
    time.sleep(7)
    nres, main, state = (ct.show("fdistd.service", p) for p in ("NRestarts", "ExecMainStatus", "ActiveState"))
    check("exit 78, not restarted", (nres, main, state) == ("0", "78", "failed"), (nres, main, state))
    st = status_text(ct)
    why = "%s:3: ack_max: invalid size 'lots'" % conf_path
    check("systemctl status shows the file:line error as the status and in its log lines",
          'Status: "%s' % why in st and re.search(r"fdistd\[\d+\]: " + re.escape(why), st), st)
    ct.write_file(conf_path, config(port))
    rc, _, err = ct.run(["systemctl", "start", "fdistd"], timeout=60)
    check("mended file starts at once", rc == 0 and ct.is_active("fdistd.service") == "active", err)

    # a file the service cannot read: -t as root warns, the start fails
    # saying why and what to do
    for path, mode, reason in (
            ("/srv/fdist/private", 0o600, "Permission denied (the service's dynamic user (DynamicUser=yes) is "
             "neither owner nor in the group of file /srv/fdist/private: make it readable by others"),
            ("/tmp/image", 0o644, "No such file or directory (the service has its own empty /tmp and "
             "/var/tmp, PrivateTmp=yes: put served files elsewhere")):
        ct.write_file(path, "data", mode)
        ct.write_file(conf_path, config(port).replace("/srv/fdist/image", path))
        rc, out, err = ct.run([fdistd, "-t", "-c", conf_path])
        check("fdistd -t as root warns of %s" % path, rc == 0 and "configuration OK" in out and
              "warning: %s:6: share [svc]: file %s: the service cannot read it" % (conf_path, path) in err,
              (rc, out, err))
        ct.check(["systemctl", "stop", "fdistd"], timeout=90)
        rc, _, err = ct.run(["systemctl", "start", "fdistd"], timeout=60)
        st = status_text(ct)
        check("start with %s fails with the reason in systemctl status" % path, rc != 0 and
              ct.show("fdistd.service", "ExecMainStatus") == "78" and
              'Status: "%s:6: file %s: %s' % (conf_path, path, reason) in st, st)
    ct.write_file(conf_path, config(port))
    ct.check(["systemctl", "start", "fdistd"], timeout=60)
    resolver_down_at_start(ct, conf_path, port)


def resolver_down_at_start(ct, conf_path, port):
    """A listen name the name server cannot answer for yet, as at boot:
    exit 1, retried without reaching the start limit, and running by
    itself once the name resolves."""
    ct.check(["systemctl", "stop", "fdistd"], timeout=90)
    # the unit's own resolv.conf names a loopback address with no server
    ct.write_file("/etc/fdist-test-resolv.conf", "nameserver 127.54.0.9\noptions timeout:1 attempts:1\n")
    dropin = "/etc/systemd/system/fdistd.service.d/resolver.conf"
    ct.write_file(dropin, "[Service]\nBindReadOnlyPaths=/etc/fdist-test-resolv.conf:/etc/resolv.conf\n")
    ct.check(["systemctl", "daemon-reload"])
    had_hosts = ct.run(["test", "-e", "/etc/hosts"]).rc == 0
    hosts = ct.read_file("/etc/hosts").decode() if had_hosts else ""
    ct.write_file(conf_path, config(port).replace("listen = 127.0.0.1:", "listen = later.fdistd.test:"))
    rc, _, err = ct.run(["systemctl", "start", "fdistd"], timeout=60)
    check("start with the name server down fails", rc != 0, err)
    ct.wait_until(lambda: int(ct.show("fdistd.service", "NRestarts")) >= 2 and
                  ct.show("fdistd.service", "SubState") == "auto-restart", 20, "two restarts")
    main, st = ct.show("fdistd.service", "ExecMainStatus"), status_text(ct)
    check("exit 1 and restarted, the reason shown", main == "1" and
          "cannot resolve 'later.fdistd.test': Temporary failure in name resolution" in st, (main, st))
    time.sleep(8)       # past the start limit's 10 s: still retrying
    check("the retries do not reach the start limit", ct.show("fdistd.service", "ActiveState") != "failed",
          status_text(ct))
    ct.write_file("/etc/hosts", hosts + "127.0.0.1 later.fdistd.test\n")
    ct.wait_until(lambda: ct.is_active("fdistd.service") == "active", 15, "a start once the name resolves")
    with tempfile.TemporaryDirectory() as d:
        r = fetch_file(port, os.path.join(d, "got"))
        check("once the name resolves, it runs and serves by itself", r.returncode == 0, r)
    ct.check(["rm", dropin])
    if had_hosts:
        ct.write_file("/etc/hosts", hosts)
    else:
        ct.check(["rm", "/etc/hosts"])
    ct.check(["systemctl", "daemon-reload"])
    ct.write_file(conf_path, config(port))
    ct.check(["systemctl", "restart", "fdistd"], timeout=90)


def restarts(ct):
    """Crashes and the watchdog still restart the daemon."""
    # the starts above count against the start limit (5 in 10s), which
    # would stop the restarts below
    ct.check(["systemctl", "reset-failed", "fdistd"])
    for how in ("KILL", "ABRT", "SEGV"):
        pid, n = ct.show("fdistd.service", "MainPID"), int(ct.show("fdistd.service", "NRestarts"))
        ct.check(["systemctl", "kill", "--kill-who=main", "--signal=SIG" + how, "fdistd"])
        try:
            ct.wait_until(lambda: ct.show("fdistd.service", "MainPID") not in ("0", pid)
                          and ct.is_active("fdistd.service") == "active", 30, "a restart")
        except nspawn.Error as e:
            print(e)
        check("SIG%s of the daemon: restarted" % how, ct.is_active("fdistd.service") == "active" and
              int(ct.show("fdistd.service", "NRestarts")) == n + 1, ct.journal("-u", "fdistd", "-n", "10"))
    # the watchdog: a daemon that stops pinging (SIGSTOP) is aborted, killed
    # and restarted
    ct.write_file("/etc/systemd/system/fdistd.service.d/watchdog.conf",
                  "[Service]\nWatchdogSec=2s\nTimeoutAbortSec=2s\n")
    ct.check(["systemctl", "daemon-reload"])
    ct.check(["systemctl", "reset-failed", "fdistd"])
    ct.check(["systemctl", "restart", "fdistd"], timeout=90)
    pid, n = ct.show("fdistd.service", "MainPID"), int(ct.show("fdistd.service", "NRestarts"))
    ct.check(["systemctl", "kill", "--kill-who=main", "--signal=SIGSTOP", "fdistd"])
    try:
        ct.wait_until(lambda: ct.show("fdistd.service", "MainPID") not in ("0", pid)
                      and ct.is_active("fdistd.service") == "active", 40, "a restart by the watchdog")
    except nspawn.Error as e:
        print(e)
    log = ct.journal("-u", "fdistd", "-n", "15")
    check("a wedged daemon: the watchdog restarts it", ct.is_active("fdistd.service") == "active" and
          int(ct.show("fdistd.service", "NRestarts")) == n + 1 and "Watchdog timeout" in log, log)
    ct.check(["rm", "/etc/systemd/system/fdistd.service.d/watchdog.conf"])
    ct.check(["systemctl", "daemon-reload"])


def run(tmp):
    dest = os.path.join(tmp, "dest")
    install_tree(dest)
    conf_path = installed_path(dest, "fdistd.ini")
    image = make_file(os.path.join(tmp, "image"), 3 * 1024 * 1024, seed=7)
    image2 = make_file(os.path.join(tmp, "image2"), 2 * 1024 * 1024, seed=8)
    port = free_port()
    with open(image, "rb") as f:
        image_bytes = f.read()
    with open(image2, "rb") as f:
        image2_bytes = f.read()
    image3_bytes = open(make_file(os.path.join(tmp, "image3"), 1024 * 1024, seed=9), "rb").read()
    files = {
        # journald's own limit, low: only the unit's LogRateLimit* keeps
        # a burst of records whole (the image turns the limit off)
        "/etc/systemd/journald.conf.d/zz-ratelimit.conf":
            "[Journal]\nRateLimitIntervalSec=30s\nRateLimitBurst=10\n",
        conf_path: config(port),
        "/srv/fdist/image": (image_bytes, 0o644),
        "/srv/fdist/image.new": (image2_bytes, 0o644),
        "/srv/fdist/image.v3": (image3_bytes, 0o644),
    }
    extra = nspawn.SANITIZER_PACKAGES if sanitized() else ()
    if extra:
        # leaks are checked by the host suite; LeakSanitizer's ptrace is
        # (rightly) outside the unit's system call filter
        files["/etc/systemd/system/fdistd.service.d/asan.conf"] = \
            "[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0\n"
    with nspawn.Container(install_tree=dest, files=files, extra_packages=extra) as ct:
        fdistd = installed_path(dest, "fdistd")
        # the image is a minimal Debian: nothing the unit needs may come from elsewhere
        present = [p for t in ("ps", "kill", "nc", "netcat", "jq", "man", "ip")
                   for p in ("/bin/" + t, "/usr/bin/" + t, "/sbin/" + t) if ct.run(["test", "-e", p]).rc == 0]
        check("the image has no procps, netcat, jq, man-db, iproute2", not present, present)
        rc, out, err = ct.run([fdistd, "-t", "-c", conf_path])
        check("fdistd -t in the container", rc == 0 and "configuration OK" in out and err == "", (rc, out, err))
        rc, out, err = ct.run(["systemctl", "start", "fdistd"], timeout=60)
        check("systemctl start fdistd", rc == 0, (out, err, ct.journal("-u", "fdistd", "--no-pager")))
        check("active after start", ct.is_active("fdistd.service"))
        status_uid = re.search(r"^Uid:\s+(\d+)", ct.read_file(
            "/proc/%s/status" % ct.show("fdistd.service", "MainPID")).decode(), re.M)
        user = ct.show("fdistd.service", "User") + "/" + (status_uid.group(1) if status_uid else "?")
        check("runs as a dynamic user", 61184 <= int(user.split("/")[1].replace("?", "0")) <= 65519, user)
        check("watchdog armed", ct.show("fdistd.service", "WatchdogUSec") not in ("", "0", "infinity"),
              ct.show("fdistd.service", "WatchdogUSec"))
        status = ct.show("fdistd.service", "StatusText")
        check("STATUS= reaches systemd", re.match(r"1 share, \d+ active", status), status)

        out = os.path.join(tmp, "got")
        r = fetch_file(port, out)
        check("fetch from the service", r.returncode == 0 and file_sha256(out) == sha256(image_bytes), r)
        recs = wait_records(ct, 1, "FDIST_STATUS=acked")
        check("journalctl -u fdistd FDIST_STATUS=acked", len(recs) == 1 and recs[0].get("FDIST_VERIFIED") == "yes"
              and recs[0].get("FDIST_SHARE") == "svc", recs)

        # reload with a changed file, replaced by rename as documented
        ct.check(["mv", "/srv/fdist/image.new", "/srv/fdist/image"])
        rc, _, err = ct.run(["systemctl", "reload", "fdistd"], timeout=60)
        check("systemctl reload (changed file), no procps", rc == 0,
              (err, ct.journal("-u", "fdistd.service", "-n", "10")))
        try:
            ct.wait_journal(r"fdistd: reloaded: 1 share", unit="fdistd.service", timeout=15)
        except nspawn.Error as e:
            check("the reload reports its result", False, e)
        r = fetch_file(port, out)
        check("new clients get the new file", r.returncode == 0 and file_sha256(out) == sha256(image2_bytes), r)

        # reload with a broken configuration: the unit's check fails the
        # reload, saying where; the daemon is not signalled and serves on
        pid = ct.show("fdistd.service", "MainPID")
        ct.write_file(conf_path, config(port) + "bogus = 1\n")
        rc, _, err = ct.run(["systemctl", "reload", "fdistd"], timeout=60)
        check("systemctl reload (broken config) fails", rc != 0, err)
        line = ct.wait_journal(r"unknown key", unit="fdistd.service", timeout=15)
        check("reload failure names file:line", "%s:7: unknown key 'bogus' in [svc]" % conf_path in line, line)
        check("still active after a broken reload", ct.is_active("fdistd.service"))
        check("same process after a broken reload", ct.show("fdistd.service", "MainPID") == pid)
        check("daemon not signalled by a broken reload",
              len(re.findall(r"reloading ", ct.journal("-u", "fdistd.service"))) == 1,
              ct.journal("-u", "fdistd.service", "-n", "20"))
        r = fetch_file(port, out)
        check("still serving after a broken reload", r.returncode == 0, r)
        ct.write_file(conf_path, config(port))

        reload_failures(ct, conf_path, port, out)
        start_failures(ct, fdistd, conf_path, port)
        restarts(ct)

        # stop with a transfer in flight: it finishes, then the unit stops cleanly
        result = []
        t = threading.Thread(target=slow_download, args=(port, result))
        t.start()
        deadline = time.monotonic() + 10
        while not re.search(r"[1-9]\d* active", ct.show("fdistd.service", "StatusText")):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        rc, _, err = ct.run(["systemctl", "stop", "fdistd"], timeout=90)
        t.join(60)
        check("systemctl stop with a transfer in flight", rc == 0, err)
        check("the transfer in flight completed", result and result[0] == image2_bytes,
              result and (len(result[0]) if isinstance(result[0], bytes) else result[0]))
        state = ct.show("fdistd.service", "ActiveState") + "/" + ct.show("fdistd.service", "Result")
        check("stopped cleanly (inactive/success)", state == "inactive/success", state)
        # (one of them fetched by resolver_down_at_start)
        recs = wait_records(ct, 6, "FDIST_STATUS=acked")
        check("every transfer logged acked", len(recs) == 6, [r.get("FDIST_STATUS") for r in recs])

        # socket activation: systemd binds, fdistd starts on the first client
        port2 = free_port()
        ct.write_file(conf_path, config(port2))
        ct.write_file("/etc/systemd/system/fdistd.socket.d/test.conf",
                      "[Socket]\nListenStream=\nListenStream=127.0.0.1:%d\n" % port2)
        ct.check(["systemctl", "daemon-reload"])
        ct.check(["systemctl", "start", "fdistd.socket"])
        states = (ct.show("fdistd.socket", "ActiveState"), ct.show("fdistd.service", "ActiveState"))
        check("socket unit listening, service not started", states == ("active", "inactive"),
              (states, ct.journal("-u", "fdistd.socket", "-n", "20")))
        r = fetch_file(port2, out)
        check("first client starts the service and is served",
              r.returncode == 0 and file_sha256(out) == sha256(image2_bytes), r)
        check("service active by activation", ct.is_active("fdistd.service"))
        ct.wait_journal(r"socket activation: 1 socket passed", unit="fdistd.service", timeout=15)

        # a file that no longer matches the socket unit: the daemon keeps
        # the old one, and the reload says so
        ct.write_file(conf_path, config(free_port()))
        rc, _, err = ct.run(["systemctl", "reload", "fdistd"], timeout=60)
        log = ct.journal("-u", "fdistd.service", "-n", "5")
        check("reload to a share without a socket fails", rc != 0 and re.search(
            r"fdistd: reload failed, still serving the previous configuration: share \[svc\] has no socket", log),
            (rc, err, log))
        ct.write_file(conf_path, config(port2))
        rc, _, err = ct.run(["systemctl", "reload", "fdistd"], timeout=60)
        check("and once mended, reloads", rc == 0, err)

        # a burst of clients: journald must drop none of their records
        for _ in range(BURST):
            with socket.create_connection(("127.0.0.1", port2), timeout=10) as s:
                while s.recv(1 << 20):
                    pass
                s.sendall(b"Thank you\0")
        recs = wait_records(ct, 7 + BURST, "FDIST_STATUS=acked")
        check("no record of a burst dropped by journald", len(recs) == 7 + BURST,
              (len(recs), ct.journal("-u", "systemd-journald", "-n", "5")))

        # written in place, against fdistd(8)'s advice: the sandboxed
        # service notices (inotify, SIGIO) and serves the new content
        ct.check(["cp", "/srv/fdist/image.v3", "/srv/fdist/image"])
        ct.wait_journal(r"writing stopped: serving its new content", unit="fdistd.service",
                        timeout=15)
        r = fetch_file(port2, out)
        check("a file written in place is served once written",
              r.returncode == 0 and file_sha256(out) == sha256(image3_bytes), r)
        log = ct.journal("-u", "fdistd.service")
        check("inotify works in the sandbox", "inotify" not in log, log[-2000:])
        ct.check(["systemctl", "stop", "fdistd.service", "fdistd.socket"], timeout=90)


def main():
    return nspawn.checks_main(run, "fdsvc-", "service test")


if __name__ == "__main__":
    sys.exit(main())
