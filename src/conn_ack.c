/*
 * conn_ack.c: reading what the client sends, from the start: its ack is
 * kept up to ack_max, then read on and dropped, so that the close means a
 * FIN and not a reset.  Its FIN or the ack deadline ends the transfer.
 */
#include <sys/types.h>
#include <sys/queue.h>

#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event_struct.h>

#include "fdistd.h"
#include "conn.h"

/* Where bytes past the ack go: read, never kept. */
static unsigned char		drain[64 * 1024];

/* The outcome of a client that finished after the whole file. */
enum outcome
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
ssize_t
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

void
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
