#!/usr/bin/env python3
"""An edge server under a real systemd: fdist-sync@NAME.timer keeps the
edge's share NAME on the version its upstream's manifest announces.

The upstream is a real fdistd on the host (loopback; the container shares
the host's network). Inside the container the installed fdistd.service
serves /var/lib/fdist-sync/img/img, which the installed fdist-sync@img
units fetch as a system user, with the interval set by a timer drop-in as
README's "Tiers" says. Checked: version 1 arrives and is served; polls that
find nothing new reload nothing; with the upstream down the edge serves on
and the unit is failed saying why; a damaged or cut copy from a broken
upstream is never published; version 2 arrives within one interval.
"""

import os
import re
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "nspawn"))

import nspawn  # noqa: E402
from nspawn import check  # noqa: E402
from fdtest import Daemon, file_sha256, free_port, make_file, sha256  # noqa: E402
from test_service import install_tree, installed_path, sanitized  # noqa: E402

BUILDDIR = os.environ.get("BUILDDIR", os.path.join(os.path.dirname(HERE), "build"))
FETCH = os.environ.get("FDIST_FETCH", os.path.join(BUILDDIR, "fdist-fetch"))
INTERVAL = 4            # the timer's OnUnitInactiveSec in the drop-in
UNIT = "fdist-sync@img.service"
SERVED = "/var/lib/fdist-sync/img/img"
def edge_digest(port, tmp):
    """What the edge serves now, fetched from the host as a client would."""
    out = os.path.join(tmp, "from-edge")
    r = subprocess.run([FETCH, "-q", "-o", out, "127.0.0.1:%d" % port], capture_output=True, timeout=60)
    return file_sha256(out) if r.returncode == 0 else "fetch failed: %r" % (r,)


def runs(ct):
    """How many sync runs have ended: systemd logs one line for each."""
    return len(re.findall(r"^(Finished|Failed to start) fdist-sync@img\.service\b",
                          ct.journal("-u", UNIT, "-o", "cat"), re.M))


def wait_runs(ct, n, timeout):
    """Wait until n more sync runs have ended; return the unit's journal."""
    base = runs(ct)
    wait(ct, lambda: runs(ct) >= base + n, timeout, "%d more runs of %s" % (n, UNIT))
    return ct.journal("-u", UNIT, "-o", "cat")


def wait(ct, predicate, timeout, what):
    """ct.wait_until, saying on a timeout what the units were doing."""
    try:
        return ct.wait_until(predicate, timeout, what, interval=0.3)
    except nspawn.Error as e:
        raise nspawn.Error("%s\n%s\n%s" % (e, ct.systemctl("status", "-l", "-n", "30", UNIT,
                                                               "fdist-sync@img.timer").stdout,
                                           ct.journal("-n", "40")))


class BrokenUpstream:
    """A manifest that announces one digest and a share that streams other
    bytes (damaged) or half of them and a reset (cut): what fdistd never
    does, but a broken relay or a rewritten file may."""

    def __init__(self, good, mode):
        self.good, self.mode = good, mode
        self.msock = socket.create_server(("127.0.0.1", 0))
        self.ssock = socket.create_server(("127.0.0.1", 0))
        self.mport, self.sport = self.msock.getsockname()[1], self.ssock.getsockname()[1]
        self.doc = ("fdist-manifest 1\nshare img size=%d sha256=%s version=1-2-3-4 listen=127.0.0.1:%d\nend\n"
                    % (len(good), sha256(good), self.sport)).encode()
        self.stop = False
        self.threads = [threading.Thread(target=self.serve, args=(s, f), daemon=True)
                        for s, f in ((self.msock, self.manifest), (self.ssock, self.share))]
        for t in self.threads:
            t.start()

    def serve(self, sock, handler):
        sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                c.settimeout(10)
                handler(c)
            except OSError:
                pass
            finally:
                c.close()

    def manifest(self, c):
        c.sendall(self.doc)
        c.shutdown(socket.SHUT_WR)
        c.recv(4096)

    def share(self, c):
        if self.mode == "damaged":
            data = bytearray(self.good)
            data[len(data) // 2] ^= 0xff
            c.sendall(bytes(data))
            c.shutdown(socket.SHUT_WR)
            c.recv(4096)
        else:
            c.sendall(self.good[:len(self.good) // 2])
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")

    def close(self):
        self.stop = True
        for t in self.threads:
            t.join(5)
        self.msock.close()
        self.ssock.close()


def run(tmp):
    dest = os.path.join(tmp, "dest")
    install_tree(dest)
    conf_path = installed_path(dest, "fdistd.ini")
    updir = os.path.join(tmp, "upstream")
    os.mkdir(updir)
    upfile = os.path.join(updir, "img")
    v1 = open(make_file(os.path.join(tmp, "v1"), 3 * 1024 * 1024, seed=21), "rb").read()
    v2 = open(make_file(os.path.join(tmp, "v2"), 2 * 1024 * 1024 + 7, seed=22), "rb").read()
    with open(upfile, "wb") as f:
        f.write(v1)
    mport, sport, eport = free_port(), free_port(), free_port()
    up_shares = {"img": {"listen": "127.0.0.1:%d" % sport, "file": upfile}}
    up_opts = {"log": "stderr", "manifest": "127.0.0.1:%d" % mport}
    sync_conf = os.path.join(os.path.dirname(conf_path), "fdist-sync", "img.conf")   # the installed sysconfdir
    files = {
        conf_path: "[fdistd]\nack_timeout = 5s\n\n[img]\nlisten = 127.0.0.1:%d\nfile = %s\n" % (eport, SERVED),
        # the operator's one place for the upstream (README, "Tiers")
        sync_conf: "UPSTREAM=127.0.0.1:%d\nFETCH_OPTS=--timeout=10s\n" % mport,
        # and for the interval: a drop-in of the timer
        "/etc/systemd/system/fdist-sync@img.timer.d/interval.conf":
            "[Timer]\nOnUnitInactiveSec=\nOnActiveSec=1s\nOnUnitInactiveSec=%ds\nRandomizedDelaySec=0\n" % INTERVAL,
    }
    extra = nspawn.SANITIZER_PACKAGES if sanitized() else ()
    if extra:
        env = "[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0\n"
        files["/etc/systemd/system/fdistd.service.d/asan.conf"] = env
        files["/etc/systemd/system/fdist-sync@.service.d/asan.conf"] = env
    up = Daemon(os.path.join(tmp, "upstream"), up_shares, up_opts)
    try:
        with nspawn.Container(install_tree=dest, files=files, extra_packages=extra) as ct:
            edge(ct, tmp, up, upfile, v1, v2, eport, mport, sync_conf, conf_path)
    finally:
        up.close()


def edge(ct, tmp, up, upfile, v1, v2, eport, mport, sync_conf, conf_path):
    # what a package's postinst does: create the sysusers.d user
    ct.check(["systemd-sysusers"])
    ct.check(["systemctl", "enable", "--now", "fdist-sync@img.timer"])
    wait(ct, lambda: ct.run(["test", "-s", SERVED]).rc == 0 and ct.is_active(UNIT) == "inactive", 60, "the first sync")
    log = ct.journal("-u", UNIT, "-o", "cat")
    check("version 1 fetched by the first run", ct.read_file(SERVED) == v1, log)
    st = ct.check(["stat", "-c", "%U %a", SERVED, os.path.dirname(SERVED)]).stdout.split("\n")
    check("published by fdist-sync, file 0644, directory 0755",
          st[:2] == ["fdist-sync 644", "fdist-sync 755"], st)
    check("no partial file left", ct.run(["test", "-e", SERVED + ".part"]).rc != 0)
    rc, _, err = ct.run(["systemctl", "start", "fdistd"], timeout=60)
    if not check("the edge's fdistd starts", rc == 0, (err, ct.journal("-u", "fdistd.service", "-n", "20"))):
        return
    check("the edge serves version 1", edge_digest(eport, tmp) == sha256(v1))

    # polls that find the version current: exit 8, a success, no reload
    log = wait_runs(ct, 2, 20 * INTERVAL)
    check("a current copy is not fetched again", "unchanged, not fetched" in log and
          ct.show(UNIT, "Result") == "success", log[-1500:])
    check("nor is fdistd reloaded for it",
          "reloading" not in ct.journal("-u", "fdistd.service"), ct.journal("-u", "fdistd.service")[-1500:])

    # upstream down: the edge serves on, and the unit says why
    up.stop()
    wait(ct, lambda: ct.is_active(UNIT) == "failed", 20 * INTERVAL, "a failed sync")
    status = ct.systemctl("status", "-l", "-n", "20", UNIT).stdout
    check("upstream down: systemctl status shows the sync failed and why",
          "Active: failed" in status and re.search(r"fdist-fetch: .*127\.0\.0\.1:%d.*refused" % mport, status),
          status)
    check("upstream down: the edge still serves version 1", edge_digest(eport, tmp) == sha256(v1))
    wait_runs(ct, 1, 20 * INTERVAL)
    check("and the timer goes on trying", ct.is_active(UNIT) == "failed" and
          ct.is_active("fdist-sync@img.timer") == "active")

    # a broken upstream: a damaged copy, then a cut one; neither is served
    for mode, why in (("damaged", r"sha256|digest"), ("cut", r"reset|broke|closed")):
        bad = BrokenUpstream(v2, mode)
        try:
            ct.write_file(sync_conf, "UPSTREAM=127.0.0.1:%d\nFETCH_OPTS=--timeout=10s\n" % bad.mport)
            wait_runs(ct, 2, 20 * INTERVAL)
            status = ct.systemctl("status", "-l", "-n", "20", UNIT).stdout
            check("%s copy: the sync fails, saying why" % mode,
                  "Active: failed" in status and re.search(r"fdist-fetch: .*(%s)" % why, status), status)
            check("%s copy: not published, the edge serves version 1" % mode,
                  ct.read_file(SERVED) == v1 and edge_digest(eport, tmp) == sha256(v1) and
                  ct.run(["test", "-e", SERVED + ".part"]).rc != 0)
        finally:
            bad.close()
    check("no reload for a failed sync", "reloading" not in ct.journal("-u", "fdistd.service"))

    # version 2 published upstream (renamed into place) arrives within one interval
    ct.write_file(sync_conf, "UPSTREAM=127.0.0.1:%d\nFETCH_OPTS=--timeout=10s\n" % mport)
    with open(upfile + ".new", "wb") as f:
        f.write(v2)
    os.rename(upfile + ".new", upfile)
    if os.path.exists(os.path.join(up.tmp, "notify.sock")):
        os.unlink(os.path.join(up.tmp, "notify.sock"))     # the stopped daemon's
    up.start()
    t0 = time.monotonic()
    up.wait_log(r"digest share=img .*sha256=%s" % sha256(v2), timeout=30)
    t_published = time.monotonic()
    got = None
    deadline = t_published + INTERVAL + 30      # one interval; a loaded machine's margin
    while time.monotonic() < deadline:
        got = edge_digest(eport, tmp)
        if got == sha256(v2):
            break
        time.sleep(0.2)
    took = time.monotonic() - t_published
    print("version 2 served by the edge %.1f s after the upstream's digest (%.1f s after its start), "
          "interval %d s" % (took, time.monotonic() - t0, INTERVAL))
    check("version 2 arrives and is served", got == sha256(v2), (got, ct.journal("-u", UNIT, "-n", "20")))
    check("within one interval (+ margin)", took <= INTERVAL + 30, took)
    flog = ct.journal("-u", "fdistd.service")
    check("fdistd reloaded once, for version 2", len(re.findall(r"reloading", flog)) == 1 and
          re.search(r"reloaded: 1 share", flog), flog[-2000:])
    wait(ct, lambda: ct.is_active(UNIT) == "inactive", 20 * INTERVAL, "the unit to recover")
    check("the unit recovered (inactive, success)", ct.show(UNIT, "Result") == "success")
    check("no reload left pending", ct.run(["test", "-e", "/var/lib/fdist-sync/img/.reload-pending"]).rc != 0)

    # a reload that fails stays due until it succeeds: fdistd's file
    # broken, a new version fetched, the reload refused; mended, the next
    # run (which fetches nothing) reloads
    conf = ct.read_file(conf_path)
    ct.write_file(conf_path, conf + b"bogus = 1\n")
    with open(upfile + ".new", "wb") as f:
        f.write(v1)
    os.rename(upfile + ".new", upfile)
    up.reload()
    up.wait_log(r"digest share=img .*sha256=%s" % sha256(v1), timeout=30, count=2)
    wait(ct, lambda: ct.read_file(SERVED) == v1 and ct.is_active(UNIT) == "failed", 20 * INTERVAL, "a sync whose reload fails")
    status = ct.systemctl("status", "-l", "-n", "20", UNIT).stdout
    check("a failed reload fails the sync, visibly", "try-reload-or-restart" in status or
          "Control process exited" in status or "status=1" in status, status)
    check("and leaves the reload pending", ct.run(["test", "-e", "/var/lib/fdist-sync/img/.reload-pending"]).rc == 0)
    ct.write_file(conf_path, conf)
    wait(ct, lambda: ct.is_active(UNIT) == "inactive" and ct.show(UNIT, "Result") == "success", 20 * INTERVAL, "the pending reload")
    check("the pending reload is done by the next run", edge_digest(eport, tmp) == sha256(v1) and
          ct.run(["test", "-e", "/var/lib/fdist-sync/img/.reload-pending"]).rc != 0)
    ct.check(["systemctl", "stop", "fdist-sync@img.timer", "fdistd"], timeout=90)


def main():
    return nspawn.checks_main(run, "fdsync-", "sync test")


if __name__ == "__main__":
    sys.exit(main())
