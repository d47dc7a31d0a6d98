/*
 * notify.c: talk to the service manager: READY, RELOADING, STOPPING, a
 * short live STATUS, and the watchdog ping.  The ping rides on a timer in
 * the event loop, so a wedged loop stops pinging and systemd restarts us.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "fdistd.h"

#define STATUS_INTERVAL_MS	1000

static struct event	*watchdog_timer;
static struct event	*status_timer;
static bool		 notify_enabled;
static char		 last_status[ERR_MAX + 256];
static char		 reload_note[ERR_MAX + 64];	/* the last reload's failure */

static void
notify_on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	sd_notify(0, "WATCHDOG=1");
}

static void
notify_on_status(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	notify_status();
}

static struct event *
notify_timer(struct event_base *base, event_callback_fn cb, uint64_t usec)
{
	struct timeval	 tv;
	struct event	*ev;

	if ((ev = event_new(base, -1, EV_PERSIST, cb, NULL)) == NULL)
		fatal("event_new");
	tv.tv_sec = (time_t)(usec / 1000000);
	tv.tv_usec = (suseconds_t)(usec % 1000000);
	event_add(ev, &tv);
	return (ev);
}

/* Start the watchdog (at half its interval) and the status updates. */
void
notify_init(struct event_base *base)
{
	uint64_t	usec;

	notify_enabled = getenv("NOTIFY_SOCKET") != NULL;
	if (!notify_enabled)
		return;
	if (sd_watchdog_enabled(0, &usec) > 0)
		watchdog_timer = notify_timer(base, notify_on_watchdog,
		    usec / 2);
	status_timer = notify_timer(base, notify_on_status,
	    STATUS_INTERVAL_MS * 1000);
}

void
notify_ready(void)
{
	if (!notify_enabled)
		return;
	last_status[0] = '\0';
	notify_status();
	sd_notify(0, "READY=1");
}

/* Before a reload: RELOADING=1 with the time, as systemd expects. */
void
notify_reloading(void)
{
	struct timespec	ts;

	if (!notify_enabled)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64,
	    (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000);
}

void
notify_stopping(void)
{
	if (notify_enabled)
		sd_notify(0, "STOPPING=1");
}

/* "2 shares, 5 active, 120 acked, 3 failed, 0 refused", when changed. */
void
notify_status(void)
{
	const struct server_stats	*st;
	char				 status[sizeof(last_status)];

	if (!notify_enabled)
		return;
	st = server_stats();
	snprintf(status, sizeof(status), "%zu share%s, %" PRIu64 " active, %"
	    PRIu64 " acked, %" PRIu64 " failed, %" PRIu64 " refused%s%s",
	    server_nshares(), PLURAL(server_nshares()), (uint64_t)conn_count(),
	    st->st_acked, st->st_failed,
	    st->st_refused, server_stopping() ? ", stopping" : "",
	    reload_note);
	if (strcmp(status, last_status) == 0)
		return;
	memcpy(last_status, status, sizeof(last_status));
	sd_notifyf(0, "STATUS=%s", status);
}

/*
 * After a reload: a failure stays in the status, which "systemctl status"
 * shows, until a reload succeeds, as the daemon serves the old file.
 */
void
notify_reload_result(bool ok, const char *message)
{
	if (ok)
		reload_note[0] = '\0';
	else
		snprintf(reload_note, sizeof(reload_note), "; last reload "
		    "failed: %s", message);
}

/*
 * Before exiting on an error at start-up: the reason as the status, which
 * "systemctl status" shows next to the exit status.  The barrier waits
 * until systemd has read it, which it would not do after our exit.
 */
void
notify_failure(const char *message)
{
	if (getenv("NOTIFY_SOCKET") == NULL)
		return;
	sd_notifyf(0, "STATUS=%s", message);
	sd_notify_barrier(0, 5 * 1000000);
}

void
notify_free(void)
{
	if (watchdog_timer != NULL)
		event_free(watchdog_timer);
	if (status_timer != NULL)
		event_free(status_timer);
	watchdog_timer = status_timer = NULL;
}
