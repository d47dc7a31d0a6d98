#!/usr/bin/env python3
"""Reload under load: 50 reloads while 100 clients download continuously.
Every transfer completes byte-exact and is logged, and no connection is
refused while the listeners are kept across the reloads."""

import os
import re
import shutil
import subprocess
import threading
import time

from fdtest import Daemon, file_sha256, free_port, free_port_outside_ephemeral, main, make_file

LOADGEN = os.environ.get("FDIST_LOADGEN", "build/bench/fdist-loadgen")


def test_50_reloads_under_100_clients(tmp):
    size = 1024 * 1024 + 3
    master = make_file(os.path.join(tmp, "master"), size)
    digest = file_sha256(master)
    live = os.path.join(tmp, "live")
    shutil.copy(master, live)
    # The clients' connections churn through the ephemeral ports; the
    # extra share's port comes and goes with the reloads.
    port, port2 = free_port(), free_port_outside_ephemeral()
    shares = {"img": {"listen": "127.0.0.1:%d" % port, "file": live}}
    with Daemon(tmp, shares) as d:
        load = subprocess.Popen([LOADGEN, "-c", "100", "-t", "60", "--connect", "127.0.0.1:%d" % port,
                                 "--expect-size", str(size), "--expect-sha256", digest, "--no-refusals",
                                 "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        errors = []

        def reloads():
            try:
                for i in range(50):
                    # a new open file each time (same bytes), and a config change
                    shutil.copy(master, live + ".new")
                    os.rename(live + ".new", live)
                    cfg = {"img": dict(shares["img"], ack_timeout="%ds" % (10 + i % 2))}
                    if i % 2:
                        cfg["extra"] = {"listen": "127.0.0.1:%d" % port2, "file": master}
                    d.write_config(cfg)
                    d.reload(timeout=20)
                    time.sleep(0.06)   # spread them over seconds of load
            except Exception as e:  # reported below
                errors.append(repr(e))

        t = threading.Thread(target=reloads)
        t.start()
        t.join(120)
        # On a loaded machine (or under TSan) the 50 reloads may be over before
        # the clients have made 1000 transfers: let them go on (the loadgen's -t 60
        # bounds it) rather than count on the machine's speed.
        deadline = time.monotonic() + 50
        while len(d.records()) <= 1000 and time.monotonic() < deadline and load.poll() is None:
            time.sleep(0.2)
        load.send_signal(2)            # SIGINT: start no more, finish those in flight
        out, err = load.communicate(timeout=120)
        assert not errors, errors
        assert load.returncode == 0, out + err
        summary = out.strip().splitlines()[-1]
        started = int(re.search(r'"total":\{"started":(\d+)', summary).group(1))
        ok = int(re.search(r'"total":\{"started":\d+,"ok":(\d+)', summary).group(1))
        assert started == ok and started > 1000, summary
        assert d.log().count("reloaded: ") == 50, \
            [line for line in d.log().splitlines() if "reload" in line and "transfer" not in line]
        assert "reload failed" not in d.log()
        recs = d.wait_records(started, timeout=60)
        assert len(recs) == started, (len(recs), started)
        assert all(r["status"] == "acked" and r["bytes"] == str(size) for r in recs), \
            [r for r in recs if r["status"] != "acked"][:3]


if __name__ == "__main__":
    main(globals())
