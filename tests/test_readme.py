#!/usr/bin/env python3
"""README.md: its steps work as written on a minimal Debian 12.

Each check reads the README itself: the packages its apt-get lines name
are real ones, every program its commands run is either in the tree, in
a minimal system or installed by one of those lines, no step needs
$EDITOR set, the demo does not take the installed service's port, the
install and socket-activation steps say what systemd needs, and its
refusal queries, run against a real journald (private, as in
test_journal.py) holding real refusals, count every refused connection.
"""

import configparser
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import time

from fdtest import SRCDIR, Daemon, free_port, make_file, need
import test_journal

README = os.path.join(SRCDIR, "README.md")
SUMMARY_ID = "7bb3f058988248d99412e299d3580d60"
# The service sections assume systemd is the init system: its programs
# (systemctl, journalctl) are there wherever the README is followed.
ASSUMED = {"systemd"}


def readme():
    with open(README) as f:
        return f.read()


def shell_lines(text=None):
    """Every command line of the README's ```sh blocks."""
    text = text if text is not None else readme()
    lines = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M):
        lines += [l for l in block.splitlines() if l.strip()]
    return lines


def commands(line):
    """The program each simple command of a shell line runs."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    words, at_start, redirect = [], True, False
    for tok in lex:
        if tok in ("&&", "||", "|", ";", "(", ")"):
            at_start = True
        elif tok in ("<", ">", ">>", "2>", "&>"):
            redirect = True
        elif redirect:
            redirect = False
        elif at_start and re.match(r"^\w+=", tok):
            continue
        elif at_start:
            m = re.match(r"^\$\{\w+:-(.+)\}$", tok)
            words.append(m.group(1) if m else tok)
            at_start = False
    return words


def apt_packages(text=None):
    """The packages named by every apt-get install in the README."""
    text = text if text is not None else readme()
    pkgs = []
    for m in re.finditer(r"apt-get install ([^`\n&;|)#]*)", text):
        pkgs += [w for w in m.group(1).split() if not w.startswith("-")]
    return pkgs


def owners(paths):
    """The installed package that owns each path, in one dpkg -S."""
    r = subprocess.run(["dpkg", "-S"] + sorted(set(paths)), capture_output=True, text=True)
    found = {}
    for line in r.stdout.splitlines():
        pkgs, _, path = line.partition(": ")
        found[path.strip()] = pkgs.split(",")[0].split(":")[0].strip()
    return found


def priorities(pkgs):
    """Each package's priority in the archive (else in dpkg's database)."""
    r = subprocess.run(["apt-cache", "show", "--no-all-versions"] + sorted(pkgs), capture_output=True, text=True)
    prio = {}
    for block in r.stdout.split("\n\n"):
        m, p = re.search(r"^Package: (\S+)", block, re.M), re.search(r"^Priority: (\S+)", block, re.M)
        if m and p:
            prio.setdefault(m.group(1), p.group(1))
    for pkg in set(pkgs) - set(prio):
        prio[pkg] = subprocess.run(["dpkg-query", "-W", "-f=${Priority}", pkg],
                                   capture_output=True, text=True).stdout
    return prio


def installed(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", pkg], capture_output=True, text=True)
    return r.stdout.startswith("ii")


def test_apt_get_names_real_packages(tmp):
    """A virtual package (netcat) or a typo fails apt-get install."""
    pkgs = apt_packages()
    assert pkgs, "no apt-get install line in the README"
    lists = any(n.endswith("_Packages") or "_Packages." in n for n in os.listdir("/var/lib/apt/lists"))
    r = subprocess.run(["apt-cache", "policy"] + pkgs, capture_output=True, text=True)
    cands = dict(re.findall(r"^(\S+):\n  Installed: .*\n  Candidate: (\S+)", r.stdout, re.M))
    for pkg in pkgs:
        real = cands.get(pkg, "(none)") != "(none)" or installed(pkg)
        assert real, ("apt-get install %s fails: no such package, or a virtual one%s"
                      % (pkg, "" if lists else " (no apt lists here: apt-get update first)"))


def test_every_program_is_there_or_installed_by_a_step(tmp):
    """nc, jq, man, an editor: none is on a minimal system; the README
    must install whatever it runs that is not."""
    pkgs = set(apt_packages())
    cmds = sorted({c for line in shell_lines() for c in commands(line)
                   if "/" not in c and c not in ("fdistd", "fdist-fetch", "fdist-report")})  # not the tree's
    where = {}
    for cmd in cmds:
        path = shutil.which(cmd)
        if path:
            where[cmd] = [v for p in (path, os.path.realpath(path))
                          for v in (p, re.sub(r"^/usr/", "/", p), "/usr" + p)]
    owner = owners([p for ps in where.values() for p in ps])
    pkg_of = {c: next((owner[p] for p in where.get(c, []) if p in owner), None) for c in cmds}
    prio = priorities({p for p in pkg_of.values() if p})
    missing = []
    for cmd in cmds:
        pkg = pkg_of[cmd]
        if pkg is None:
            if cmd not in pkgs:
                missing.append("%s (not installed here; no package of that name in an apt-get line)" % cmd)
        elif prio[pkg] != "required" and pkg not in ASSUMED and pkg not in pkgs:
            missing.append("%s (package %s, priority %s)" % (cmd, pkg, prio[pkg]))
    assert not missing, "the README runs, without installing them: " + ", ".join(missing)


def test_no_step_needs_editor_set(tmp):
    """EDITOR is unset on a fresh Debian: "$EDITOR file" runs "file"."""
    bare = [l for l in shell_lines() if re.search(r"\$EDITOR\b|\$\{EDITOR\}|\$VISUAL\b", l)]
    assert not bare, "a step needs $EDITOR set: %r" % bare


def listen_ports(path):
    cp = configparser.ConfigParser(inline_comment_prefixes=(";",), interpolation=None)
    cp.read(path)
    ports = set()
    for sect in cp.sections():
        for addr in cp[sect].get("listen", "").split(","):
            if addr.strip():
                ports.add(int(addr.strip().rsplit(":", 1)[1]))
    return ports


def test_demo_and_installed_example_use_different_ports(tmp):
    """Following the README in order runs both: the service must start."""
    demo = listen_ports(os.path.join(SRCDIR, "conf", "demo.ini"))
    example = listen_ports(os.path.join(SRCDIR, "conf", "fdistd.ini"))
    assert demo and example, (demo, example)
    assert not demo & example, "demo.ini and fdistd.ini both listen on port %s" % sorted(demo & example)
    quick = readme().split("## Installing as a service")[0]
    named = {int(p) for p in re.findall(r"(?<!peer=)127\.0\.0\.1[: ](\d{4,5})\b", quick)}
    assert named == demo, "the quick start names ports %s, demo.ini listens on %s" % (sorted(named), sorted(demo))


def test_quick_start_writes_nothing_into_the_checkout(tmp):
    outs = []
    for line in shell_lines(readme().split("## Installing as a service")[0]):
        outs += re.findall(r"(?:^|\s)(?:-o|>)\s*(\S+)", line.split(" #")[0])
    assert outs, "no output file in the quick start"
    assert all(o.startswith("/") for o in outs), "fetches write into the checkout: %s" % outs


def test_install_steps_say_what_systemd_needs(tmp):
    lines = [l.split("#")[0] for l in shell_lines()]
    inst = next(i for i, l in enumerate(lines) if "meson install" in l)
    enable = next(i for i, l in enumerate(lines) if "systemctl enable" in l)
    assert any("systemctl daemon-reload" in l for l in lines[inst:enable]), \
        "no systemctl daemon-reload between meson install and systemctl enable"


def test_socket_activation_step_stops_the_service_first(tmp):
    """systemd refuses to start a socket whose service already runs."""
    text = readme()
    m = re.search(r"systemctl (?:disable|stop) --now fdistd(?:\.service)?\b[^`]*?systemctl enable --now fdistd\.socket",
                  text)
    assert m, "the socket activation step does not stop and disable fdistd.service before enabling fdistd.socket"


def refuse(port, n):
    for _ in range(n):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.recv(10)
        except (ConnectionResetError, socket.timeout):
            pass


def readme_query(jq):
    """The README's journalctl view of refusals (with jq, or the one
    without), run on the private journal instead of the unit's."""
    (line,) = [l for l in shell_lines() if l.startswith("journalctl") and " # " in l and
               "refusals" in l.rsplit(" # ", 1)[1] and ("| jq" in l) == jq]
    cmd = line.rsplit(" # ", 1)[0].strip()
    return cmd.replace("journalctl -u fdistd", "journalctl -D %s --no-pager" % test_journal.JOURNAL_DIR)


def count_refusals(recs, status):
    return sum(int(r.get("FDIST_COUNT", "1")) for r in recs if r.get("FDIST_STATUS") == status)


def test_refusal_views_count_every_refusal(tmp):
    """26 busy refusals in a second: 10 records and a summary of 16.  The
    README's views must show all 26, and list the summary's fields."""
    big = make_file(os.path.join(tmp, "big"), 64 << 20)
    port = free_port()
    with Daemon(tmp, {"img": {"listen": "127.0.0.1:%d" % port, "file": big, "max_clients": "1"}},
                {"log": "journal"}) as d:
        holder = socket.create_connection(("127.0.0.1", port), timeout=5)   # takes the one slot
        holder.recv(1)
        refuse(port, 26)
        deadline = time.monotonic() + 20
        while count_refusals(test_journal.journal("FDIST_STATUS=busy"), "busy") < 26:
            assert time.monotonic() < deadline, "the journal never held all 26 refusals"
            time.sleep(0.1)
        holder.close()

        query = readme_query(jq=False)
        out = subprocess.run(query.split() + ["-o", "json"], capture_output=True, text=True, timeout=20)
        recs = [json.loads(l) for l in out.stdout.splitlines() if l.strip()]
        seen = count_refusals(recs, "busy")
        assert seen == 26, "%r counts %d of 26 refusals" % (query, seen)

        need("jq")
        jq = readme_query(jq=True)
        out = subprocess.run(jq, shell=True, capture_output=True, text=True, timeout=20)
        assert out.stdout.strip() == "26", "%r: %r %r" % (jq, out.stdout, out.stderr)


def test_summary_record_fields_are_listed(tmp):
    """The README's list of the summary record's fields is the record's."""
    path = make_file(os.path.join(tmp, "data"), 10)
    port = free_port()
    with Daemon(tmp, {"flood": {"listen": "127.0.0.1:%d" % port, "file": path, "deny": "127.0.0.1"}},
                {"log": "journal"}):
        refuse(port, 13)
        summary = test_journal.journal("MESSAGE_ID=" + SUMMARY_ID)[0]
    text = " ".join(readme().split())
    m = re.search(r"MESSAGE_ID=%s`([^)]*)\)" % SUMMARY_ID, text)
    assert m, "the README does not describe the summary record"
    listed = set(re.findall(r"`(FDIST_\w+)`", m.group(1)))
    real = {k for k in summary if k.startswith("FDIST_")}
    assert listed == real, "the README lists %s, the record has %s" % (sorted(listed), sorted(real))


if __name__ == "__main__":
    test_journal.journal_main(globals())
