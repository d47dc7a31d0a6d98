/*
 * server.c: the running set of shares and listeners.  It accepts
 * clients, enforces max_clients, rides out a full descriptor table,
 * applies a new configuration on reload (server_listen.c matches the
 * listeners to its shares) and stops gracefully.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fdistd.h"

/* Accepts per listener event, so one busy port cannot hog the loop. */
#define ACCEPT_BATCH		32
/* How long to pause accepting when out of descriptors. */
#define EMFILE_RETRY_MS		100
static struct event_base	*server_base;
static struct config		*server_cf;
static struct share_list	 shares = TAILQ_HEAD_INITIALIZER(shares);
static struct listener_list	 listeners =
				    TAILQ_HEAD_INITIALIZER(listeners);
static struct server_stats	 stats;
static bool			 stopping;
static bool			 activated;	/* sockets came from systemd */
static bool			 mismatch;	/* a cf and those sockets disagree */
static bool			 paused;	/* out of descriptors */
static const char		*shortage;	/* of the pause, or NULL */
static int			 reserve_fd = -1;
static struct event		*resume_timer;
static struct event		*stop_timer;

void
server_timer_add(struct event *ev, uint64_t ms)
{
	struct timeval	tv;

	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000 * 1000);
	evtimer_add(ev, &tv);
}

static void
server_listeners_enable(bool on)
{
	struct listener	*ls;

	TAILQ_FOREACH(ls, &listeners, ls_entry) {
		if (on)
			listener_enable(ls);
		else
			listener_disable(ls);
	}
}


/*
 * Retry after a shortage.  A listener that ran short looks at its queue
 * at once: the reserve's accept may have taken its last client, and
 * then it is never readable again until a new one comes, which would
 * leave the episode open (and its end unlogged) meanwhile.  If none is
 * short though the episode is not over (those that were have been
 * closed by a reload), every listener looks, and the first to find its
 * queue empty ends it.
 */
static void
server_on_resume_timer(evutil_socket_t fd, short what, void *arg)
{
	struct listener	*ls;
	bool		 any = false;

	(void)fd;
	(void)what;
	(void)arg;
	if (!paused || stopping)
		return;
	paused = false;
	server_listeners_enable(true);
	TAILQ_FOREACH(ls, &listeners, ls_entry)
		any = any || ls->ls_short;
	TAILQ_FOREACH(ls, &listeners, ls_entry) {
		if (ls->ls_short || (shortage != NULL && !any))
			listener_look(ls);
	}
}

/*
 * A shortage episode ends when every listener that ran short has taken
 * all the clients that were waiting on it, not at the first accept that
 * succeeds: at the limit, each descriptor a finished transfer (or the
 * digest thread) frees lets one accept through before the next fails,
 * and logging each of those would be a pair of lines per client.  Nor
 * when another listener empties its queue while the one that ran short
 * is still working through a backlog.
 */
static void
server_shortage_over(struct listener *emptied)
{
	struct listener	*ls;

	emptied->ls_short = false;
	if (shortage == NULL)
		return;
	TAILQ_FOREACH(ls, &listeners, ls_entry) {
		if (ls->ls_short)
			return;
	}
	log_info("accepting again after running out of %s", shortage);
	shortage = NULL;
}

/*
 * accept() failed for want of descriptors or of kernel memory.  A
 * listener left armed would fire again at once and spin: pause them all,
 * retry on a timer, and use the reserve descriptor to reset the oldest
 * waiting client rather than leave it hanging.  Linux takes the
 * descriptor before it looks at the queue, so the failure can also mean
 * that the batch took the last waiting client: the reserve's accept then
 * finds nobody, and nothing is short until the next client comes (the
 * listener stays quiet until then).
 */
static void
server_pause(struct listener *ls, int err)
{
	struct sockaddr_storage	ss;
	socklen_t		len = sizeof(ss);
	int			fd = -1;
	bool			fds = err == EMFILE || err == ENFILE;

	if (reserve_fd != -1) {
		close(reserve_fd);
		reserve_fd = -1;
		fd = accept4(ls->ls_fd, (struct sockaddr *)&ss, &len,
		    SOCK_CLOEXEC);
		if (fd == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
			server_shortage_over(ls);
			return;
		}
	}
	/* The first failure of an episode names it. */
	if (shortage == NULL) {
		log_warnx("accept on %s: %s: pausing new connections (%zu "
		    "clients; %s)", ls->ls_name, strerror(err), conn_count(),
		    fds ? "raise LimitNOFILE or lower max_clients" :
		    "the system is short of memory");
		shortage = fds ? "file descriptors" : "memory";
	}
	ls->ls_short = true;
	paused = true;
	server_listeners_enable(false);
	if (fd != -1)
		server_refuse(fd, (struct sockaddr *)&ss, NULL, ls->ls_share,
		    fds ? REASON_NO_DESCRIPTORS : REASON_NO_MEMORY);
	if (reserve_fd == -1)
		reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	server_timer_add(resume_timer, EMFILE_RETRY_MS);
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


/*
 * Accept up to a batch of the clients waiting on a listener; returns
 * whether the batch was used up (more may be waiting).
 */
static bool
server_accept_batch(struct listener *ls)
{
	struct sockaddr_storage	 ss;
	struct sockaddr		*sa = (struct sockaddr *)&ss;
	socklen_t		 len;
	int			 fd, i;

	for (i = 0; i < ACCEPT_BATCH; i++) {
		if (paused || stopping)
			return (false);
		len = sizeof(ss);
		fd = accept4(ls->ls_fd, sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				server_shortage_over(ls);
				return (false);
			}
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM) {
				server_pause(ls, errno);
				return (false);
			}
			log_warn("accept on %s", ls->ls_name);
			return (false);
		}
		stats.st_accepted++;
		server_admit(fd, sa, len, NULL, ls->ls_share);
	}
	return (true);
}

/*
 * The listener is readable: a batch, then the other events get a turn.
 * One that ran short and used its batch up looks again on the next
 * turn, though its queue may be empty by then: see server_shortage_over.
 */
void
server_accept(struct listener *ls)
{
	if (server_accept_batch(ls) && ls->ls_short)
		listener_look(ls);
}

/*
 * A reload closes this listener: first take the clients the kernel has
 * queued on it, which connected while it was configured and would be
 * reset by the close, and admit them as before the reload.  No more
 * than a full queue: a connect flood on the port must not hold the loop.
 */
static void
server_drain_listener(struct listener *ls)
{
	int	batches = LISTEN_BACKLOG / ACCEPT_BATCH + 1;

	while (batches-- > 0 && server_accept_batch(ls))
		continue;
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
	if (paused && !stopping) {
		/* A descriptor is free again. */
		evtimer_del(resume_timer);
		server_on_resume_timer(-1, 0, NULL);
	}
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
		server_drain_listener(ls);
		listener_close(ls);
	}
	server_free_shares(&shares);
	TAILQ_CONCAT(&shares, &made, sh_entry);
	manifest_commit(msh);
	digest_prune();
	config_free(server_cf);
	server_cf = cf;
	/* A drain may have run out of descriptors: the kept ones wait too. */
	server_listeners_enable(!paused);
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
	resume_timer = evtimer_new(base, server_on_resume_timer, NULL);
	if (resume_timer == NULL || server_refuse_init(base) == -1) {
		snprintf(err, errlen, "%s", strerror(errno));
		return (-1);
	}
	reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
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
	if (resume_timer != NULL)
		event_free(resume_timer);
	if (stop_timer != NULL)
		event_free(stop_timer);
	if (reserve_fd != -1)
		close(reserve_fd);
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
