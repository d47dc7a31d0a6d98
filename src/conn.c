/*
 * conn.c: one client connection, from accept to its single log record.
 *
 * The daemon sends the share's file with sendfile(2), half-closes, waits
 * until the client's TCP has every byte, then reads the client's
 * acknowledgement until its FIN or the ack deadline.  Whatever happens,
 * conn_close() is the only way out: it removes the events, writes the
 * record (or parks it until the file's digest is known), closes and
 * updates the counters.
 */
#include <sys/types.h>
#include <sys/ioctl.h>
#include <sys/queue.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/sockios.h>
#include <linux/tcp.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event_struct.h>

#include "fdistd.h"

/*
 * At most this much file data per write event, so one fast client on
 * loopback cannot keep the loop from the others.
 */
#define SEND_BUDGET	(2 * 1024 * 1024)
/* Reads per read event, likewise against a client that floods us. */
#define READS_PER_EVENT	4
/*
 * While the client's TCP has not acknowledged every byte, look again
 * after this long, doubling each time up to the maximum.
 */
#define FLUSH_POLL_MIN_MS	10
#define FLUSH_POLL_MAX_MS	500
/* tcpi_state of a connection that is over (TCP_CLOSE; not in linux/tcp.h). */
#define TCPI_STATE_CLOSED	7

enum conn_state {
	CONN_SENDING,		/* file bytes remain: EV_WRITE when full */
	CONN_FLUSHING,		/* all sent and FIN queued; not all delivered */
	CONN_AWAITING_ACK,	/* all delivered: read until FIN or deadline */
};

struct conn {
	TAILQ_ENTRY(conn)	 c_entry;
	int			 c_fd;
	enum conn_state		 c_state;
	struct share		*c_share;
	uint64_t		 c_off;		/* file bytes sent */
	uint64_t		 c_delivered;	/* acknowledged by the client */
	struct timespec		 c_progress;	/* when c_delivered last grew */
	uint32_t		 c_poll_ms;	/* CONN_FLUSHING */
	struct event		 c_rev;
	struct event		 c_wev;
	struct event		 c_tev;		/* rate tokens; flush polls */
	struct bucket		 c_bucket;	/* rate_limit */
	struct fair_client	 c_fair;	/* part of share_rate_limit */
	bool			 c_wev_armed;
	bool			 c_peer_eof;	/* the client sent its FIN */
	bool			 c_gone;	/* reset, or TCP gave up */
	bool			 c_ack_done;	/* NUL, LF or ack_max seen */
	uint32_t		 c_acklen;
	uint64_t		 c_rcvd;	/* all bytes the client sent */
	struct timespec		 c_start;
	struct timespec		 c_deadline;	/* of the ack */
	struct timespec		 c_end;
	enum outcome		 c_status;	/* once released */
	struct sockaddr_storage	 c_peer;
	struct sockaddr_storage	 c_proxy;	/* AF_UNSPEC: not proxied */
	unsigned char		 c_ack[];	/* ack_max bytes */
};

static TAILQ_HEAD(conn_list, conn) conns = TAILQ_HEAD_INITIALIZER(conns);
static size_t			nconns;
/* Closed, acked with a digest claim, waiting for the file's digest. */
static struct conn_list		parked = TAILQ_HEAD_INITIALIZER(parked);
/* Where bytes past the ack go: read, never kept. */
static unsigned char		drain[64 * 1024];

static void	conn_close(struct conn *, enum outcome);
static void	conn_send(struct conn *);
static void	conn_check_flush(struct conn *);
static void	conn_watch_reset(struct conn *);

/* The state's name, for the debug log and the metrics. */
const char *
conn_state_name(int state)
{
	static const char *const names[] = {
		[CONN_SENDING] = "sending",
		[CONN_FLUSHING] = "flushing",
		[CONN_AWAITING_ACK] = "awaiting-ack",
	};
	_Static_assert(sizeof(names) / sizeof(names[0]) == CONN_NSTATES,
	    "CONN_NSTATES counts the states");

	return (names[state]);
}

/* The only place a connection changes state. */
static void
conn_set_state(struct conn *c, enum conn_state state)
{
	/* Only clients still being sent to share a share's rate. */
	if (c->c_state == CONN_SENDING && state != CONN_SENDING)
		fair_leave(&c->c_share->sh_state->ss_fair, &c->c_fair);
	if (fdistd_verbose > 1) {
		char	peer[ADDR_STR_MAX];

		addr_format((struct sockaddr *)&c->c_peer, peer, sizeof(peer));
		log_debug("%s [%s]: %s -> %s", peer, c->c_share->sh_name,
		    conn_state_name(c->c_state), conn_state_name(state));
	}
	c->c_share->sh_state->ss_clients[c->c_state]--;
	c->c_share->sh_state->ss_clients[state]++;
	c->c_state = state;
}

static struct timeval
conn_timeval_ms(uint64_t ms)
{
	struct timeval	tv;

	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000 * 1000);
	return (tv);
}

static int64_t
conn_usec_between(const struct timespec *a, const struct timespec *b)
{
	return ((int64_t)(b->tv_sec - a->tv_sec) * 1000000 +
	    (b->tv_nsec - a->tv_nsec) / 1000);
}

/* The outcome of a client that finished after the whole file. */
static enum outcome
conn_ack_outcome(const struct conn *c)
{
	return (c->c_rcvd > 0 ? OUTCOME_ACKED : OUTCOME_NO_ACK);
}

/* The client's FIN; returns -1 if the connection is done with. */
static int
conn_on_eof(struct conn *c)
{
	c->c_peer_eof = true;
	if (c->c_state == CONN_AWAITING_ACK) {
		conn_close(c, conn_ack_outcome(c));
		return (-1);
	}
	/* A half-closed client may still read: keep sending. */
	event_del(&c->c_rev);
	if (c->c_state == CONN_FLUSHING) {
		conn_watch_reset(c);
		conn_check_flush(c);
		return (-1);
	}
	return (0);
}

/*
 * One read of what the client sent: into the ack until it is complete,
 * then into drain, never kept.  *room is what the read asked for.
 */
static ssize_t
conn_read_ack(struct conn *c, size_t *room)
{
	unsigned char	*dst;
	ssize_t		 n;

	if (c->c_ack_done) {
		dst = drain;
		*room = sizeof(drain);
	} else {
		dst = c->c_ack + c->c_acklen;
		*room = c->c_share->sh_limits.lim_ack_max - c->c_acklen;
	}
	n = read(c->c_fd, dst, *room);
	if (n > 0) {
		c->c_rcvd += (uint64_t)n;
		if (dst != drain)
			ack_take(c->c_ack, &c->c_acklen, (size_t)n,
			    c->c_share->sh_limits.lim_ack_max, &c->c_ack_done);
	}
	return (n);
}

/*
 * Read what the client sent; returns -1 if the connection was closed.
 * A short read has emptied the queue, so there is no point reading
 * again; if epoll has also reported the FIN (EV_CLOSED), that was the
 * end of the stream, and the read that would only return 0 is saved.
 */
static int
conn_receive(struct conn *c, bool fin_seen)
{
	size_t	room;
	ssize_t	n;
	int	i;

	for (i = 0; i < READS_PER_EVENT; i++) {
		n = conn_read_ack(c, &room);
		if (n > 0) {
			if ((size_t)n == room)
				continue;
			return (fin_seen ? conn_on_eof(c) : 0);
		}
		if (n == 0)
			return (conn_on_eof(c));
		if (errno == EAGAIN || errno == EINTR)
			return (0);
		log_debug("read: %s", strerror(errno));
		/* A reset before every byte was delivered is an abort. */
		conn_close(c, c->c_state == CONN_AWAITING_ACK ?
		    conn_ack_outcome(c) : OUTCOME_ABORTED);
		return (-1);
	}
	return (0);
}

static void
conn_on_readable(evutil_socket_t fd, short what, void *arg)
{
	struct conn	*c = arg;
	struct timespec	 now;
	struct timeval	 tv;
	int64_t		 left;

	(void)fd;
	if (conn_receive(c, (what & EV_CLOSED) != 0) == -1 ||
	    c->c_state != CONN_AWAITING_ACK)
		return;
	/* Read first: an ack may have come in with the deadline. */
	if (what & EV_TIMEOUT) {
		conn_close(c, c->c_ack_done ? OUTCOME_ACKED :
		    OUTCOME_ACK_TIMEOUT);
		return;
	}
	/* The deadline is for the whole ack, not for each byte of it. */
	clock_gettime(CLOCK_MONOTONIC, &now);
	left = conn_usec_between(&now, &c->c_deadline);
	if (left <= 0) {
		conn_close(c, c->c_ack_done ? OUTCOME_ACKED :
		    OUTCOME_ACK_TIMEOUT);
		return;
	}
	tv.tv_sec = (time_t)(left / 1000000);
	tv.tv_usec = (suseconds_t)(left % 1000000);
	event_add(&c->c_rev, &tv);
}

/*
 * How many file bytes the client's TCP has acknowledged.  TCP_INFO keeps
 * the count even after a reset, when the send queue is already gone, and
 * says whether the connection is over (c_gone).
 */
static uint64_t
conn_delivered(struct conn *c)
{
	struct tcp_info	ti;
	socklen_t	len = sizeof(ti);

	if (getsockopt(c->c_fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == -1 ||
	    len < offsetof(struct tcp_info, tcpi_bytes_acked) +
	    sizeof(ti.tcpi_bytes_acked))
		return (c->c_delivered);
	if (ti.tcpi_bytes_acked > c->c_delivered)
		c->c_delivered = ti.tcpi_bytes_acked < c->c_off ?
		    ti.tcpi_bytes_acked : c->c_off;	/* the FIN counts one */
	c->c_gone = ti.tcpi_state == TCPI_STATE_CLOSED;
	return (c->c_delivered);
}

/*
 * Whether the client's TCP has acknowledged everything, FIN included:
 * SIOCOUTQ is lockless and cheap, so ask it first, TCP_INFO only if not.
 */
static bool
conn_all_delivered(struct conn *c)
{
	int	outq;

	if (ioctl(c->c_fd, SIOCOUTQ, &outq) == 0 && outq == 0) {
		c->c_delivered = c->c_off;
		return (true);
	}
	return (conn_delivered(c) >= c->c_share->sh_file->sf_size);
}

/* The client has every byte: now the ack_timeout starts. */
static void
conn_flushed(struct conn *c)
{
	struct timeval	tv;
	uint64_t	ms = c->c_share->sh_limits.lim_ack_timeout_ms;

	evtimer_del(&c->c_tev);
	if (c->c_peer_eof) {
		conn_close(c, conn_ack_outcome(c));
		return;
	}
	conn_set_state(c, CONN_AWAITING_ACK);
	clock_gettime(CLOCK_MONOTONIC, &c->c_deadline);
	c->c_deadline.tv_sec += (time_t)(ms / 1000);
	c->c_deadline.tv_nsec += (long)(ms % 1000 * 1000000);
	if (c->c_deadline.tv_nsec >= 1000000000) {
		c->c_deadline.tv_sec++;
		c->c_deadline.tv_nsec -= 1000000000;
	}
	tv = conn_timeval_ms(ms);
	event_add(&c->c_rev, &tv);
}

/*
 * Is flushing over: has the client's TCP taken everything, or is the
 * connection gone without it (a reset is an abort, as while sending)?
 */
static bool
conn_flush_over(struct conn *c)
{
	if (conn_all_delivered(c))
		conn_flushed(c);
	else if (c->c_gone)
		conn_close(c, OUTCOME_ABORTED);
	else
		return (false);
	return (true);
}

/*
 * Has the client's TCP taken everything?  No ack is due before: a slow
 * reader behind big socket buffers is still receiving the file.  No
 * progress for send_timeout is a send-timeout, as while sending.
 */
static void
conn_check_flush(struct conn *c)
{
	struct timespec	now;
	struct timeval	tv;
	uint64_t	before = c->c_delivered;

	if (conn_flush_over(c))
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (c->c_delivered > before)
		c->c_progress = now;
	else if ((uint64_t)conn_usec_between(&c->c_progress, &now) >=
	    c->c_share->sh_limits.lim_send_timeout_ms * 1000) {
		conn_close(c, OUTCOME_SEND_TIMEOUT);
		return;
	}
	tv = conn_timeval_ms(c->c_poll_ms);
	evtimer_add(&c->c_tev, &tv);
	if (c->c_poll_ms < FLUSH_POLL_MAX_MS)
		c->c_poll_ms *= 2;
}

/* The half-closed client's socket changed while flushing: a reset? */
static void
conn_on_reset(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_flush_over(arg);
}

/*
 * Flushing after the client's FIN: its socket stays readable for good,
 * so a level-triggered read event would fire without end, and the flush
 * poll alone would see a reset only at its next look, up to half a
 * second later.  Edge-triggered, the read event fires once now and again
 * at a reset (EPOLLERR).  Nothing else is armed on the socket while
 * flushing, as libevent requires of an edge-triggered event.
 */
static void
conn_watch_reset(struct conn *c)
{
	struct event_base	*base = event_get_base(&c->c_rev);

	event_del(&c->c_rev);
	event_assign(&c->c_rev, base, c->c_fd, EV_READ | EV_ET | EV_PERSIST,
	    conn_on_reset, c);
	event_add(&c->c_rev, NULL);
}

/*
 * Let the kernel delay its ACK of the client's ack text.  A client closes
 * right after its ack, and the ACK of its FIN then covers both: one packet
 * fewer per transfer, which on loopback is also the client's CPU.  This is
 * a state of the socket, not a setting accepted sockets could inherit, so
 * it is set here, before the FIN lets the client answer.  An ack sent in
 * pieces waits for one delayed ACK at most: when that timer fires, the
 * kernel goes back to quick ACKs by itself.
 */
static void
conn_delay_acks(struct conn *c)
{
	int	off = 0;

	if (setsockopt(c->c_fd, IPPROTO_TCP, TCP_QUICKACK, &off,
	    sizeof(off)) == -1)
		log_debug("setsockopt TCP_QUICKACK: %s", strerror(errno));
}

/*
 * The whole file is queued: from now on the kernel may finish sending it
 * even if the daemon dies, so its close() must no longer mean a reset
 * (the SO_LINGER 0 accepted sockets inherit, see listener_attach()).
 */
static void
conn_linger_normally(struct conn *c)
{
	struct linger	lg = { 0, 0 };

	if (setsockopt(c->c_fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == -1)
		log_debug("setsockopt SO_LINGER: %s", strerror(errno));
}

/* The whole file is handed to the kernel: half-close, then flush. */
static void
conn_sent(struct conn *c)
{
	/* Changed in place, though the loop may not have read it yet. */
	if (watch_changed(c->c_share->sh_file)) {
		conn_close(c, OUTCOME_FILE_CHANGED);
		return;
	}
	if (c->c_wev_armed) {
		event_del(&c->c_wev);
		c->c_wev_armed = false;
	}
	conn_linger_normally(c);
	conn_delay_acks(c);
	if (shutdown(c->c_fd, SHUT_WR) == -1) {
		log_debug("shutdown: %s", strerror(errno));
		conn_close(c, OUTCOME_ABORTED);
		return;
	}
	if (conn_all_delivered(c)) {
		conn_flushed(c);
		return;
	}
	conn_set_state(c, CONN_FLUSHING);
	clock_gettime(CLOCK_MONOTONIC, &c->c_progress);
	c->c_poll_ms = FLUSH_POLL_MIN_MS;
	if (c->c_peer_eof)
		conn_watch_reset(c);
	conn_check_flush(c);
}

/* Wait for room in the socket, for at most send_timeout. */
static void
conn_wait_writable(struct conn *c)
{
	struct timeval	tv;

	if (c->c_wev_armed)
		return;
	tv = conn_timeval_ms(c->c_share->sh_limits.lim_send_timeout_ms);
	event_add(&c->c_wev, &tv);
	c->c_wev_armed = true;
}

/*
 * Out of rate tokens: sleep until there are some again, on the timer for
 * the client's and the share's buckets, whose rates are fixed, and with
 * the share for its fair part, whose rate follows the number of clients:
 * the share wakes it through the same timer event.
 */
static void
conn_wait_tokens(struct conn *c)
{
	struct share_state	*ss = c->c_share->sh_state;
	struct timeval		 tv;
	uint64_t		 usec, share_usec;
	bool			 fair;

	if (c->c_wev_armed) {
		event_del(&c->c_wev);
		c->c_wev_armed = false;
	}
	fair = fair_wait(&ss->ss_fair, &c->c_fair,
	    c->c_share->sh_file->sf_size - c->c_off);
	usec = bucket_wait_usec(&c->c_bucket);
	share_usec = bucket_wait_usec(&ss->ss_bucket);
	if (share_usec > usec)
		usec = share_usec;
	if (usec == 0 && fair)
		return;
	if (usec < 1000)
		usec = 1000;
	tv.tv_sec = (time_t)(usec / 1000000);
	tv.tv_usec = (suseconds_t)(usec % 1000000);
	evtimer_add(&c->c_tev, &tv);
}

/* The connection's timer: rate tokens while sending, else a flush poll. */
static void
conn_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct conn	*c = arg;

	(void)fd;
	(void)what;
	if (c->c_state == CONN_SENDING)
		conn_send(c);
	else
		conn_check_flush(c);
}

/*
 * How much this event may send: SEND_BUDGET, or less under a rate
 * limit: the client's own, its fair part of the share's (fair.c), and
 * what the share has left, which holds the total however the parts are
 * used.  Sets *limited if the rate is what bounds it.
 */
static size_t
conn_budget(struct conn *c, bool *limited)
{
	struct share_state	*ss = c->c_share->sh_state;
	struct timespec		 now;
	uint64_t		 avail, share_avail, fair_avail;

	*limited = false;
	if (c->c_bucket.bk_rate == 0 && ss->ss_bucket.bk_rate == 0)
		return (SEND_BUDGET);
	clock_gettime(CLOCK_MONOTONIC, &now);
	avail = bucket_available(&c->c_bucket, &now);
	share_avail = bucket_available(&ss->ss_bucket, &now);
	if (share_avail < avail)
		avail = share_avail;
	fair_avail = fair_available(&ss->ss_fair, &c->c_fair, &now);
	if (fair_avail < avail)
		avail = fair_avail;
	if (avail >= SEND_BUDGET)
		return (SEND_BUDGET);
	*limited = true;
	return ((size_t)avail);
}

static void
conn_spend(struct conn *c, size_t n)
{
	bucket_take(&c->c_bucket, n);
	bucket_take(&c->c_share->sh_state->ss_bucket, n);
	fair_take(&c->c_fair, n);
}

/*
 * Send file bytes until the socket is full or this event's budget is
 * spent.  sendfile() returning 0 before the end means the file shrank.
 */
static void
conn_send(struct conn *c)
{
	struct sfile	*sf = c->c_share->sh_file;
	size_t		 budget, want;
	off_t		 off;
	ssize_t		 n;
	bool		 limited;

	budget = conn_budget(c, &limited);
	while (c->c_off < sf->sf_size) {
		if (budget == 0) {
			if (limited)
				conn_wait_tokens(c);
			else
				conn_wait_writable(c);	/* fires at once */
			return;
		}
		want = sf->sf_size - c->c_off < budget ?
		    (size_t)(sf->sf_size - c->c_off) : budget;
		off = (off_t)c->c_off;
		n = sendfile(c->c_fd, sf->sf_fd, &off, want);
		if (n > 0) {
			c->c_off += (uint64_t)n;
			budget -= (size_t)n;
			conn_spend(c, (size_t)n);
			/* Short: the socket is full; a retry would be EAGAIN. */
			if ((size_t)n < want && c->c_off < sf->sf_size) {
				conn_wait_writable(c);
				return;
			}
			continue;
		}
		if (n == 0) {
			log_warnx("%s: file shrank while being sent: it ends "
			    "at or before byte %llu of %llu (replace files by "
			    "rename, then reload)", sf->sf_path_log,
			    (unsigned long long)c->c_off,
			    (unsigned long long)sf->sf_size);
			conn_close(c, OUTCOME_FILE_CHANGED);
			return;
		}
		if (errno == EAGAIN) {
			conn_wait_writable(c);
			return;
		}
		if (errno == EINTR)
			continue;
		log_debug("sendfile: %s", strerror(errno));
		conn_close(c, OUTCOME_ABORTED);
		return;
	}
	conn_sent(c);
}

static void
conn_on_writable(evutil_socket_t fd, short what, void *arg)
{
	struct conn	*c = arg;

	(void)fd;
	/* Writable with the deadline is progress, not a timeout. */
	if ((what & EV_TIMEOUT) && !(what & EV_WRITE)) {
		conn_close(c, OUTCOME_SEND_TIMEOUT);
		return;
	}
	conn_send(c);
}

/*
 * Take an accepted socket and start sending at once: a new socket has
 * room, and a small file is then sent without waiting for an event.
 * Returns -1 (and leaves fd to the caller) only if out of memory.
 */
int
conn_new(struct event_base *base, int fd, const struct sockaddr *peer,
    socklen_t peerlen, const struct sockaddr *proxy, struct share *sh)
{
	struct conn	*c;

	c = calloc(1, sizeof(*c) + sh->sh_limits.lim_ack_max);
	if (c == NULL)
		return (-1);
	if (share_client_add(sh, peer) == -1) {
		free(c);
		return (-1);
	}
	evtimer_assign(&c->c_tev, base, conn_on_timer, c);
	if (fair_join(&sh->sh_state->ss_fair, &c->c_fair, &c->c_tev) == -1) {
		share_client_remove(sh, peer);
		free(c);
		return (-1);
	}
	c->c_fd = fd;
	c->c_share = share_ref(sh);
	c->c_state = CONN_SENDING;
	memcpy(&c->c_peer, peer, peerlen);
	if (proxy != NULL)
		memcpy(&c->c_proxy, proxy, proxy->sa_family == AF_INET ?
		    sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
	clock_gettime(CLOCK_MONOTONIC, &c->c_start);
	event_assign(&c->c_rev, base, fd, EV_READ | EV_CLOSED | EV_PERSIST,
	    conn_on_readable, c);
	event_assign(&c->c_wev, base, fd, EV_WRITE | EV_PERSIST,
	    conn_on_writable, c);
	bucket_init(&c->c_bucket, sh->sh_limits.lim_rate);
	TAILQ_INSERT_TAIL(&conns, c, c_entry);
	nconns++;
	sh->sh_state->ss_clients[CONN_SENDING]++;
	/*
	 * Bytes sent before EOF are kept as the ack: read when they reach
	 * ack_max (SO_RCVLOWAT), at the FIN, a reset or the end.
	 */
	event_add(&c->c_rev, NULL);
	conn_send(c);
	return (0);
}

/*
 * Read what is left: the ack so far, which SO_RCVLOWAT may have left
 * unread, counts on every ending; and close() should not answer unread
 * bytes with a reset when it means a FIN.
 */
static void
conn_drain(struct conn *c)
{
	size_t	room;
	int	i;

	for (i = 0; i < READS_PER_EVENT; i++) {
		if (conn_read_ack(c, &room) <= 0)
			return;
	}
}

/*
 * Ending before the client has the last byte: reset, so it can never
 * take the part it got for the whole file (a FIN would look like a clean
 * EOF), and no orphaned socket keeps sending to a client we gave up on.
 */
static void
conn_abort(struct conn *c)
{
	struct linger	lg = { 1, 0 };

	setsockopt(c->c_fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

/*
 * Write the record and free the connection.  An ack that claims a
 * digest is checked against the file's: a mismatch is its own outcome.
 */
static void
conn_finish(struct conn *c)
{
	struct transfer_record	 tr;
	struct sfile		*sf = c->c_share->sh_file;
	char			 peer[ADDR_STR_MAX], proxy[ADDR_STR_MAX];
	char			 claim[65];
	char			 host[ACK_HOST_MAX + 1];
	enum outcome		 status = c->c_status;
	bool			 hashing;

	memset(&tr, 0, sizeof(tr));
	if (status == OUTCOME_ACKED &&
	    ack_sha256_claim(c->c_ack, c->c_acklen, claim)) {
		tr.tr_sha256 = sf->sf_sha256;
		if (sf->sf_digest != DIGEST_READY)
			tr.tr_verified = "unknown";
		else if (strcmp(claim, sf->sf_sha256) == 0)
			tr.tr_verified = "yes";
		else {
			tr.tr_verified = "no";
			status = OUTCOME_ACK_MISMATCH;
		}
	}
	/* Rejected by the client: verified= says whether the copy was ours. */
	if (status == OUTCOME_ACKED && ack_rejects(c->c_ack, c->c_acklen))
		status = OUTCOME_ACK_MISMATCH;
	/* The balancer's own connection (PROXY LOCAL): its health check. */
	if ((status == OUTCOME_ABORTED || status == OUTCOME_NO_ACK) &&
	    c->c_proxy.ss_family != AF_UNSPEC &&
	    addr_equal((struct sockaddr *)&c->c_peer,
	    (struct sockaddr *)&c->c_proxy))
		status = OUTCOME_PROBE;
	addr_format((struct sockaddr *)&c->c_peer, peer, sizeof(peer));
	tr.tr_share = c->c_share->sh_name;
	tr.tr_file = sf->sf_path_log;
	tr.tr_peer = peer;
	if (c->c_proxy.ss_family != AF_UNSPEC) {
		addr_format((struct sockaddr *)&c->c_proxy, proxy,
		    sizeof(proxy));
		tr.tr_proxy = proxy;
	}
	tr.tr_bytes = c->c_delivered;
	tr.tr_size = sf->sf_size;
	tr.tr_duration_usec = (uint64_t)conn_usec_between(&c->c_start,
	    &c->c_end);
	tr.tr_status = status;
	tr.tr_ack = c->c_ack;
	tr.tr_acklen = c->c_acklen;
	tr.tr_ack_bytes = c->c_rcvd;
	tr.tr_version = sf->sf_version;
	if (sf->sf_digest == DIGEST_READY)
		tr.tr_file_sha256 = sf->sf_sha256;
	/* An ack cut at ack_max may have cut its host id too. */
	if (ack_host_claim(c->c_ack, c->c_acklen,
	    c->c_acklen >= c->c_share->sh_limits.lim_ack_max, host))
		tr.tr_host_id = host;
	log_transfer(&tr);
	c->c_share->sh_state->ss_ended[status]++;
	c->c_share->sh_state->ss_bytes[status] += c->c_delivered;
	server_count_outcome(status == OUTCOME_ACKED);
	hashing = sf->sf_digest == DIGEST_PENDING;	/* the job keeps sf */
	share_unref(c->c_share);
	free(c);
	if (hashing && sf->sf_refs == 1)
		digest_prune();	/* the last client of a replaced file */
}

/*
 * The one way out: remove the events, close, then write the record --
 * or, if the ack claims a digest the worker has not finished, park it
 * until conn_digest_known(); the client is not kept waiting either way.
 */
static void
conn_close(struct conn *c, enum outcome status)
{
	char	claim[65];

	event_del(&c->c_rev);
	event_del(&c->c_wev);
	event_del(&c->c_tev);
	share_client_remove(c->c_share, (struct sockaddr *)&c->c_peer);
	if (!c->c_peer_eof)
		conn_drain(c);
	/*
	 * c_delivered only grows: ask the kernel only if it is short (for
	 * a changed file too, whose record counts what the client took).
	 * A changed file's bytes may be all there but are not this version.
	 */
	if (c->c_state != CONN_AWAITING_ACK &&
	    ((c->c_delivered < c->c_share->sh_file->sf_size &&
	    conn_delivered(c) < c->c_share->sh_file->sf_size) ||
	    status == OUTCOME_FILE_CHANGED))
		conn_abort(c);
	else if (status == OUTCOME_ABORTED) {
		/*
		 * The client's TCP had the whole file: a reset now, even one
		 * that beat our half-close, is a client gone without (or
		 * after) its ack, not a transfer cut short.
		 */
		status = conn_ack_outcome(c);
	}
	if (c->c_state == CONN_SENDING)
		fair_leave(&c->c_share->sh_state->ss_fair, &c->c_fair);
	clock_gettime(CLOCK_MONOTONIC, &c->c_end);
	close(c->c_fd);
	c->c_fd = -1;
	c->c_status = status;
	/* Some end before the loop has read the change's event. */
	if (status == OUTCOME_FILE_CHANGED)
		c->c_share->sh_file->sf_changed_ended++;
	TAILQ_REMOVE(&conns, c, c_entry);
	nconns--;
	c->c_share->sh_state->ss_clients[c->c_state]--;
	if (c->c_share->sh_file->sf_digest == DIGEST_PENDING &&
	    status == OUTCOME_ACKED &&
	    ack_sha256_claim(c->c_ack, c->c_acklen, claim))
		TAILQ_INSERT_TAIL(&parked, c, c_entry);
	else
		conn_finish(c);
	server_conn_released();
}

/* The digest of sf is known (or failed): write the parked records. */
void
conn_digest_known(struct sfile *sf)
{
	struct conn	*c, *next;

	for (c = TAILQ_FIRST(&parked); c != NULL; c = next) {
		next = TAILQ_NEXT(c, c_entry);
		if (c->c_share->sh_file != sf)
			continue;
		TAILQ_REMOVE(&parked, c, c_entry);
		conn_finish(c);
	}
}

/*
 * sf was changed in place: end with a reset every transfer whose client
 * does not have it whole, FIN included.  One that has cannot be undone;
 * it goes on to its ack.  Each ended counts in sf_changed_ended.
 */
void
conn_file_changed(struct sfile *sf)
{
	struct conn	*c, *next;

	for (c = TAILQ_FIRST(&conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, c_entry);
		if (c->c_share->sh_file != sf ||
		    c->c_state == CONN_AWAITING_ACK ||
		    (c->c_state == CONN_FLUSHING && conn_all_delivered(c)))
			continue;
		conn_close(c, OUTCOME_FILE_CHANGED);
	}
}

/* End every connection now (the daemon is stopping). */
void
conn_close_all(enum outcome status)
{
	struct conn	*c;

	conn_proxy_close_all();
	while ((c = TAILQ_FIRST(&conns)) != NULL)
		conn_close(c, status);
	while ((c = TAILQ_FIRST(&parked)) != NULL) {
		TAILQ_REMOVE(&parked, c, c_entry);
		conn_finish(c);
	}
}

/* Clients holding a descriptor, those awaiting a PROXY header too. */
size_t
conn_count(void)
{
	return (nconns + conn_proxy_count());
}
