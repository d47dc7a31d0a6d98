/*
 * metrics_format.c: the counters in Prometheus's text exposition format,
 * version 0.0.4: HELP and TYPE before each family's samples, every label
 * value escaped.  Every sample of a family is written, zeros included,
 * so that a series exists before its first event.
 */
#include <sys/types.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "fdistd.h"
#include "version.h"

static struct timespec	started;

static const char *const metrics_format_refusal_names[METRICS_NREFUSALS] = {
	[METRICS_NOT_ALLOWED] = "not allowed",
	[METRICS_TOO_MANY] = "too many connections",
};

#define NDIGEST_STATES	(DIGEST_FAILED + 1)
static const char *const metrics_format_digest_names[NDIGEST_STATES] = {
	[DIGEST_NONE] = "none",
	[DIGEST_PENDING] = "pending",
	[DIGEST_READY] = "ready",
	[DIGEST_FAILED] = "failed",
};

/* A label value, escaped as the exposition format says. */
static void
metrics_format_label(struct evbuffer *b, const char *s)
{
	const char	*p;

	for (p = s; *p != '\0'; p++) {
		if (*p == '\\')
			evbuffer_add(b, "\\\\", 2);
		else if (*p == '"')
			evbuffer_add(b, "\\\"", 2);
		else if (*p == '\n')
			evbuffer_add(b, "\\n", 2);
		else
			evbuffer_add(b, p, 1);
	}
}

static void
metrics_format_head(struct evbuffer *b, const char *name, const char *type,
    const char *help)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help,
	    name, type);
}

/* 'name{share="..."': a sample's start; then its pairs and its end. */
static void
metrics_format_open(struct evbuffer *b, const char *name,
    const struct share *sh)
{
	evbuffer_add_printf(b, "%s{share=\"", name);
	metrics_format_label(b, sh->sh_name);
	evbuffer_add(b, "\"", 1);
}

static void
metrics_format_pair(struct evbuffer *b, const char *key, const char *value)
{
	evbuffer_add_printf(b, ",%s=\"", key);
	metrics_format_label(b, value);
	evbuffer_add(b, "\"", 1);
}

static void
metrics_format_close(struct evbuffer *b, uint64_t v)
{
	evbuffer_add_printf(b, "} %" PRIu64 "\n", v);
}

/* Whether a served connection's record may have this status. */
static bool
metrics_format_is_transfer(enum outcome o)
{
	return (o != OUTCOME_DENIED && o != OUTCOME_BUSY &&
	    o != OUTCOME_PROXY_ERROR);
}

/* A family of one sample per share and transfer status. */
static void
metrics_format_by_status(struct evbuffer *b, const struct share_list *list,
    const char *n, const char *help, bool bytes)
{
	const struct share	*sh;
	const uint64_t		*count;
	size_t			 i;

	metrics_format_head(b, n, "counter", help);
	TAILQ_FOREACH(sh, list, sh_entry) {
		count = bytes ? sh->sh_state->ss_bytes : sh->sh_state->ss_ended;
		for (i = 0; i < NOUTCOMES; i++) {
			if (!metrics_format_is_transfer((enum outcome)i))
				continue;
			metrics_format_open(b, n, sh);
			metrics_format_pair(b, "status",
			    log_outcome_name((enum outcome)i));
			metrics_format_close(b, count[i]);
		}
	}
}

static void
metrics_format_transfers(struct evbuffer *b, const struct share_list *list)
{
	const struct share	*sh;
	const char		*n, *reason;
	enum outcome		 status;
	size_t			 i;

	metrics_format_by_status(b, list, "fdistd_transfers_total",
	    "Transfers ended, by the status of their record (refusals are "
	    "in fdistd_refusals_total).", false);
	metrics_format_by_status(b, list, "fdistd_delivered_bytes_total",
	    "File bytes the clients' TCP acknowledged, by the status of the "
	    "transfer's record.", true);
	n = "fdistd_refusals_total";
	metrics_format_head(b, n, "counter", "Connections refused before any "
	    "byte of the file, by status and reason.");
	TAILQ_FOREACH(sh, list, sh_entry) {
		for (i = 0; server_refusal_reason(i, &reason, &status); i++) {
			metrics_format_open(b, n, sh);
			metrics_format_pair(b, "status",
			    log_outcome_name(status));
			metrics_format_pair(b, "reason", reason);
			metrics_format_close(b, sh->sh_state->ss_refused[i]);
		}
	}
	n = "fdistd_clients";
	metrics_format_head(b, n, "gauge", "Clients connected now, by the "
	    "state of their connection.");
	TAILQ_FOREACH(sh, list, sh_entry) {
		for (i = 0; i < CONN_NSTATES; i++) {
			metrics_format_open(b, n, sh);
			metrics_format_pair(b, "state",
			    conn_state_name((int)i));
			metrics_format_close(b, sh->sh_state->ss_clients[i]);
		}
	}
}

static void
metrics_format_files(struct evbuffer *b, const struct share_list *list)
{
	const struct share	*sh;
	const struct sfile	*sf;
	const char		*n;
	size_t			 i;

	n = "fdistd_file_size_bytes";
	metrics_format_head(b, n, "gauge", "Size of the file the share "
	    "serves.");
	TAILQ_FOREACH(sh, list, sh_entry) {
		metrics_format_open(b, n, sh);
		metrics_format_close(b, sh->sh_file->sf_size);
	}
	n = "fdistd_file_info";
	metrics_format_head(b, n, "gauge", "The file the share serves: its "
	    "path (escaped as in the log), version and SHA-256 (empty until "
	    "known).");
	TAILQ_FOREACH(sh, list, sh_entry) {
		sf = sh->sh_file;
		metrics_format_open(b, n, sh);
		metrics_format_pair(b, "file", sf->sf_path_log);
		metrics_format_pair(b, "version", sf->sf_version);
		metrics_format_pair(b, "sha256",
		    sf->sf_digest == DIGEST_READY ? sf->sf_sha256 : "");
		metrics_format_close(b, 1);
	}
	n = "fdistd_file_digest_state";
	metrics_format_head(b, n, "gauge", "Whether the SHA-256 of the "
	    "share's file is being computed, known or failed: 1 for the "
	    "current state.");
	TAILQ_FOREACH(sh, list, sh_entry) {
		for (i = 0; i < NDIGEST_STATES; i++) {
			metrics_format_open(b, n, sh);
			metrics_format_pair(b, "state",
			    metrics_format_digest_names[i]);
			metrics_format_close(b,
			    sh->sh_file->sf_digest == (enum digest_state)i);
		}
	}
}

/* A time since the Unix epoch, in seconds to the millisecond. */
static void
metrics_format_time(struct evbuffer *b, const char *name,
    const struct timespec *ts)
{
	evbuffer_add_printf(b, "%s %lld.%03ld\n", name, (long long)ts->tv_sec,
	    ts->tv_nsec / 1000000);
}

static void
metrics_format_daemon(struct evbuffer *b,
    const uint64_t refused[METRICS_NREFUSALS])
{
	const struct server_stats	*st = server_stats();
	const char			*n;
	size_t				 i;

	n = "process_start_time_seconds";
	metrics_format_head(b, n, "gauge", "Start time of the process since "
	    "the Unix epoch, in seconds.");
	metrics_format_time(b, n, &started);
	metrics_format_head(b, "fdistd_build_info", "gauge", "The version of "
	    "fdistd running.");
	evbuffer_add_printf(b, "fdistd_build_info{version=\"");
	metrics_format_label(b, FDIST_VERSION);
	evbuffer_add_printf(b, "\"} 1\n");
	n = "fdistd_reloads_total";
	metrics_format_head(b, n, "counter", "Reloads (SIGHUP), by result.");
	evbuffer_add_printf(b, "%s{result=\"success\"} %" PRIu64 "\n"
	    "%s{result=\"failure\"} %" PRIu64 "\n", n, st->st_reloads_ok, n,
	    st->st_reloads_failed);
	n = "fdistd_config_last_reload_success_timestamp_seconds";
	metrics_format_head(b, n, "gauge", "When the configuration in use "
	    "was loaded (at start or by the last good reload), since the "
	    "Unix epoch.");
	metrics_format_time(b, n, &st->st_loaded);
	n = "fdistd_accepted_connections_total";
	metrics_format_head(b, n, "counter", "Client connections accepted on "
	    "the shares' addresses.");
	evbuffer_add_printf(b, "%s %" PRIu64 "\n", n, st->st_accepted);
	n = "fdistd_metrics_refused_connections_total";
	metrics_format_head(b, n, "counter", "Connections to this endpoint "
	    "closed unanswered, by reason.");
	for (i = 0; i < METRICS_NREFUSALS; i++)
		evbuffer_add_printf(b, "%s{reason=\"%s\"} %" PRIu64 "\n", n,
		    metrics_format_refusal_names[i], refused[i]);
}

/* When the daemon started: now. */
void
metrics_format_init(void)
{
	clock_gettime(CLOCK_REALTIME, &started);
}

/*
 * The whole exposition, of the running shares only; refused counts the
 * metrics connections closed unanswered.
 */
void
metrics_format(struct evbuffer *b, const uint64_t refused[METRICS_NREFUSALS])
{
	const struct share_list	*list = server_shares();

	metrics_format_transfers(b, list);
	metrics_format_files(b, list);
	metrics_format_daemon(b, refused);
}
