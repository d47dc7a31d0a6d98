#!/usr/bin/env python3
"""The manuals and --help tell the same: each program's usage forms and
options in its --help output are those of its page's SYNOPSIS and option
list, every example of a page uses only options the program has, and
mandoc finds nothing to warn of in any page.
"""

import os
import re
import shlex
import subprocess

from fdtest import FDISTD, SRCDIR, main, need

BUILDDIR = os.environ.get("BUILDDIR", os.path.join(SRCDIR, "build"))
PROGRAMS = {
    "fdistd": (FDISTD, "fdistd.8"),
    "fdist-fetch": (os.environ.get("FDIST_FETCH", os.path.join(BUILDDIR, "fdist-fetch")), "fdist-fetch.1"),
    "fdist-report": (os.environ.get("FDIST_REPORT", os.path.join(BUILDDIR, "fdist-report")), "fdist-report.1"),
}
OPTION_RE = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[A-Za-z]+)")


def help_text(prog):
    r = subprocess.run([PROGRAMS[prog][0], "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stderr == "", (prog, r)
    return r.stdout


def flags(words):
    """The options a run of usage words names: -qhV is -q, -h, -V."""
    out = set()
    for w in words:
        for opt in OPTION_RE.findall(w):
            out |= {opt} if opt.startswith("--") else {"-" + c for c in opt[1:]}
    return out


def help_forms(prog):
    """The option set of each usage form of --help."""
    forms = []
    for line in help_text(prog).split("\n\n")[0].splitlines():
        m = re.match(r"^(?:usage: |\s+)%s\b(.*)$" % re.escape(prog), line)
        if m:
            forms.append(flags(m.group(1).split()))
        else:
            forms[-1] |= flags(line.split())
    return forms


def help_options(prog):
    """The options --help describes, one entry a line: "-c, --config FILE"."""
    opts = set()
    for line in help_text(prog).splitlines():
        m = re.match(r"^\s+((?:-\w, )?--[a-z][\w-]*|-\w\b)", line)
        if m:
            opts |= flags(m.group(1).replace(",", " ").split())
    return opts


def page(prog):
    with open(os.path.join(SRCDIR, "man", PROGRAMS[prog][1])) as f:
        return f.read()


def section(text, name):
    m = re.search(r"^\.Sh %s\n(.*?)(?=^\.Sh )" % re.escape(name), text, re.S | re.M)
    assert m, "no section %s" % name
    return m.group(1)


def mdoc_flags(line):
    """The options an mdoc line names: "Fl c", "Fl Fl config" and
    "Fl \\-config" alike; a bare "Fl" (standard input) is none."""
    words = [w.lstrip(".") for w in line.split()]
    out = set()
    for i, w in enumerate(words[:-1]):
        if w != "Fl" or (i > 0 and words[i - 1] == "Fl"):
            continue
        nxt = words[i + 1]
        if nxt == "Fl" and i + 2 < len(words):
            out.add("--" + words[i + 2])
        elif nxt.startswith("\\-"):
            out.add("-" + nxt[1:])
        elif re.fullmatch(r"[A-Za-z]+", nxt):
            out |= {"-" + c for c in nxt}
    return out


def synopsis_forms(prog):
    forms = []
    for line in section(page(prog), "SYNOPSIS").splitlines():
        if line.startswith(".Nm"):
            forms.append(set())
        elif forms:
            forms[-1] |= mdoc_flags(line)
    return forms


def page_options(prog):
    return set().union(*(mdoc_flags(l) for l in page(prog).splitlines() if l.startswith(".It Fl")))


def test_usage_forms_are_the_synopsis(tmp):
    for prog in PROGRAMS:
        h, m = help_forms(prog), synopsis_forms(prog)
        assert h == m, "%s: --help's usage forms %s, %s(%s)'s SYNOPSIS %s" % (
            prog, [sorted(f) for f in h], prog, PROGRAMS[prog][1][-1], [sorted(f) for f in m])


def test_options_are_the_pages(tmp):
    for prog in PROGRAMS:
        h, m = help_options(prog), page_options(prog)
        assert h == m, "%s: only in --help %s, only in the page %s" % (prog, sorted(h - m), sorted(m - h))


def command_options(line, prog):
    """The options of each simple command of a shell line that runs prog
    (bare, as a path, or after a "$ " prompt); None if none runs it."""
    lex = shlex.shlex(line.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        toks = list(lex)
    except ValueError:
        return None
    found, opts, inside, at_start = False, set(), False, True
    for tok in toks:
        if tok in ("&&", "||", "|", ";", "(", ")", "$"):
            inside, at_start = False, True
        elif at_start and re.match(r"^\w+=", tok):
            continue
        elif at_start:
            found |= os.path.basename(tok) == prog
            inside, at_start = os.path.basename(tok) == prog, False
        elif inside and tok.startswith("-") and tok != "-":
            opts |= flags([tok.split("=", 1)[0]])
    return opts if found else None


def example_lines(text):
    """The lines of a page's literal displays, continuation lines joined."""
    lines = []
    for block in re.findall(r"^\.Bd -literal[^\n]*\n(.*?)^\.Ed", text, re.S | re.M):
        lines += block.replace("\\e\n", " ").replace("\\e", "\\").splitlines()
    return lines


def unknown_options(lines):
    """(prog, option, line) of every option a line gives a program that
    its --help does not list."""
    known = {prog: help_options(prog) | set().union(*help_forms(prog)) for prog in PROGRAMS}
    bad = []
    for line in lines:
        for prog in PROGRAMS:
            opts = command_options(line, prog)
            bad += [(prog, o, line) for o in sorted((opts or set()) - known[prog])]
    return bad


def test_examples_use_real_options(tmp):
    lines = []
    for name in sorted(os.listdir(os.path.join(SRCDIR, "man"))):
        if re.search(r"\.[158]$", name):
            with open(os.path.join(SRCDIR, "man", name)) as f:
                lines += example_lines(f.read())
    assert any(command_options(l, "fdist-report") for l in lines), "no fdist-report example found"
    bad = unknown_options(lines)
    assert not bad, "examples with options the program does not have: %s" % bad


def test_mandoc_lint(tmp):
    """Warnings and errors only: STYLE notes of pages not installed here
    (an Xr to systemd's) are not the pages' fault."""
    mandoc = need("mandoc")
    pages = sorted(os.path.join(SRCDIR, "man", n) for n in os.listdir(os.path.join(SRCDIR, "man"))
                   if re.search(r"\.[158]$", n))
    r = subprocess.run([mandoc, "-Tlint", "-Wwarning"] + pages, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stdout and not r.stderr, r


if __name__ == "__main__":
    main(globals())
