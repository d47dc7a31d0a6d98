/*
 * server_refuse.c: turning clients away.  Each refusal is a reset and a
 * record like a transfer's, rate-limited per status: past the limit the
 * refusals of a window are only counted, by share and reason, and a
 * summary record gives the counts.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fdistd.h"

/*
 * Refused connections get records like transfers, but a flood must not
 * flood the journal: past this many records a second for one status,
 * refusals are only counted, and a summary record gives the count.
 */
#define REFUSAL_RECORDS		10
#define REFUSAL_WINDOW_MS	1000

enum refusal {
	REFUSED_DENIED,
	REFUSED_BUSY,
	REFUSED_PROXY,
	REFUSED_PROBE,
	REFUSED_SHUTDOWN,
	NREFUSALS
};

static const struct {
	enum refusal	 rr_kind;
	const char	*rr_text;
} refusal_reasons[NREASONS] = {
	[REASON_NOT_ALLOWED] = { REFUSED_DENIED, "not allowed" },
	[REASON_MAX_CLIENTS] = { REFUSED_BUSY, "max_clients" },
	[REASON_SHARE_MAX_CLIENTS] = { REFUSED_BUSY, "share max_clients" },
	[REASON_MAX_PER_IP] = { REFUSED_BUSY, "max_per_ip" },
	[REASON_NO_DESCRIPTORS] = { REFUSED_BUSY, "out of file descriptors" },
	[REASON_NO_MEMORY] = { REFUSED_BUSY, "out of memory" },
	[REASON_FILE_CHANGING] = { REFUSED_BUSY, "file changing" },
	[REASON_NOT_PROXY_FROM] = { REFUSED_DENIED, "not in proxy_from" },
	[REASON_PROXY_MALFORMED] = { REFUSED_PROXY, "malformed PROXY header" },
	[REASON_PROXY_OVERSIZED] = { REFUSED_PROXY, "oversized PROXY header" },
	[REASON_PROXY_TRUNCATED] = { REFUSED_PROXY, "truncated PROXY header" },
	[REASON_PROXY_TIMEOUT] = { REFUSED_PROXY, "proxy_timeout" },
	[REASON_PROXY_PROBE] = { REFUSED_PROBE, "closed before a byte" },
	[REASON_PROXY_LOCAL_PROBE] = { REFUSED_PROBE, "closed after its header" },
	[REASON_PROXY_SHUTDOWN] = { REFUSED_SHUTDOWN,
	    "awaiting the PROXY header" },
};
/* conn_proxy.c's refusals, in the order of enum proxy_refusal. */
static const enum refusal_reason proxy_reasons[] = {
	[PROXY_REFUSED_MALFORMED] = REASON_PROXY_MALFORMED,
	[PROXY_REFUSED_OVERSIZED] = REASON_PROXY_OVERSIZED,
	[PROXY_REFUSED_TRUNCATED] = REASON_PROXY_TRUNCATED,
	[PROXY_REFUSED_TIMEOUT] = REASON_PROXY_TIMEOUT,
	[PROXY_REFUSED_PROBE] = REASON_PROXY_PROBE,
	[PROXY_REFUSED_LOCAL_PROBE] = REASON_PROXY_LOCAL_PROBE,
	[PROXY_REFUSED_SHUTDOWN] = REASON_PROXY_SHUTDOWN,
};
_Static_assert(NREASONS <= SHARE_REASONS_MAX, "ss_refused holds them");

/*
 * The refusals of this window that were only counted, by share, so the
 * summary says which share was flooded and why.  A share's tally is
 * allocated once per window; out of memory, the counts go to an
 * unnamed one.
 */
struct refusal_tally {
	TAILQ_ENTRY(refusal_tally) rt_entry;
	char			rt_share[SHARE_NAME_MAX];
	uint64_t		rt_count[NREASONS];
};
TAILQ_HEAD(refusal_tally_list, refusal_tally);

static struct event		*refusal_timer;
static uint64_t			 refusals_logged[NREFUSALS];
static struct refusal_tally_list tallies = TAILQ_HEAD_INITIALIZER(tallies);
static struct refusal_tally	 tally_unnamed;
static const enum outcome	 refusal_outcome[NREFUSALS] = {
	[REFUSED_DENIED] = OUTCOME_DENIED,
	[REFUSED_BUSY] = OUTCOME_BUSY,
	[REFUSED_PROXY] = OUTCOME_PROXY_ERROR,
	[REFUSED_PROBE] = OUTCOME_PROBE,
	[REFUSED_SHUTDOWN] = OUTCOME_SHUTDOWN,
};

static struct refusal_tally *
server_refuse_tally(const char *share)
{
	struct refusal_tally	*rt;

	TAILQ_FOREACH(rt, &tallies, rt_entry) {
		if (strcmp(rt->rt_share, share) == 0)
			return (rt);
	}
	if ((rt = calloc(1, sizeof(*rt))) == NULL)
		return (&tally_unnamed);
	snprintf(rt->rt_share, sizeof(rt->rt_share), "%s", share);
	TAILQ_INSERT_TAIL(&tallies, rt, rt_entry);
	return (rt);
}

static void
server_refuse_log_tally(struct refusal_tally *rt, const char *share)
{
	int	i;

	for (i = 0; i < NREASONS; i++) {
		if (rt->rt_count[i] == 0)
			continue;
		log_refusals(share, refusal_outcome[refusal_reasons[i].rr_kind],
		    refusal_reasons[i].rr_text, rt->rt_count[i],
		    REFUSAL_WINDOW_MS);
		rt->rt_count[i] = 0;
	}
}

/*
 * Summarise the refusals that were only counted, one record per share
 * and reason; returns whether the window saw any refusal at all.
 */
static bool
server_refuse_log(void)
{
	struct refusal_tally	*rt;
	bool			 busy_window = false;
	int			 i;

	while ((rt = TAILQ_FIRST(&tallies)) != NULL) {
		TAILQ_REMOVE(&tallies, rt, rt_entry);
		server_refuse_log_tally(rt, rt->rt_share);
		free(rt);
	}
	server_refuse_log_tally(&tally_unnamed, NULL);
	for (i = 0; i < NREFUSALS; i++) {
		busy_window = busy_window || refusals_logged[i] > 0;
		refusals_logged[i] = 0;
	}
	return (busy_window);
}

/* End of a refusal window. */
static void
server_refuse_on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (server_refuse_log())
		server_timer_add(refusal_timer, REFUSAL_WINDOW_MS);
}

/*
 * Turn a connection away before any byte of the file: a reset (linger
 * 0), so a client can never take a refusal for an empty file.  It gets
 * a record, or is counted in the next summary.
 */
void
server_refuse(int fd, const struct sockaddr *peer,
    const struct sockaddr *proxy, const struct share *sh,
    enum refusal_reason reason)
{
	struct transfer_record	tr;
	struct linger		lg = { 1, 0 };
	enum refusal		kind = refusal_reasons[reason].rr_kind;
	char			name[ADDR_STR_MAX], pname[ADDR_STR_MAX];

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
	server_count_refused();
	sh->sh_state->ss_refused[reason]++;
	if (!evtimer_pending(refusal_timer, NULL))
		server_timer_add(refusal_timer, REFUSAL_WINDOW_MS);
	if (refusals_logged[kind] >= REFUSAL_RECORDS) {
		server_refuse_tally(sh->sh_name)->rt_count[reason]++;
		return;
	}
	refusals_logged[kind]++;
	addr_format(peer, name, sizeof(name));
	memset(&tr, 0, sizeof(tr));
	tr.tr_share = sh->sh_name;
	tr.tr_file = sh->sh_file->sf_path_log;
	tr.tr_peer = name;
	if (proxy != NULL) {
		addr_format(proxy, pname, sizeof(pname));
		tr.tr_proxy = pname;
	}
	tr.tr_size = sh->sh_file->sf_size;
	tr.tr_status = refusal_outcome[kind];
	tr.tr_reason = refusal_reasons[reason].rr_text;
	tr.tr_version = sh->sh_file->sf_version;
	if (sh->sh_file->sf_digest == DIGEST_READY)
		tr.tr_file_sha256 = sh->sh_file->sf_sha256;
	log_transfer(&tr);
}

/* A PROXY header could not give a connection from proxy its client. */
void
server_refuse_proxy(int fd, const struct sockaddr *proxy,
    const struct share *sh, enum proxy_refusal why)
{
	server_refuse(fd, proxy, proxy, sh, proxy_reasons[why]);
}

/* Refusal reason i's text and status; false past the last reason. */
bool
server_refusal_reason(size_t i, const char **text, enum outcome *status)
{
	if (i >= NREASONS)
		return (false);
	*text = refusal_reasons[i].rr_text;
	*status = refusal_outcome[refusal_reasons[i].rr_kind];
	return (true);
}

/* The refusal window's timer. */
int
server_refuse_init(struct event_base *base)
{
	refusal_timer = evtimer_new(base, server_refuse_on_timer, NULL);
	return (refusal_timer == NULL ? -1 : 0);
}

/* Summarise a window cut short by the stop, and free the timer. */
void
server_refuse_free(void)
{
	server_refuse_log();
	if (refusal_timer != NULL)
		event_free(refusal_timer);
	refusal_timer = NULL;
}
