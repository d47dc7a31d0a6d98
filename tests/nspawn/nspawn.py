#!/usr/bin/env python3
"""Run things under a real systemd as PID 1, in a throwaway systemd-nspawn container.

Stdlib only, needs root.  Typical use from a test:

    import sys; sys.path.insert(0, 'tests/nspawn')
    import nspawn

    nspawn.require()                       # raises nspawn.Skip (-> exit 77) if impossible
    with nspawn.Container(install_tree='/tmp/destdir',
                          files={'/etc/fdistd/fdistd.conf': b'...'}) as ct:
        ct.check(['systemctl', 'start', 'fdistd'])
        rc, out, err = ct.run(['systemctl', 'is-active', 'fdistd'])
        ct.wait_journal('listening', unit='fdistd', timeout=10)

How it works
  * The root file system (debootstrap minbase of bookworm + the packages in PACKAGES) is built
    once and cached in CACHE_DIR/rootfs-<hash>/tree (hash of suite, variant, package list and
    ROOTFS_FORMAT).  It is built in a temp dir next to it and renamed into place, under an
    fcntl lock, so an interrupted build never leaves a half cache and concurrent runs build it
    only once.  The mirror comes from the machine's apt configuration (or $FDISTD_TEST_MIRROR).
  * Each Container boots an overlayfs (lower = cached tree, read only; upper = a fresh dir in
    CACHE_DIR/run/<name>).  The overlay is mounted inside a private mount namespace
    (unshare -m) that only systemd-nspawn lives in, so it disappears with nspawn whatever
    happens to this process; the cached tree is never written.  Files from install_tree / files
    are written into the upper dir before boot (symlinks of the image such as lib -> usr/lib
    are followed, so a DESTDIR with lib/systemd/system/x.service lands in /usr/lib/...).
    If overlayfs is unavailable, or FDISTD_NSPAWN_COPY=copy, a `cp -a --reflink=auto` copy is
    used instead (~1.3 s slower per boot here).
  * Commands run via `nsenter -t <container PID 1> -a`, with a clean environment.
  * The container shares the host network namespace (use free loopback ports).
  * Each container gets its own cgroup (<our cgroup>/fdistd-nspawn-<name> in the cgroup2 and
    name=systemd hierarchies): with --keep-unit, nspawn would otherwise put every container in
    the same <our cgroup>/payload, and concurrent containers' systemds would fight over it.
  * Teardown: SIGTERM to nspawn (clean poweroff), bounded wait, a second SIGTERM (nspawn's
    immediate termination), then SIGKILL of everything in the container's cgroups and of
    nspawn; then the per-boot dir and cgroups are removed.  nspawn gets PDEATHSIG=SIGTERM, so
    if the test process dies the container is powered off too (pdeathsig fires when the
    *thread* that started it exits: start containers from the main thread, or from a thread
    that outlives them); leftovers of dead runs are cleaned by the next Container start.
    Call handle_sigterm() in a test program so a SIGTERM still runs the `with` cleanup.

Environment knobs: FDISTD_TEST_CACHE (cache dir, default /var/cache/fdistd-tests),
FDISTD_TEST_MIRROR (override the apt mirror), FDISTD_NSPAWN_COPY=overlay|copy,
FDISTD_NSPAWN_KEEP=1 (keep the per-boot dir for post-mortem), FDISTD_NSPAWN_BOOT_TIMEOUT (s).
"""

import collections
import fcntl
import glob
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback

SUITE = 'bookworm'
VARIANT = 'minbase'
# What a minimal Debian with systemd has, plus fdistd's own libraries: no procps (ps,
# /bin/kill), no iproute2, no netcat, so a test sees what an administrator's system has.
PACKAGES = ('systemd', 'systemd-sysv', 'dbus', 'libevent-2.1-7', 'libevent-core-2.1-7',
            'libevent-extra-2.1-7',
            'libinih1', 'libsystemd0', 'libssl3')
# Runtime libraries of gcc's -fsanitize=address,undefined builds (clang links its own statically):
# pass as Container(extra_packages=SANITIZER_PACKAGES) to run such a build in the container.
SANITIZER_PACKAGES = ('libasan8', 'libubsan1')
# Bump when _postprocess_rootfs() changes: it is part of the cache key.
ROOTFS_FORMAT = 1

CACHE_DIR = os.environ.get('FDISTD_TEST_CACHE', '/var/cache/fdistd-tests')
SKIP_EXIT = 77

BUILD_TIMEOUT = 1200        # debootstrap
LOCK_TIMEOUT = 1500         # waiting for another process that builds the same rootfs
APT_TIMEOUT = 600

CONTAINER_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
CONTAINER_ENV = {
    'PATH': CONTAINER_PATH,
    'LANG': 'C.UTF-8',
    'TERM': 'dumb',
    'HOME': '/root',
    'SYSTEMD_PAGER': '',
    'SYSTEMD_COLORS': '0',
    'SYSTEMD_LESS': '',
}


class Error(Exception):
    """Any harness failure: the message says which step failed."""


class Skip(Exception):
    """The environment cannot run nspawn containers at all (exit code 77)."""


Result = collections.namedtuple('Result', 'rc stdout stderr')


def handle_sigterm():
    """Turn SIGTERM (e.g. a meson test timeout) into SystemExit, so `with Container()` blocks
    power off and clean up.  Call once from the main thread of a test program."""
    def on_term(signum, frame):
        print(f'interrupted by signal {signum}; cleaning up', file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)



CHECKS = []


def check(name, cond, detail=""):
    """A named check of a container test, said as it is made and counted
    by checks_main(); returns cond."""
    CHECKS.append((name, bool(cond)))
    print("%s %s%s" % ("ok  " if cond else "FAIL", name, "" if cond else ": %s" % (detail,)))
    sys.stdout.flush()
    return cond


def checks_main(run, prefix, what):
    """The main() of a container test that counts named checks: run(tmp)
    in a fresh temporary directory (an exception is a failed check),
    print "N passed, N failed"; 77 when containers cannot run here."""
    handle_sigterm()
    try:
        require()
    except Skip as e:
        # .ci/run installs everything and runs as root: there a skip
        # would hide the whole test.
        if os.environ.get("CI") == "true":
            print("FAIL: %s (CI=true: a test may not skip)" % e)
            print("0 passed, 1 failed")
            return 1
        print("SKIP: %s" % e)
        return SKIP_EXIT
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        try:
            run(tmp)
        except Exception as e:
            traceback.print_exc(file=sys.stdout)
            check("%s ran to the end" % what, False, e)
    passed = sum(1 for _, ok in CHECKS if ok)
    print("%d passed, %d failed" % (passed, len(CHECKS) - passed))
    return 0 if passed == len(CHECKS) else 1

def _log_default(msg):
    print(f'[nspawn] {msg}', file=sys.stderr, flush=True)


def _tail(text, lines=40):
    return '\n'.join(text.rstrip('\n').splitlines()[-lines:])


def _run_bounded(argv, timeout, *, input=None, env=None, what=None, pass_fds=()):
    """subprocess.run with a hard timeout that kills the whole process group."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True, pass_fds=pass_fds)
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group_children_first(proc)
        out, err = proc.communicate()
        raise Error(f'{what or argv[0]}: timed out after {timeout} s: {shlex.join(argv)}\n'
                    f'stdout: {_tail(out.decode(errors="replace"))}\n'
                    f'stderr: {_tail(err.decode(errors="replace"))}') from None
    except BaseException:
        _kill_group_children_first(proc)
        proc.wait()
        raise
    return Result(proc.returncode, out, err)


def _pids_in_pgrp(pgid):
    pids = []
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open(f'/proc/{d}/stat') as f:
                data = f.read()
        except OSError:
            continue
        if int(data[data.rindex(')') + 2:].split()[2]) == pgid:
            pids.append(int(d))
    return pids


def _kill_group_children_first(proc, grace=2.0):
    """SIGKILL a process group, the leader's descendants first.

    For `nsenter`: its child lives in the container's PID namespace but has nsenter (outside)
    as parent.  If both die at once the child's zombie is re-parented to the host's init, not the
    container's, and lingers in the container's PID namespace, which then delays its shutdown
    (systemd waits ~10 s for it).  Killing the child first lets nsenter reap it."""
    for pid in _pids_in_pgrp(proc.pid):
        if pid != proc.pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    _killpg(proc.pid, signal.SIGKILL)


def _killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _proc_starttime(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(')') + 2:].split()
    if fields[0] in ('Z', 'X'):      # zombie: as good as gone
        return None
    return fields[19]


# ----------------------------------------------------------------------------------------------
# host prerequisites

def find_mirror(suite=SUITE, apt_dir='/etc/apt'):
    """The Debian mirror URI for `suite` from the machine's apt configuration."""
    env = os.environ.get('FDISTD_TEST_MIRROR')
    if env and apt_dir == '/etc/apt':
        return env
    candidates = []   # (score, uri)
    for path in sorted(glob.glob(os.path.join(apt_dir, 'sources.list.d/*.sources'))):
        try:
            text = open(path).read()
        except OSError:
            continue
        for stanza in re.split(r'\n\s*\n', text):
            fields, key = {}, None
            for line in stanza.splitlines():
                if line.startswith('#') or not line.strip():
                    continue
                if line[0] in ' \t' and key:
                    fields[key] += ' ' + line.strip()
                    continue
                if ':' in line:
                    key, val = line.split(':', 1)
                    key = key.strip().lower()
                    fields[key] = val.strip()
            if fields.get('enabled', 'yes').lower() == 'no':
                continue
            if 'deb' not in fields.get('types', '').split():
                continue
            suites = fields.get('suites', '').split()
            comps = fields.get('components', '').split()
            for uri in fields.get('uris', '').split():
                candidates.append((_mirror_score(suite, suites, comps), uri))
    for path in ([os.path.join(apt_dir, 'sources.list')]
                 + sorted(glob.glob(os.path.join(apt_dir, 'sources.list.d/*.list')))):
        try:
            lines = open(path).read().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.split('#', 1)[0].strip()
            line = re.sub(r'\[[^\]]*\]', ' ', line)
            parts = line.split()
            if len(parts) >= 3 and parts[0] == 'deb':
                candidates.append((_mirror_score(suite, [parts[2]], parts[3:]), parts[1]))
    candidates = [c for c in candidates if c[0] > 0]
    if not candidates:
        raise Error(f'no apt source for Debian {suite} (main) found in {apt_dir}; '
                    'set FDISTD_TEST_MIRROR')
    candidates.sort(key=lambda c: -c[0])
    return candidates[0][1]


def _mirror_score(suite, suites, comps):
    if 'main' not in comps:
        return 0
    if suite in suites:
        return 3
    # e.g. "stable" or "bookworm-updates": usable host, but the security archive is not.
    if any(s.startswith(suite) and 'security' not in s for s in suites):
        return 2
    return 0


def _apt_install(packages, log):
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    cmd = ['apt-get', 'install', '-y', '--no-install-recommends', *packages]
    r = _run_bounded(cmd, APT_TIMEOUT, env=env, what='apt-get install')
    if r.rc != 0:
        log('apt-get install failed; running apt-get update and retrying')
        _run_bounded(['apt-get', 'update'], APT_TIMEOUT, env=env, what='apt-get update')
        r = _run_bounded(cmd, APT_TIMEOUT, env=env, what='apt-get install')
    return r


def require(log=_log_default):
    """Make sure this host can run containers; raise Skip if it truly cannot."""
    if sys.platform != 'linux':
        raise Skip('not Linux')
    if os.geteuid() != 0:
        raise Skip('systemd-nspawn containers need root')
    need = {'systemd-nspawn': 'systemd-container', 'debootstrap': 'debootstrap'}
    missing = [pkg for tool, pkg in need.items() if not shutil.which(tool)]
    if missing:
        if not shutil.which('apt-get'):
            raise Skip(f'missing {missing} and no apt-get to install them')
        log(f'installing {" ".join(missing)}')
        try:
            r = _apt_install(missing, log)
        except Error as e:
            raise Skip(f'cannot install {missing}: {e}') from None
        if r.rc != 0 or any(not shutil.which(t) for t in need):
            raise Skip(f'cannot install {missing}: {_tail(r.stderr.decode(errors="replace"), 5)}')
    for tool in ('nsenter', 'unshare', 'setpriv', 'mount'):
        if not shutil.which(tool):
            raise Skip(f'{tool} (util-linux) not found')


def _have_overlayfs():
    def listed():
        try:
            return any(l.split()[-1] == 'overlay' for l in open('/proc/filesystems'))
        except OSError:
            return False
    if listed():
        return True
    if shutil.which('modprobe'):
        subprocess.run(['modprobe', 'overlay'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return listed()


# ----------------------------------------------------------------------------------------------
# cached root file system

def _package_list(extra_packages=()):
    return sorted(set(PACKAGES) | set(extra_packages))


def rootfs_key(extra_packages=()):
    h = hashlib.sha256(json.dumps([ROOTFS_FORMAT, SUITE, VARIANT,
                                   _package_list(extra_packages)]).encode())
    return h.hexdigest()[:16]


def rootfs_dir(extra_packages=()):
    """CACHE_DIR/rootfs-<key>; the image itself is its `tree` subdirectory."""
    return os.path.join(CACHE_DIR, f'rootfs-{rootfs_key(extra_packages)}')


def _mounts_under(path):
    path = os.path.realpath(path).rstrip('/') + '/'
    found = []
    try:
        with open('/proc/self/mountinfo') as f:
            for line in f:
                mp = line.split()[4].replace('\\040', ' ')
                if (mp + '/').startswith(path):
                    found.append(mp)
    except OSError:
        pass
    return found


def _safe_rmtree(path):
    """rmtree that refuses to descend into anything mounted under `path`."""
    if not os.path.lexists(path):
        return
    mounts = _mounts_under(path)
    if mounts:
        raise Error(f'refusing to remove {path}: still mounted: {mounts}')
    shutil.rmtree(path)


class _Flock:
    def __init__(self, path, timeout, log, what):
        self.path, self.timeout, self.log, self.what = path, timeout, log, what
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + self.timeout
        told = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if not told:
                    self.log(f'waiting for lock {self.path} ({self.what})')
                    told = True
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise Error(f'timed out after {self.timeout} s waiting for lock {self.path} '
                                f'({self.what})')
                time.sleep(0.2)

    def __exit__(self, *exc):
        os.close(self.fd)   # releases the lock


def ensure_rootfs(log=_log_default, extra_packages=()):
    """Return (tree_path, info) of the cached image, building it first if needed.

    info is the build record (info.json: packages, mirror, build_seconds, ...) plus
    built_now=True when this call did the (cold) build.  extra_packages: more Debian packages
    on top of PACKAGES (a separate cached image).
    """
    final = rootfs_dir(extra_packages)
    tree = os.path.join(final, 'tree')
    info_path = os.path.join(final, 'info.json')
    if os.path.isdir(tree) and os.path.isfile(info_path):
        return tree, dict(json.load(open(info_path)), built_now=False)
    os.makedirs(CACHE_DIR, exist_ok=True)
    with _Flock(final + '.lock', LOCK_TIMEOUT, log, 'another run is building the rootfs') as lock:
        if os.path.isdir(tree) and os.path.isfile(info_path):
            return tree, dict(json.load(open(info_path)), built_now=False)
        # We hold the lock: any temp build dir of this key is a leftover of an interrupted run.
        prefix = f'.build-{os.path.basename(final)}-'
        for old in glob.glob(os.path.join(CACHE_DIR, prefix + '*')):
            log(f'removing leftover of an interrupted build: {old}')
            _safe_rmtree(old)
        if os.path.lexists(final):      # incomplete (no info.json): cannot happen via rename
            _safe_rmtree(final)
        tmp = tempfile.mkdtemp(prefix=prefix, dir=CACHE_DIR)
        try:
            info = _build_rootfs(os.path.join(tmp, 'tree'), log, lock.fd,
                                 _package_list(extra_packages))
            with open(os.path.join(tmp, 'info.json'), 'w') as f:
                json.dump(info, f, indent=1)
            os.sync()
            os.rename(tmp, final)
        except BaseException:
            try:
                _safe_rmtree(tmp)
            except Exception as e:     # do not hide the original error
                log(f'could not remove {tmp}: {e}')
            raise
        return tree, dict(info, built_now=True)


def _build_rootfs(tree, log, lock_fd, packages):
    mirror = find_mirror()
    argv = ['debootstrap', f'--variant={VARIANT}', f'--include={",".join(packages)}',
            SUITE, tree, mirror]
    log(f'building rootfs (cold, ~40 s): {shlex.join(argv)}')
    t0 = time.monotonic()
    # Private mount namespace: whatever debootstrap mounts (proc, sys, ...) inside the target
    # vanishes with it, even if it is killed, so the temp dir can always be removed safely.
    # The lock fd is inherited by the whole debootstrap tree: if this process dies, the lock
    # stays held until the last orphaned dpkg is gone (and pdeathsig stops debootstrap itself),
    # so the next run never cleans up under a still running build.
    r = _run_bounded(['setpriv', '--pdeathsig', 'KILL', '--',
                      'unshare', '-m', '--propagation', 'private', '--', *argv], BUILD_TIMEOUT,
                     what='debootstrap', pass_fds=(lock_fd,))
    if r.rc != 0:
        dlog = ''
        try:
            dlog = open(os.path.join(tree, 'debootstrap', 'debootstrap.log'),
                        errors='replace').read()
        except OSError:
            pass
        raise Error(f'debootstrap failed (rc {r.rc}) with mirror {mirror}\n'
                    f'{_tail(r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace"))}'
                    f'\n--- debootstrap.log ---\n{_tail(dlog)}')
    secs = time.monotonic() - t0
    _postprocess_rootfs(tree)
    log(f'rootfs built in {secs:.1f} s')
    return {'suite': SUITE, 'variant': VARIANT, 'packages': packages,
            'format': ROOTFS_FORMAT, 'mirror': mirror, 'build_seconds': round(secs, 2),
            'built_at': time.strftime('%Y-%m-%dT%H:%M:%S%z')}


def _postprocess_rootfs(tree):
    """Make the image quiet and quick to boot; everything here is part of ROOTFS_FORMAT."""
    for deb in glob.glob(os.path.join(tree, 'var/cache/apt/archives/*.deb')):
        os.unlink(deb)
    with open(os.path.join(tree, 'etc/hostname'), 'w') as f:
        f.write('fdistd-test\n')
    etc_sd = os.path.join(tree, 'etc/systemd')
    # No timers firing in the middle of a test, no login prompt on the console.
    for unit in ('apt-daily.timer', 'apt-daily-upgrade.timer', 'dpkg-db-backup.timer',
                 'e2scrub_all.timer', 'fstrim.timer', 'systemd-tmpfiles-clean.timer',
                 'console-getty.service', 'getty@tty1.service', 'e2scrub_reap.service',
                 'systemd-pstore.service'):
        link = os.path.join(etc_sd, 'system', unit)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink('/dev/null', link)
    for d in ('getty.target.wants', 'timers.target.wants', 'multi-user.target.wants',
              'sysinit.target.wants'):
        for link in glob.glob(os.path.join(etc_sd, 'system', d, '*')):
            if os.path.basename(link) in ('getty@tty1.service', 'apt-daily.timer',
                                          'apt-daily-upgrade.timer', 'dpkg-db-backup.timer',
                                          'e2scrub_all.timer', 'fstrim.timer',
                                          'e2scrub_reap.service', 'systemd-pstore.service'):
                os.unlink(link)
    os.makedirs(os.path.join(etc_sd, 'journald.conf.d'), exist_ok=True)
    with open(os.path.join(etc_sd, 'journald.conf.d/fdistd-tests.conf'), 'w') as f:
        # Volatile: faster boot (no flush to /var), nothing persists anyway.
        # No rate limiting: tests assert on log lines.
        f.write('[Journal]\nStorage=volatile\nRateLimitBurst=0\nRateLimitIntervalSec=0\n')
    os.makedirs(os.path.join(etc_sd, 'system.conf.d'), exist_ok=True)
    with open(os.path.join(etc_sd, 'system.conf.d/fdistd-tests.conf'), 'w') as f:
        # Keeps a clean poweroff bounded even if a unit under test hangs on stop
        # (units may still set their own TimeoutStopSec=).
        f.write('[Manager]\nDefaultTimeoutStopSec=15s\nDefaultTimeoutStartSec=30s\n')


# ----------------------------------------------------------------------------------------------
# writing files into an image (upper dir) with the image's symlinks followed

class _Layers:
    """Read the merged view of upper-over-lower, write into upper."""

    def __init__(self, upper, lower):
        self.upper, self.lower = upper, lower

    def _lstat(self, rel):
        for base in (self.upper, self.lower):
            try:
                return base, os.lstat(os.path.join(base, rel))
            except FileNotFoundError:
                continue
            except NotADirectoryError:
                return None, None
        return None, None

    def resolve_dir(self, path):
        """Canonical (symlink-free, relative) form of container directory `path`."""
        todo = [p for p in path.split('/') if p]
        done = []
        hops = 0
        while todo:
            comp = todo.pop(0)
            if comp == '.':
                continue
            if comp == '..':
                if done:
                    done.pop()
                continue
            rel = '/'.join(done + [comp])
            base, st = self._lstat(rel)
            if st is not None and stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > 40:
                    raise Error(f'too many symlinks resolving {path} in the image')
                target = os.readlink(os.path.join(base, rel))
                if target.startswith('/'):
                    done = []
                todo = [p for p in target.split('/') if p] + todo
                continue
            if st is not None and not stat.S_ISDIR(st.st_mode):
                raise Error(f'{path}: /{rel} is not a directory in the image')
            done.append(comp)
        return '/'.join(done)

    def make_dirs(self, rel, template_st=None):
        """Create canonical dir `rel` in upper, copying owner/mode of the lower dir if any."""
        parts = [p for p in rel.split('/') if p]
        for i in range(1, len(parts) + 1):
            sub = '/'.join(parts[:i])
            up = os.path.join(self.upper, sub)
            if os.path.isdir(up) and not os.path.islink(up):
                continue
            try:
                st = os.stat(os.path.join(self.lower, sub))
            except OSError:
                st = None
            if st is None or not stat.S_ISDIR(st.st_mode):
                st = template_st if (template_st is not None and i == len(parts)) else None
            os.mkdir(up)
            if st is not None and st is not template_st:
                os.chmod(up, stat.S_IMODE(st.st_mode))
                os.chown(up, st.st_uid, st.st_gid)
            elif st is not None:            # new dir from install_tree: its mode, root-owned
                os.chmod(up, stat.S_IMODE(st.st_mode))
                os.chown(up, 0, 0)
            else:
                os.chmod(up, 0o755)

    def target_for(self, path):
        """Upper-dir host path to write container file `path` to (parents created)."""
        parent, name = os.path.split('/' + path.lstrip('/'))
        if not name:
            raise Error(f'bad container path {path!r}')
        rel = self.resolve_dir(parent)
        self.make_dirs(rel)
        dst = os.path.join(self.upper, rel, name)
        if os.path.lexists(dst) and not os.path.isdir(dst):
            os.unlink(dst)
        return dst

    def write(self, path, data, mode=0o644):
        if isinstance(data, str):
            data = data.encode()
        dst = self.target_for(path)
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.chmod(dst, mode)
        os.chown(dst, 0, 0)

    def install_tree(self, src_root):
        """Copy a DESTDIR tree over the image; everything becomes root-owned."""
        src_root = os.path.abspath(src_root)
        if not os.path.isdir(src_root):
            raise Error(f'install_tree {src_root} is not a directory')
        for dirpath, dirnames, filenames in os.walk(src_root):
            rel_dir = os.path.relpath(dirpath, src_root)
            rel_dir = '' if rel_dir == '.' else rel_dir
            for name in sorted(dirnames):
                src = os.path.join(dirpath, name)
                if os.path.islink(src):            # os.walk lists dir symlinks as dirs
                    filenames.append(name)
                    continue
                canon = self.resolve_dir('/'.join(filter(None, [rel_dir, name])))
                self.make_dirs(canon, template_st=os.stat(src))
            dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
            for name in filenames:
                src = os.path.join(dirpath, name)
                cpath = '/' + '/'.join(filter(None, [rel_dir, name]))
                dst = self.target_for(cpath)
                st = os.lstat(src)
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(src), dst)
                    os.lchown(dst, 0, 0)
                elif stat.S_ISREG(st.st_mode):
                    shutil.copyfile(src, dst)
                    os.chmod(dst, stat.S_IMODE(st.st_mode))
                    os.chown(dst, 0, 0)
                    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
                else:
                    raise Error(f'install_tree: unsupported file type: {src}')


# ----------------------------------------------------------------------------------------------
# containers

def _run_root():
    return os.path.join(CACHE_DIR, 'run')


def sweep_stale(log=_log_default):
    """Clean up after dead runs: per-boot dirs and cgroups whose owner process is gone
    (an orphaned container of such a run is terminated first)."""
    root = _run_root()
    if not os.path.isdir(root):
        return
    for d in os.listdir(root):
        path = os.path.join(root, d)
        try:
            owner = json.load(open(os.path.join(path, 'owner.json')))
        except (OSError, ValueError):
            # No owner file: either being created right now or garbage; only old ones go.
            try:
                if time.time() - os.lstat(path).st_mtime < 3600:
                    continue
            except OSError:
                continue
            owner = {}
        def alive(key):
            pid, start = owner.get(key), owner.get(key + '_start')
            return bool(pid) and start is not None and _proc_starttime(pid) == start
        if alive('pid') or os.environ.get('FDISTD_NSPAWN_KEEP') == '1':
            continue
        if alive('nspawn_pid'):
            # The run that started it died, e.g. during early boot when nspawn's pdeathsig
            # SIGTERM can be lost: nspawn's second SIGTERM terminates the container at once.
            pid = owner['nspawn_pid']
            log(f'stopping orphaned container of a dead run: nspawn pid {pid}')
            for _ in range(2):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    break
                for _ in range(50):
                    if _proc_starttime(pid) != owner['nspawn_pid_start']:
                        break
                    time.sleep(0.1)
            if alive('nspawn_pid'):
                log(f'orphaned nspawn pid {pid} did not exit; leaving {path}')
                continue
        # Anything still in its own cgroups is an orphaned container process.
        for cg in owner.get('cgroups', []):
            for dirpath, _, _ in os.walk(cg):
                try:
                    with open(os.path.join(dirpath, 'cgroup.kill'), 'w') as f:
                        f.write('1')
                except OSError:
                    pass
                try:
                    for p in open(os.path.join(dirpath, 'cgroup.procs')).read().split():
                        if int(p) > 0:
                            os.kill(int(p), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
        try:
            for cg in owner.get('cgroups', []):
                _rmdir_cgroup(cg, timeout=3)
            _safe_rmtree(path)
            log(f'removed stale container dir {path}')
        except Exception as e:
            log(f'could not remove stale {path}: {e}')


_WRAPPER = r'''
set -e
dir=$1; lower=$2; mode=$3; ncg=$4; shift 4
# Own cgroups (one per hierarchy systemd uses): with --keep-unit nspawn puts the container in
# <current cgroup>/payload, so without this, concurrent containers would share one cgroup tree.
while [ "$ncg" -gt 0 ]; do echo $$ > "$1/cgroup.procs"; shift; ncg=$((ncg - 1)); done
if [ "$mode" = overlay ]; then
    mount -t overlay overlay -o "lowerdir=$lower,upperdir=$dir/upper,workdir=$dir/work" "$dir/root"
fi
# nspawn keeps per-machine state here; a tmpfs in our private namespace leaves nothing behind.
mkdir -p /run/systemd/nspawn
mount -t tmpfs -o mode=0755 tmpfs /run/systemd/nspawn
exec "$@"
'''


def _own_cgroup_dirs():
    # The hierarchies systemd cares about: cgroup2 and the v1 name=systemd one (hybrid hosts).
    own = {}
    try:
        for line in open('/proc/self/cgroup'):
            hid, ctrl, path = line.rstrip('\n').split(':', 2)
            own['unified' if hid == '0' else ctrl] = path
    except OSError:
        return []
    found = []
    try:
        mountinfo = open('/proc/self/mountinfo').read().splitlines()
    except OSError:
        return []
    for line in mountinfo:
        pre, post = line.split(' - ', 1)
        pre, post = pre.split(), post.split()
        root, mp, fstype, opts = pre[3], pre[4], post[0], post[2].split(',')
        key = 'unified' if fstype == 'cgroup2' else (
            'name=systemd' if fstype == 'cgroup' and 'name=systemd' in opts else None)
        if key is None or key not in own:
            continue
        path = own[key]
        if root != '/' and not (path + '/').startswith(root.rstrip('/') + '/'):
            continue
        rel = path[len(root.rstrip('/')):] if root != '/' else path
        found.append(os.path.join(mp, rel.lstrip('/')))
    return found


def _rmdir_cgroup(path, timeout=3.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            for dirpath, dirnames, _ in os.walk(path, topdown=False):
                os.rmdir(dirpath)
            return
        except FileNotFoundError:
            if not os.path.exists(path):
                return
        except OSError as e:
            if time.monotonic() > deadline:
                raise Error(f'cannot remove cgroup {path}: {e}') from None
        time.sleep(0.05)


class Container:
    """A booted container; use as a context manager (or call start()/stop())."""

    def __init__(self, install_tree=None, files=None, *, name=None, boot_timeout=None,
                 stop_timeout=30, allow_degraded=True, nspawn_args=(), method=None,
                 extra_packages=(), log=_log_default, keep=None):
        """
        install_tree: a `meson install --destdir` output, copied over / before boot.
        files: {container_path: bytes | str | (bytes|str, mode)} written before boot
               (after install_tree); default mode 0644, root-owned.
        boot_timeout: seconds until `systemctl is-system-running --wait` must answer.
        allow_degraded: if False a 'degraded' boot is an error (failed_units lists them).
        nspawn_args: extra systemd-nspawn options (e.g. ['--bind-ro=/host/dir:/x']).
        method: 'overlay' (default if available) or 'copy'.
        extra_packages: Debian packages on top of PACKAGES, e.g. SANITIZER_PACKAGES (their
               own cached image, built on first use).
        keep: keep the per-boot dir after stop (default: $FDISTD_NSPAWN_KEEP == '1').
        """
        self.install_tree = install_tree
        self.files = dict(files or {})
        self.name = name or f'fdistd-t-{secrets.token_hex(4)}'
        if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,62}', self.name):
            raise Error(f'bad machine name {self.name!r}')
        self.boot_timeout = float(boot_timeout or os.environ.get('FDISTD_NSPAWN_BOOT_TIMEOUT', 90))
        self.stop_timeout = stop_timeout
        self.allow_degraded = allow_degraded
        self.nspawn_args = list(nspawn_args)
        self.extra_packages = tuple(extra_packages)
        self.method = method or os.environ.get('FDISTD_NSPAWN_COPY') or None
        self.log = log or (lambda m: None)
        self.keep = (os.environ.get('FDISTD_NSPAWN_KEEP') == '1') if keep is None else keep
        self.dir = None
        self.proc = None
        self.leader = None
        self.state = None
        self.failed_units = []
        self.rootfs_info = None
        self.timings = {}
        self.nspawn_rc = None
        self._console = None
        self._console_text = ''
        self.cgroups = []

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        t_all = time.monotonic()
        try:
            require(self.log)
            t0 = time.monotonic()
            lower, self.rootfs_info = ensure_rootfs(self.log, self.extra_packages)
            self.timings['rootfs'] = time.monotonic() - t0
            t0 = time.monotonic()
            self._prepare(lower)
            self.timings['prepare'] = time.monotonic() - t0
            t0 = time.monotonic()
            self._spawn(lower)
            self._wait_booted()
            self.timings['boot'] = time.monotonic() - t0
            self.timings['start_total'] = time.monotonic() - t_all
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare(self, lower):
        if self.method is None:
            self.method = 'overlay' if _have_overlayfs() else 'copy'
        if self.method not in ('overlay', 'copy'):
            raise Error(f'unknown method {self.method!r}')
        sweep_stale(self.log)
        os.makedirs(_run_root(), exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=self.name + '.', dir=_run_root())
        self._write_owner()
        root = os.path.join(self.dir, 'root')
        if self.method == 'overlay':
            for d in ('upper', 'work', 'root'):
                os.mkdir(os.path.join(self.dir, d))
            # the overlay root dir takes the upper dir's metadata
            st = os.stat(lower)
            os.chmod(os.path.join(self.dir, 'upper'), stat.S_IMODE(st.st_mode))
            layers = _Layers(os.path.join(self.dir, 'upper'), lower)
        else:
            r = _run_bounded(['cp', '-a', '--reflink=auto', lower, root], 300, what='cp -a rootfs')
            if r.rc != 0:
                raise Error(f'copying the rootfs failed: {r.stderr.decode(errors="replace")}')
            layers = _Layers(root, root)
        try:
            if self.install_tree:
                layers.install_tree(self.install_tree)
            for path, data in self.files.items():
                mode = 0o644
                if isinstance(data, tuple):
                    data, mode = data
                layers.write(path, data, mode)
        except OSError as e:
            raise Error(f'installing files into the container image failed: {e}') from e

    def _write_owner(self, **extra):
        me = os.getpid()
        owner = {'pid': me, 'pid_start': _proc_starttime(me), **extra}
        tmp = os.path.join(self.dir, 'owner.json.tmp')
        with open(tmp, 'w') as f:
            json.dump(owner, f)
        os.rename(tmp, os.path.join(self.dir, 'owner.json'))

    def _spawn(self, lower):
        root = os.path.join(self.dir, 'root')
        nspawn = ['systemd-nspawn', '--register=no', '--keep-unit', '--console=read-only',
                  '--link-journal=no', f'--machine={self.name}', '-D', root,
                  *self.nspawn_args, '-b']
        self.cgroups = []
        for parent in _own_cgroup_dirs():
            cg = os.path.join(parent, f'fdistd-nspawn-{self.name}')
            try:
                os.mkdir(cg)
            except OSError as e:
                self.log(f'cannot create cgroup {cg} ({e}); concurrent containers may share '
                         'cgroups')
                continue
            self.cgroups.append(cg)
        self._write_owner(cgroups=self.cgroups)
        argv = ['setpriv', '--pdeathsig', 'TERM', '--',
                'unshare', '-m', '--propagation', 'private', '--',
                'sh', '-c', _WRAPPER, 'nspawn-wrapper', self.dir, lower, self.method,
                str(len(self.cgroups)), *self.cgroups, *nspawn]
        self._console = open(os.path.join(self.dir, 'console.log'), 'wb')
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._console,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     close_fds=True)
        self._write_owner(cgroups=self.cgroups, nspawn_pid=self.proc.pid,
                          nspawn_pid_start=_proc_starttime(self.proc.pid))

    def console_log(self):
        """Everything nspawn and the container's console printed so far."""
        if not self.dir:
            return self._console_text
        try:
            with open(os.path.join(self.dir, 'console.log'), 'rb') as f:
                return f.read().decode(errors='replace').replace('\r\n', '\n')
        except OSError:
            return ''

    def _fail(self, step, detail=''):
        msg = f'container {self.name}: {step}'
        if detail:
            msg += f'\n{detail}'
        msg += f'\n--- last lines of the nspawn console ---\n{_tail(_strip_ansi(self.console_log()))}'
        raise Error(msg)

    def _find_leader(self):
        mine = os.readlink('/proc/self/ns/pid')
        children = set()
        try:
            for task in os.listdir(f'/proc/{self.proc.pid}/task'):
                with open(f'/proc/{self.proc.pid}/task/{task}/children') as f:
                    children.update(int(c) for c in f.read().split())
        except FileNotFoundError:       # kernel without CONFIG_PROC_CHILDREN, or nspawn gone
            children = set(_children_by_scan(self.proc.pid))
        except OSError:
            return None
        for c in sorted(children):
            try:
                ns = os.readlink(f'/proc/{c}/ns/pid')
                ok = ns != mine and os.path.exists(f'/proc/{c}/root/run/systemd/private')
            except OSError:
                continue
            if ok:
                return c
        return None

    def _wait_booted(self):
        deadline = time.monotonic() + self.boot_timeout
        # 1. the container's PID 1 (a child of nspawn, in another PID namespace) has its
        #    private manager socket
        while True:
            if self.proc.poll() is not None:
                self._fail(f'systemd-nspawn exited with {self.proc.returncode} during boot')
            self.leader = self._find_leader()
            if self.leader:
                break
            if time.monotonic() > deadline:
                self._fail(f'no systemd manager socket within {self.boot_timeout:g} s')
            time.sleep(0.01)
        self.timings['manager_up'] = time.monotonic() - (deadline - self.boot_timeout)
        # 2. boot finished
        left = max(1.0, deadline - time.monotonic())
        try:
            r = self.run(['systemctl', 'is-system-running', '--wait'], timeout=left)
        except Error as e:
            self._fail('waiting for boot to finish (systemctl is-system-running --wait)',
                       str(e) + '\n' + self._jobs())
        self.state = r.stdout.strip()
        if self.state == 'degraded':
            self.failed_units = self.run(['systemctl', '--failed', '--plain', '--no-legend',
                                          '--full']).stdout.strip().splitlines()
            self.log(f'container {self.name} is degraded; failed units: {self.failed_units}')
            if not self.allow_degraded:
                self._fail('boot finished degraded', '\n'.join(self.failed_units))
        elif self.state != 'running':
            self._fail(f'boot finished in state {self.state!r} (rc {r.rc})', r.stderr)

    def _jobs(self):
        try:
            return 'jobs:\n' + self.run(['systemctl', 'list-jobs', '--no-legend'], timeout=5).stdout
        except Error:
            return ''

    def _wait_proc(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def _cgroup_pids(self):
        pids = set()
        for cg in self.cgroups:
            for dirpath, _, files in os.walk(cg):
                try:
                    pids.update(int(p) for p in open(os.path.join(dirpath, 'cgroup.procs')).read().split())
                except (OSError, ValueError):
                    pass
        pids.discard(0)
        return pids

    def _kill_cgroups(self):
        """SIGKILL everything in this container's own cgroups (nothing else lives there)."""
        for cg in self.cgroups:
            try:
                with open(os.path.join(cg, 'cgroup.kill'), 'w') as f:
                    f.write('1')
            except OSError:
                pass
        for pid in self._cgroup_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self):
        """Power off (bounded), kill if needed, remove the per-boot dir. Idempotent.

        SIGINT/SIGTERM are held back while it runs (delivered right after), so an interrupt
        cannot cut the cleanup short."""
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            self._stop()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def _stop(self):
        t0 = time.monotonic()
        try:
            if self.proc is not None and self.proc.poll() is None:
                # Only nspawn itself: it turns SIGTERM into a clean poweroff of the container.
                # (Early in boot, before systemd installed its handlers, that signal is lost.)
                os.kill(self.proc.pid, signal.SIGTERM)
                if not self._wait_proc(self.stop_timeout if self.state else 3):
                    self.log(f'container {self.name} did not power off; SIGTERM again '
                             '(nspawn: immediate termination)')
                    os.kill(self.proc.pid, signal.SIGTERM)
                    if not self._wait_proc(5):
                        self.log(f'container {self.name} still there; SIGKILL')
                        self._kill_cgroups()
                        if self.leader and _proc_starttime(self.leader):
                            try:
                                os.kill(self.leader, signal.SIGKILL)   # the whole PID namespace
                            except ProcessLookupError:
                                pass
                        _killpg(self.proc.pid, signal.SIGKILL)
                        if not self._wait_proc(15):
                            self.log(f'systemd-nspawn pid {self.proc.pid} survived SIGKILL for 15 s')
            if self.proc is None or self.proc.poll() is not None:
                left = self._cgroup_pids()
                if left:
                    self.log(f'container {self.name}: processes left after nspawn exited: '
                             f'{sorted(left)}; killing them')
                    self._kill_cgroups()
            if self.proc is not None:
                self.nspawn_rc = self.proc.poll()
        finally:
            if self._console:
                self._console.close()
                self._console = None
                self._console_text = self.console_log()
            if self.dir and not self.keep and (self.proc is None or self.proc.poll() is not None):
                try:
                    _safe_rmtree(self.dir)
                except Exception as e:
                    self.log(f'could not remove {self.dir}: {e}')
                self.dir = None if not os.path.exists(self.dir) else self.dir
            elif self.dir and self.keep:
                self.log(f'kept container dir {self.dir}')
            if self.proc is None or self.proc.poll() is not None:
                for cg in self.cgroups:
                    try:
                        _rmdir_cgroup(cg)
                    except Error as e:
                        self.log(str(e))
                self.cgroups = []
            self.leader = None
            self.timings['stop'] = time.monotonic() - t0

    # -- running things ------------------------------------------------------------------------

    def run(self, argv, *, timeout=60, input=None, check=False, env=None, text=True):
        """Run argv inside the container (all namespaces of its PID 1, clean environment).

        Returns Result(rc, stdout, stderr) (str, or bytes if text=False); with check=True a
        non-zero rc raises Error.  On timeout the command is killed and Error raised.
        """
        if not self.leader or self.proc is None:
            raise Error(f'container {self.name} is not running')
        if self.proc.poll() is not None:
            self._fail(f'container is gone (systemd-nspawn exited with {self.proc.returncode}); '
                       f'cannot run {shlex.join(argv) if not isinstance(argv, str) else argv}')
        if isinstance(argv, str):
            raise TypeError('argv must be a list; use ct.sh("...") for a shell command')
        e = dict(CONTAINER_ENV)
        e.update(env or {})
        if isinstance(input, str):
            input = input.encode()
        cmd = ['nsenter', '-t', str(self.leader), '-a', '-r', '-w', '--', *argv]
        r = _run_bounded(cmd, timeout, input=input, env=e, what=f'in container {self.name}')
        res = Result(r.rc, r.stdout.decode(errors='replace') if text else r.stdout,
                     r.stderr.decode(errors='replace') if text else r.stderr)
        if check and res.rc != 0:
            raise Error(f'container {self.name}: {shlex.join(argv)} failed with rc {res.rc}\n'
                        f'stdout: {_tail(str(res.stdout))}\nstderr: {_tail(str(res.stderr))}')
        return res

    def check(self, argv, **kw):
        """run(..., check=True)."""
        return self.run(argv, check=True, **kw)

    def sh(self, script, **kw):
        """Run a /bin/sh script inside the container."""
        return self.run(['sh', '-c', script], **kw)

    def systemctl(self, *args, **kw):
        return self.run(['systemctl', '--no-pager', *args], **kw)

    def is_active(self, unit):
        return self.run(['systemctl', 'is-active', unit]).stdout.strip()

    def show(self, unit, prop):
        """One unit property, e.g. ct.show('fdistd', 'MainPID')."""
        return self.run(['systemctl', 'show', '-P', prop, unit], check=True).stdout.rstrip('\n')

    def journal(self, *args, unit=None, sync=True, timeout=30):
        """journalctl output (str) for this boot.  args are extra journalctl arguments,
        e.g. ct.journal('-o', 'json', 'FDIST_STATUS=acked') or ct.journal(unit='fdistd')."""
        if sync:
            self.run(['journalctl', '--sync'], timeout=timeout)
        argv = ['journalctl', '--no-pager', '-q', '-b']
        if unit:
            argv += ['-u', unit]
        return self.run([*argv, *args], timeout=timeout, check=True).stdout

    def wait_until(self, predicate, timeout, what='condition', interval=0.05):
        """Poll predicate() until truthy (returned) or raise Error after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            v = predicate()
            if v:
                return v
            if time.monotonic() > deadline:
                raise Error(f'container {self.name}: timed out after {timeout} s waiting for {what}')
            time.sleep(interval)

    def wait_journal(self, pattern, *args, unit=None, timeout=10):
        """Wait until a journal line matches regex `pattern`; return the matching line."""
        rx = re.compile(pattern)

        def probe():
            for line in self.journal(*args, unit=unit, sync=True).splitlines():
                if rx.search(line):
                    return line
            return None
        return self.wait_until(probe, timeout, f'journal line /{pattern}/'
                               + (f' of {unit}' if unit else ''), interval=0.1)

    def wait_state(self, unit, state='active', timeout=10):
        return self.wait_until(lambda: self.is_active(unit) == state, timeout,
                               f'{unit} to be {state}')

    def copy_in(self, host_path, container_path, mode=None):
        """Copy a host file or directory into the running container (root-owned).

        The image's directory symlinks (e.g. /lib -> usr/lib) are kept."""
        if os.path.isdir(host_path) and not os.path.islink(host_path):
            import io
            import tarfile
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode='w') as tf:
                tf.add(host_path, arcname='.', filter=_tar_root_owned)
            dest = container_path
            self.check(['mkdir', '-p', dest])
            self.check(['tar', '-x', '-f', '-', '-C', dest, '--keep-directory-symlink',
                        '--no-overwrite-dir', '--no-same-owner'], input=buf.getvalue())
            return
        with open(host_path, 'rb') as f:
            data = f.read()
        if mode is None:
            mode = stat.S_IMODE(os.stat(host_path).st_mode)
        self.write_file(container_path, data, mode)

    def write_file(self, container_path, data, mode=0o644):
        """Write bytes/str to a file in the running container (parents created)."""
        if isinstance(data, str):
            data = data.encode()
        self.check(['sh', '-c', 'set -e; mkdir -p -- "$(dirname -- "$1")"; '
                    'tmp="$1.nspawn-tmp.$$"; cat > "$tmp"; chmod "$2" "$tmp"; mv -f -- "$tmp" "$1"',
                    'write_file', container_path, format(mode, 'o')], input=data)

    def read_file(self, container_path):
        """Bytes of a file in the running container."""
        return self.check(['cat', '--', container_path], text=False).stdout

    def host_path(self, container_path):
        """A host path that reaches container_path (via /proc/<pid1>/root). Beware: absolute
        symlinks inside the container resolve against the host root through this path."""
        return f'/proc/{self.leader}/root/{container_path.lstrip("/")}'


def _children_by_scan(ppid):
    for d in os.listdir('/proc'):
        if d.isdigit():
            try:
                with open(f'/proc/{d}/stat') as f:
                    data = f.read()
            except OSError:
                continue
            if int(data[data.rindex(')') + 2:].split()[1]) == ppid:
                yield int(d)


def _tar_root_owned(ti):
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = 'root'
    return ti


def _strip_ansi(text):
    return re.sub(r'\x1b\[[0-9;]*[A-Za-z]', '', text)


# ----------------------------------------------------------------------------------------------
# selftest

_SELFTEST_SCRIPT = r'''#!/bin/sh
echo "nspawn-selftest: starting as pid $$"
trap 'echo "nspawn-selftest: stopping on SIGTERM token=$TOKEN"; exit 0' TERM
systemd-notify --ready --status="serving token=$TOKEN"
echo "nspawn-selftest: ready token=$TOKEN"
while :; do sleep 1 & wait $!; done
'''

_SELFTEST_UNIT = '''[Unit]
Description=fdistd nspawn harness selftest service

[Service]
Type=notify
NotifyAccess=all
Environment=TOKEN=@TOKEN@
ExecStart=/usr/local/libexec/nspawn-selftest
TimeoutStartSec=10
TimeoutStopSec=10
'''


def _expect(cond, msg):
    if not cond:
        raise Error(f'selftest: {msg}')


def selftest(log=_log_default):
    t_all = time.monotonic()
    require(log)
    t0 = time.monotonic()
    _, info = ensure_rootfs(log)
    t_rootfs = time.monotonic() - t0
    token = secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix='nspawn-selftest-') as dest:
        # A fake `meson install --destdir` tree: the unit goes to lib/systemd/system like
        # Debian's systemd.pc says; lib is a symlink to usr/lib in the image.
        unitdir = os.path.join(dest, 'lib/systemd/system')
        os.makedirs(unitdir)
        with open(os.path.join(unitdir, 'nspawn-selftest.service'), 'w') as f:
            f.write(_SELFTEST_UNIT.replace('@TOKEN@', token))
        with tempfile.NamedTemporaryFile('w', delete=False, dir=dest, suffix='.txt') as f:
            f.write('copied ' + token)
            extra = f.name
        ct = Container(install_tree=dest,
                       files={'/usr/local/libexec/nspawn-selftest': (_SELFTEST_SCRIPT, 0o755)},
                       log=log)
        with ct:
            log(f'booted {ct.name} [{ct.method}] state={ct.state} in {ct.timings["boot"]:.2f} s '
                f'(manager socket after {ct.timings["manager_up"]:.2f} s, '
                f'prepare {ct.timings["prepare"]:.3f} s)')
            _expect(ct.run(['readlink', '/proc/1/exe']).stdout.strip().endswith('systemd'),
                    'PID 1 is not systemd')
            _expect(os.readlink(f'/proc/{ct.leader}/ns/net') == os.readlink('/proc/self/ns/net'),
                    'container does not share the host network namespace')
            _expect(ct.run(['test', '-L', '/lib']).rc == 0, '/lib symlink of the image was broken')
            ct.check(['systemctl', 'start', 'nspawn-selftest.service'], timeout=20)
            state = ct.is_active('nspawn-selftest.service')
            _expect(state == 'active', f'service state {state!r}')
            status = ct.show('nspawn-selftest.service', 'StatusText')
            _expect(status == f'serving token={token}', f'StatusText {status!r}')
            line = ct.wait_journal(f'nspawn-selftest: ready token={token}',
                                   unit='nspawn-selftest.service', timeout=10)
            log(f'journal: {line.strip()}')
            ct.copy_in(extra, '/var/lib/selftest/extra.txt')
            got = ct.read_file('/var/lib/selftest/extra.txt').decode()
            _expect(got == 'copied ' + token, f'copy_in/read_file gave {got!r}')
            ct.check(['systemctl', 'stop', 'nspawn-selftest.service'], timeout=20)
            state = ct.is_active('nspawn-selftest.service')
            _expect(state == 'inactive', f'after stop: state {state!r}')
            ct.wait_journal(f'stopping on SIGTERM token={token}',
                            unit='nspawn-selftest.service', timeout=10)
            leftover, cgroups = ct.dir, list(ct.cgroups)
        _expect(ct.nspawn_rc == 0, f'nspawn exited with {ct.nspawn_rc}')
        _expect('has been shut down' in ct.console_log(), 'no clean shutdown on the console')
        _expect(leftover is None or not os.path.exists(leftover), f'{leftover} not removed')
        _expect(not ct.cgroups and not any(os.path.exists(c) for c in cgroups),
                f'cgroups {cgroups} not removed')
        lower = os.path.join(rootfs_dir(), 'tree')
        _expect(not os.path.lexists(os.path.join(lower, 'usr/local/libexec/nspawn-selftest'))
                and not os.path.lexists(os.path.join(lower, 'usr/lib/systemd/system/'
                                                            'nspawn-selftest.service')),
                f'the cached image {lower} was modified')
    total = time.monotonic() - t_all
    cold = (f'{info["build_seconds"]:.1f} s (built now)' if info['built_now']
            else f'cached; it took {info["build_seconds"]:.1f} s when built')
    print(f'selftest OK\n'
          f'  rootfs:          {rootfs_dir()}/tree  ({cold}; lookup {t_rootfs:.2f} s)\n'
          f'  copy method:     {ct.method}\n'
          f'  prepare copy:    {ct.timings["prepare"]:.3f} s\n'
          f'  boot to {ct.state}: {ct.timings["boot"]:.2f} s\n'
          f'  poweroff+clean:  {ct.timings["stop"]:.2f} s\n'
          f'  total:           {total:.2f} s')
    return 0


def main(argv):
    import argparse
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='cmd', required=True)
    sub.add_parser('selftest', help='boot a container and exercise a Type=notify service')
    b = sub.add_parser('build', help='build the cached rootfs if needed; print its path')
    b.add_argument('--extra', action='append', default=[], help='extra package (repeatable)')
    b.add_argument('--sanitizers', action='store_true', help='add SANITIZER_PACKAGES')
    pa = sub.add_parser('path', help='print the cache path of the rootfs (no build)')
    pa.add_argument('--extra', action='append', default=[])
    pa.add_argument('--sanitizers', action='store_true')
    sub.add_parser('sweep', help='remove leftover per-boot dirs of dead runs')
    sh = sub.add_parser('shell', help='boot a container and run a command in it (debugging)')
    sh.add_argument('--install-tree')
    sh.add_argument('--extra', action='append', default=[])
    sh.add_argument('--sanitizers', action='store_true')
    sh.add_argument('command', nargs='*', default=['systemctl', 'status', '--no-pager'])
    a = p.parse_args(argv)

    handle_sigterm()
    extra = tuple(getattr(a, 'extra', [])) + (SANITIZER_PACKAGES if getattr(a, 'sanitizers', False)
                                              else ())
    try:
        if a.cmd == 'selftest':
            return selftest()
        if a.cmd == 'path':
            print(os.path.join(rootfs_dir(extra), 'tree'))
            return 0
        if a.cmd == 'sweep':
            sweep_stale()
            return 0
        require()
        if a.cmd == 'build':
            tree, info = ensure_rootfs(extra_packages=extra)
            print(tree)
            return 0
        if a.cmd == 'shell':
            with Container(install_tree=a.install_tree, extra_packages=extra) as ct:
                r = ct.run(a.command, timeout=300)
                sys.stdout.write(r.stdout)
                sys.stderr.write(r.stderr)
                return r.rc
    except Skip as e:
        print(f'SKIP: {e}')
        return SKIP_EXIT
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    except Error as e:
        print(f'FAIL: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
