/*
 * reload.c: SIGHUP's load of the configuration file, off the event loop.
 * A load opens the shares' files and looks up listen host names, which
 * may take up to RESOLVE_TIMEOUT_MS a name (resolve.c): a worker thread
 * loads while the loop goes on serving, and hands the result back
 * through a pipe.  Only the loop's thread applies it.  One load runs at
 * a time; a SIGHUP during one asks for another after it.
 */
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "fdistd.h"

/*
 * Written by the worker before it writes to the pipe, read by the loop
 * after pthread_join(): the join orders them.
 */
static struct config	*result_cf;
static char		 result_err[ERR_MAX];

static const char	*reload_path;
static char		 reload_path_log[ESCAPE_BUFSIZE(PATH_MAX)];
static reload_done_cb	 reload_done;
static pthread_t	 reload_thread;
static bool		 reload_busy;	/* a worker runs (loop only) */
static bool		 reload_again;	/* SIGHUP meanwhile (loop only) */
static int		 reload_pipe[2] = { -1, -1 };
static struct event	*reload_ev;

static void *
reload_worker(void *arg)
{
	char	c = 0;

	(void)arg;
	result_cf = config_load(reload_path, true, result_err,
	    sizeof(result_err), NULL);
	while (write(reload_pipe[1], &c, 1) == -1 && errno == EINTR)
		;
	return (NULL);
}

/* Start a worker; 0, or -1 with the reason in err. */
static int
reload_spawn(char *err, size_t errlen)
{
	sigset_t	all, old;
	int		rv;

	reload_result_begin();	/* fdistd -r waits for a load begun since */
	/* Signals belong to the loop's thread, not the worker. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rv = pthread_create(&reload_thread, NULL, reload_worker, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rv != 0) {
		snprintf(err, errlen, "cannot start the load: %s",
		    strerror(rv));
		return (-1);
	}
	reload_busy = true;
	return (0);
}

/* Join the worker and take what it loaded. */
static struct config *
reload_join(char *err, size_t errlen)
{
	struct config	*cf;

	pthread_join(reload_thread, NULL);
	reload_busy = false;
	cf = result_cf;
	result_cf = NULL;
	snprintf(err, errlen, "%s", result_err);
	return (cf);
}

static void
reload_on_done(evutil_socket_t fd, short what, void *arg)
{
	struct config	*cf;
	char		 c, err[ERR_MAX];

	(void)what;
	(void)arg;
	if (read(fd, &c, 1) != 1 || !reload_busy)
		return;
	cf = reload_join(err, sizeof(err));
	if (reload_again) {
		/* The file may have changed since this load read it. */
		reload_again = false;
		config_free(cf);
		log_info("loading %s again: reloaded meanwhile",
		    reload_path_log);
		if (reload_spawn(err, sizeof(err)) == 0)
			return;
		cf = NULL;
	}
	reload_done(cf, err);
}

void
reload_init(struct event_base *base, const char *path, reload_done_cb done)
{
	reload_path = path;
	escape_text(reload_path_log, sizeof(reload_path_log),
	    (const unsigned char *)path, strlen(path));
	reload_done = done;
	if (pipe2(reload_pipe, O_CLOEXEC | O_NONBLOCK) == -1)
		fatal("pipe2");
	reload_ev = event_new(base, reload_pipe[0], EV_READ | EV_PERSIST,
	    reload_on_done, NULL);
	if (reload_ev == NULL || event_add(reload_ev, NULL) == -1)
		fatalx("cannot watch the reload pipe");
}

/*
 * Load the file again; done() gets the result (or NULL and the error)
 * in the loop.  If a load already runs, another follows it and done() is
 * called once, for the last.
 */
void
reload_start(void)
{
	char	err[ERR_MAX];

	if (reload_busy)
		reload_again = true;
	else if (reload_spawn(err, sizeof(err)) == -1)
		reload_done(NULL, err);
}

bool
reload_running(void)
{
	return (reload_busy);
}

/* At exit: wait for a load still running (bounded by resolve.c). */
void
reload_free(void)
{
	char	err[ERR_MAX];

	if (reload_busy)
		config_free(reload_join(err, sizeof(err)));
	if (reload_ev != NULL)
		event_free(reload_ev);
	reload_ev = NULL;
	if (reload_pipe[0] != -1) {
		close(reload_pipe[0]);
		close(reload_pipe[1]);
	}
	reload_pipe[0] = reload_pipe[1] = -1;
}
