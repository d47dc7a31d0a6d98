#!/usr/bin/env python3
"""The manifest under the shipped, hardened unit: systemd as PID 1 in
systemd-nspawn (as test_service), a client on the host fetching by the
manifest, skipping a current copy and taking a new version."""

import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "nspawn"))

import nspawn  # noqa: E402
from fdtest import file_sha256, free_port, make_file, sha256  # noqa: E402
from nspawn import check  # noqa: E402
from test_service import FETCH, install_tree, installed_path, sanitized, wait_records  # noqa: E402


def config(port, mport):
    return ("[fdistd]\nmanifest = 127.0.0.1:%d\n\n[svc]\nlisten = 127.0.0.1:%d\nfile = /srv/fdist/image\n"
            % (mport, port))


def fetch_by_manifest(mport, out, *args, timeout=30):
    """fdist-fetch --manifest, again while the service is still hashing."""
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run([FETCH, "-q", "--host-id", "edge-1", "--manifest", "127.0.0.1:%d" % mport,
                            "svc", "-o", out, *args], capture_output=True, timeout=60)
        if r.returncode != 9 or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def run(tmp):
    dest = os.path.join(tmp, "dest")
    install_tree(dest)
    conf_path = installed_path(dest, "fdistd.ini")
    image = make_file(os.path.join(tmp, "image"), 1024 * 1024, seed=11)
    image2 = make_file(os.path.join(tmp, "image2"), 1024 * 1024 + 1, seed=12)
    port, mport = free_port(), free_port()
    with open(image, "rb") as f:
        image_bytes = f.read()
    with open(image2, "rb") as f:
        image2_bytes = f.read()
    files = {conf_path: config(port, mport),
             "/srv/fdist/image": (image_bytes, 0o644),
             "/srv/fdist/image.new": (image2_bytes, 0o644)}
    extra = nspawn.SANITIZER_PACKAGES if sanitized() else ()
    if extra:
        files["/etc/systemd/system/fdistd.service.d/asan.conf"] = \
            "[Service]\nEnvironment=ASAN_OPTIONS=detect_leaks=0\n"
    with nspawn.Container(install_tree=dest, files=files, extra_packages=extra) as ct:
        rc, out, err = ct.run(["systemctl", "start", "fdistd"], timeout=60)
        check("systemctl start fdistd with a manifest", rc == 0,
              (out, err, ct.journal("-u", "fdistd", "--no-pager")))
        got = os.path.join(tmp, "got")
        r = fetch_by_manifest(mport, got)
        check("fetch by the service's manifest", r.returncode == 0 and file_sha256(got) == sha256(image_bytes),
              (r, ct.journal("-u", "fdistd.service", "-n", "20")))
        recs = wait_records(ct, 1, "FDIST_SHARE=@manifest", "FDIST_STATUS=acked")
        check("the manifest's record in the journal", recs and recs[-1].get("FDIST_VERIFIED") == "yes"
              and recs[-1].get("FDIST_HOST_ID") == "edge-1"
              and recs[-1].get("FDIST_FILE") == "memfd:fdist-manifest", recs)
        r = fetch_by_manifest(mport, got, "--if-changed")
        check("--if-changed with a current copy exits 8", r.returncode == 8, r)
        ct.check(["mv", "/srv/fdist/image.new", "/srv/fdist/image"])
        rc, _, err = ct.run(["systemctl", "reload", "fdistd"], timeout=60)
        check("systemctl reload", rc == 0, err)
        deadline = time.monotonic() + 30
        while True:     # until the manifest announces the new file
            r = fetch_by_manifest(mport, got, "--if-changed")
            if r.returncode != 8 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        check("--if-changed takes the new version", r.returncode == 0 and
              file_sha256(got) == sha256(image2_bytes), r)
        recs = wait_records(ct, 2, "FDIST_SHARE=svc", "FDIST_STATUS=acked")
        check("both versions acked and verified", len(recs) == 2 and
              all(x.get("FDIST_VERIFIED") == "yes" for x in recs), recs)
        ct.check(["systemctl", "stop", "fdistd.service"], timeout=90)


def main():
    return nspawn.checks_main(run, "fdmsvc-", "manifest service test")


if __name__ == "__main__":
    sys.exit(main())
