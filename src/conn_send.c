/*
 * conn_send.c: sending the share's file with sendfile(2), within a
 * budget per event and the rate limits, then the half-close that hands
 * the connection to conn_flush.c.  EV_WRITE is armed only while the
 * socket is full and file bytes remain.  A large send with no rate limit
 * is handed to a sendfile worker (pool.c); the connection then waits for
 * it with nothing armed for writing, and goes on here when it is back.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/tcp.h>

#include <errno.h>
#include <string.h>
#include <time.h>

#include <event2/event_struct.h>

#include "fdistd.h"
#include "conn.h"

/*
 * At most this much file data per write event, so one fast client on
 * loopback cannot keep the loop from the others.
 */
#define SEND_BUDGET	(2 * 1024 * 1024)
/*
 * Sends this large or larger go to the sendfile workers; smaller ones
 * cost less than the two wake-ups of a hand-off, and stay on the loop.
 */
#define POOL_SEND_MIN	(256 * 1024)
/*
 * A worker's job: until the socket is full, or this much.  Its time is
 * not the loop's, so SEND_BUDGET does not bound it; this does, so that
 * a client that keeps up does not keep its worker from the others.
 */
#define POOL_JOB_MAX	(16 * 1024 * 1024)
/*
 * Files this large or larger are sent uncorked.  The TCP_CORK accepted
 * sockets inherit (listener_cork()) makes a small file one packet with
 * its FIN; on a large one, measured on loopback, it nearly doubled the
 * daemon's CPU per GiB and cut four clients' aggregate rate by a third
 * (bench/README.md, "Large files").
 */
#define UNCORK_MIN	(256 * 1024)
/*
 * A large file's socket is writable again only once fewer than this
 * many of its bytes are still unsent (TCP_NOTSENT_LOWAT), not as soon as
 * a third of its send buffer (up to tcp_wmem's 4 MiB) is free.  What the
 * daemon has queued but TCP has not sent is sent by whoever frees room:
 * on loopback, the client, inside its own recv(), as it acknowledges.
 * Bounded, that work is the daemon's, on its own threads; four copying
 * clients on two cores then got 5-12% more (bench/README.md, "Unsent
 * bytes"), and each client holds that much less kernel memory.  A file
 * that fits in the socket buffers is still queued whole: the daemon is
 * then done with it at once, half-closes, and waits only for the kernel
 * to deliver it.
 */
#define NOTSENT_LOWAT	(1024 * 1024)
#define LOWAT_MIN	(16 * 1024 * 1024)	/* files this large get it */

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

/*
 * A new connection: its first send, uncorked if the file is large, and
 * with a low-water mark for unsent bytes if it is larger still.
 */
void
conn_send_first(struct conn *c)
{
	uint64_t	size = c->c_share->sh_file->sf_size;
	int		off = 0, lowat = NOTSENT_LOWAT;

	if (size >= UNCORK_MIN && setsockopt(c->c_fd, IPPROTO_TCP, TCP_CORK,
	    &off, sizeof(off)) == -1)
		log_debug("setsockopt TCP_CORK: %s", strerror(errno));
	if (size >= LOWAT_MIN && setsockopt(c->c_fd, IPPROTO_TCP,
	    TCP_NOTSENT_LOWAT, &lowat, sizeof(lowat)) == -1)
		log_debug("setsockopt TCP_NOTSENT_LOWAT: %s", strerror(errno));
	conn_send(c);
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
void
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

/* No rate limit, the client's or the share's, applies to c. */
static bool
conn_unlimited(const struct conn *c)
{
	return (c->c_bucket.bk_rate == 0 &&
	    c->c_share->sh_state->ss_bucket.bk_rate == 0);
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
	if (conn_unlimited(c))
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
 * What sending want bytes did: sent of them went out, then the file
 * ended early (eof) or err (0, EAGAIN when the socket is full, or why it
 * failed).  Returns 0 to go on sending, 1 to wait for room in the socket,
 * -1 if the connection is closed.
 */
static int
conn_sent_some(struct conn *c, size_t want, size_t sent, bool eof, int err)
{
	struct sfile	*sf = c->c_share->sh_file;

	c->c_off += (uint64_t)sent;
	if (eof) {
		log_warnx("%s: file shrank while being sent: it ends at or "
		    "before byte %llu of %llu (replace files by rename, then "
		    "reload)", sf->sf_path_log, (unsigned long long)c->c_off,
		    (unsigned long long)sf->sf_size);
		conn_close(c, OUTCOME_FILE_CHANGED);
		return (-1);
	}
	if (err != 0 && err != EAGAIN) {
		log_debug("sendfile: %s", strerror(err));
		conn_close(c, OUTCOME_ABORTED);
		return (-1);
	}
	/* Short: the socket is full; a retry would be EAGAIN. */
	if (sent < want && c->c_off < sf->sf_size) {
		conn_wait_writable(c);
		return (1);
	}
	return (0);
}

/*
 * Whether this send may go to a worker: large, and under no rate limit.
 * A limit's tokens are taken as bytes go out; a worker's bytes are known
 * only later, when a reload may have set a rate meanwhile.  The first
 * send stays on the loop: it only fills a new socket's buffer, and a
 * client that never reads (or reads slowly) then never holds a job.
 */
static bool
conn_may_hand_off(struct conn *c, size_t want)
{
	return (pool_size() > 0 && c->c_off > 0 && want >= POOL_SEND_MIN &&
	    conn_unlimited(c));
}

/* A worker's sendfile() is back: go on as after one of our own. */
static void
conn_on_handed_back(struct pool_job *pj)
{
	struct conn	*c = pj->pj_arg;
	int		 rv;

	c->c_job = NULL;
	rv = conn_sent_some(c, pj->pj_want, pj->pj_sent, pj->pj_eof,
	    pj->pj_errno);
	pool_job_put(pj);
	if (rv == 0)
		conn_send(c);
}

/*
 * Hand the next want bytes to the sendfile workers; false if there is
 * no memory for the job (then the loop sends them itself).
 */
static bool
conn_hand_off(struct conn *c, size_t want)
{
	struct pool_job	*pj;

	if ((pj = pool_job_get()) == NULL)
		return (false);
	if (c->c_wev_armed) {
		event_del(&c->c_wev);
		c->c_wev_armed = false;
	}
	pj->pj_sock = c->c_fd;
	pj->pj_file = c->c_share->sh_file->sf_fd;
	pj->pj_off = c->c_off;
	pj->pj_want = want;
	pj->pj_done = conn_on_handed_back;
	pj->pj_arg = c;
	c->c_job = pj;
	pool_submit(pj);
	return (true);
}

/*
 * The connection is ending: if a worker has its send, take it back now
 * (conn_close() is about to close the socket), counting what it sent.
 */
void
conn_take_back(struct conn *c)
{
	if (c->c_job == NULL)
		return;
	pool_reclaim(c->c_job);
	c->c_off += (uint64_t)c->c_job->pj_sent;
	pool_job_put(c->c_job);
	c->c_job = NULL;
}

/*
 * Send file bytes until the socket is full or this event's budget is
 * spent, or hand a large send to a worker.  sendfile() returning 0
 * before the end means the file shrank.
 */
void
conn_send(struct conn *c)
{
	struct sfile	*sf = c->c_share->sh_file;
	size_t		 budget, want;
	off_t		 off;
	ssize_t		 n;
	bool		 limited;

	if (c->c_job != NULL)
		return;		/* conn_on_handed_back() goes on */
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
		if (conn_may_hand_off(c, want) && conn_hand_off(c,
		    sf->sf_size - c->c_off < POOL_JOB_MAX ?
		    (size_t)(sf->sf_size - c->c_off) : POOL_JOB_MAX))
			return;
		off = (off_t)c->c_off;
		n = sendfile(c->c_fd, sf->sf_fd, &off, want);
		if (n > 0) {
			budget -= (size_t)n;
			conn_spend(c, (size_t)n);
			if (conn_sent_some(c, want, (size_t)n, false, 0) != 0)
				return;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (conn_sent_some(c, want, 0, n == 0, n == 0 ? 0 : errno) != 0)
			return;
	}
	conn_sent(c);
}

void
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
