/*
 * server.c: the running set of shares and listeners.  It admits
 * clients (server_accept.c takes them off the listeners and rides out a
 * full descriptor table), enforces max_clients, applies a new
 * configuration on reload (server_listen.c matches the listeners to its
 * shares) and stops gracefully.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fdistd.h"

static struct event_base	*server_base;
static struct config		*server_cf;
static struct share_list	 shares = TAILQ_HEAD_INITIALIZER(shares);
static struct listener_list	 listeners =
				    TAILQ_HEAD_INITIALIZER(listeners);
static struct server_stats	 stats;
static bool			 stopping;
static bool			 activated;	/* sockets came from systemd */
static bool			 mismatch;	/* a cf and those sockets disagree */
static struct event		*stop_timer;

void
server_timer_add(struct event *ev, uint64_t ms)
{
	struct timeval	tv;

	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000 * 1000);
	evtimer_add(ev, &tv);
}

/*
 * Serve an accepted client, or refuse it: access lists, then limits.
 * On a PROXY protocol share they apply to the client the header names
 * (sa, with the balancer in proxy): until it is read, only whether the
 * balancer may speak it and whether there is room for one more.
 */
void
server_admit(int fd, const struct sockaddr *sa, socklen_t len,
    const struct sockaddr *proxy, struct share *sh)
{
	uint32_t	per_ip = sh->sh_limits.lim_max_per_ip;

	if (sh->sh_proxy.pc_on && proxy == NULL) {
		if (!acl_match(&sh->sh_proxy.pc_from, sa))
			server_refuse(fd, sa, NULL, sh, REASON_NOT_PROXY_FROM);
		else if (conn_count() >= server_cf->cf_max_clients)
			server_refuse(fd, sa, sa, sh, REASON_MAX_CLIENTS);
		else if (conn_proxy_new(server_base, fd, sa, len, sh) == -1)
			server_refuse(fd, sa, sa, sh, REASON_NO_MEMORY);
		return;
	}
	if (!acl_allows(&sh->sh_allow, &sh->sh_deny, &server_cf->cf_deny, sa))
		server_refuse(fd, sa, proxy, sh, REASON_NOT_ALLOWED);
	else if (sh->sh_file->sf_changed)
		server_refuse(fd, sa, proxy, sh, REASON_FILE_CHANGING);
	else if (conn_count() >= server_cf->cf_max_clients)
		server_refuse(fd, sa, proxy, sh, REASON_MAX_CLIENTS);
	else if (sh->sh_max_clients != 0 &&
	    sh->sh_state->ss_active >= sh->sh_max_clients)
		server_refuse(fd, sa, proxy, sh, REASON_SHARE_MAX_CLIENTS);
	else if (per_ip != 0 && share_ip_clients(sh, sa) >= per_ip)
		server_refuse(fd, sa, proxy, sh, REASON_MAX_PER_IP);
	else if (conn_new(server_base, fd, sa, len, proxy, sh) == -1)
		server_refuse(fd, sa, proxy, sh, REASON_NO_MEMORY);
}


/* The listeners that run, for server_accept.c. */
struct listener_list *
server_listeners(void)
{
	return (&listeners);
}

/* An accepted connection, for the status line. */
void
server_count_accepted(void)
{
	stats.st_accepted++;
}

/* A refused connection, for the status line. */
void
server_count_refused(void)
{
	stats.st_refused++;
}

/* A finished transfer, for the status line. */
void
server_count_outcome(bool acked)
{
	if (acked)
		stats.st_acked++;
	else
		stats.st_failed++;
}

/* Called by conn_close() when a client's socket is closed. */
void
server_conn_released(void)
{
	server_accept_freed();
	if (stopping && conn_count() == 0)
		event_base_loopbreak(server_base);
}

/* The running share's file if it is the one just opened, unchanged. */
static struct sfile *
server_reuse_file(struct sfile *sf)
{
	struct share	*sh;

	TAILQ_FOREACH(sh, &shares, sh_entry) {
		if (strcmp(sh->sh_file->sf_path, sf->sf_path) == 0 &&
		    !sh->sh_file->sf_changed && sfile_same(sh->sh_file, sf)) {
			sfile_unref(sf);
			return (sfile_ref(sh->sh_file));
		}
	}
	return (sf);
}

/*
 * The file old was written in place and has settled as new: the running
 * shares that served old serve new from now on (see watch.c).  Returns
 * how many, or -1 if out of memory.
 */
int
server_file_replace(struct sfile *old, struct sfile *new)
{
	struct share	*sh, *nsh;
	struct listener	*ls;
	int		 n = 0;

	TAILQ_FOREACH(sh, &shares, sh_entry) {
		if (sh->sh_file != old)
			continue;
		if ((nsh = share_clone(sh, sfile_ref(new))) == NULL) {
			sfile_unref(new);
			return (-1);
		}
		TAILQ_INSERT_AFTER(&shares, sh, nsh, sh_entry);
		TAILQ_REMOVE(&shares, sh, sh_entry);
		TAILQ_FOREACH(ls, &listeners, ls_entry) {
			if (ls->ls_share == sh)
				listener_attach(ls, nsh);
		}
		share_unref(sh);
		sh = nsh;
		server_serves(sh);
		n++;
	}
	if (n > 0)
		server_manifest();	/* its new version, pending */
	return (n);
}

/* "share [iso]: /srv/iso.img (123 bytes) on 0.0.0.0:9000, [::]:9000" */
static void
server_log_share(const struct share *sh, const struct listener_list *list)
{
	const struct listener	*ls;
	char			 line[SHARE_LISTEN_MAX * ADDR_STR_MAX];
	size_t			 len = 0;

	line[0] = '\0';
	TAILQ_FOREACH(ls, list, ls_entry) {
		if (ls->ls_share != sh || len >= sizeof(line))
			continue;
		len += (size_t)snprintf(line + len, sizeof(line) - len, "%s%s",
		    len ? ", " : "", ls->ls_name);
	}
	log_info("share [%s]: %s (%" PRIu64 " bytes) on %s", sh->sh_name,
	    sh->sh_file->sf_path_log, sh->sh_file->sf_size, line);
}

/*
 * The digest of sf is known, could not be computed, or is being computed
 * again: a record for each share serving it.
 */
void
server_digest_known(const struct sfile *sf)
{
	const struct share	*sh;

	TAILQ_FOREACH(sh, &shares, sh_entry) {
		if (sh->sh_file == sf)
			log_digest(sh->sh_name, sf);
	}
}

/* What the manifest shows may have changed: a digest, a file in place. */
void
server_manifest(void)
{
	if (server_cf != NULL)
		manifest_refresh(server_cf, &shares, &listeners);
}

/*
 * sh serves a version of its file from now on (a start, a reload, a file
 * swapped under it): its record, digest known, pending or failed, before
 * sh takes a client, so that the journal always says which version each
 * share serves.
 */
void
server_serves(const struct share *sh)
{
	log_digest(sh->sh_name, sh->sh_file);
}

/* sh, of a new configuration: its record, unless it served that file. */
static void
server_log_version(const struct share *sh)
{
	const struct share	*old;

	TAILQ_FOREACH(old, &shares, sh_entry) {
		if (strcmp(old->sh_name, sh->sh_name) == 0 &&
		    old->sh_file == sh->sh_file)
			return;
	}
	server_serves(sh);
}

/* Make the shares of cf; takes over the files cf opened. */
static int
server_make_shares(struct config *cf, struct share_list *list)
{
	struct share_config	*sc;
	struct share		*sh;
	struct sfile		*sf;

	TAILQ_FOREACH(sc, &cf->cf_shares, sc_entry) {
		sf = sfile_adopt(sc->sc_fd, sc->sc_path);
		sc->sc_fd = -1;
		if (sf == NULL)
			return (-1);
		sf = server_reuse_file(sf);
		digest_start(sf);
		if ((sh = share_new(sc, sf)) == NULL) {
			sfile_unref(sf);
			return (-1);
		}
		TAILQ_INSERT_TAIL(list, sh, sh_entry);
	}
	return (0);
}

static void
server_free_shares(struct share_list *list)
{
	struct share	*sh;

	while ((sh = TAILQ_FIRST(list)) != NULL) {
		TAILQ_REMOVE(list, sh, sh_entry);
		share_unref(sh);
	}
}

/*
 * Switch to configuration cf, at start or on reload, keeping every
 * listener whose address did not change.  Nothing is touched unless every
 * new listener could be opened.  Clients in flight keep their share, and
 * so their file.  Never called while stopping: fdistd_reload() ignores
 * SIGHUP then.
 */
int
server_apply(struct config *cf, char *err, size_t errlen)
{
	struct listener_list	 fresh = TAILQ_HEAD_INITIALIZER(fresh);
	struct listener_list	 kept = TAILQ_HEAD_INITIALIZER(kept);
	struct listener_list	 gone = TAILQ_HEAD_INITIALIZER(gone);
	struct share_list	 made = TAILQ_HEAD_INITIALIZER(made);
	struct share_config	*sc;
	struct share		*sh, *msh = NULL;
	struct listener		*ls;
	int			 rv;

	if (metrics_prepare(cf, err, errlen) == -1)
		return (-1);
	if (server_make_shares(cf, &made) == -1 ||
	    manifest_make(cf, &made, &msh) == -1) {
		snprintf(err, errlen, "%s", strerror(errno));
		server_free_shares(&made);
		digest_prune();
		metrics_abort();
		return (-1);
	}
	rv = server_listen_open(server_base, cf, &listeners, activated, &fresh,
	    err, errlen);
	mismatch = activated && rv == -1;
	if (rv == -1) {
		share_unref(msh);
		server_free_shares(&made);
		digest_prune();
		metrics_abort();
		return (-1);
	}
	metrics_commit(cf);
	clock_gettime(CLOCK_REALTIME, &stats.st_loaded);
	sh = TAILQ_FIRST(&made);
	TAILQ_FOREACH(sc, &cf->cf_shares, sc_entry) {
		share_commit(sh);
		server_listen_take(cf, sc, sh, activated, &listeners, &fresh,
		    &kept);
		server_log_share(sh, &kept);
		server_log_version(sh);
		sh = TAILQ_NEXT(sh, sh_entry);
	}
	if (msh != NULL) {
		server_listen_take(cf, &cf->cf_manifest, msh, activated,
		    &listeners, &fresh, &kept);
		server_log_share(msh, &kept);
	}
	/*
	 * The listeners that stay are the set before the others are
	 * drained: a drain that runs short, or empties a queue, then
	 * weighs the end of a shortage against them.
	 */
	TAILQ_CONCAT(&gone, &listeners, ls_entry);
	TAILQ_CONCAT(&listeners, &kept, ls_entry);
	while ((ls = TAILQ_FIRST(&gone)) != NULL) {
		log_info("no longer listening on %s", ls->ls_name);
		TAILQ_REMOVE(&gone, ls, ls_entry);
		server_accept_drain(ls);
		listener_close(ls);
	}
	server_free_shares(&shares);
	TAILQ_CONCAT(&shares, &made, sh_entry);
	manifest_commit(msh);
	digest_prune();
	config_free(server_cf);
	server_cf = cf;
	server_accept_rearm();
	return (0);
}

static size_t
server_nlisteners(void)
{
	struct listener	*ls;
	size_t		 n = 0;

	TAILQ_FOREACH(ls, &listeners, ls_entry)
		n++;
	return (n);
}

static int
server_begin(struct event_base *base, struct config *cf, char *err,
    size_t errlen)
{
	server_base = base;
	if (server_accept_init(base) == -1 || server_refuse_init(base) == -1) {
		snprintf(err, errlen, "%s", strerror(errno));
		return (-1);
	}
	manifest_init(base);
	switch (listener_inherit(base, &listeners, err, errlen)) {
	case -1:
		return (-1);
	case 0:
		break;
	default:
		activated = true;
		log_info("socket activation: %zu socket%s passed by the "
		    "service manager", server_nlisteners(),
		    PLURAL(server_nlisteners()));
	}
	return (server_apply(cf, err, errlen));
}

/* Start serving cf; the server owns it from now on, even on failure. */
int
server_start(struct event_base *base, struct config *cf, char *err,
    size_t errlen)
{
	if (server_begin(base, cf, err, errlen) == -1) {
		config_free(cf);
		return (-1);
	}
	return (0);
}

static void
server_on_stop_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	log_warnx("shutdown_timeout reached: ending %zu transfer%s",
	    conn_count(), PLURAL(conn_count()));
	conn_close_all(OUTCOME_SHUTDOWN);
	event_base_loopbreak(server_base);
}

/*
 * Stop: close the listeners, give transfers in flight shutdown_timeout
 * to finish (none if now is set), then end the loop.
 */
void
server_stop(bool now)
{
	struct listener	*ls;

	if (!stopping) {
		stopping = true;
		while ((ls = TAILQ_FIRST(&listeners)) != NULL) {
			TAILQ_REMOVE(&listeners, ls, ls_entry);
			listener_close(ls);
		}
		log_info("stopping: %zu transfer%s in flight", conn_count(),
		    PLURAL(conn_count()));
	}
	if (now || server_cf->cf_shutdown_timeout_ms == 0)
		conn_close_all(OUTCOME_SHUTDOWN);
	if (conn_count() == 0) {
		event_base_loopbreak(server_base);
		return;
	}
	if (stop_timer == NULL) {
		stop_timer = evtimer_new(server_base, server_on_stop_timer,
		    NULL);
		if (stop_timer == NULL)
			fatal("evtimer_new");
		server_timer_add(stop_timer, server_cf->cf_shutdown_timeout_ms);
	}
}

bool
server_stopping(void)
{
	return (stopping);
}

/*
 * Whether the last check of a configuration against the sockets of
 * socket activation failed: the file and the socket units disagree,
 * which no restart mends.
 */
bool
server_mismatch(void)
{
	return (mismatch);
}

/* Release everything (at exit, so leak checkers see a clean heap). */
void
server_free(void)
{
	struct listener	*ls;

	conn_close_all(OUTCOME_SHUTDOWN);
	server_refuse_free();
	while ((ls = TAILQ_FIRST(&listeners)) != NULL) {
		TAILQ_REMOVE(&listeners, ls, ls_entry);
		listener_close(ls);
	}
	server_free_shares(&shares);
	manifest_free();
	config_free(server_cf);
	server_cf = NULL;
	server_accept_free();
	if (stop_timer != NULL)
		event_free(stop_timer);
}

const struct server_stats *
server_stats(void)
{
	return (&stats);
}

/* A reload's result, for the metrics. */
void
server_count_reload(bool ok)
{
	if (ok)
		stats.st_reloads_ok++;
	else
		stats.st_reloads_failed++;
}

/* The running shares, for the metrics. */
const struct share_list *
server_shares(void)
{
	return (&shares);
}


size_t
server_nshares(void)
{
	return (server_cf != NULL ? server_cf->cf_nshares : 0);
}
