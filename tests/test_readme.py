#!/usr/bin/env python3
"""README.md: its steps work as written on a minimal Debian 12.

Each check reads the README itself: the packages its apt-get lines name
are real ones, every program its commands run is either in the tree, in
a minimal system or installed by one of those lines, no step needs
$EDITOR set, the demo does not take the installed service's port, the
install and socket-activation steps say what systemd needs, and its
refusal queries, run against a real journald (private, as in
test_journal.py) holding real refusals, count every refused connection.

And what it says of the tree stays true: one share name and one
directory in its snippets, the Layout table names every file, the
install table is what meson installs and an existing /etc/fdistd.ini is
kept, the example stderr line has a real record's fields, every
configuration it has fdistd read passes fdistd -t, the tree's programs
it runs exist and take the options it gives them, fdist-report is given
--share, the edge's user exists before its unit runs, its lab.txt and
ids.txt work as fdist-report reads them, and the Tests section names
every tool the tests need and what .ci/run does.
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

from fdtest import FDISTD, SRCDIR, TOOLS, Daemon, file_sha256, free_port, make_file, name_launcher, need, parse_record
import test_journal
import test_manpages

README = os.path.join(SRCDIR, "README.md")
BUILDDIR = os.environ.get("BUILDDIR", os.path.join(SRCDIR, "build"))
FETCH = os.environ.get("FDIST_FETCH", os.path.join(BUILDDIR, "fdist-fetch"))
REPORT = os.environ.get("FDIST_REPORT", os.path.join(BUILDDIR, "fdist-report"))
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


def code_blocks(lang, text=None):
    """The text of every fenced block of that language ("" for none)."""
    text = text if text is not None else readme()
    blocks, cur = [], None
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            if cur is None:
                cur = (line[3:].strip(), [])
            else:
                blocks.append((cur[0], "".join(cur[1])))
                cur = None
        elif cur is not None:
            cur[1].append(line)
    return [b for l, b in blocks if l == lang]


def section(title, text=None):
    text = text if text is not None else readme()
    assert "\n## %s\n" % title in text, "README.md has no section %r" % title
    return text.split("\n## %s\n" % title, 1)[1].split("\n## ", 1)[0]


def test_one_share_name_and_one_directory(tmp):
    """The README follows one share from its configuration to its report:
    one name in every snippet and command, one directory for its file."""
    code = "\n".join(code_blocks("sh") + code_blocks("ini"))
    names = set(re.findall(r"\[([\w.-]+)\]", code)) - {"fdistd", "Timer", "Service", "Upload"}
    names |= set(re.findall(r"--share[ =]([\w.-]+)", code))
    names |= set(re.findall(r"FDIST_SHARE=([\w.-]+)", code))
    names |= set(re.findall(r"fdist-sync@([\w.-]+)\.(?:service|timer)", code))
    names |= set(re.findall(r"/etc/fdist-sync/([\w.-]+)\.conf", code))
    names = {n for n in names if not n.isupper()}           # placeholders: [IPV6]:PORT
    assert len(names) == 1, "the README's snippets name several shares: %s" % sorted(names)
    dirs = {os.path.dirname(p) for p in re.findall(r"/srv/[^\s'\")|;]+", code)}
    assert len(dirs) == 1, "the README's snippets serve from several directories: %s" % sorted(dirs)


def layout_rows():
    """(directory, files) of each row of the Layout table that names files."""
    rows = []
    for line in section("Layout").splitlines():
        m = re.match(r"^\| `([\w.]+/)`: (.*?) \|", line)
        if m:
            rows.append((m.group(1), re.findall(r"`([^`]+)`", m.group(2))))
    return rows


def test_layout_names_every_file(tmp):
    """Every file of src/, man/, systemd/ and conf/ (their meson.build
    aside) is in the Layout table, and every file it names exists."""
    named = {d + f for d, fs in layout_rows() for f in fs}
    tree = {"%s/%s" % (d, f) for d in ("src", "man", "systemd", "conf")
            for f in os.listdir(os.path.join(SRCDIR, d))
            if f != "meson.build" and os.path.isfile(os.path.join(SRCDIR, d, f))}
    assert not tree - named, "files the Layout table does not name: %s" % sorted(tree - named)
    assert not named - tree, "the Layout table names files not in the tree: %s" % sorted(named - tree)


def installed_paths():
    """What meson install puts where, for the README's --prefix=/usr."""
    opts = json.loads(subprocess.run(["meson", "introspect", "--buildoptions", BUILDDIR],
                                     capture_output=True, text=True, check=True, timeout=60).stdout)
    prefix = next(o["value"] for o in opts if o["name"] == "prefix")
    inst = json.loads(subprocess.run(["meson", "introspect", "--installed", BUILDDIR],
                                     capture_output=True, text=True, check=True, timeout=60).stdout)
    return {("/usr" + p[len(prefix):]) if p.startswith(prefix + "/") else p for p in inst.values()}


def test_install_table_is_what_meson_installs(tmp):
    text = section("Installing as a service")
    table = {p for line in text.splitlines() if line.startswith("| `/")
             for p in re.findall(r"`(/[^`]+)`", line.split(" | ")[0])}
    real = installed_paths() | {"/etc/fdistd.ini"}       # the last by conf/install-config.sh
    assert not real - table, "meson install installs, unlisted: %s" % sorted(real - table)
    assert not table - real, "listed, but not installed: %s" % sorted(table - real)


def test_install_keeps_an_existing_configuration(tmp):
    """What the README says of /etc/fdistd.ini: installed where there is
    none, kept where there is one, and the new example named."""
    script = os.path.join(SRCDIR, "conf", "install-config.sh")
    dest = os.path.join(tmp, "dest")
    example = os.path.join(dest, "usr/share/doc/fdistd/examples/fdistd.ini")
    os.makedirs(os.path.dirname(example))
    shutil.copy(os.path.join(SRCDIR, "conf", "fdistd.ini"), example)
    env = dict(os.environ, DESTDIR=dest, MESON_INSTALL_PREFIX="/usr")
    env.pop("MESON_INSTALL_QUIET", None)
    # no controlling terminal, so the script's messages go to its stdout
    run = lambda: subprocess.run(["setsid", "-w", script, "/etc", "share/doc/fdistd/examples/fdistd.ini"],
                                 env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    r = run()
    live = os.path.join(dest, "etc/fdistd.ini")
    assert r.returncode == 0 and "installed the example configuration as %s" % live in r.stdout, r
    with open(live, "a") as f:
        f.write("; mine\n")
    r = run()
    assert r.returncode == 0 and "keeping the existing %s; the new example is %s" % (live, example) in r.stdout, r
    with open(live) as f:
        assert f.read().endswith("; mine\n"), "the existing configuration was overwritten"
    text = " ".join(section("Installing as a service").split())
    assert "never overwrites an existing `/etc/fdistd.ini`" in text and \
        "/usr/share/doc/fdistd/examples/fdistd.ini" in text, "the README does not say the file is kept"


def test_stderr_example_is_a_real_record(tmp):
    """The README's example line has the fields, in order, of the line
    the daemon writes for an fdist-fetch."""
    (example,) = [l for b in code_blocks("") for l in b.splitlines() if " transfer share=" in l]
    want = parse_record(example)
    assert want, "the README's example is not a transfer line: %r" % example
    path = make_file(os.path.join(tmp, "data"), 35149)
    port = free_port()
    with Daemon(tmp, {"demo": {"listen": "127.0.0.1:%d" % port, "file": path}}) as d:
        d.wait_log(r"digest share=demo .*file_sha256=")
        r = subprocess.run([FETCH, "-q", "-o", os.path.join(tmp, "copy"), "127.0.0.1:%d" % port],
                           capture_output=True, timeout=30)
        assert r.returncode == 0, r
        (rec,) = d.wait_records(1)
    assert list(want) == list(rec), "the README's fields %s, the daemon's %s" % (list(want), list(rec))
    assert want["status"] == "acked" and want["verified"] == "yes", want


def test_statuses_are_the_catalogs(tmp):
    """The README lists every status the journal catalog explains."""
    with open(os.path.join(SRCDIR, "systemd", "fdistd.catalog")) as f:
        catalog = set(re.findall(r"^([a-z-]+): ", f.read(), re.M))
    text = " ".join(section("Reading the acks").split())
    m = re.search(r"Statuses: (.*?) Refusals get", text)
    assert m, "the README has no list of statuses"
    listed = set(re.findall(r"`([a-z-]+)`", m.group(1)))
    assert catalog <= listed, "statuses the README does not list: %s" % sorted(catalog - listed)


def written_configs():
    """Each configuration a README step writes as /etc/fdistd.ini: the
    printf text, after the installed example for >>."""
    out = []
    for line in shell_lines():
        m = re.match(r"^printf ('[^']*') (>>?) /etc/fdistd\.ini\b", line)
        if m:
            text = subprocess.run("printf " + m.group(1), shell=True, capture_output=True, text=True,
                                  check=True).stdout
            if m.group(2) == ">>":
                with open(os.path.join(SRCDIR, "conf", "fdistd.ini")) as f:
                    text = f.read() + text
            out.append((line, text))
    return out


def test_configuration_steps_are_valid(tmp):
    """fdistd -t accepts what the README has fdistd read: each ini snippet
    and each /etc/fdistd.ini a step writes (its served files stand in by
    one that exists)."""
    served = make_file(os.path.join(tmp, "served"), 1000)
    configs = [("```ini block %d" % i, b if b.startswith("[fdistd]") else "[fdistd]\n" + b)
               for i, b in enumerate(code_blocks("ini"))] + written_configs()
    assert len(configs) >= 3, configs
    for i, (what, text) in enumerate(configs):
        path = os.path.join(tmp, "c%d.ini" % i)
        with open(path, "w") as f:
            f.write(re.sub(r"^file = .*$", "file = " + served, text, flags=re.M))
        r = subprocess.run([FDISTD, "-t", "-c", path], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, "%s: fdistd -t: %s" % (what, r.stderr)


def test_sync_steps_create_the_user_first(tmp):
    """meson install runs no postinst: the README must run systemd-sysusers
    before the first fdist-sync@ unit runs as its user."""
    lines = [l.split(" #")[0] for l in shell_lines()]
    start = next(i for i, l in enumerate(lines) if re.search(r"systemctl (start|enable).* fdist-sync@", l))
    assert any(l.strip() == "systemd-sysusers" for l in lines[:start]), \
        "no systemd-sysusers before %r" % lines[start]


def test_fdist_report_commands_name_the_share(tmp):
    """With the installed [example] share beside the admin's, the journal
    holds records of two shares: a report without --share stops."""
    cmds = [l for l in shell_lines() if commands(l)[:1] == ["fdist-report"]]
    assert cmds
    bare = [c for c in cmds if "--share" not in c]
    assert not bare, "fdist-report without --share: %s" % bare


def test_commands_exist_with_their_options(tmp):
    """Every program of the tree a README line runs is there (build/ being
    the build directory), and every option it gives it is in its --help."""
    progs = {"fdistd", "fdist-fetch", "fdist-report"}
    missing = []
    for line in shell_lines():
        for cmd in commands(line):
            if cmd.startswith("build/"):
                path = os.path.join(BUILDDIR, cmd[len("build/"):])
            elif "/" in cmd and not cmd.startswith("/"):
                path = os.path.join(SRCDIR, cmd)
            else:
                continue
            if not os.access(path, os.X_OK):
                missing.append(cmd)
        # and the tree's files it names: bash .ci/run, -c conf/demo.ini
        for word in shlex.split(line, comments=True):
            if re.match(r"^(\.ci|bench|conf|tests|src|man|systemd)/[\w./@-]+$", word) and \
                    not os.path.exists(os.path.join(SRCDIR, word)):
                missing.append(word)
    assert not missing, "the README runs what the tree does not have: %s" % missing
    bad = test_manpages.unknown_options(shell_lines())
    assert not bad, "the README gives options the program does not have: %s" % bad
    assert progs <= {os.path.basename(c) for l in shell_lines() for c in commands(l)}, "a program is never run"


def test_tests_section_names_the_tools_and_what_ci_does(tmp):
    """Each program fdtest.TOOLS knows is in the Tests table with its
    package, in the section's apt-get line and among what .ci/run
    installs; and the section says what .ci/run does."""
    text = section("Tests")
    with open(os.path.join(SRCDIR, ".ci", "run")) as f:
        ci = f.read()
    deps = set(re.search(r'^deps="([^"]*)"', ci, re.M).group(1).split())
    pkgs = set(apt_packages(text))
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^\| (.*) \| ([\w.+-]+) \|$", line)
        if m:
            for tool in re.findall(r"`([^`]+)`", m.group(1)):
                rows[tool] = m.group(2)
    for tool, pkg in TOOLS.items():
        assert rows.get(tool) == pkg, "the Tests table has %s as %r, fdtest.TOOLS as %r" % (tool, rows.get(tool), pkg)
        assert pkg in pkgs, "the Tests section's apt-get line lacks %s" % pkg
        assert pkg in deps, ".ci/run does not install %s" % pkg
    assert not set(rows) - set(TOOLS), "the Tests table names what no test needs: %s" % sorted(set(rows) - set(TOOLS))
    assert "bash .ci/run" in shell_lines(text)
    n = re.search(r"tests/fuzz/run\.sh build-ci-fuzz (\d+)", ci).group(1)
    assert "runs each for %s inputs" % n in " ".join(text.split()), "the README's fuzz inputs are not .ci/run's %s" % n
    assert re.search(r"^export CI=true$", ci, re.M) and "`CI=true`, which `.ci/run` sets" in " ".join(text.split())


def test_hosts_files_work(tmp):
    """The README's lab.txt and ids.txt, as fdist-report reads them: the
    addresses and the names it resolves (here through /etc/hosts), a name
    that does not resolve stops it naming its line, and ids match with
    --match host-id."""
    lab_text, ids_text = [next(b for b in code_blocks("text") if b.startswith("# %s:" % n))
                          for n in ("lab.txt", "ids.txt")]
    (share,) = set(re.findall(r"--share ([\w.-]+)", "\n".join(shell_lines())))
    names = [w.split()[0] for w in lab_text.splitlines()
             if w.strip() and not w.startswith("#") and not re.match(r"^[\d.:a-f]+\s", w)]
    assert names, "the README's lab.txt has no host name"
    ids = [l.split()[0] for l in ids_text.splitlines() if l.strip() and not l.startswith("#")]
    lab, idf = os.path.join(tmp, "lab.txt"), os.path.join(tmp, "ids.txt")
    with open(lab, "w") as f:
        f.write(lab_text + "127.0.0.1  here\n")
    with open(idf, "w") as f:
        f.write(ids_text)
    path = make_file(os.path.join(tmp, "image"), 100000)
    port = free_port()
    with Daemon(tmp, {share: {"listen": "127.0.0.1:%d" % port, "file": path}}, {"log": "journal"}):
        assert test_journal.journal("FDIST_SHARE=" + share, "FDIST_FILE_SHA256=" + file_sha256(path)), \
            "no digest record"
        r = subprocess.run([FETCH, "-q", "--host-id", ids[0], "-o", os.path.join(tmp, "copy"),
                            "127.0.0.1:%d" % port], capture_output=True, timeout=30)
        assert r.returncode == 0, r
        test_journal.journal("FDIST_SHARE=" + share, "FDIST_STATUS=acked")
        hosts = "".join("192.0.2.%d %s\n" % (i + 1, n) for i, n in enumerate(names))
        report = lambda *a, launcher=(): subprocess.run(list(launcher) + [REPORT, "--share", share, "--json", *a],
                                                         capture_output=True, text=True, timeout=60)
        r = report("--hosts", lab, launcher=name_launcher(tmp, hosts))
        assert r.returncode == 1, r
        s = json.loads(r.stdout)["summary"]
        lines = [l for l in lab_text.splitlines() if l.strip() and not l.startswith("#")]
        assert (s["total"], s["done"], s["missing"]) == (len(lines) + 1, 1, len(lines)), s
        r = report("--hosts", lab, launcher=name_launcher(tmp, ""))
        n = next(i for i, l in enumerate(lab_text.splitlines(), 1) if l.startswith(names[0]))
        assert r.returncode == 2 and "%s:%d: cannot resolve %s" % (lab, n, names[0]) in r.stderr, r
        r = report("--hosts", idf, "--match", "host-id")
        rep = json.loads(r.stdout)
        states = {h["host"]: h["state"] for h in rep["hosts"]}
        assert states == dict([(ids[0], "done")] + [(i, "missing") for i in ids[1:]]), (states, r.stderr)


if __name__ == "__main__":
    test_journal.journal_main(globals())
