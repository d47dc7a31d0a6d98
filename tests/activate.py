#!/usr/bin/env python3
"""Socket activation the way systemd does it, for tests.

usage: activate.py [--udp NAME] [dual:]ADDR=NAME... -- PROGRAM ARGS...

Binds and listens on each ADDR (host:port or [v6]:port), puts the sockets
at descriptors 3, 4, ... without close-on-exec, sets LISTEN_FDS,
LISTEN_FDNAMES and LISTEN_PID (this process's pid, which exec keeps) and
executes PROGRAM.  --udp adds a datagram socket (which is not a valid
listener) named NAME; dual:[::]:PORT makes an IPv6 socket that also
accepts IPv4 (its peers appear as IPv4-mapped IPv6 addresses).
"""
import fcntl
import os
import socket
import sys


def parse(addr):
    host, _, port = addr.rpartition(":")
    if host.startswith("["):
        return socket.AF_INET6, host[1:-1], int(port)
    return socket.AF_INET, host, int(port)


def main(argv):
    split = argv.index("--")
    opts, prog = argv[1:split], argv[split + 1:]
    socks, names = [], []
    i = 0
    while i < len(opts):
        if opts[i] == "--udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            names.append(opts[i + 1])
            i += 2
            continue
        addr, _, name = opts[i].partition("=")
        dual = addr.startswith("dual:")     # [::] taking IPv4 too (mapped)
        family, host, port = parse(addr[5:] if dual else addr)
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual else 1)
        s.bind((host, port))
        s.listen(128)
        socks.append(s)
        names.append(name)
        i += 1
    fds = [s.detach() for s in socks]
    # move them to 3.. by way of high numbers, so that no dup2 is a no-op
    # (which would keep close-on-exec) or clobbers another
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in fds]
    for fd in fds:
        os.close(fd)
    for n, fd in enumerate(high):
        os.dup2(fd, 3 + n, inheritable=True)
        os.set_inheritable(3 + n, True)
        os.close(fd)
    os.environ["LISTEN_FDS"] = str(len(high))
    os.environ["LISTEN_FDNAMES"] = ":".join(names)
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.execv(prog[0], prog)


if __name__ == "__main__":
    main(sys.argv)
