/*
 * conn.c: one client connection, from accept to its single log record.
 *
 * The daemon sends the share's file with sendfile(2), half-closes, waits
 * until the client's TCP has every byte, then reads the client's
 * acknowledgement until its FIN or the ack deadline.  Whatever happens,
 * conn_close() is the only way out: it removes the events, writes the
 * record (or parks it until the file's digest is known), closes and
 * updates the counters.
 *
 * This file holds its life: the start, the state changes, the way out
 * and the record.  Each state has its own file: conn_send.c sends the
 * file, conn_flush.c waits for the client's TCP to have it all and
 * conn_ack.c reads the ack (from the start: a client may ack early).
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event_struct.h>

#include "fdistd.h"
#include "conn.h"

static TAILQ_HEAD(conn_list, conn) conns = TAILQ_HEAD_INITIALIZER(conns);
static size_t			nconns;
/* Closed, acked with a digest claim, waiting for the file's digest. */
static struct conn_list		parked = TAILQ_HEAD_INITIALIZER(parked);

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
void
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

struct timeval
conn_timeval_ms(uint64_t ms)
{
	struct timeval	tv;

	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000 * 1000);
	return (tv);
}

int64_t
conn_usec_between(const struct timespec *a, const struct timespec *b)
{
	return ((int64_t)(b->tv_sec - a->tv_sec) * 1000000 +
	    (b->tv_nsec - a->tv_nsec) / 1000);
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
	conn_send_first(c);
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
void
conn_close(struct conn *c, enum outcome status)
{
	char	claim[65];

	conn_take_back(c);	/* a worker may be sending */
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
