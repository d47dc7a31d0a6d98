/*
 * fdist-fetch network side: parse HOST:PORT, resolve, connect, and move
 * bytes with a bound on the time without progress.
 */
#include <sys/socket.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "fetch.h"
#include "parse.h"

/* Connection failures listed when every address fails. */
#define FETCH_NET_REPORT	8

static int	fetch_net_wait(int, short, int);
static int	fetch_net_connect_one(const struct addrinfo *, int);

/*
 * Resolve "HOST:PORT" or "[ADDR]:PORT" to every address; the caller tries
 * them in order.  A bracketed host is an address, never sent to a resolver.
 * Returns FETCH_OK, FETCH_EUSAGE for a malformed target or FETCH_ECONNECT.
 */
int
fetch_net_resolve(const char *target, struct addrinfo **res)
{
	struct addrinfo	hints;
	char		host[256], port[8];
	uint16_t	portnum;
	bool		bracketed;
	int		error;

	switch (parse_host_port(target, host, sizeof(host), &portnum,
	    &bracketed)) {
	case 0:
		break;
	case PARSE_HP_BARE_V6:
		fetch_warnx("%s: write IPv6 addresses as [ADDR]:PORT", target);
		return (FETCH_EUSAGE);
	case PARSE_HP_PORT:
		fetch_warnx("%s: port must be a number from 1 to 65535",
		    target);
		return (FETCH_EUSAGE);
	case PARSE_HP_LONG:
		fetch_warnx("%.40s...: host name too long", target);
		return (FETCH_EUSAGE);
	default:
		fetch_warnx("%s: expected HOST:PORT or [ADDR]:PORT", target);
		return (FETCH_EUSAGE);
	}
	snprintf(port, sizeof(port), "%u", portnum);

	/*
	 * No AI_ADDRCONFIG: glibc ignores loopback addresses when deciding
	 * whether IPv6 is configured, which would make [::1] unreachable
	 * on hosts whose only IPv6 address is ::1.
	 */
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = bracketed ? AF_INET6 : AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = AI_NUMERICSERV | (bracketed ? AI_NUMERICHOST : 0);

	error = getaddrinfo(host, port, &hints, res);
	if (error != 0 && bracketed) {
		fetch_warnx("%s: '%s' is not a numeric IPv6 address", target,
		    host);
		return (FETCH_EUSAGE);
	}
	if (error == EAI_SYSTEM) {
		fetch_warn("%s", host);
		return (FETCH_ECONNECT);
	}
	if (error != 0) {
		fetch_warnx("%s: %s", host, gai_strerror(error));
		return (FETCH_ECONNECT);
	}
	return (FETCH_OK);
}

/*
 * Wait until fd is ready for events or timeout_ms passes (-1: forever).
 * Returns 0 when ready, -1 with errno ETIMEDOUT or the poll error.
 */
static int
fetch_net_wait(int fd, short events, int timeout_ms)
{
	struct pollfd	pfd;
	int		n;

	pfd.fd = fd;
	pfd.events = events;
	for (;;) {
		n = poll(&pfd, 1, timeout_ms);
		if (n > 0)
			return (0);
		if (n == 0) {
			errno = ETIMEDOUT;
			return (-1);
		}
		if (errno != EINTR)
			return (-1);
	}
}

/*
 * Connect to one address within timeout_ms; the socket stays nonblocking.
 * Returns the socket, or -1 with errno set.
 */
static int
fetch_net_connect_one(const struct addrinfo *ai, int timeout_ms)
{
	socklen_t	len;
	int		fd, error;

	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, ai->ai_protocol);
	if (fd == -1)
		return (-1);
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return (fd);
	if (errno != EINPROGRESS)
		goto fail;
	if (fetch_net_wait(fd, POLLOUT, timeout_ms) == -1)
		goto fail;
	len = sizeof(error);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == -1)
		goto fail;
	if (error != 0) {
		errno = error;
		goto fail;
	}
	return (fd);

fail:
	error = errno;
	close(fd);
	errno = error;
	return (-1);
}

/*
 * Try each resolved address in turn, each with the full timeout, and
 * return an exit code. Failures are reported only when no address works:
 * "localhost" commonly has an address nothing listens on, and that is no
 * news when another one works. A reset means a server accepted and then
 * refused us, which is its answer: no other address is tried.
 */
int
fetch_net_connect(struct addrinfo *res, int timeout_ms, int *fdp)
{
	struct {
		const struct addrinfo	*ai;
		int			 error;
	}			 failed[FETCH_NET_REPORT];
	struct addrinfo		*ai;
	char			 addr[ADDR_STR_MAX];
	size_t			 i, n = 0, more = 0;

	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if ((*fdp = fetch_net_connect_one(ai, timeout_ms)) != -1)
			return (FETCH_OK);
		if (errno == ECONNRESET) {
			addr_format(ai->ai_addr, addr, sizeof(addr));
			fetch_warnx("%s: refused by the server (connection "
			    "reset before any data)", addr);
			return (FETCH_ERESET);
		}
		if (n < FETCH_NET_REPORT) {
			failed[n].ai = ai;
			failed[n++].error = errno;
		} else
			more++;
	}
	for (i = 0; i < n; i++) {
		addr_format(failed[i].ai->ai_addr, addr, sizeof(addr));
		errno = failed[i].error;
		fetch_warn("connect to %s", addr);
	}
	if (more > 0)
		fetch_warnx("and %zu more addresses failed", more);
	return (FETCH_ECONNECT);
}

/*
 * Read what is available, waiting at most timeout_ms for the first byte.
 * Reading before polling keeps the fast path at one system call per buffer.
 */
ssize_t
fetch_net_read(int fd, void *buf, size_t len, int timeout_ms)
{
	ssize_t	n;

	for (;;) {
		n = read(fd, buf, len);
		if (n >= 0)
			return (n);
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return (-1);
		if (fetch_net_wait(fd, POLLIN, timeout_ms) == -1)
			return (-1);
	}
}

/*
 * Write all of buf to a socket or a file; the timeout (-1: none) applies to
 * each wait for buffer space. SIGPIPE is ignored, so a closed peer is EPIPE.
 */
int
fetch_net_write_all(int fd, const void *buf, size_t len, int timeout_ms)
{
	const char	*p = buf;
	ssize_t		 n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n >= 0) {
			p += n;
			len -= n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return (-1);
		if (fetch_net_wait(fd, POLLOUT, timeout_ms) == -1)
			return (-1);
	}
	return (0);
}

/*
 * After the ack: shut down our side and wait until the server's kernel has
 * acknowledged the ack and our FIN, so a server that reset instead of taking
 * the ack is reported. The server's FIN was already read, so nothing can be
 * left unread that would make close() send an RST; the socket never
 * signals the peer's final close, so the TCP state is polled instead.
 */
int
fetch_net_finish(int fd, int timeout_ms)
{
	struct tcp_info	ti;
	socklen_t	len;
	int64_t		deadline;
	int		error, pause = 1;

	if (shutdown(fd, SHUT_WR) == -1) {
		/* Only a reset can have disconnected us by now. */
		if (errno == ENOTCONN)
			errno = ECONNRESET;
		return (-1);
	}
	deadline = fetch_now() + timeout_ms;
	for (;;) {
		len = sizeof(ti);
		if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == -1)
			return (-1);
		if (ti.tcpi_state == TCP_CLOSE)
			break;
		if (fetch_now() >= deadline) {
			errno = ETIMEDOUT;
			return (-1);
		}
		poll(NULL, 0, pause);
		if (pause < 64)
			pause *= 2;
	}
	len = sizeof(error);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == -1)
		return (-1);
	if (error != 0) {
		errno = error;
		return (-1);
	}
	return (0);
}
