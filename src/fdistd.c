/*
 * fdistd.c: the daemon's entry point: options, signals, reload and the
 * event loop.  fdistd never forks: the service manager supervises it.
 */
#include <sys/resource.h>
#include <sys/signalfd.h>

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sysexits.h>
#include <unistd.h>

#include "fdistd.h"
#include "pool.h"
#include "stdfds.h"
#include "version.h"

int			 fdistd_verbose;

static const char	*config_path = FDIST_CONFIG_PATH;
static char		 config_path_log[ESCAPE_BUFSIZE(PATH_MAX)];
static bool		 debug_mode;
static struct event_base *base;
/*
 * The threads that send file data, fixed at start: as many as were asked
 * for (workers_wanted) or fewer, if threads could not be made.
 */
static unsigned int	 workers, workers_wanted;

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: fdistd [-dhtVv] [-c file]\n"
	    "       fdistd -r pid\n"
	    "Serve files to many clients at once and log who acknowledged "
	    "them.\n\n"
	    "  -c, --config FILE  configuration file (default %s)\n"
	    "  -t, --test         check the configuration, print "
	    "\"configuration OK\"\n"
	    "                     or the error, and exit (with -v: print "
	    "it too); warn of\n"
	    "                     files the service's sandbox cannot read\n"
	    "  -r, --reload PID   reload the daemon PID (the unit's ExecReload=):"
	    "\n"
	    "                     send SIGHUP, wait for its result; exit 1 "
	    "if it kept\n"
	    "                     the previous configuration\n"
	    "  -d, --debug        log to stderr, with debug messages\n"
	    "  -v, --verbose      more messages (twice: each state change)\n"
	    "  -V, --version      print the version and exit\n"
	    "  -h, --help         print this help and exit\n\n"
	    "Signals: SIGHUP reloads the configuration; SIGTERM or SIGINT "
	    "stops, letting\ntransfers finish for up to shutdown_timeout "
	    "(a second signal ends them).\nExit status: 0 done, 1 error, 2 usage, "
	    "78 invalid configuration.\nSee fdistd(8) and fdistd.ini(5).\n",
	    FDIST_CONFIG_PATH);
}

/*
 * Each client costs a descriptor: take the whole hard limit, and say so
 * if max_clients still cannot fit.
 */
static void
fdistd_raise_nofile(const struct config *cf)
{
	struct rlimit	rl;
	rlim_t		need = (rlim_t)cf->cf_max_clients + 64 +
			    cf->cf_nshares * (SHARE_LISTEN_MAX + 1);

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			log_warn("setrlimit");
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < need)
		log_warnx("max_clients %u does not fit the open files limit "
		    "%llu: raise LimitNOFILE (or ulimit -n) to at least %llu",
		    cf->cf_max_clients, (unsigned long long)rl.rlim_cur,
		    (unsigned long long)need);
}

/*
 * Settings that are valid but cannot do all they say: a warning, to fp
 * (-t) or to the log, and the daemon goes on.
 */
static void
fdistd_warn_limits(const struct config *cf, FILE *fp)
{
	const struct share_config	*sc;
	char				 msg[ERR_MAX];

	TAILQ_FOREACH(sc, &cf->cf_shares, sc_entry) {
		if (sc->sc_max_clients <= cf->cf_max_clients)
			continue;
		snprintf(msg, sizeof(msg), "%s:%d: share [%s]: max_clients %u "
		    "is above the global max_clients %u, which limits it too",
		    cf->cf_path, config_share_key_line(sc, "max_clients"),
		    sc->sc_name, sc->sc_max_clients, cf->cf_max_clients);
		if (fp != NULL)
			fprintf(fp, "fdistd: warning: %s\n", msg);
		else
			log_warnx("%s", msg);
	}
}

/*
 * The loop needs epoll: EV_CLOSED tells a client's FIN without a read,
 * and an edge-triggered event watches a half-closed client for a reset
 * (conn_ack.c, conn_flush.c); with poll or select, that event would fire
 * without end.  So the EVENT_NOEPOLL-style variables are not let to
 * choose another.
 */
static struct event_base *
fdistd_event_base(void)
{
	struct event_config	*cfg;
	struct event_base	*eb = NULL;

	if ((cfg = event_config_new()) == NULL)
		return (NULL);
	if (event_config_set_flag(cfg, EVENT_BASE_FLAG_IGNORE_ENV) == 0 &&
	    event_config_require_features(cfg, EV_FEATURE_ET |
	    EV_FEATURE_O1 | EV_FEATURE_EARLY_CLOSE) == 0)
		eb = event_base_new_with_config(cfg);
	event_config_free(cfg);
	return (eb);
}

/*
 * Where a reload's result is known: tell systemd it is done, then the
 * ExecReload= helper (fdistd -r) how it went.
 */
static void
fdistd_reloaded(bool ok, const char *message)
{
	log_flush();	/* the daemon's reason first, then the helper's */
	notify_reload_result(ok, message);
	notify_ready();
	reload_result_report(ok, message);
}

/*
 * SIGHUP: load the file again, off the loop (reload.c); keep running on
 * the old one if it fails.
 */
static void
fdistd_reload(void)
{
	if (server_stopping()) {
		log_info("stopping: reload ignored");
		reload_result_begin();
		reload_result_report(false, "stopping: reload ignored");
		return;
	}
	if (reload_running()) {
		log_info("a reload is loading %s: another follows it",
		    config_path_log);
		reload_start();
		return;
	}
	notify_reloading();
	log_info("reloading %s", config_path_log);
	reload_start();
}

/* The sendfile threads cf asks for. */
static unsigned int
fdistd_workers(const struct config *cf)
{
	return (cf->cf_workers != 0 ? cf->cf_workers : pool_auto_size());
}

/* The reload's load is done: apply it from the loop. */
static void
fdistd_reload_done(struct config *cf, const char *loaderr)
{
	char	err[ERR_MAX];

	if (server_stopping()) {
		log_info("stopping: the reloaded configuration is not applied");
		config_free(cf);
		reload_result_report(false, "stopping: the reloaded "
		    "configuration is not applied");
		return;
	}
	snprintf(err, sizeof(err), "%s", loaderr);
	if (cf == NULL || server_apply(cf, err, sizeof(err)) == -1) {
		log_event(LOG_WARNING, MSGID_RELOAD_FAILED, "reload failed, "
		    "still serving the previous configuration: %s", err);
		config_free(cf);
		server_count_reload(false);
		fdistd_reloaded(false, err);
		return;
	}
	if (!debug_mode)
		log_set_mode(cf->cf_log);
	fdistd_raise_nofile(cf);
	fdistd_warn_limits(cf, NULL);
	if (fdistd_workers(cf) != workers_wanted)
		log_warnx("workers: still %u; a change of workers takes a "
		    "restart", workers);
	snprintf(err, sizeof(err), "reloaded: %zu share%s", cf->cf_nshares,
	    PLURAL(cf->cf_nshares));
	log_info("%s", err);
	server_count_reload(true);
	fdistd_reloaded(true, err);
}

static void
fdistd_on_signal(int sig)
{
	switch (sig) {
	case SIGHUP:
		fdistd_reload();
		break;
	case SIGTERM:
	case SIGINT:
		if (server_stopping())
			log_info("second stop signal: ending transfers now");
		notify_stopping();
		server_stop(server_stopping());
		notify_status();
		break;
	}
}

static void
fdistd_on_signalfd(evutil_socket_t fd, short what, void *arg)
{
	struct signalfd_siginfo	si;

	(void)what;
	(void)arg;
	while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		fdistd_on_signal((int)si.ssi_signo);
}

/*
 * SIGHUP, SIGTERM and SIGINT are blocked and read from a signalfd by the
 * loop, like any other event, rather than taken by a handler: no code
 * runs at an arbitrary point of the loop's thread, and a signal sent
 * while the daemon is stopped (SIGSTOP, a debugger) waits in the kernel
 * until the loop reads it.  The other threads block every signal, so
 * these stay pending for the process until then.  fdistd runs no other
 * program, so no child inherits the mask.
 */
static struct event *
fdistd_signals(void)
{
	struct event	*ev;
	sigset_t	 set;
	int		 fd;

	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if ((errno = pthread_sigmask(SIG_BLOCK, &set, NULL)) != 0)
		fatal("pthread_sigmask");
	if ((fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)) == -1)
		fatal("signalfd");
	if ((ev = event_new(base, fd, EV_READ | EV_PERSIST,
	    fdistd_on_signalfd, NULL)) == NULL || event_add(ev, NULL) == -1)
		fatalx("cannot watch the signals");
	return (ev);
}

/*
 * The exit status of a file that did not load: 78 for a file that must be
 * mended, which the unit does not restart for; 1 when the resolver could
 * not answer for now (at boot, say), which a restart may get past.
 */
static int
fdistd_load_status(bool retry)
{
	return (retry ? 1 : EX_CONFIG);
}

/* Check the configuration only (-t). */
static int
fdistd_test(struct config *cf, char *err, bool retry)
{
	if (cf == NULL) {
		fprintf(stderr, "fdistd: %s\n", err);
		return (fdistd_load_status(retry));
	}
	fdistd_warn_limits(cf, stderr);
	sandbox_warn(cf, stderr);
	if (fdistd_verbose)
		config_dump(cf, stdout);
	printf("configuration OK\n");
	config_free(cf);
	return (0);
}

/* Serve cf (the server owns it from here) until stopped; the exit status. */
static int
fdistd_run(struct config *cf)
{
	struct event	*signals;
	char		 err[ERR_MAX];
	int		 status = 1;

	/* A client gone mid-sendfile must be an EPIPE, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	fdistd_raise_nofile(cf);
	fdistd_warn_limits(cf, NULL);
	if ((base = fdistd_event_base()) == NULL)
		fatalx("cannot create an epoll event loop");
	signals = fdistd_signals();
	watch_init(base);
	digest_init(base);
	workers_wanted = fdistd_workers(cf);
	workers = pool_start(base, workers_wanted);
	reload_init(base, config_path, fdistd_reload_done);
	metrics_init(base);
	if (server_start(base, cf, err, sizeof(err)) == -1) {
		log_event(LOG_CRIT, NULL, "%s", err);
		log_flush();
		notify_failure(err);
		if (server_mismatch())
			status = EX_CONFIG;
		goto out;	/* freed, so a leak checker sees a clean exit */
	}
	notify_init(base);
	log_event(LOG_INFO, MSGID_READY, "fdistd %s ready: %zu share%s, "
	    "max_clients %u, workers %u", FDIST_VERSION, cf->cf_nshares,
	    PLURAL(cf->cf_nshares), cf->cf_max_clients, workers);
	log_flush();	/* the first event may be minutes away */
	notify_ready();

	/* One round at a time, so the round's log lines go out together. */
	while (event_base_loop(base, EVLOOP_ONCE) == 0 &&
	    !event_base_got_break(base))
		log_flush();
	status = 0;
out:
	reload_free();
	server_free();		/* takes every job back from the workers */
	pool_free();
	metrics_free();
	digest_free();
	watch_free();
	notify_free();
	close(event_get_fd(signals));
	event_free(signals);
	event_base_free(base);
	libevent_global_shutdown();
	if (status == 0)
		log_info("stopped");
	log_flush();
	return (status);
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "debug", no_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ "reload", required_argument, NULL, 'r' },
		{ "test", no_argument, NULL, 't' },
		{ "version", no_argument, NULL, 'V' },
		{ "verbose", no_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 }
	};
	struct config	*cf;
	char		 err[ERR_MAX];
	const char	*reload_pid = NULL;
	bool		 test = false, retry = false;
	int		 ch;

	if (stdfds_hold() == -1)
		return (1);
	while ((ch = getopt_long(argc, argv, "c:dhr:tVv", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			config_path = optarg;
			break;
		case 'd':
			debug_mode = true;
			fdistd_verbose++;
			break;
		case 'h':
			usage(stdout);
			return (0);
		case 'r':
			reload_pid = optarg;
			break;
		case 't':
			test = true;
			break;
		case 'V':
			printf("fdistd %s\n", FDIST_VERSION);
			return (0);
		case 'v':
			fdistd_verbose++;
			break;
		default:
			usage(stderr);
			return (2);
		}
	}
	if (optind != argc || (reload_pid != NULL && (test || debug_mode))) {
		usage(stderr);
		return (2);
	}
	if (reload_pid != NULL)
		return (reload_result_client(reload_pid));
	/* The operator's bytes, but a log line all the same. */
	escape_text(config_path_log, sizeof(config_path_log),
	    (const unsigned char *)config_path, strlen(config_path));

	log_init(debug_mode ? LOG_STDERR : LOG_AUTO, fdistd_verbose);
	cf = config_load(config_path, true, err, sizeof(err), &retry);
	if (test)
		return (fdistd_test(cf, err, retry));
	if (cf == NULL) {
		log_event(LOG_CRIT, NULL, "%s", err);
		log_flush();
		notify_failure(err);
		return (fdistd_load_status(retry));
	}
	if (!debug_mode)
		log_set_mode(cf->cf_log);
	return (fdistd_run(cf));
}
