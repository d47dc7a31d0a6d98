/*
 * server_accept.c: taking clients off the listeners, and riding out a
 * full descriptor table or a kernel short of memory: pause every
 * listener, reset the oldest waiting client with the reserve
 * descriptor, retry on a timer, and log the end of the episode once.
 * What is done with an accepted client is server_admit()'s (server.c).
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fdistd.h"

/* Accepts per listener event, so one busy port cannot hog the loop. */
#define ACCEPT_BATCH		32
/* How long to pause accepting when out of descriptors. */
#define EMFILE_RETRY_MS		100

static bool			 paused;	/* out of descriptors */
static const char		*shortage;	/* of the pause, or NULL */
static int			 reserve_fd = -1;
static struct event		*resume_timer;

/*
 * Hold a descriptor back, to be closed when accept() runs short so that
 * one waiting client can be taken and told so.
 */
static void
server_reserve(void)
{
	if (reserve_fd == -1)
		reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void
server_listeners_enable(bool on)
{
	struct listener	*ls;

	TAILQ_FOREACH(ls, server_listeners(), ls_entry) {
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
	if (!paused || server_stopping())
		return;
	paused = false;
	server_listeners_enable(true);
	TAILQ_FOREACH(ls, server_listeners(), ls_entry)
		any = any || ls->ls_short;
	TAILQ_FOREACH(ls, server_listeners(), ls_entry) {
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
	TAILQ_FOREACH(ls, server_listeners(), ls_entry) {
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
			server_reserve();
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
	server_reserve();
	server_timer_add(resume_timer, EMFILE_RETRY_MS);
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
		if (paused || server_stopping())
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
		server_count_accepted();
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
void
server_accept_drain(struct listener *ls)
{
	int	batches = LISTEN_BACKLOG / ACCEPT_BATCH + 1;

	while (batches-- > 0 && server_accept_batch(ls))
		continue;
}

/*
 * After a reload: arm the listeners, the new ones too, unless a
 * shortage paused them (a drain may have run out of descriptors, and
 * then the kept ones wait as well).
 */
void
server_accept_rearm(void)
{
	server_listeners_enable(!paused);
}

/* A client's socket was closed: a descriptor is free again. */
void
server_accept_freed(void)
{
	if (paused && !server_stopping()) {
		evtimer_del(resume_timer);
		server_on_resume_timer(-1, 0, NULL);
	}
}

int
server_accept_init(struct event_base *base)
{
	if ((resume_timer = evtimer_new(base, server_on_resume_timer,
	    NULL)) == NULL)
		return (-1);
	server_reserve();
	return (0);
}

void
server_accept_free(void)
{
	if (resume_timer != NULL)
		event_free(resume_timer);
	resume_timer = NULL;
	if (reserve_fd != -1)
		close(reserve_fd);
	reserve_fd = -1;
}
