/*
 * metrics.c: the daemon's counters for Prometheus.  With "metrics =
 * ADDR:PORT", GET /metrics answers in the text exposition format 0.0.4
 * (metrics_format.c), served by libevent's HTTP server.  The counters
 * are kept where the records are written (share_state, server_stats) as
 * plain increments; only a scrape formats them, so transfers pay nothing
 * for the endpoint.
 *
 * The endpoint must never be a way in.  Each connection is checked
 * against metrics_allow (loopback only by default) and against
 * METRICS_CONNS_MAX before evhttp reads a byte of it, and closed if
 * refused, without a log line (a refused peer must not fill the log: it
 * is counted instead).  Requests are bounded in size and time, and only
 * GET or HEAD of /metrics is answered.
 *
 * Two bounds evhttp does not keep itself.  Its timeout is per read, so
 * a request dripped a byte at a time would hold a connection for ever:
 * each connection has a deadline of its own for the whole request.  And
 * while it writes a reply it goes on reading, into a buffer nothing
 * empties, so requests pipelined by a peer that never reads the replies
 * would grow it without end: reading stops at METRICS_INPUT_MAX.
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
#include <event2/event_struct.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "fdistd.h"

#define METRICS_CONNS_MAX	16	/* connections at once */
#define METRICS_TIMEOUT_S	10	/* to send a request, or idle */
#define METRICS_HEADERS_MAX	8192	/* request line and headers */
#define METRICS_BODY_MAX	1024
/* Bytes read ahead of evhttp; a request fits whole. */
#define METRICS_INPUT_MAX	(2 * (METRICS_HEADERS_MAX + METRICS_BODY_MAX))
#define METRICS_BACKLOG		16
#define METRICS_RETRY_MS	100	/* after accept() fails */

/* A connection of the endpoint, from evhttp's making it to its freeing. */
struct metrics_conn {
	TAILQ_ENTRY(metrics_conn) mn_entry;
	struct bufferevent	*mn_bev;	/* evhttp's, of the socket */
	struct evhttp_connection *mn_evcon;	/* once admitted */
	struct event		 mn_deadline;	/* for the next request */
};
TAILQ_HEAD(metrics_conn_list, metrics_conn);

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
static uint64_t			 metrics_refused[METRICS_NREFUSALS];

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

/* The deadline for the next request, from now. */
static void
metrics_deadline(struct metrics_conn *mn)
{
	struct timeval	tv = { METRICS_TIMEOUT_S, 0 };

	evtimer_add(&mn->mn_deadline, &tv);
}

/* The request did not come in time: evhttp's connection goes. */
static void
metrics_on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct metrics_conn	*mn = arg;

	(void)fd;
	(void)what;
	evhttp_connection_free(mn->mn_evcon);	/* metrics_on_close frees mn */
}

/* A reply is sent: the next request's turn, if the connection is kept. */
static void
metrics_on_reply_sent(struct evhttp_request *req, void *arg)
{
	(void)req;
	metrics_deadline(arg);
}

/*
 * A request is in: no deadline while it is answered, as long as the
 * peer takes some of the reply every METRICS_TIMEOUT_S (evhttp's write
 * timeout).
 */
static void
metrics_request_in(struct evhttp_request *req)
{
	struct evhttp_connection	*evcon = evhttp_request_get_connection(req);
	struct metrics_conn		*mn;

	TAILQ_FOREACH(mn, &metrics_conns, mn_entry) {
		if (mn->mn_evcon == evcon) {
			evtimer_del(&mn->mn_deadline);
			evhttp_request_set_on_complete_cb(req,
			    metrics_on_reply_sent, mn);
			return;
		}
	}
}

static void
metrics_on_request(struct evhttp_request *req, void *arg)
{
	struct evkeyvalq		*out;
	const struct evhttp_uri		*uri;
	const char			*path;
	enum evhttp_cmd_type		 cmd = evhttp_request_get_command(req);
	struct evbuffer			*body;
	char				 len[32];

	(void)arg;
	metrics_request_in(req);
	out = evhttp_request_get_output_headers(req);
	uri = evhttp_request_get_evhttp_uri(req);
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
	metrics_format(body, metrics_refused);
	evhttp_add_header(out, "Content-Type",
	    "text/plain; version=0.0.4; charset=utf-8");
	/* HEAD: GET's length, and no body (evhttp would send one). */
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
	evtimer_del(&mn->mn_deadline);
	TAILQ_REMOVE(&metrics_conns, mn, mn_entry);
	metrics_nconns--;
	free(mn);
}

/*
 * A connection evhttp is making: its buffer, which gets the socket as
 * soon as this returns, is checked by metrics_on_check before any read.
 * The reference taken keeps the buffer there for the check even if
 * evhttp fails to make the connection and frees it.  (Out of memory,
 * NULL lets evhttp make a buffer of its own, which would go unchecked;
 * but its own allocations, larger than these, then fail too, and the
 * connection with them.)
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
	bufferevent_setwatermark(mn->mn_bev, EV_READ, 0, METRICS_INPUT_MAX);
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
			mn->mn_evcon = cbarg;
			evtimer_assign(&mn->mn_deadline, metrics_base,
			    metrics_on_deadline, mn);
			metrics_deadline(mn);
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
	metrics_format_init();
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
	int	fd;

	if ((fd = listener_socket(la)) == -1 ||
	    listen(fd, METRICS_BACKLOG) == -1)
		goto fail;
	return (fd);
fail:
	addr_format((const struct sockaddr *)&la->la_ss, name, sizeof(name));
	/* A socket passed for it is the likely taker under activation. */
	snprintf(err, errlen, "metrics on %s: %s%s", name, strerror(errno),
	    errno == EADDRINUSE ? " (fdistd binds the metrics address itself, "
	    "also under socket activation: do not pass a socket for it)" : "");
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
