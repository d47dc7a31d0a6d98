#!/usr/bin/env python3
"""Configuration: every rule, good and bad files, exact errors and lines."""

import contextlib
import os
import shutil
import subprocess
import tempfile

from fdtest import FDISTD, Daemon, fetch, free_port, main, make_file, name_launcher, need

# A uid in systemd's range of dynamic users: fdistd as the service sees it.
DYNAMIC_UID = 61999


def servable_parent():
    """Where servable() makes its directory: /srv (what fdistd's own
    advice names) or else /var/lib, whichever exists with every directory
    on its path searchable by others.  Not the build or source tree: a
    checkout under /root (mode 0700) would make -t's true warning about
    /root appear in every test that expects none."""
    for parent in ("/srv", "/var/lib"):
        path, ok = parent, os.path.isdir(parent)
        while ok and path != "/":
            ok = os.stat(path).st_mode & 0o001 != 0
            path = os.path.dirname(path)
        if ok and os.stat("/").st_mode & 0o001:
            return parent
    raise RuntimeError("neither /srv nor /var/lib is a directory searchable by others")


@contextlib.contextmanager
def servable():
    """A directory the service could serve from: not under /tmp (its
    PrivateTmp= hides that), every directory on its path searchable by
    others."""
    d = tempfile.mkdtemp(prefix="fdtest-served-", dir=servable_parent())
    try:
        os.chmod(d, 0o755)
        yield d
    finally:
        shutil.rmtree(d)


def check(tmp, text, mode="w", args=(), launcher=()):
    """Run fdistd -t on text; return (exit status, stdout, stderr, path)."""
    path = os.path.join(tmp, "t.ini")
    with open(path, mode) as f:
        f.write(text)
    out = subprocess.run([*launcher, FDISTD, "-t", *args, "-c", path], capture_output=True, timeout=20)
    return out.returncode, out.stdout.decode(), out.stderr.decode(), path


def effective_config(tmp, text, launcher=()):
    """fdistd -t -v on text: the effective configuration it prints."""
    rc, out, err, _ = check(tmp, text, args=("-v",), launcher=launcher)
    assert rc == 0 and out.endswith("configuration OK\n"), (rc, out, err)
    return out


def expect_error(tmp, text, line, message, mode="w"):
    rc, out, err, path = check(tmp, text, mode)
    where = "%s:%d" % (path, line) if line else path
    want = "fdistd: %s: %s\n" % (where, message)
    assert rc == 78, (rc, out, err)
    assert err == want, "\n got: %r\nwant: %r" % (err, want)
    assert "configuration OK" not in out


def share(tmp, name="s", port=9000, extra=""):
    path = os.path.join(tmp, "f")
    if not os.path.exists(path):
        make_file(path, 100)
    return "[%s]\nlisten = 127.0.0.1:%d\nfile = %s\n%s" % (name, port, path, extra)


def test_minimal_config_is_ok(tmp):
    with servable() as d:
        rc, out, err, _ = check(tmp, share(d))
    assert (rc, out, err) == (0, "configuration OK\n", ""), (rc, out, err)


def test_every_key_units_comments_and_overrides(tmp):
    f = make_file(os.path.join(tmp, "f"), 10)
    text = ("\ufeff; a comment\n# another\n[fdistd]\r\n"
            "  ack_timeout = 1500ms ; inline comment\n"
            "send_timeout = 2m\nack_max = 1K\nmax_clients = 5\n"
            "shutdown_timeout = 0\nlog = stderr\n\n"
            "[img-1.x_y]\nlisten = *:9001, [::1]:9002, 127.0.0.2:9002\nfile = %s\n"
            "ack_timeout = 1h\n\n[other]\nlisten=conf-host.test:9003\nfile=%s\nack_max=64\n" % (f, f))
    dump = effective_config(tmp, text, name_launcher(tmp, "127.0.0.1 conf-host.test\n"))
    assert ("[fdistd]\nack_timeout = 1500ms\nsend_timeout = 120000ms\nack_max = 1024\nmax_per_ip = 0\n"
            "rate_limit = 0\nshare_rate_limit = 0\nmax_clients = 5\nshutdown_timeout = 0ms\nlog = stderr\n") in dump, dump
    assert ("[img-1.x_y]\nlisten = 0.0.0.0:9001, [::]:9001, [::1]:9002, 127.0.0.2:9002\nfile = %s\n"
            "ack_timeout = 3600000ms\nsend_timeout = 120000ms\nack_max = 1024\n" % f) in dump, dump
    assert "[other]\nlisten = 127.0.0.1:9003\n" in dump, dump
    assert "ack_timeout = 1500ms\nsend_timeout = 120000ms\nack_max = 64\n" in dump


def test_defaults(tmp):
    assert effective_config(tmp, share(tmp)).startswith(
        "[fdistd]\nack_timeout = 30000ms\nsend_timeout = 60000ms\nack_max = 256\nmax_per_ip = 0\n"
        "rate_limit = 0\nshare_rate_limit = 0\nmax_clients = 10000\nshutdown_timeout = 30000ms\nlog = auto\n")


def test_unknown_and_misplaced_keys(tmp):
    expect_error(tmp, share(tmp, extra="colour = blue\n"), 4, "unknown key 'colour' in [s]")
    expect_error(tmp, "[fdistd]\nack_timout = 1s\n" + share(tmp), 2, "unknown key 'ack_timout' in [fdistd]")
    expect_error(tmp, share(tmp, extra="shutdown_timeout = 4s\n"), 4, "'shutdown_timeout' is a global setting: put it under [fdistd]")
    expect_error(tmp, "[fdistd]\nlisten = 127.0.0.1:1\n", 2, "'listen' belongs in a share section, not in [fdistd]")
    expect_error(tmp, "log = stderr\n" + share(tmp), 1, "'log' is outside any section (put global settings under [fdistd])")


def test_duplicates(tmp):
    expect_error(tmp, share(tmp, extra="\nfile = /etc/hostname\n"), 5, "duplicate key 'file' (first set on line 3)")
    expect_error(tmp, "[fdistd]\nlog=auto\n[fdistd]\n" + share(tmp), 3, "duplicate section [fdistd] (first on line 1)")
    expect_error(tmp, share(tmp) + share(tmp, port=9001), 4, "duplicate share [s] (first on line 1)")


def test_share_names(tmp):
    expect_error(tmp, share(tmp, name="bad name"), 1,
                 "invalid share name 'bad name' (use 1 to 63 letters, digits, '-', '_' or '.')")
    expect_error(tmp, share(tmp, name="x" * 64), 1,
                 "invalid share name '%s' (use 1 to 63 letters, digits, '-', '_' or '.')" % ("x" * 64))
    expect_error(tmp, share(tmp, name="a/b"), 1,
                 "invalid share name 'a/b' (use 1 to 63 letters, digits, '-', '_' or '.')")


def test_durations_sizes_counts_ranges(tmp):
    cases = [
        ("ack_timeout = 5x", "ack_timeout: invalid duration '5x' (use a whole number with ms, s, m or h)"),
        ("ack_timeout = -1s", "ack_timeout: invalid duration '-1s' (use a whole number with ms, s, m or h)"),
        ("ack_timeout = 1.5s", "ack_timeout: invalid duration '1.5s' (use a whole number with ms, s, m or h)"),
        ("ack_timeout = 0", "ack_timeout: '0' is out of range (1ms to 24h)"),
        ("send_timeout = 25h", "send_timeout: '25h' is out of range (1ms to 24h)"),
        ("send_timeout = 99999999999999999999h", "send_timeout: invalid duration '99999999999999999999h' (use a whole number with ms, s, m or h)"),
        ("shutdown_timeout = 2d", "shutdown_timeout: invalid duration '2d' (use a whole number with ms, s, m or h)"),
        ("ack_max = 0", "ack_max: '0' is out of range (1 to 64K)"),
        ("ack_max = 65K", "ack_max: '65K' is out of range (1 to 64K)"),
        ("ack_max = 1T", "ack_max: invalid size '1T' (use a whole number, optionally followed by K, M or G)"),
        ("max_clients = 0", "max_clients: '0' is out of range (1 to 1000000)"),
        ("max_clients = 10k", "max_clients: invalid number '10k'"),
        ("max_clients =", "max_clients: invalid number ''"),
        ("log = syslog", "log: invalid value 'syslog' (use auto, journal or stderr)"),
    ]
    for line, msg in cases:
        expect_error(tmp, "[fdistd]\n%s\n%s" % (line, share(tmp)), 2, msg)


def test_access_lists_and_limits(tmp):
    f = make_file(os.path.join(tmp, "f"), 1)
    text = ("[fdistd]\ndeny = 192.0.2.66, ::ffff:198.51.100.0/120\nallow = 10.0.0.0/8, 127.0.0.0/8\nallow = ::1, 2001:db8::/32\n"
            "max_per_ip = 4\nrate_limit = 2M\n"
            "[a]\nlisten = 127.0.0.1:9000\nfile = %s\nmax_clients = 7\nshare_rate_limit = 10M\n"
            "deny = 10.1.2.3/16\n[b]\nlisten = 127.0.0.1:9001\nfile = %s\nallow = 192.0.2.0/24\nmax_per_ip = 0\n" % (f, f))
    dump = effective_config(tmp, text)
    # an IPv4-mapped network is the IPv4 network (peers are matched unmapped)
    assert "allow = 10.0.0.0/8, 127.0.0.0/8, ::1/128, 2001:db8::/32\ndeny = 192.0.2.66/32, 198.51.100.0/24\n" in dump, dump
    assert ("[a]\nlisten = 127.0.0.1:9000\nfile = %s\nack_timeout = 30000ms\nsend_timeout = 60000ms\nack_max = 256\n"
            "max_per_ip = 4\nrate_limit = 2097152\nshare_rate_limit = 10485760\nmax_clients = 7\n"
            "allow = 10.0.0.0/8, 127.0.0.0/8, ::1/128, 2001:db8::/32\ndeny = 10.1.0.0/16\n" % f) in dump, dump
    assert "max_per_ip = 0\nrate_limit = 2097152\nshare_rate_limit = 0\nallow = 192.0.2.0/24\n" in dump, dump
    base = "[s]\nlisten = 127.0.0.1:1\nfile = %s\n" % f
    bad = [
        ("allow = 10.0.0.0/33", "allow: invalid prefix length in '10.0.0.0/33' (0 to 32)"),
        ("deny = ::1/129", "deny: invalid prefix length in '::1/129' (0 to 128)"),
        ("allow = example.com", "allow: invalid address or network 'example.com' (use an IPv4 or IPv6 address, optionally with /PREFIX)"),
        ("allow = 10.0.0.0/8,", "allow: empty network in '10.0.0.0/8,'"),
        ("deny = 10.0.0.0/8, %s" % ("1" * 60), "deny: network too long in '10.0.0.0/8, %s'" % ("1" * 60)),
        ("deny = ::ffff:0:0/95", "deny: '::ffff:0:0/95' mixes IPv4-mapped and other IPv6 addresses (use a prefix of 96 or more)"),
        ("rate_limit = 100", "rate_limit: '100' is out of range (0 for no limit, or 1K to 100G bytes per second)"),
        ("share_rate_limit = fast", "share_rate_limit: invalid size 'fast' (use a whole number, optionally followed by K, M or G)"),
        ("max_per_ip = -1", "max_per_ip: invalid number '-1'"),
        ("max_clients = 0", "max_clients: '0' is out of range (1 to 1000000)"),
        ("rate_limit = 101G", "rate_limit: '101G' is out of range (0 for no limit, or 1K to 100G bytes per second)"),
        ("max_per_ip = 1000001", "max_per_ip: '1000001' is out of range (0 for no limit, or up to 1000000)"),
    ]
    for line, msg in bad:
        expect_error(tmp, base + line + "\n", 4, msg)
    # the upper bounds themselves are fine
    rc, out, err, _ = check(tmp, base + "rate_limit = 100G\nmax_per_ip = 1000000\n")
    assert rc == 0, (rc, out, err)
    # 64 networks per list, over repeated lines; the 65th is refused on its line
    nets = ["10.0.%d.0/24" % i for i in range(65)]
    lists = "".join("allow = %s\n" % ", ".join(nets[i:i + 13]) for i in range(0, 52, 13))
    rc, out, err, _ = check(tmp, base + lists + "allow = " + ", ".join(nets[52:64]) + "\n")
    assert rc == 0, (rc, out, err)
    expect_error(tmp, base + lists + "allow = " + ", ".join(nets[52:]) + "\n", 8,
                 "allow: too many networks (at most 64 per list)")


def test_share_max_clients_above_global_warns(tmp):
    """Valid, but the global limit still applies: a warning with the
    share's line, from -t and at start-up; none when it fits."""
    with servable() as d:
        text = "[fdistd]\nmax_clients = 400\n\n" + share(d, extra="max_clients = 500\n")
        rc, out, err, path = check(tmp, text)
        assert rc == 0 and out == "configuration OK\n", (rc, out, err)
        assert err == ("fdistd: warning: %s:7: share [s]: max_clients 500 is above the global "
                       "max_clients 400, which limits it too\n" % path), err
        rc, out, err, _ = check(tmp, text.replace("500", "400"))
        assert rc == 0 and err == "", (rc, out, err)
    make_file(os.path.join(tmp, "f"), 100)
    port = free_port()
    d = Daemon(tmp, {"s": {"listen": "127.0.0.1:%d" % port, "file": os.path.join(tmp, "f"),
                           "max_clients": "500"}}, {"max_clients": "400"})
    with d:
        d.wait_log(r"warning: \S+:\d+: share \[s\]: max_clients 500 is above the global max_clients 400")
        d.shares["s"]["max_clients"] = "600"
        d.write_config()
        d.reload()
        d.wait_log(r"warning: \S+:\d+: share \[s\]: max_clients 600 is above the global max_clients 400")


def test_listen_addresses(tmp):
    f = make_file(os.path.join(tmp, "f"), 1)
    hint = "(use HOST:PORT, [IPV6]:PORT or *:PORT)"
    cases = [
        ("127.0.0.1", "listen: invalid listen address '127.0.0.1' %s" % hint),
        ("::1:9000", "listen: invalid listen address '::1:9000' %s" % hint),
        ("[::1]9000", "listen: invalid listen address '[::1]9000' %s" % hint),
        ("127.0.0.1:0", "listen: invalid port in '127.0.0.1:0' (1 to 65535)"),
        ("127.0.0.1:65536", "listen: invalid port in '127.0.0.1:65536' (1 to 65535)"),
        ("127.0.0.1:http", "listen: invalid port in '127.0.0.1:http' (1 to 65535)"),
        ("127.0.0.1:1,,127.0.0.1:2", "listen: empty listen address in '127.0.0.1:1,,127.0.0.1:2'"),
        ("[zz::1]:80", "listen: 'zz::1' is not a numeric IPv6 address"),
        ("[localhost]:80", "listen: 'localhost' is not a numeric IPv6 address"),
        ("127.1:80", "listen: '127.1' is not an IPv4 address (use four decimal numbers, like 192.0.2.7)"),
        ("017.0.0.1:80", "listen: '017.0.0.1' is not an IPv4 address (use four decimal numbers, like 192.0.2.7)"),
        ("1:80", "listen: '1' is not an IPv4 address (use four decimal numbers, like 192.0.2.7)"),
        ("0x7f.1:80", "listen: '0x7f.1' is not an IPv4 address (use four decimal numbers, like 192.0.2.7)"),
        ("0xA.0.0.1:80", "listen: '0xA.0.0.1' is not an IPv4 address (use four decimal numbers, like 192.0.2.7)"),
        ("0xff:80", "listen: '0xff' is not an IPv4 address (use four decimal numbers, like 192.0.2.7)"),
        ("[1.2.3.4]:80", "listen: '1.2.3.4' is not an IPv6 address (write IPv4 addresses without brackets)"),
        ("[::ffff:1.2.3.4]:80", "listen: '::ffff:1.2.3.4' is an IPv4-mapped address: listen on the IPv4 address itself"),
        # the kernel ignores a zone on other addresses: two would collide at bind
        ("[2001:db8::1%1]:80, [2001:db8::1%2]:80",
         "listen: '2001:db8::1%1': a zone is only for link-local addresses (fe80::/10)"),
        (", ".join("*:%d" % p for p in range(1, 10)), "listen: too many listen addresses (at most 16 per share)"),
        ("", "listen: empty listen address in ''"),
    ]
    for value, msg in cases:
        expect_error(tmp, "[s]\nfile = %s\nlisten = %s\n" % (f, value), 3, msg)


def test_repeated_lists_and_reloadable_dump(tmp):
    """listen, allow and deny add on each line, so long lists fit the
    line limit; -t -v prints them in lines it can read back."""
    listen = ["[2001:db8:1234:5678::%x]:9000" % i for i in range(1, 15)] + ["127.0.0.1:9000", "127.0.0.2:9000"]
    nets = ["10.%d.0.0/16" % i for i in range(60)]
    path = os.path.join(tmp, "f")
    make_file(path, 10)
    lines = ["[s]", "file = %s" % path]
    lines += ["listen = " + ", ".join(listen[i:i + 5]) for i in range(0, 16, 5)]
    lines += ["allow = " + ", ".join(nets[i:i + 10]) for i in range(0, 60, 10)]
    text = "\n".join(lines) + "\n"
    dump = effective_config(tmp, text)
    got = []
    for line in dump.splitlines():
        assert len(line) <= 197, line
        if line.startswith("listen = "):
            got += line[len("listen = "):].split(", ")
    assert got == listen, got
    assert sum(line.count("/16") for line in dump.splitlines() if line.startswith("allow = ")) == 60
    again = effective_config(tmp, dump.replace("configuration OK\n", ""))
    assert again == dump, (again, dump)
    # the 17th address is one too many, on whichever line it comes
    line = 1 + len(lines)
    expect_error(tmp, text + "listen = 127.0.0.3:9000\n", line,
                 "listen: too many listen addresses (at most 16 per share)")


def test_listen_collisions(tmp):
    f = make_file(os.path.join(tmp, "f"), 1)
    expect_error(tmp, "[a]\nlisten = 127.0.0.1:9000\nfile = %s\n[b]\nfile = %s\nlisten = [::1]:9001, 127.0.0.1:9000\n" % (f, f),
                 6, "listen address 127.0.0.1:9000 is already used by [a] (line 2)")
    expect_error(tmp, "[a]\nlisten = 127.0.0.1:9000, 127.0.0.1:9000\nfile = %s\n" % f,
                 2, "listen address 127.0.0.1:9000 is already used by [a] (line 2)")
    expect_error(tmp, "[a]\nlisten = *:9000\nfile = %s\n[b]\nfile = %s\nlisten = 127.0.0.1:9000\n" % (f, f),
                 6, "listen address 127.0.0.1:9000 overlaps 0.0.0.0:9000 of [a] (line 2)")
    # the wildcard second: the message still names what it overlaps
    expect_error(tmp, "[a]\nlisten = [::1]:9000\nfile = %s\n[b]\nfile = %s\nlisten = [::]:9000\n" % (f, f),
                 6, "listen address [::]:9000 overlaps [::1]:9000 of [a] (line 2)")
    # [::] is IPv6-only, so it does not collide with 0.0.0.0
    rc, out, err, _ = check(tmp, "[a]\nlisten = 0.0.0.0:9000\nfile = %s\n[b]\nfile = %s\nlisten = [::]:9000\n" % (f, f))
    assert rc == 0, err


def test_files(tmp):
    expect_error(tmp, "[s]\nlisten = 127.0.0.1:1\nfile = relative/path\n", 3, "file: 'relative/path' is not an absolute path")
    expect_error(tmp, "[s]\nlisten = 127.0.0.1:1\nfile = /nonexistent/x\n", 3, "file /nonexistent/x: No such file or directory")
    expect_error(tmp, "[s]\nlisten = 127.0.0.1:1\nfile = %s\n" % tmp, 3, "file %s: not a regular file" % tmp)
    os.mkfifo(os.path.join(tmp, "fifo"))
    expect_error(tmp, "[s]\nlisten = 127.0.0.1:1\nfile = %s/fifo\n" % tmp, 3, "file %s/fifo: not a regular file" % tmp)
    expect_error(tmp, "\n[s]\nlisten = 127.0.0.1:1\n", 2, "share [s] has no file")
    expect_error(tmp, "[s]\nfile = /etc/hostname\n[t]\nfile = /etc/hostname\nlisten = 127.0.0.1:1\n", 1, "share [s] has no listen address")
    expect_error(tmp, "[fdistd]\nlog = stderr\n", 0, "no shares configured (add a [name] section with listen and file)")
    expect_error(tmp, "", 0, "no shares configured (add a [name] section with listen and file)")


def test_syntax_long_lines_and_bytes(tmp):
    expect_error(tmp, share(tmp) + "just some words\n" + "bogus = 1\n", 4,
                 "syntax error: expected [section], key = value or a comment")
    expect_error(tmp, "[unterminated\n" + share(tmp), 1, "syntax error: missing ']' in section header")
    expect_error(tmp, "[s] trailing\n", 1, "syntax error: text after ']' in section header")
    expect_error(tmp, "[s]\nlisten 127.0.0.1:9000\n", 2, "syntax error: expected key = value")
    rc, _, err, _ = check(tmp, share(tmp).replace("[s]", "[s]  ; a comment"))
    assert rc == 0, err
    # leading blanks count towards inih's limit too
    expect_error(tmp, "[s]\n" + " " * 150 + "listen = 127.0.0.1:%s\n" % ("1" * 60), 2,
                 "line too long (229 characters; at most 197)")
    long_value = "/" + "a" * 240
    expect_error(tmp, "[s]\nlisten = 127.0.0.1:1\nfile = %s\n" % long_value, 3,
                 "line too long (248 characters; at most 197)")
    # 197 characters is still accepted (and the value is not cut)
    expect_error(tmp, "[s]\nlisten = 127.0.0.1:1\nfile = /%s\n" % ("b" * 189), 3,
                 "file /%s: No such file or directory" % ("b" * 189))
    expect_error(tmp, share(tmp) + "; comment with a \0 byte\n", 4, "NUL byte in line")
    expect_error(tmp, "[s]\nlisten = 127.0.0.1:1\rfile = /x\n", 2, "carriage return inside a line")


def test_error_messages_quote_file_bytes_escaped(tmp):
    # checking a hostile file must not put control sequences on a terminal
    expect_error(tmp, share(tmp, extra="\x1b]0;pwned\x07\x1b[2J = 1\n"), 4,
                 "unknown key '\\x1b]0;pwned\\x07\\x1b[2J' in [s]")


def test_files_the_service_cannot_read_warn(tmp):
    """-t as root opens anything: it warns of what the unit's dynamic user
    and private /tmp will not open, naming the file and the reason."""
    with servable() as d:
        good = make_file(os.path.join(d, "good"), 10)
        private = make_file(os.path.join(d, "private"), 10)
        os.chmod(private, 0o600)
        os.mkdir(os.path.join(d, "closed"), 0o750)
        os.chmod(os.path.join(d, "closed"), 0o750)
        inside = make_file(os.path.join(d, "closed", "f"), 10)
        in_tmp = make_file(os.path.join(tmp, "t"), 10)
        os.chmod(tmp, 0o755)
        link = os.path.join(d, "link")
        os.symlink(in_tmp, link)
        text = "".join("[%s]\nlisten = 127.0.0.1:%d\nfile = %s\n" % (n, 9000 + i, f)
                       for i, (n, f) in enumerate((("good", good), ("private", private),
                                                   ("closed", inside), ("tmp", in_tmp),
                                                   ("link", link))))
        rc, out, err, path = check(tmp, text)
        assert rc == 0 and out == "configuration OK\n", (rc, out, err)
        lines = err.splitlines()
        assert len(lines) == 4, err
        dyn = ("is not %s by others, and the service runs as a dynamic user (DynamicUser=yes), "
               "neither its owner nor in its group: make it %s (chmod o+%s), or add the service "
               "to its group with a drop-in (SupplementaryGroups=, see fdistd.service)")
        assert lines[0] == ("fdistd: warning: %s:6: share [private]: file %s: the service cannot "
                            "read it: file %s (mode 0600) " % (path, private, private)
                            + dyn % ("readable", "world-readable", "r")), lines[0]
        assert lines[1] == ("fdistd: warning: %s:9: share [closed]: file %s: the service cannot "
                            "read it: directory %s/closed (mode 0750) " % (path, inside, d)
                            + dyn % ("searchable", "searchable", "x")), lines[1]
        hidden = ("the service cannot read it: %s is hidden from the service: fdistd.service has "
                  "its own empty /tmp and /var/tmp (PrivateTmp=yes); put served files elsewhere, "
                  "e.g. under /srv" % in_tmp)
        assert lines[2] == "fdistd: warning: %s:12: share [tmp]: file %s: %s" % (path, in_tmp, hidden)
        assert lines[3] == "fdistd: warning: %s:15: share [link]: file %s: %s" % (path, link, hidden)
        # mended: no warning
        os.chmod(private, 0o644)
        os.chmod(os.path.join(d, "closed"), 0o751)
        rc, out, err, _ = check(tmp, text.split("[tmp]")[0])
        assert (rc, out, err) == (0, "configuration OK\n", ""), (rc, out, err)


def test_service_user_is_told_why_it_cannot_open(tmp):
    """Run as a dynamic user (as the unit does), an unreadable file is an
    error, exit 78, that says why and what to do; -t adds no warning then."""
    with servable() as d:
        f = make_file(os.path.join(d, "f"), 10)
        os.chmod(f, 0o600)
        os.mkdir(os.path.join(d, "closed"))
        os.chmod(os.path.join(d, "closed"), 0o700)
        g = make_file(os.path.join(d, "closed", "g"), 10)
        conf = os.path.join(d, "t.ini")

        def as_service(share_file, *args):
            with open(conf, "w") as fp:
                fp.write("[fdistd]\nlog = stderr\n[s]\nlisten = 127.0.0.1:9\nfile = %s\n" % share_file)
            os.chmod(conf, 0o644)
            return subprocess.run([need("setpriv"), "--reuid=%d" % DYNAMIC_UID, "--regid=%d" % DYNAMIC_UID,
                                   "--clear-groups", FDISTD, *args, "-c", conf],
                                  capture_output=True, timeout=20)
        how = (": make it %s by others (chmod o+%s), or add the service to its group with a drop-in "
               "(SupplementaryGroups=, see fdistd.service))")
        for args in (("-t",), ()):
            out = as_service(f, *args)
            want = ("%s:5: file %s: Permission denied (the service's dynamic user (DynamicUser=yes) is "
                    "neither owner nor in the group of file %s" % (conf, f, f)
                    + how % ("readable", "r"))
            assert out.returncode == 78 and want in out.stderr.decode(), (args, out)
        out = as_service(g, "-t")
        want = ("%s:5: file %s: Permission denied (the service's dynamic user (DynamicUser=yes) is "
                "neither owner nor in the group of directory %s/closed" % (conf, g, d)
                + how % ("searchable", "x"))
        assert out.returncode == 78 and want in out.stderr.decode(), out
        # what the unit's sandbox hides is said to be hidden
        for hidden, why in (("/tmp/fdtest-none/f", "(the service has its own empty /tmp and /var/tmp, "
                             "PrivateTmp=yes: put served files elsewhere, e.g. under /srv)"),
                            ("/home/fdtest-none/f", "(the shipped unit's ProtectHome=read-only shows /home, "
                             "/root and /run/user; a drop-in's ProtectHome=tmpfs or yes hides them: put "
                             "served files elsewhere, e.g. under /srv)")):
            out = as_service(hidden, "-t")
            want = "%s:5: file %s: No such file or directory %s\n" % (conf, hidden, why)
            assert out.returncode == 78 and out.stderr.decode() == "fdistd: " + want, (out, want)
        # run by anyone else, no such explanation
        out = subprocess.run([FDISTD, "-t", "-c", conf], capture_output=True, timeout=20)
        assert out.returncode == 78 and out.stderr.decode().endswith(": No such file or directory\n"), out
        os.chmod(f, 0o644)
        out = as_service(f, "-t")
        assert out.returncode == 0 and out.stderr == b"", out


def test_missing_config_file(tmp):
    out = subprocess.run([FDISTD, "-t", "-c", os.path.join(tmp, "none.ini")], capture_output=True, timeout=20)
    assert out.returncode == 78
    assert out.stderr.decode() == "fdistd: %s/none.ini: No such file or directory\n" % tmp
    # its name is escaped like any other in an error
    out = subprocess.run([FDISTD, "-t", "-c", os.path.join(tmp, "\x1b[31mred")], capture_output=True, timeout=20)
    assert out.returncode == 78
    assert out.stderr.decode() == "fdistd: %s/\\x1b[31mred: No such file or directory\n" % tmp, out.stderr


def test_daemon_refuses_to_start_on_bad_config(tmp):
    path = os.path.join(tmp, "t.ini")
    with open(path, "w") as f:
        f.write("[fdistd]\nlog = stderr\nack_max = lots\n")
    out = subprocess.run([FDISTD, "-c", path], capture_output=True, timeout=20)
    assert out.returncode == 78
    assert "%s:3: ack_max: invalid size 'lots'" % path in out.stderr.decode(), out


def test_usage_version_help(tmp):
    out = subprocess.run([FDISTD, "-V"], capture_output=True, timeout=20)
    assert out.returncode == 0 and out.stdout.decode().startswith("fdistd ")
    out = subprocess.run([FDISTD, "-h"], capture_output=True, timeout=20)
    assert out.returncode == 0 and "usage: fdistd [-dhtVv] [-c file]" in out.stdout.decode()
    out = subprocess.run([FDISTD, "-x"], capture_output=True, timeout=20)
    assert out.returncode == 2 and "usage:" in out.stderr.decode()
    out = subprocess.run([FDISTD, "extra"], capture_output=True, timeout=20)
    assert out.returncode == 2


def test_bound_port_in_use_is_a_clear_start_error(tmp):
    import socket
    f = make_file(os.path.join(tmp, "f"), 1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = os.path.join(tmp, "t.ini")
        with open(path, "w") as fp:
            fp.write("[fdistd]\nlog=stderr\n[s]\nlisten = 127.0.0.1:%d\nfile = %s\n" % (port, f))
        out = subprocess.run([FDISTD, "-c", path], capture_output=True, timeout=20)
        assert out.returncode == 1
        assert "listen on 127.0.0.1:%d: Address already in use" % port in out.stderr.decode(), out


def test_listen_by_name_serves(tmp):
    f = make_file(os.path.join(tmp, "f"), 5000)
    port = free_port()
    names = name_launcher(tmp, "127.0.0.1 share-host.test\n")
    with Daemon(tmp, {"n": {"listen": "share-host.test:%d" % port, "file": f}}, launcher=names) as d:
        assert len(fetch(port)) == 5000
        d.wait_records(1)


if __name__ == "__main__":
    main(globals())
