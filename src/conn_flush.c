/*
 * conn_flush.c: after the FIN, until the client's TCP has acknowledged
 * every byte: only then is an ack due.  The kernel is asked how far the
 * client has got, on a backing-off poll, and a reset ends it at once.
 */
#include <sys/types.h>
#include <sys/ioctl.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/sockios.h>
#include <linux/tcp.h>

#include <stddef.h>
#include <time.h>

#include <event2/event_struct.h>

#include "fdistd.h"
#include "conn.h"

/* tcpi_state of a connection that is over (TCP_CLOSE; not in linux/tcp.h). */
#define TCPI_STATE_CLOSED	7

/*
 * How many file bytes the client's TCP has acknowledged.  TCP_INFO keeps
 * the count even after a reset, when the send queue is already gone, and
 * says whether the connection is over (c_gone).
 */
uint64_t
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
bool
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
void
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
void
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
void
conn_watch_reset(struct conn *c)
{
	struct event_base	*base = event_get_base(&c->c_rev);

	event_del(&c->c_rev);
	event_assign(&c->c_rev, base, c->c_fd, EV_READ | EV_ET | EV_PERSIST,
	    conn_on_reset, c);
	event_add(&c->c_rev, NULL);
}
