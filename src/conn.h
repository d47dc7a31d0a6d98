/*
 * conn.h: one client connection, private to the files that run it:
 * conn.c (its life: start, state, the one way out, the record),
 * conn_send.c (sending the file), conn_flush.c (after the FIN, until the
 * client's TCP has every byte) and conn_ack.c (reading the client's ack).
 * What the rest of the daemon calls is in fdistd.h.
 */
#ifndef CONN_H
#define CONN_H

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <event2/event_struct.h>

#include "fdistd.h"
#include "pool.h"

/*
 * Reads per read event, so that a client that floods us cannot keep the
 * loop from the others either (SEND_BUDGET, conn_send.c).
 */
#define READS_PER_EVENT	4
/*
 * While the client's TCP has not acknowledged every byte, look again
 * after this long, doubling each time up to the maximum.
 */
#define FLUSH_POLL_MIN_MS	10
#define FLUSH_POLL_MAX_MS	500

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
	struct pool_job		*c_job;		/* a send a worker has */
	unsigned char		 c_ack[];	/* ack_max bytes */
};

/* conn.c */
void		 conn_set_state(struct conn *, enum conn_state);
void		 conn_close(struct conn *, enum outcome);
struct timeval	 conn_timeval_ms(uint64_t);
int64_t		 conn_usec_between(const struct timespec *,
		    const struct timespec *);

/* conn_ack.c */
enum outcome	 conn_ack_outcome(const struct conn *);
ssize_t		 conn_read_ack(struct conn *, size_t *);
void		 conn_on_readable(evutil_socket_t, short, void *);

/* conn_flush.c */
uint64_t	 conn_delivered(struct conn *);
bool		 conn_all_delivered(struct conn *);
void		 conn_flushed(struct conn *);
void		 conn_check_flush(struct conn *);
void		 conn_watch_reset(struct conn *);

/* conn_send.c */
void		 conn_send(struct conn *);
void		 conn_send_first(struct conn *);
void		 conn_take_back(struct conn *);
void		 conn_on_timer(evutil_socket_t, short, void *);
void		 conn_on_writable(evutil_socket_t, short, void *);

#endif /* CONN_H */
