/*
 * metrics.c: the daemon's counters for Prometheus.  With "metrics =
 * ADDR:PORT", GET /metrics answers in the text exposition format 0.0.4,
 * served by libevent's HTTP server.  The counters are kept where the
 * records are written (share_state, server_stats) as plain increments;
 * only a scrape formats them, so transfers pay nothing for the endpoint.
 *
 * The endpoint must never be a way in.  Each connection is checked
 * against metrics_allow (loopback only by default) and against
 * METRICS_CONNS_MAX before evhttp reads a byte of it, and closed if
 * refused, without a log line (a refused peer must not fill the log: it
 * is counted instead).  Requests are bounded in size and time, and only
 * GET or HEAD of /metrics is answered.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "fdistd.h"
#include "version.h"

#define METRICS_CONNS_MAX	16	/* connections at once */
#define METRICS_TIMEOUT_S	10	/* to send a request, or idle */
#define METRICS_HEADERS_MAX	8192	/* request line and headers */
#define METRICS_BODY_MAX	1024
#define METRICS_BACKLOG		16
#define METRICS_RETRY_MS	100	/* after accept() fails */

/* A connection of the endpoint, from evhttp's making it to its freeing. */
struct metrics_conn {
	TAILQ_ENTRY(metrics_conn) mn_entry;
	struct bufferevent	*mn_bev;	/* evhttp's, of the socket */
};
TAILQ_HEAD(metrics_conn_list, metrics_conn);

enum metrics_refusal {
	METRICS_NOT_ALLOWED,
	METRICS_TOO_MANY,
	METRICS_NREFUSALS
};

static struct event_base	*metrics_base;
static struct evhttp		*metrics_http;
static struct evhttp_bound_socket *metrics_bound;
static struct listen_addr	 metrics_addr;	/* of metrics_bound */
static int			 metrics_pending = -1;	/* bound, to commit */
static struct acl		 metrics_allow;
static struct metrics_conn_list	 metrics_new =	/* to check */
				    TAILQ_HEAD_INITIALIZER(metrics_new);
static struct metrics_conn_list	 metrics_conns =	/* admitted */
				    TAILQ_HEAD_INITIALIZER(metrics_conns);
static size_t			 metrics_nconns;
static struct event		*metrics_check_ev;
static struct event		*metrics_retry_ev;
static struct timespec		 metrics_started;
static uint64_t			 metrics_refused[METRICS_NREFUSALS];

static const char *const metrics_refusal_names[METRICS_NREFUSALS] = {
	[METRICS_NOT_ALLOWED] = "not allowed",
	[METRICS_TOO_MANY] = "too many connections",
};

static const char *const metrics_digest_names[] = {
	[DIGEST_NONE] = "none",
	[DIGEST_PENDING] = "pending",
	[DIGEST_READY] = "ready",
	[DIGEST_FAILED] = "failed",
};

/* A label value, escaped as the exposition format says. */
static void
metrics_label(struct evbuffer *b, const char *s)
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
metrics_head(struct evbuffer *b, const char *name, const char *type,
    const char *help)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help,
	    name, type);
}

/* name{share="..." : a sample's start; then its pairs and its end. */
static void
metrics_sample(struct evbuffer *b, const char *name, const char *share)
{
	evbuffer_add_printf(b, "%s{share=\"", name);
	metrics_label(b, share);
	evbuffer_add(b, "\"", 1);
}

static void
metrics_pair(struct evbuffer *b, const char *key, const char *value)
{
	evbuffer_add_printf(b, ",%s=\"", key);
	metrics_label(b, value);
	evbuffer_add(b, "\"", 1);
}

static void
metrics_value(struct evbuffer *b, uint64_t v)
{
	evbuffer_add_printf(b, "} %" PRIu64 "\n", v);
}

static void
metrics_format_transfers(struct evbuffer *b, const struct share_list *list)
{
	const struct share	*sh;
	const char		*reason;
	enum outcome		 status;
	size_t			 i;

	metrics_head(b, "fdistd_transfers_total", "counter", "Transfers "
	    "ended, by the status of their record (refusals are in "
	    "fdistd_refusals_total).");
	TAILQ_FOREACH(sh, list, sh_entry) {
		for (i = 0; i < OUTCOME_DENIED; i++) {
			metrics_sample(b, "fdistd_transfers_total", sh->sh_name);
			metrics_pair(b, "status",
			    log_outcome_name((enum outcome)i));
			metrics_value(b, sh->sh_state->ss_ended[i]);
		}
	}
	metrics_head(b, "fdistd_delivered_bytes_total", "counter", "File "
	    "bytes the clients' TCP acknowledged, by the status of the "
	    "transfer's record.");
	TAILQ_FOREACH(sh, list, sh_entry) {
		for (i = 0; i < OUTCOME_DENIED; i++) {
			metrics_sample(b, "fdistd_delivered_bytes_total",
			    sh->sh_name);
			metrics_pair(b, "status",
			    log_outcome_name((enum outcome)i));
			metrics_value(b, sh->sh_state->ss_bytes[i]);
		}
	}
	metrics_head(b, "fdistd_refusals_total", "counter", "Connections "
	    "refused before any byte of the file, by status and reason.");
	TAILQ_FOREACH(sh, list, sh_entry) {
		for (i = 0; server_refusal_reason(i, &reason, &status); i++) {
			metrics_sample(b, "fdistd_refusals_total", sh->sh_name);
			metrics_pair(b, "status", log_outcome_name(status));
			metrics_pair(b, "reason", reason);
			metrics_value(b, sh->sh_state->ss_refused[i]);
		}
	}
	metrics_head(b, "fdistd_clients", "gauge", "Clients connected now, "
	    "by the state of their connection.");
	TAILQ_FOREACH(sh, list, sh_entry) {
		for (i = 0; i < CONN_NSTATES; i++) {
			metrics_sample(b, "fdistd_clients", sh->sh_name);
			metrics_pair(b, "state", conn_state_name((int)i));
			metrics_value(b, sh->sh_state->ss_clients[i]);
		}
	}
}

static void
metrics_format_files(struct evbuffer *b, const struct share_list *list)
{
	const struct share	*sh;
	const struct sfile	*sf;
	size_t			 i;

	metrics_head(b, "fdistd_file_size_bytes", "gauge", "Size of the "
	    "file the share serves.");
	TAILQ_FOREACH(sh, list, sh_entry) {
		metrics_sample(b, "fdistd_file_size_bytes", sh->sh_name);
		metrics_value(b, sh->sh_file->sf_size);
	}
	metrics_head(b, "fdistd_file_info", "gauge", "The file the share "
	    "serves: its path (escaped as in the log), version and SHA-256 "
	    "(empty until known).");
	TAILQ_FOREACH(sh, list, sh_entry) {
		sf = sh->sh_file;
		metrics_sample(b, "fdistd_file_info", sh->sh_name);
		metrics_pair(b, "file", sf->sf_path_log);
		metrics_pair(b, "version", sf->sf_version);
		metrics_pair(b, "sha256", sf->sf_digest == DIGEST_READY ?
		    sf->sf_sha256 : "");
		metrics_value(b, 1);
	}
	metrics_head(b, "fdistd_file_digest_state", "gauge", "Whether the "
	    "SHA-256 of the share's file is being computed, known or "
	    "failed: 1 for the current state.");
	TAILQ_FOREACH(sh, list, sh_entry) {
		for (i = 0; i < sizeof(metrics_digest_names) /
		    sizeof(metrics_digest_names[0]); i++) {
			metrics_sample(b, "fdistd_file_digest_state",
			    sh->sh_name);
			metrics_pair(b, "state", metrics_digest_names[i]);
			metrics_value(b,
			    sh->sh_file->sf_digest == (enum digest_state)i);
		}
	}
}

static void
metrics_format_time(struct evbuffer *b, const char *name,
    const struct timespec *ts)
{
	evbuffer_add_printf(b, "%s %lld.%03ld\n", name, (long long)ts->tv_sec,
	    ts->tv_nsec / 1000000);
}

static void
metrics_format_daemon(struct evbuffer *b)
{
	const struct server_stats	*st = server_stats();
	size_t				 i;

	metrics_head(b, "process_start_time_seconds", "gauge", "Start time "
	    "of the process since the Unix epoch, in seconds.");
	metrics_format_time(b, "process_start_time_seconds", &metrics_started);
	metrics_head(b, "fdistd_build_info", "gauge", "The version of "
	    "fdistd running.");
	evbuffer_add_printf(b, "fdistd_build_info{version=\"");
	metrics_label(b, FDIST_VERSION);
	evbuffer_add_printf(b, "\"} 1\n");
	metrics_head(b, "fdistd_reloads_total", "counter", "Reloads "
	    "(SIGHUP), by result.");
	evbuffer_add_printf(b, "fdistd_reloads_total{result=\"success\"} %"
	    PRIu64 "\nfdistd_reloads_total{result=\"failure\"} %" PRIu64
	    "\n", st->st_reloads_ok, st->st_reloads_failed);
	metrics_head(b, "fdistd_config_last_reload_success_timestamp_seconds",
	    "gauge", "When the configuration in use was loaded (at start or "
	    "by the last good reload), since the Unix epoch.");
	metrics_format_time(b,
	    "fdistd_config_last_reload_success_timestamp_seconds",
	    &st->st_loaded);
	metrics_head(b, "fdistd_accepted_connections_total", "counter",
	    "Client connections accepted on the shares' addresses.");
	evbuffer_add_printf(b, "fdistd_accepted_connections_total %" PRIu64
	    "\n", st->st_accepted);
	metrics_head(b, "fdistd_metrics_refused_connections_total", "counter",
	    "Connections to this endpoint closed unanswered, by reason.");
	for (i = 0; i < METRICS_NREFUSALS; i++)
		evbuffer_add_printf(b, "fdistd_metrics_refused_connections_total"
		    "{reason=\"%s\"} %" PRIu64 "\n", metrics_refusal_names[i],
		    metrics_refused[i]);
}

/* The whole exposition, of the running shares only. */
static void
metrics_format(struct evbuffer *b)
{
	const struct share_list	*list = server_shares();

	metrics_format_transfers(b, list);
	metrics_format_files(b, list);
	metrics_format_daemon(b);
}

/* An error reply (evhttp_send_error would drop the Allow header). */
static void
metrics_refuse(struct evhttp_request *req, int code, const char *reason)
{
	struct evkeyvalq	*out = evhttp_request_get_output_headers(req);
	struct evbuffer		*body = evbuffer_new();

	evhttp_add_header(out, "Content-Type", "text/plain; charset=utf-8");
	evhttp_add_header(out, "Connection", "close");
	if (body != NULL)
		evbuffer_add_printf(body, "%d %s\n", code, reason);
	evhttp_send_reply(req, code, reason, body);
	if (body != NULL)
		evbuffer_free(body);
}

static void
metrics_on_request(struct evhttp_request *req, void *arg)
{
	struct evkeyvalq		*out = evhttp_request_get_output_headers(req);
	const struct evhttp_uri		*uri = evhttp_request_get_evhttp_uri(req);
	const char			*path;
	enum evhttp_cmd_type		 cmd = evhttp_request_get_command(req);
	struct evbuffer			*body;
	char				 len[32];

	(void)arg;
	path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	if (path == NULL || strcmp(path, "/metrics") != 0) {
		metrics_refuse(req, HTTP_NOTFOUND, "Not Found");
		return;
	}
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_add_header(out, "Allow", "GET, HEAD");
		metrics_refuse(req, 405, "Method Not Allowed");
		return;
	}
	if ((body = evbuffer_new()) == NULL) {
		metrics_refuse(req, HTTP_SERVUNAVAIL, "Service Unavailable");
		return;
	}
	metrics_format(body);
	evhttp_add_header(out, "Content-Type",
	    "text/plain; version=0.0.4; charset=utf-8");
	/* HEAD: the length GET would have, and no body (evhttp would send it). */
	snprintf(len, sizeof(len), "%zu", evbuffer_get_length(body));
	evhttp_add_header(out, "Content-Length", len);
	evhttp_send_reply(req, HTTP_OK, "OK",
	    cmd == EVHTTP_REQ_GET ? body : NULL);
	evbuffer_free(body);
}

/* evhttp is freeing an admitted connection. */
static void
metrics_on_close(struct evhttp_connection *evcon, void *arg)
{
	struct metrics_conn	*mn = arg;

	evhttp_connection_set_closecb(evcon, NULL, NULL);
	TAILQ_REMOVE(&metrics_conns, mn, mn_entry);
	metrics_nconns--;
	free(mn);
}

/*
 * A connection evhttp is making: its buffer, which gets the socket as
 * soon as this returns, is checked by metrics_on_check before any read.
 * The reference taken keeps the buffer there for the check even if
 * evhttp fails to make the connection and frees it.  (Out of memory,
 * NULL makes evhttp use a buffer of its own, and fail to make its
 * connection too.)
 */
static struct bufferevent *
metrics_on_connection(struct event_base *base, void *arg)
{
	struct metrics_conn	*mn;

	(void)arg;
	if ((mn = calloc(1, sizeof(*mn))) == NULL)
		return (NULL);
	mn->mn_bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (mn->mn_bev == NULL) {
		free(mn);
		return (NULL);
	}
	bufferevent_incref(mn->mn_bev);
	TAILQ_INSERT_TAIL(&metrics_new, mn, mn_entry);
	event_active(metrics_check_ev, EV_TIMEOUT, 1);
	return (mn->mn_bev);
}

/*
 * Whether a new connection may be served: from metrics_allow, and one of
 * at most METRICS_CONNS_MAX.  Else its socket is shut down: evhttp reads
 * the end of it and frees the connection, having parsed nothing.
 */
static bool
metrics_admit(int fd, struct evhttp_connection *evcon,
    struct bufferevent *bev)
{
	struct sockaddr_storage	ss;
	socklen_t		len = sizeof(ss);
	int			why;

	/* The buffer's callback argument is evhttp's connection. */
	if (evcon == NULL || evhttp_connection_get_bufferevent(evcon) != bev ||
	    getpeername(fd, (struct sockaddr *)&ss, &len) == -1 ||
	    !acl_match(&metrics_allow, (struct sockaddr *)&ss))
		why = METRICS_NOT_ALLOWED;
	else if (metrics_nconns >= METRICS_CONNS_MAX)
		why = METRICS_TOO_MANY;
	else
		return (true);
	metrics_refused[why]++;
	shutdown(fd, SHUT_RDWR);
	return (false);
}

/* Check the new connections; an admitted one is counted until freed. */
static void
metrics_on_check(evutil_socket_t unused, short what, void *arg)
{
	struct metrics_conn	*mn;
	void			*cbarg;
	int			 fd;

	(void)unused;
	(void)what;
	(void)arg;
	while ((mn = TAILQ_FIRST(&metrics_new)) != NULL) {
		TAILQ_REMOVE(&metrics_new, mn, mn_entry);
		bufferevent_getcb(mn->mn_bev, NULL, NULL, NULL, &cbarg);
		fd = bufferevent_getfd(mn->mn_bev);
		/* No callbacks: evhttp has freed it (made it, or not). */
		if (cbarg != NULL && fd != -1 &&
		    metrics_admit(fd, cbarg, mn->mn_bev)) {
			evhttp_connection_set_closecb(cbarg, metrics_on_close,
			    mn);
			TAILQ_INSERT_TAIL(&metrics_conns, mn, mn_entry);
			metrics_nconns++;
			bufferevent_decref(mn->mn_bev);
			continue;
		}
		bufferevent_decref(mn->mn_bev);
		free(mn);
	}
}

/*
 * accept() failed (out of descriptors, say): libevent would try again at
 * once, and spin.  Pause the listener a moment instead.
 */
static void
metrics_on_accept_error(struct evconnlistener *lev, void *arg)
{
	struct timeval	tv = { 0, METRICS_RETRY_MS * 1000 };

	(void)arg;
	evconnlistener_disable(lev);
	evtimer_add(metrics_retry_ev, &tv);
}

static void
metrics_on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (metrics_bound != NULL)
		evconnlistener_enable(evhttp_bound_socket_get_listener(
		    metrics_bound));
}

void
metrics_init(struct event_base *base)
{
	metrics_base = base;
	clock_gettime(CLOCK_REALTIME, &metrics_started);
	metrics_check_ev = event_new(base, -1, 0, metrics_on_check, NULL);
	metrics_retry_ev = evtimer_new(base, metrics_on_retry, NULL);
	if (metrics_check_ev == NULL || metrics_retry_ev == NULL)
		fatalx("metrics: cannot make events");
}

/* Bind and listen on the metrics address. */
static int
metrics_bind(const struct listen_addr *la, char *err, size_t errlen)
{
	char	name[ADDR_STR_MAX];
	int	fd, on = 1;

	fd = socket(la->la_ss.ss_family,
	    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		goto fail;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == -1)
		goto fail;
	if (la->la_ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6,
	    IPV6_V6ONLY, &on, sizeof(on)) == -1)
		goto fail;
	if (bind(fd, (const struct sockaddr *)&la->la_ss, la->la_len) == -1 ||
	    listen(fd, METRICS_BACKLOG) == -1)
		goto fail;
	return (fd);
fail:
	addr_format((const struct sockaddr *)&la->la_ss, name, sizeof(name));
	snprintf(err, errlen, "metrics on %s: %s", name, strerror(errno));
	if (fd != -1)
		close(fd);
	return (-1);
}

/*
 * The first half of applying cf (server_apply): bind its metrics address
 * if it is a new one, so that a reload that cannot fails whole.
 */
int
metrics_prepare(const struct config *cf, char *err, size_t errlen)
{
	const struct metrics_config	*mc = &cf->cf_metrics;

	metrics_abort();
	if (mc->mc_line == 0 || (metrics_bound != NULL &&
	    addr_equal((const struct sockaddr *)&metrics_addr.la_ss,
	    (const struct sockaddr *)&mc->mc_addr.la_ss)))
		return (0);
	if ((metrics_pending = metrics_bind(&mc->mc_addr, err, errlen)) == -1)
		return (-1);
	return (0);
}

void
metrics_abort(void)
{
	if (metrics_pending != -1)
		close(metrics_pending);
	metrics_pending = -1;
}

static struct evhttp *
metrics_http_new(void)
{
	struct evhttp	*http;

	if ((http = evhttp_new(metrics_base)) == NULL)
		return (NULL);
	evhttp_set_max_headers_size(http, METRICS_HEADERS_MAX);
	evhttp_set_max_body_size(http, METRICS_BODY_MAX);
	evhttp_set_timeout(http, METRICS_TIMEOUT_S);
	/* Every method evhttp parses reaches us, so others get a 405. */
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD |
	    EVHTTP_REQ_POST | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	    EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT |
	    EVHTTP_REQ_PATCH);
	evhttp_set_bevcb(http, metrics_on_connection, NULL);
	evhttp_set_gencb(http, metrics_on_request, NULL);
	return (http);
}

/* Stop serving metrics: every metrics connection is closed. */
static void
metrics_stop(void)
{
	if (metrics_http != NULL)
		evhttp_free(metrics_http);
	metrics_http = NULL;
	metrics_bound = NULL;
	evtimer_del(metrics_retry_ev);
}

/* The second half: serve cf's metrics, on the address prepared. */
void
metrics_commit(const struct config *cf)
{
	const struct metrics_config	*mc = &cf->cf_metrics;
	char				 name[ADDR_STR_MAX], err[ERR_MAX];
	int				 fd = metrics_pending;

	metrics_pending = -1;
	metrics_allow = mc->mc_allow;
	if (metrics_allow.acl_n == 0 && parse_acl(METRICS_LOOPBACK,
	    &metrics_allow, err, sizeof(err)) == -1)
		fatalx("metrics: %s", err);
	if (mc->mc_line == 0) {
		if (metrics_http != NULL)
			log_info("no longer serving metrics");
		metrics_stop();
		return;
	}
	if (fd == -1)
		return;		/* the same address */
	if (metrics_http == NULL && (metrics_http = metrics_http_new()) == NULL)
		goto fail;
	if (metrics_bound != NULL)
		evhttp_del_accept_socket(metrics_http, metrics_bound);
	metrics_bound = evhttp_accept_socket_with_handle(metrics_http, fd);
	if (metrics_bound == NULL)
		goto fail;
	evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(
	    metrics_bound), metrics_on_accept_error);
	metrics_addr = mc->mc_addr;
	addr_format((const struct sockaddr *)&metrics_addr.la_ss, name,
	    sizeof(name));
	log_info("metrics on http://%s/metrics", name);
	return;
fail:
	log_warn("metrics: cannot serve them");
	close(fd);
	metrics_stop();
}

void
metrics_free(void)
{
	struct metrics_conn	*mn;

	while ((mn = TAILQ_FIRST(&metrics_new)) != NULL) {
		TAILQ_REMOVE(&metrics_new, mn, mn_entry);
		bufferevent_decref(mn->mn_bev);	/* the connection is evhttp's */
		free(mn);
	}
	metrics_abort();
	metrics_stop();
	if (metrics_check_ev != NULL)
		event_free(metrics_check_ev);
	if (metrics_retry_ev != NULL)
		event_free(metrics_retry_ev);
	metrics_check_ev = metrics_retry_ev = NULL;
}
