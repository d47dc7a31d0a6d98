/*
 * conn_proxy.c: a connection to a share with proxy_protocol = yes, from
 * an address in proxy_from, before it becomes a client: the daemon
 * sends nothing until it has read the PROXY header, within
 * proxy_timeout, and then admits the client the header names, as
 * server_admit() does any other.
 *
 * No byte past the header may be read: the balancer forwards the
 * client's own bytes after it, and those are the client's ack, which
 * conn_ack.c reads.  So each look is a MSG_PEEK, and only what the parser
 * says is header is taken off the socket: all of it while the header is
 * incomplete (that is what keeps a level-triggered read event from
 * firing again on the same bytes), exactly its length once it is.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event_struct.h>

#include "fdistd.h"

struct proxy_wait {
	TAILQ_ENTRY(proxy_wait)	 pw_entry;
	int			 pw_fd;
	struct share		*pw_share;	/* its settings, even reloaded */
	struct sockaddr_storage	 pw_balancer;
	socklen_t		 pw_len;
	struct event		 pw_rev;
	struct event		 pw_tev;	/* proxy_timeout */
	size_t			 pw_have;	/* header bytes taken */
	unsigned char		 pw_buf[PROXY_HEADER_MAX];
};

static TAILQ_HEAD(, proxy_wait)	waits = TAILQ_HEAD_INITIALIZER(waits);
static size_t			nwaits;

/* Take pw out of the count before its descriptor goes elsewhere. */
static void
conn_proxy_detach(struct proxy_wait *pw)
{
	event_del(&pw->pw_rev);
	event_del(&pw->pw_tev);
	TAILQ_REMOVE(&waits, pw, pw_entry);
	nwaits--;
}

static void
conn_proxy_free(struct proxy_wait *pw)
{
	share_unref(pw->pw_share);
	free(pw);
	server_conn_released();
}

/* The one way out without a client: a record, a reset, and gone. */
static void
conn_proxy_fail(struct proxy_wait *pw, enum proxy_refusal why)
{
	conn_proxy_detach(pw);
	server_refuse_proxy(pw->pw_fd, (struct sockaddr *)&pw->pw_balancer,
	    pw->pw_share, why);
	conn_proxy_free(pw);
}

/*
 * A balancer's own connection -- a LOCAL header, or one that names the
 * connection itself, as HAProxy's version 1 checks do -- is its health
 * check: one already closed (or reset) gets a probe record, not a
 * transfer cut short.  (One that closes later is a probe too: see
 * conn_finish().)
 */
static bool
conn_proxy_closed(int fd)
{
	unsigned char	b;
	ssize_t		n;

	n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	return (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR));
}

/*
 * Does the header name the connection itself?  A dual-stack socket shows
 * an IPv4 balancer as IPv4-mapped IPv6, its header as plain IPv4.
 */
static bool
conn_proxy_names_itself(const struct sockaddr *src,
    const struct sockaddr *conn)
{
	const struct sockaddr_in	*a = (const struct sockaddr_in *)src;
	const struct sockaddr_in6	*b = (const struct sockaddr_in6 *)conn;

	if (src->sa_family == AF_INET && conn->sa_family == AF_INET6 &&
	    IN6_IS_ADDR_V4MAPPED(&b->sin6_addr))
		return (a->sin_port == b->sin6_port &&
		    memcmp(&a->sin_addr, &b->sin6_addr.s6_addr[12], 4) == 0);
	return (addr_equal(src, conn));
}

/* The whole header is in pw_buf: admit the client it names. */
static void
conn_proxy_done(struct proxy_wait *pw, const struct proxy_header *ph)
{
	const struct sockaddr	*peer = (const struct sockaddr *)&ph->ph_src;
	socklen_t		 len = ph->ph_srclen;
	int			 lowat;

	/* LOCAL, UNKNOWN or no TCP address: the connection's own. */
	if (ph->ph_local || conn_proxy_names_itself(peer,
	    (struct sockaddr *)&pw->pw_balancer)) {
		if (conn_proxy_closed(pw->pw_fd)) {
			conn_proxy_fail(pw, PROXY_REFUSED_LOCAL_PROBE);
			return;
		}
		peer = (struct sockaddr *)&pw->pw_balancer;
		len = pw->pw_len;
	}
	/* As the listener set it for the ack; conn_proxy_new() lowered it. */
	lowat = (int)pw->pw_share->sh_limits.lim_ack_max;
	if (setsockopt(pw->pw_fd, SOL_SOCKET, SO_RCVLOWAT, &lowat,
	    sizeof(lowat)) == -1)
		log_debug("setsockopt SO_RCVLOWAT: %s", strerror(errno));
	if (fdistd_verbose > 1) {
		char	from[ADDR_STR_MAX], client[ADDR_STR_MAX];

		addr_format((struct sockaddr *)&pw->pw_balancer, from,
		    sizeof(from));
		addr_format(peer, client, sizeof(client));
		log_debug("%s [%s]: awaiting-proxy -> PROXY v%d header: %s",
		    from, pw->pw_share->sh_name, ph->ph_version, client);
	}
	conn_proxy_detach(pw);
	server_admit(pw->pw_fd, peer, len, (struct sockaddr *)&pw->pw_balancer,
	    pw->pw_share);
	conn_proxy_free(pw);
}

/* Take n bytes of header off the socket (they were peeked). */
static int
conn_proxy_take(struct proxy_wait *pw, size_t n)
{
	ssize_t	got;

	do
		got = recv(pw->pw_fd, pw->pw_buf + pw->pw_have, n, 0);
	while (got == -1 && errno == EINTR);
	if (got != (ssize_t)n)
		return (-1);	/* peeked bytes are never short: gone */
	pw->pw_have += n;
	return (0);
}

static void
conn_proxy_on_readable(evutil_socket_t fd, short what, void *arg)
{
	struct proxy_wait	*pw = arg;
	struct proxy_header	 ph;
	ssize_t			 n;

	(void)what;
	n = recv(fd, pw->pw_buf + pw->pw_have,
	    sizeof(pw->pw_buf) - pw->pw_have, MSG_PEEK);
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		/* Closed without a byte: a TCP health check. */
		conn_proxy_fail(pw, pw->pw_have > 0 ?
		    PROXY_REFUSED_TRUNCATED : PROXY_REFUSED_PROBE);
		return;
	}
	switch (proxy_parse(pw->pw_buf, pw->pw_have + (size_t)n, &ph)) {
	case PROXY_MORE:
		if (conn_proxy_take(pw, (size_t)n) == -1)
			conn_proxy_fail(pw, PROXY_REFUSED_TRUNCATED);
		return;
	case PROXY_OK:
		if (conn_proxy_take(pw, ph.ph_len - pw->pw_have) == -1)
			conn_proxy_fail(pw, PROXY_REFUSED_TRUNCATED);
		else
			conn_proxy_done(pw, &ph);
		return;
	case PROXY_MALFORMED:
		conn_proxy_fail(pw, PROXY_REFUSED_MALFORMED);
		return;
	case PROXY_OVERSIZED:
		conn_proxy_fail(pw, PROXY_REFUSED_OVERSIZED);
		return;
	}
}

static void
conn_proxy_on_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_proxy_fail(arg, PROXY_REFUSED_TIMEOUT);
}

/*
 * Wait for the header of a connection from a balancer; -1 (fd left to
 * the caller) if out of memory.
 */
int
conn_proxy_new(struct event_base *base, int fd, const struct sockaddr *sa,
    socklen_t len, struct share *sh)
{
	struct proxy_wait	*pw;
	struct timeval		 tv;
	int			 one = 1;

	if ((pw = calloc(1, sizeof(*pw))) == NULL)
		return (-1);
	/* The listener's SO_RCVLOWAT is ack_max: a header is shorter. */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one)) == -1)
		log_debug("setsockopt SO_RCVLOWAT: %s", strerror(errno));
	pw->pw_fd = fd;
	pw->pw_share = share_ref(sh);
	memcpy(&pw->pw_balancer, sa, len);
	pw->pw_len = len;
	event_assign(&pw->pw_rev, base, fd, EV_READ | EV_PERSIST,
	    conn_proxy_on_readable, pw);
	evtimer_assign(&pw->pw_tev, base, conn_proxy_on_timeout, pw);
	TAILQ_INSERT_TAIL(&waits, pw, pw_entry);
	nwaits++;
	tv.tv_sec = (time_t)(sh->sh_proxy.pc_timeout_ms / 1000);
	tv.tv_usec = (suseconds_t)(sh->sh_proxy.pc_timeout_ms % 1000 * 1000);
	evtimer_add(&pw->pw_tev, &tv);
	event_add(&pw->pw_rev, NULL);
	return (0);
}

size_t
conn_proxy_count(void)
{
	return (nwaits);
}

/* The daemon is stopping now: every waiting connection gets its record. */
void
conn_proxy_close_all(void)
{
	struct proxy_wait	*pw;

	while ((pw = TAILQ_FIRST(&waits)) != NULL)
		conn_proxy_fail(pw, PROXY_REFUSED_SHUTDOWN);
}
