/*
 * loadgen_conn.c: one client connection of fdist-loadgen, from socket(2)
 * to the single lg_conn_close() that counts it.
 *
 * Connections live in a fixed array of slots, one per unit of
 * concurrency, allocated once; a digest context per slot is reused.
 * The epoll mask follows the state and is applied once per event, and
 * every timer (hard deadline, hold, slow pacing) is one wake time per
 * slot kept in a binary heap, so 10,000 clients cost no extra
 * descriptors and no scan.
 */
#include <sys/types.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <netinet/in.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "loadgen.h"

/* Large reads keep system calls (and digest calls) per byte low. */
#define LG_CONN_BUFSIZE		(256 * 1024)
/*
 * Bytes per readable event.  A client that takes whole socket buffers
 * from each connection in turn leaves the others unread for so long
 * that the server's send timeout fires (measured: 271 of 2,000 at -c
 * 400 with 8 MiB per event, none with 256 KiB); a slice keeps every
 * window open.
 */
#define LG_CONN_SLICE		(256 * 1024)
_Static_assert(LG_CONN_SLICE <= LG_CONN_BUFSIZE, "a slice must fit the buffer");
/* Reads per event at most, for a peer that dribbles bytes. */
#define LG_CONN_READS		8
/* A stalled client advertises almost no window. */
#define LG_CONN_STALL_RCVBUF	4096
#define LG_CONN_GARBAGE_LEN	(1024 * 1024)
/* Slow clients wake about this often per second to read a slice. */
#define LG_CONN_SLOW_HZ		20
#define LG_CONN_NO_HEAP		UINT32_MAX

enum lg_state {
	LG_IDLE,		/* slot free */
	LG_SEND_FIRST,		/* early ack or HTTP request; EPOLLOUT,
				   whose first report is also the connect */
	LG_RECEIVING,		/* file bytes until EOF; EPOLLIN */
	LG_PACED,		/* slow: no reads until c_resume */
	LG_SEND_LAST,		/* ack or garbage after EOF; EPOLLOUT */
	LG_HOLDING,		/* stall, or never-ack after EOF: only
				   errors wake it, or the hold ends */
};

struct lg_conn {
	int			 c_fd;
	enum lg_state		 c_state;
	enum lg_behaviour	 c_beh;
	uint32_t		 c_gen;		/* tells stale events apart */
	uint32_t		 c_events;	/* mask registered with epoll */
	uint32_t		 c_heapidx;
	int64_t			 c_start;
	int64_t			 c_deadline;	/* --timeout */
	int64_t			 c_hold;	/* end of hold, or 0 */
	int64_t			 c_resume;	/* slow: next read, or 0 */
	int64_t			 c_wake;	/* earliest of the three */
	uint64_t		 c_rcvd;	/* file (body) bytes */
	uint64_t		 c_wire;	/* all bytes read */
	uint64_t		 c_limit;	/* reset: bytes before RST */
	const char		*c_out;		/* NULL: garbage */
	size_t			 c_outlen;
	size_t			 c_outoff;
	EVP_MD_CTX		*c_md;		/* NULL unless hashing */
	bool			 c_hashing;	/* this transfer */
	bool			 c_hdrdone;	/* HTTP header stripped */
	uint8_t			 c_hdrmatch;	/* of "\r\n\r\n" seen */
	uint8_t			 c_statuslen;
	char			 c_status[12];	/* "HTTP/1.x 200" */
};

int				 lg_conn_epfd = -1;
static struct lg_conn		*lg_conns;
static unsigned int		 lg_conn_nslots;
static uint32_t			*lg_conn_idle;	/* stack of free slots */
static unsigned int		 lg_conn_nidle;
static uint32_t			*lg_conn_heap;	/* slots by c_wake */
static unsigned int		 lg_conn_nheap;
static EVP_MD			*lg_conn_md;
static unsigned char		 lg_conn_buf[LG_CONN_BUFSIZE];
static char			 lg_conn_garbage[64 * 1024];
static char			 lg_conn_request[LG_PATH_MAX + 32];
static size_t			 lg_conn_requestlen;

static void	lg_conn_close(struct lg_conn *, enum lg_outcome,
		    enum lg_fail);
static void	lg_conn_read(struct lg_conn *, bool);

static void
lg_conn_heap_swap(unsigned int i, unsigned int j)
{
	uint32_t	t = lg_conn_heap[i];

	lg_conn_heap[i] = lg_conn_heap[j];
	lg_conn_heap[j] = t;
	lg_conns[lg_conn_heap[i]].c_heapidx = i;
	lg_conns[lg_conn_heap[j]].c_heapidx = j;
}

static int64_t
lg_conn_heap_key(unsigned int i)
{
	return (lg_conns[lg_conn_heap[i]].c_wake);
}

/* Restore heap order around position i after its key changed. */
static void
lg_conn_heap_fix(unsigned int i)
{
	unsigned int	parent, child;

	while (i > 0) {
		parent = (i - 1) / 2;
		if (lg_conn_heap_key(parent) <= lg_conn_heap_key(i))
			break;
		lg_conn_heap_swap(i, parent);
		i = parent;
	}
	for (;;) {
		child = 2 * i + 1;
		if (child >= lg_conn_nheap)
			break;
		if (child + 1 < lg_conn_nheap &&
		    lg_conn_heap_key(child + 1) < lg_conn_heap_key(child))
			child++;
		if (lg_conn_heap_key(i) <= lg_conn_heap_key(child))
			break;
		lg_conn_heap_swap(i, child);
		i = child;
	}
}

static void
lg_conn_heap_remove(struct lg_conn *c)
{
	unsigned int	i = c->c_heapidx;

	lg_conn_nheap--;
	if (i != lg_conn_nheap) {
		lg_conn_heap_swap(i, lg_conn_nheap);
		lg_conn_heap_fix(i);
	}
	c->c_heapidx = LG_CONN_NO_HEAP;
}

/* Recompute the slot's wake time from its deadline, hold and pacing. */
static void
lg_conn_rewake(struct lg_conn *c)
{
	int64_t	wake = c->c_deadline;

	if (c->c_hold != 0 && c->c_hold < wake)
		wake = c->c_hold;
	if (c->c_resume != 0 && c->c_resume < wake)
		wake = c->c_resume;
	c->c_wake = wake;
	if (c->c_heapidx == LG_CONN_NO_HEAP) {
		c->c_heapidx = lg_conn_nheap;
		lg_conn_heap[lg_conn_nheap++] = (uint32_t)(c - lg_conns);
	}
	lg_conn_heap_fix(c->c_heapidx);
}

static uint32_t
lg_conn_state_events(enum lg_state state)
{
	switch (state) {
	case LG_SEND_FIRST:
	case LG_SEND_LAST:
		return (EPOLLOUT);
	case LG_RECEIVING:
		return (EPOLLIN);
	default:
		/* EPOLLERR and EPOLLHUP are always reported. */
		return (0);
	}
}

/*
 * The only place a connection changes state.  The epoll mask is brought
 * in line later, by lg_conn_sync(), so a state that lasts no longer than
 * one event costs no epoll_ctl(2).
 */
static void
lg_conn_set_state(struct lg_conn *c, enum lg_state state)
{
	c->c_state = state;
}

static void
lg_conn_sync(struct lg_conn *c)
{
	struct epoll_event	ev;
	uint32_t		want;

	if (c->c_state == LG_IDLE)
		return;
	want = lg_conn_state_events(c->c_state);
	if (want == c->c_events)
		return;
	ev.events = want;
	ev.data.u64 = (uint64_t)c->c_gen << 32 | (uint64_t)(c - lg_conns);
	if (epoll_ctl(lg_conn_epfd, EPOLL_CTL_MOD, c->c_fd, &ev) == -1) {
		lg_conn_close(c, LG_FAILED, LG_FAIL_LOCAL);
		return;
	}
	c->c_events = want;
}

/* Build what every slot shares: buffers, the request, the digest. */
int
lg_conn_init(unsigned int nslots)
{
	unsigned int	i;
	size_t		j;
	int		n;

	lg_conn_nslots = nslots;
	lg_conns = calloc(nslots, sizeof(*lg_conns));
	lg_conn_idle = calloc(nslots, sizeof(*lg_conn_idle));
	lg_conn_heap = calloc(nslots, sizeof(*lg_conn_heap));
	if (lg_conns == NULL || lg_conn_idle == NULL || lg_conn_heap == NULL)
		goto fail;
	if ((lg_conn_epfd = epoll_create1(EPOLL_CLOEXEC)) == -1)
		goto fail;
	if (lg_opt.o_verify == LG_VERIFY_SHA256 &&
	    (lg_conn_md = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL)
		goto fail;
	for (i = 0; i < nslots; i++) {
		lg_conns[i].c_fd = -1;
		lg_conns[i].c_heapidx = LG_CONN_NO_HEAP;
		if (lg_conn_md != NULL &&
		    (lg_conns[i].c_md = EVP_MD_CTX_new()) == NULL)
			goto fail;
		lg_conn_idle[i] = nslots - 1 - i;
	}
	lg_conn_nidle = nslots;
	/* Garbage must hold neither NUL nor LF, or it would end an ack. */
	for (j = 0; j < sizeof(lg_conn_garbage); j++)
		lg_conn_garbage[j] = (char)('A' + lg_random() % 26);
	n = snprintf(lg_conn_request, sizeof(lg_conn_request),
	    "GET %s HTTP/1.0\r\n\r\n", lg_opt.o_path);
	if (n < 0 || (size_t)n >= sizeof(lg_conn_request))
		goto fail;
	lg_conn_requestlen = (size_t)n;
	return (0);
fail:
	fprintf(stderr, "%s: cannot set up %u client slots: %s\n",
	    LG_PROGNAME, nslots, strerror(errno != 0 ? errno : ENOMEM));
	lg_conn_free_all();
	return (-1);
}

void
lg_conn_free_all(void)
{
	unsigned int	i;

	for (i = 0; lg_conns != NULL && i < lg_conn_nslots; i++)
		EVP_MD_CTX_free(lg_conns[i].c_md);
	free(lg_conns);
	free(lg_conn_idle);
	free(lg_conn_heap);
	lg_conns = NULL;
	lg_conn_idle = NULL;
	lg_conn_heap = NULL;
	EVP_MD_free(lg_conn_md);
	lg_conn_md = NULL;
	if (lg_conn_epfd != -1)
		close(lg_conn_epfd);
	lg_conn_epfd = -1;
}

unsigned int
lg_conn_active(void)
{
	return (lg_conn_nslots - lg_conn_nidle);
}

/*
 * The one way out: close (with a reset for the reset behaviour), drop
 * the timers, count the outcome and free the slot.
 */
static void
lg_conn_close(struct lg_conn *c, enum lg_outcome outcome, enum lg_fail fail)
{
	struct linger	lg = { 1, 0 };
	int64_t		latency = lg_now() - c->c_start;

	if (outcome == LG_REFUSED && lg_opt.o_no_refusals) {
		outcome = LG_FAILED;
		fail = LG_FAIL_REFUSED;
	}
	if (lg_opt.o_trace != NULL)
		lg_report_trace(c->c_fd, c->c_beh, outcome, fail, c->c_rcvd,
		    latency);
	if (c->c_fd >= 0) {
		if (c->c_beh == LG_RESET && outcome == LG_OK)
			setsockopt(c->c_fd, SOL_SOCKET, SO_LINGER, &lg,
			    sizeof(lg));
		/* Closing the only reference also leaves the epoll set. */
		close(c->c_fd);
		c->c_fd = -1;
	}
	lg_conn_heap_remove(c);
	lg_report_end(c->c_beh, outcome, fail, c->c_rcvd, latency);
	lg_conn_set_state(c, LG_IDLE);
	c->c_gen++;
	lg_conn_idle[lg_conn_nidle++] = (uint32_t)(c - lg_conns);
}

/* Whether the peer's reset means "refused": nothing came from it yet. */
static bool
lg_conn_refused(const struct lg_conn *c, int err)
{
	int	queued = 0;

	if (err == ECONNREFUSED)
		return (true);
	if (err != ECONNRESET && err != EPIPE)
		return (false);
	if (c->c_wire > 0)
		return (false);
	/* A stalled client reads nothing, but bytes may wait unread. */
	if (c->c_beh == LG_STALL &&
	    (ioctl(c->c_fd, FIONREAD, &queued) == -1 || queued > 0))
		return (false);
	return (true);
}

/* A socket error ends the transfer; whose fault depends on when. */
static void
lg_conn_error(struct lg_conn *c, int err)
{
	if (lg_conn_refused(c, err))
		lg_conn_close(c, LG_REFUSED, LG_FAIL_NONE);
	else if (c->c_state == LG_HOLDING)
		/* The server gave up on a client built to make it. */
		lg_conn_close(c, LG_OK, LG_FAIL_NONE);
	else if (c->c_state == LG_SEND_LAST && c->c_beh == LG_GARBAGE)
		/* Cutting off a flood of garbage is fair. */
		lg_conn_close(c, LG_OK, LG_FAIL_NONE);
	else if (err == ECONNRESET || err == EPIPE)
		lg_conn_close(c, LG_FAILED, LG_FAIL_RESET);
	else if (c->c_wire == 0)
		lg_conn_close(c, LG_FAILED, LG_FAIL_CONNECT);
	else
		lg_conn_close(c, LG_FAILED, LG_FAIL_IO);
}

/*
 * The ack is out.  A server that had already closed (its ack timeout
 * ran out) answers it with a reset; on loopback that reset is in before
 * send(2) returns, so the socket error tells a lost ack from a taken
 * one.  Over a real network a late reset goes unseen.
 */
static void
lg_conn_acked(struct lg_conn *c)
{
	socklen_t	len = sizeof(int);
	int		err = 0;

	/* Not read(2): after EOF it returns 0 even once reset. */
	if (getsockopt(c->c_fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
	    (err == ECONNRESET || err == EPIPE))
		lg_conn_close(c, LG_FAILED, LG_FAIL_ACK_LOST);
	else
		lg_conn_close(c, LG_OK, LG_FAIL_NONE);
}

/* Send what c_out holds (or garbage); then move on. */
static void
lg_conn_write(struct lg_conn *c)
{
	const char	*p;
	size_t		 len, off;
	ssize_t		 n;

	while (c->c_outoff < c->c_outlen) {
		len = c->c_outlen - c->c_outoff;
		if (c->c_out != NULL)
			p = c->c_out + c->c_outoff;
		else {
			off = c->c_outoff % sizeof(lg_conn_garbage);
			p = lg_conn_garbage + off;
			if (len > sizeof(lg_conn_garbage) - off)
				len = sizeof(lg_conn_garbage) - off;
		}
		n = send(c->c_fd, p, len, MSG_NOSIGNAL);
		if (n > 0) {
			c->c_outoff += (size_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			return;		/* the state keeps EPOLLOUT */
		lg_conn_error(c, n == -1 ? errno : EPIPE);
		return;
	}
	if (c->c_state == LG_SEND_FIRST && c->c_beh == LG_STALL)
		lg_conn_set_state(c, LG_HOLDING);
	else if (c->c_state == LG_SEND_FIRST) {
		lg_conn_set_state(c, LG_RECEIVING);
		lg_conn_read(c, false);
	} else if (c->c_out != NULL)
		lg_conn_acked(c);
	else
		lg_conn_close(c, LG_OK, LG_FAIL_NONE);
}

static void
lg_conn_send(struct lg_conn *c, enum lg_state state, const char *p,
    size_t len)
{
	c->c_out = p;
	c->c_outlen = len;
	c->c_outoff = 0;
	lg_conn_set_state(c, state);
	lg_conn_write(c);
}

/*
 * Strip the HTTP response header, keeping its first bytes to check the
 * status.  Returns the offset of the body in p, or -1 on a bad status.
 */
static ssize_t
lg_conn_http_header(struct lg_conn *c, const unsigned char *p, size_t n)
{
	static const char	end[] = "\r\n\r\n";
	size_t			i;

	for (i = 0; i < n && !c->c_hdrdone; i++) {
		if (c->c_statuslen < sizeof(c->c_status))
			c->c_status[c->c_statuslen++] = (char)p[i];
		if (p[i] == (unsigned char)end[c->c_hdrmatch])
			c->c_hdrmatch++;
		else
			c->c_hdrmatch = p[i] == '\r' ? 1 : 0;
		if (c->c_hdrmatch == 4)
			c->c_hdrdone = true;
	}
	if (c->c_hdrdone && (c->c_statuslen < sizeof(c->c_status) ||
	    memcmp(c->c_status, "HTTP/1.", 7) != 0 ||
	    memcmp(c->c_status + 8, " 200", 4) != 0))
		return (-1);
	return ((ssize_t)i);
}

/* Account for bytes read; the body goes through the digest. */
static int
lg_conn_take(struct lg_conn *c, const unsigned char *p, size_t n)
{
	ssize_t	skip = 0;

	c->c_wire += n;
	if (lg_opt.o_proto == LG_PROTO_HTTP && !c->c_hdrdone) {
		if ((skip = lg_conn_http_header(c, p, n)) == -1) {
			lg_conn_close(c, LG_FAILED, LG_FAIL_HTTP);
			return (-1);
		}
		p += skip;
		n -= (size_t)skip;
	}
	c->c_rcvd += n;
	if (c->c_hashing && n > 0)
		EVP_DigestUpdate(c->c_md, p, n);
	return (0);
}

/*
 * --verify=discard: once past the HTTP header, file bytes are counted
 * and dropped by the kernel (recv MSG_TRUNC on TCP copies nothing), so
 * the client's memory copy does not bound what a server can push.
 */
static bool
lg_conn_discarding(const struct lg_conn *c)
{
	return (lg_opt.o_verify == LG_VERIFY_DISCARD &&
	    (lg_opt.o_proto != LG_PROTO_HTTP || c->c_hdrdone));
}

/* Whether the bytes were the expected file. */
static enum lg_fail
lg_conn_verify(struct lg_conn *c)
{
	unsigned char	md[EVP_MAX_MD_SIZE];
	unsigned int	mdlen = 0;

	if (lg_opt.o_proto == LG_PROTO_HTTP && !c->c_hdrdone)
		return (LG_FAIL_HTTP);
	if (c->c_rcvd != lg_opt.o_expect_size)
		return (LG_FAIL_SIZE);
	if (!c->c_hashing)
		return (LG_FAIL_NONE);
	c->c_hashing = false;
	if (EVP_DigestFinal_ex(c->c_md, md, &mdlen) != 1 ||
	    mdlen != LG_SHA256_LEN ||
	    memcmp(md, lg_opt.o_expect_sha256, LG_SHA256_LEN) != 0)
		return (LG_FAIL_DIGEST);
	return (LG_FAIL_NONE);
}

/* The server's EOF: the whole file is here, or it is not. */
static void
lg_conn_eof(struct lg_conn *c)
{
	enum lg_fail	fail;

	if ((fail = lg_conn_verify(c)) != LG_FAIL_NONE) {
		lg_conn_close(c, LG_FAILED, fail);
		return;
	}
	if (lg_opt.o_proto == LG_PROTO_HTTP) {
		lg_conn_close(c, LG_OK, LG_FAIL_NONE);
		return;
	}
	switch (c->c_beh) {
	case LG_NORMAL:
	case LG_SLOW:
		c->c_resume = 0;
		lg_conn_send(c, LG_SEND_LAST, lg_opt.o_ack, lg_opt.o_acklen);
		break;
	case LG_NEVER_ACK:
		c->c_hold = lg_now() + lg_opt.o_hold_ns;
		lg_conn_set_state(c, LG_HOLDING);
		lg_conn_rewake(c);
		break;
	case LG_GARBAGE:
		lg_conn_send(c, LG_SEND_LAST, NULL, LG_CONN_GARBAGE_LEN);
		break;
	default:
		lg_conn_close(c, LG_OK, LG_FAIL_NONE);
		break;
	}
}

/*
 * How much a slow client may read now; 0 means it has been put to sleep
 * until its rate allows a slice.
 */
static size_t
lg_conn_allowance(struct lg_conn *c)
{
	double		rate = (double)lg_opt.o_slow_rate;
	double		slice = rate / LG_CONN_SLOW_HZ, earned;

	if (slice < 1)
		slice = 1;
	if (slice > LG_CONN_BUFSIZE)
		slice = LG_CONN_BUFSIZE;
	earned = rate * (double)(lg_now() - c->c_start) / LG_NS -
	    (double)c->c_wire;
	/*
	 * A byte of slack: the wake time below is rounded to the ns.  At
	 * most a slice at once, so a client that fell behind catches up
	 * in steps rather than in one burst.
	 */
	if (earned + 1 >= slice)
		return ((size_t)slice);
	c->c_resume = c->c_start + 1 +
	    (int64_t)(((double)c->c_wire + slice) * LG_NS / rate);
	lg_conn_set_state(c, LG_PACED);
	lg_conn_rewake(c);
	return (0);
}

/* A reset client resets once it has its share of the file. */
static bool
lg_conn_reset_due(const struct lg_conn *c)
{
	return (c->c_beh == LG_RESET && c->c_rcvd >= c->c_limit);
}

/* How much the next read may take; 0 when a slow client must wait. */
static size_t
lg_conn_want(struct lg_conn *c, size_t taken, bool unpaced)
{
	size_t	want = LG_CONN_SLICE - taken;

	if (c->c_beh == LG_RESET && c->c_limit - c->c_rcvd < want)
		want = (size_t)(c->c_limit - c->c_rcvd);
	if (c->c_beh == LG_SLOW && !unpaced)
		want = lg_conn_allowance(c);
	return (want);
}

/*
 * Read file bytes, at most a slice per event.  A reset client stops at
 * its byte count; a slow one at its allowance unless the server already
 * ended the connection.
 */
static void
lg_conn_read(struct lg_conn *c, bool unpaced)
{
	size_t	want, taken = 0;
	ssize_t	n;
	int	i;

	for (i = 0; i < LG_CONN_READS && taken < LG_CONN_SLICE; i++) {
		if (lg_conn_reset_due(c))
			break;
		if ((want = lg_conn_want(c, taken, unpaced)) == 0)
			return;
		/* Discarded bytes are only counted: no header, no digest. */
		n = lg_conn_discarding(c) ?
		    recv(c->c_fd, lg_conn_buf, want, MSG_TRUNC) :
		    read(c->c_fd, lg_conn_buf, want);
		if (n > 0) {
			if (lg_conn_take(c, lg_conn_buf, (size_t)n) == -1)
				return;
			taken += (size_t)n;
		} else if (n == 0) {
			if (!lg_conn_reset_due(c))
				lg_conn_eof(c);
			break;
		} else if (errno != EINTR) {
			if (errno != EAGAIN)
				lg_conn_error(c, errno);
			return;
		}
	}
	if (c->c_state != LG_IDLE && lg_conn_reset_due(c))
		lg_conn_close(c, LG_OK, LG_FAIL_NONE);
}

/* Why the kernel woke a socket we only watch for errors. */
static int
lg_conn_sockerr(struct lg_conn *c)
{
	socklen_t	len = sizeof(int);
	int		err = 0;

	if (getsockopt(c->c_fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		return (errno);
	return (err != 0 ? err : ECONNRESET);
}

/* Open a socket and connect; the first event moves it on. */
static int
lg_conn_open(const struct lg_addr *to, const struct lg_addr *from)
{
	int	fd, one = 1;

	fd = socket(to->a_ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1)
		return (-1);
	/* The kernel picks the port at connect(2), per destination. */
	if (from != NULL &&
	    (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
	    sizeof(one)) == -1 ||
	    bind(fd, (const struct sockaddr *)&from->a_ss, from->a_len) == -1))
		goto fail;
	return (fd);
fail:
	close(fd);
	return (-2);
}

/* Fill a slot for a new transfer of the given behaviour. */
static void
lg_conn_prepare(struct lg_conn *c, enum lg_behaviour beh)
{
	c->c_beh = beh;
	c->c_fd = -1;
	c->c_start = lg_now();
	c->c_deadline = c->c_start + lg_opt.o_timeout_ns;
	c->c_hold = beh == LG_STALL ? c->c_start + lg_opt.o_hold_ns : 0;
	c->c_resume = 0;
	c->c_rcvd = c->c_wire = 0;
	c->c_limit = 0;
	if (beh == LG_RESET && lg_opt.o_expect_size > 1)
		c->c_limit = 1 + lg_random() % (lg_opt.o_expect_size - 1);
	c->c_hdrdone = false;
	c->c_hdrmatch = c->c_statuslen = 0;
	c->c_hashing = c->c_md != NULL && beh != LG_RESET && beh != LG_STALL;
	if (c->c_hashing)
		EVP_DigestInit_ex2(c->c_md, lg_conn_md, NULL);
	if (lg_opt.o_proto == LG_PROTO_HTTP) {
		c->c_out = lg_conn_request;
		c->c_outlen = lg_conn_requestlen;
	} else {
		c->c_out = lg_opt.o_ack;
		c->c_outlen = lg_opt.o_acklen;
	}
	c->c_outoff = 0;
	/* An HTTP client must ask before it can stall. */
	if (lg_opt.o_proto == LG_PROTO_HTTP || beh == LG_EARLY_ACK)
		lg_conn_set_state(c, LG_SEND_FIRST);
	else if (beh == LG_STALL)
		lg_conn_set_state(c, LG_HOLDING);
	else
		lg_conn_set_state(c, LG_RECEIVING);
	lg_report_start(beh);
	lg_conn_rewake(c);
}

/*
 * Start one transfer in a free slot.  Returns -1 only when the process
 * is out of descriptors, so the caller stops starting more.
 */
int
lg_conn_start(enum lg_behaviour beh, const struct lg_addr *to,
    const struct lg_addr *from)
{
	struct epoll_event	 ev;
	struct lg_conn		*c;
	int			 rcvbuf = LG_CONN_STALL_RCVBUF, err;

	c = &lg_conns[lg_conn_idle[--lg_conn_nidle]];
	lg_conn_prepare(c, beh);
	if ((c->c_fd = lg_conn_open(to, from)) < 0) {
		err = errno;
		lg_conn_close(c, LG_FAILED, c->c_fd == -1 ? LG_FAIL_LOCAL :
		    LG_FAIL_CONNECT);
		return (err == EMFILE || err == ENFILE ? -1 : 0);
	}
	/* Before connect(2), so the window it offers is small from SYN. */
	if (beh == LG_STALL)
		setsockopt(c->c_fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf,
		    sizeof(rcvbuf));
	c->c_events = lg_conn_state_events(c->c_state);
	ev.events = c->c_events;
	ev.data.u64 = (uint64_t)c->c_gen << 32 | (uint64_t)(c - lg_conns);
	if (epoll_ctl(lg_conn_epfd, EPOLL_CTL_ADD, c->c_fd, &ev) == -1) {
		lg_conn_close(c, LG_FAILED, LG_FAIL_LOCAL);
		return (0);
	}
	if (connect(c->c_fd, (const struct sockaddr *)&to->a_ss,
	    to->a_len) == -1 && errno != EINPROGRESS)
		lg_conn_error(c, errno);
	return (0);
}

/* Dispatch one epoll report to its connection. */
void
lg_conn_event(uint64_t data, uint32_t events)
{
	struct lg_conn	*c;
	uint32_t	 slot = (uint32_t)data;

	if (slot >= lg_conn_nslots)
		return;
	c = &lg_conns[slot];
	if (c->c_state == LG_IDLE || c->c_gen != (uint32_t)(data >> 32))
		return;
	switch (c->c_state) {
	case LG_SEND_FIRST:
	case LG_SEND_LAST:
		lg_conn_write(c);
		break;
	case LG_RECEIVING:
		lg_conn_read(c, false);
		break;
	case LG_PACED:
		/* Only an error or hangup: take what is left, now. */
		if (events & (EPOLLERR | EPOLLHUP))
			lg_conn_read(c, true);
		break;
	case LG_HOLDING:
		lg_conn_error(c, lg_conn_sockerr(c));
		break;
	case LG_IDLE:
		break;
	}
	if (c->c_state != LG_IDLE)
		lg_conn_sync(c);
}

/* The earliest wake time of any connection, or -1 if none. */
int64_t
lg_conn_next_wake(void)
{
	return (lg_conn_nheap > 0 ? lg_conn_heap_key(0) : -1);
}

/* A held client whose hold ends is done; a stall must have connected. */
static void
lg_conn_hold_done(struct lg_conn *c)
{
	struct sockaddr_storage	ss;
	socklen_t		len = sizeof(ss);

	if (c->c_beh == LG_STALL &&
	    getpeername(c->c_fd, (struct sockaddr *)&ss, &len) == -1) {
		lg_conn_close(c, LG_FAILED, LG_FAIL_CONNECT);
		return;
	}
	lg_conn_close(c, LG_OK, LG_FAIL_NONE);
}

/* Run the timers that are due: deadlines, holds and slow reads. */
void
lg_conn_expire(int64_t now)
{
	struct lg_conn	*c;

	while (lg_conn_nheap > 0 && lg_conn_heap_key(0) <= now) {
		c = &lg_conns[lg_conn_heap[0]];
		if (now >= c->c_deadline)
			lg_conn_close(c, LG_FAILED, LG_FAIL_TIMEOUT);
		else if (c->c_hold != 0 && now >= c->c_hold)
			lg_conn_hold_done(c);
		else if (c->c_state == LG_PACED) {
			c->c_resume = 0;
			lg_conn_rewake(c);
			lg_conn_set_state(c, LG_RECEIVING);
			lg_conn_read(c, false);
			if (c->c_state != LG_IDLE)
				lg_conn_sync(c);
		} else {
			c->c_resume = 0;
			lg_conn_rewake(c);
		}
	}
}

/* A second signal: end every transfer now. */
void
lg_conn_abort_all(void)
{
	while (lg_conn_nheap > 0)
		lg_conn_close(&lg_conns[lg_conn_heap[0]], LG_FAILED,
		    LG_FAIL_INTERRUPTED);
}
