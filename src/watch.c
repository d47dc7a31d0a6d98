/*
 * watch.c: served files changed in place.  A file rewritten under the
 * daemon (cp new.img served.img) is no longer the version it hashed, so
 * inotify watches the inode of every open file, whatever name it is
 * written through.  At the first change the file stops being served:
 * transfers the client does not have whole end with a reset, new clients
 * are refused, and its hashing is abandoned.  Once writing has stopped,
 * the same inode's new content becomes a file of its own, hashed and
 * served as the share's new version.  A rename over the path is the way
 * to publish and is left to reload, as before: it only changes the old
 * inode's link count, which is not a change of its content.
 *
 * The events cost per change, never per transfer: the loop reads them
 * when the descriptor is readable.  One race is left, between the write
 * and the loop's read of its event: a transfer could take new bytes and
 * queue its FIN in between.  The descriptor raises SIGIO on the loop's
 * own thread when an event is queued, and the kernel delivers a signal
 * before the system call it interrupts returns: so when the sendfile()
 * of a transfer's last bytes has returned, any change before it has set
 * watch_pending, a flag conn_sent() reads before the FIN.
 *
 * Some writes raise no event at all: through a shared memory mapping
 * (the kernel only moves the mtime, at the first write to a page), or
 * by another host on a network file system.  So before the FIN the
 * inode's size and mtime are looked at too, with fstat(): at most every
 * WATCH_STAT_MS a file, so that a storm of short transfers is not a storm
 * of system calls, and always before a digest is taken as the file's.
 */
#include <sys/types.h>
#include <sys/inotify.h>
#include <sys/time.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event_struct.h>

#include "fdistd.h"

/* How long a changed file must be left alone before it is served again. */
#define WATCH_QUIET_MS		2000
/* Sooner once its writer has closed it. */
#define WATCH_CLOSED_MS		200
#define WATCH_MASK	(IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE)
/* How often transfers' ends look for a change that raised no event. */
#define WATCH_STAT_MS		10

struct watch {
	TAILQ_ENTRY(watch)	 w_entry;
	struct sfile		*w_file;	/* whose watch it is, not a ref */
	int			 w_wd;		/* -1: not watched */
	bool			 w_new;		/* changed, not yet acted on */
	struct timeval		 w_statted;	/* a transfer's last look */
	struct event		 w_settle;
};

static TAILQ_HEAD(, watch)	watches = TAILQ_HEAD_INITIALIZER(watches);
static int			watch_fd = -1;
static struct event		*watch_ev;
static struct event_base	*watch_base;
static volatile sig_atomic_t	watch_pending;
static bool			watch_warned;

static void	watch_on_settle(evutil_socket_t, short, void *);

static void
watch_on_sigio(int sig)
{
	(void)sig;
	watch_pending = 1;
}

/* Whether sf's inode no longer has the size and mtime it was opened with. */
static bool
watch_differs(const struct sfile *sf)
{
	struct stat	st;

	if (fstat(sf->sf_fd, &st) == -1)
		return (true);
	return ((uint64_t)st.st_size != sf->sf_size ||
	    (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec !=
	    sf->sf_mtime_ns);
}

static void
watch_settle_later(struct watch *w, uint64_t ms)
{
	struct timeval	tv;

	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000 * 1000);
	evtimer_add(&w->w_settle, &tv);
}

/*
 * One event on wd.  A write is a change; a change of attributes or a
 * writer's close is one only if the size or mtime moved (unlinking the
 * old file of a publish by rename changes neither).  Every event on a
 * file in flux puts its settling off.
 */
static void
watch_event(int wd, uint32_t mask)
{
	struct watch	*w;
	struct sfile	*sf;

	TAILQ_FOREACH(w, &watches, w_entry) {
		if (w->w_wd != wd)
			continue;
		sf = w->w_file;
		if (mask & IN_IGNORED) {
			w->w_wd = -1;
			continue;
		}
		if (!sf->sf_changed) {
			if (!(mask & IN_MODIFY) && !watch_differs(sf))
				continue;
			sf->sf_changed = true;
			w->w_new = true;
		}
		watch_settle_later(w, (mask & IN_CLOSE_WRITE) ?
		    WATCH_CLOSED_MS : WATCH_QUIET_MS);
	}
}

/* A change seen without its event: the file is in flux from now on. */
static bool
watch_check(struct watch *w)
{
	if (w->w_file->sf_changed || !watch_differs(w->w_file))
		return (false);
	w->w_file->sf_changed = true;
	w->w_new = true;
	watch_settle_later(w, WATCH_QUIET_MS);
	return (true);
}

/* Events were lost: look at every file that is not in flux yet. */
static void
watch_overflow(void)
{
	struct watch	*w;

	log_warnx("inotify queue overflow: checking every served file");
	TAILQ_FOREACH(w, &watches, w_entry)
		(void)watch_check(w);
}

/* Read every queued event; marks the files changed. */
static void
watch_read(void)
{
	char				 buf[4096]
	    __attribute__((aligned(__alignof__(struct inotify_event))));
	const struct inotify_event	*ev;
	ssize_t				 n;
	char				*p;

	/* Cleared first: an event queued after the read raises it again. */
	watch_pending = 0;
	for (;;) {
		n = read(watch_fd, buf, sizeof(buf));
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (p = buf; p < buf + n; p += sizeof(*ev) + ev->len) {
			ev = (const struct inotify_event *)(void *)p;
			if (ev->mask & IN_Q_OVERFLOW)
				watch_overflow();
			else
				watch_event(ev->wd, ev->mask);
		}
	}
	if (n == -1 && errno != EAGAIN)
		log_warn("inotify read");
}

/* Act on the files that changed: end their transfers, stop hashing. */
static void
watch_act(void)
{
	struct watch	*w, *next;
	struct sfile	*sf;
	unsigned int	 ended;

	for (w = TAILQ_FIRST(&watches); w != NULL; w = next) {
		next = TAILQ_NEXT(w, w_entry);
		if (!w->w_new)
			continue;
		w->w_new = false;
		/* Its last client may go: it must outlive this. */
		sf = sfile_ref(w->w_file);
		digest_cancel(sf);
		conn_file_changed(sf);
		/* With those a sendfile() or FIN check ended before. */
		ended = sf->sf_changed_ended;
		sf->sf_changed_ended = 0;
		log_warnx("%s: changed in place while served: %u transfer%s "
		    "ended as file-changed, new clients refused until writing "
		    "stops (publish files by rename, then reload)",
		    sf->sf_path_log, ended, PLURAL(ended));
		sfile_unref(sf);
	}
	server_manifest();	/* no digest for a file in flux */
}

static void
watch_on_readable(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	watch_read();
	watch_act();
}

/* Whether a transfer's end is WATCH_STAT_MS past the last one's look. */
static bool
watch_stat_due(struct watch *w)
{
	struct timeval	now, since;

	event_base_gettimeofday_cached(watch_base, &now);
	timersub(&now, &w->w_statted, &since);
	if (since.tv_sec == 0 && since.tv_usec >= 0 &&
	    since.tv_usec < WATCH_STAT_MS * 1000)
		return (false);
	w->w_statted = now;
	return (true);
}

static bool
watch_look(struct sfile *sf, bool always)
{
	struct watch	*w = sf->sf_watch;

	if (watch_pending && watch_fd != -1) {
		watch_read();
		event_active(watch_ev, EV_READ, 0);
	}
	if (w != NULL && (always || watch_stat_due(w)) && watch_check(w))
		event_active(watch_ev, EV_READ, 0);
	return (sf->sf_changed);
}

/*
 * Whether sf has changed, counting changes queued but not yet read and
 * those that raise no event (looked for every WATCH_STAT_MS).  It may be
 * called deep in a transfer: it only marks files; the loop's next turn
 * acts on them.
 */
bool
watch_changed(struct sfile *sf)
{
	return (watch_look(sf, false));
}

/* The same, looking at the inode now: before a digest is the file's. */
bool
watch_changed_now(struct sfile *sf)
{
	return (watch_look(sf, true));
}

void
watch_init(struct event_base *base)
{
	struct sigaction	sa;
	struct f_owner_ex	owner;

	watch_base = base;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = watch_on_sigio;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	owner.type = F_OWNER_TID;
	owner.pid = gettid();
	if ((watch_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) == -1) {
		log_warn("inotify: files changed in place will not be noticed "
		    "before they are sent");
		return;
	}
	/* Without SIGIO, changes are still seen, only the race is open. */
	if (sigaction(SIGIO, &sa, NULL) == -1 ||
	    fcntl(watch_fd, F_SETOWN_EX, &owner) == -1 ||
	    fcntl(watch_fd, F_SETFL, O_NONBLOCK | O_ASYNC) == -1)
		log_warn("inotify SIGIO: a change just before a transfer's "
		    "FIN may be missed");
	watch_ev = event_new(base, watch_fd, EV_READ | EV_PERSIST,
	    watch_on_readable, NULL);
	if (watch_ev == NULL || event_add(watch_ev, NULL) == -1)
		fatalx("cannot watch the inotify descriptor");
}

/* Watch a newly opened file's inode (through its descriptor, not its name). */
void
watch_add(struct sfile *sf)
{
	struct watch	*w;
	char		 path[64];

	if (watch_fd == -1 || (w = calloc(1, sizeof(*w))) == NULL)
		return;
	w->w_file = sf;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", sf->sf_fd);
	if ((w->w_wd = inotify_add_watch(watch_fd, path, WATCH_MASK)) == -1 &&
	    !watch_warned) {
		log_warn("%s: inotify (a change in place will not be noticed "
		    "before it is sent; fs.inotify.max_user_watches?)",
		    sf->sf_path_log);
		watch_warned = true;
	}
	evtimer_assign(&w->w_settle, watch_base, watch_on_settle, w);
	TAILQ_INSERT_TAIL(&watches, w, w_entry);
	sf->sf_watch = w;
}

/* The file is closed: its watch goes, and the inode's if it was the last. */
void
watch_drop(struct sfile *sf)
{
	struct watch	*w = sf->sf_watch, *other;

	if (w == NULL)
		return;
	sf->sf_watch = NULL;
	evtimer_del(&w->w_settle);
	TAILQ_REMOVE(&watches, w, w_entry);
	if (w->w_wd != -1) {
		TAILQ_FOREACH(other, &watches, w_entry) {
			if (other->w_wd == w->w_wd)
				break;
		}
		if (other == NULL)
			inotify_rm_watch(watch_fd, w->w_wd);
	}
	free(w);
}

/*
 * Writing has stopped: the inode's content now is a new file, which the
 * shares that served the old one serve from now on, once hashed.  Not if
 * nothing serves the old one any more (a reload replaced it).
 */
static void
watch_on_settle(evutil_socket_t fd, short what, void *arg)
{
	struct watch	*w = arg;
	struct sfile	*sf, *nsf;
	int		 dupfd, n;

	(void)fd;
	(void)what;
	sf = sfile_ref(w->w_file);	/* a share may drop the last one */
	if ((dupfd = fcntl(sf->sf_fd, F_DUPFD_CLOEXEC, 0)) == -1 ||
	    (nsf = sfile_adopt(dupfd, sf->sf_path)) == NULL) {
		log_warn("%s: cannot serve its new content", sf->sf_path_log);
		watch_settle_later(w, WATCH_QUIET_MS);
		sfile_unref(sf);
		return;
	}
	if ((n = server_file_replace(sf, nsf)) > 0) {
		log_info("%s: writing stopped: serving its new content "
		    "(%llu bytes)", nsf->sf_path_log,
		    (unsigned long long)nsf->sf_size);
		digest_start(nsf);
	} else if (n == -1) {
		log_warn("%s: cannot serve its new content", sf->sf_path_log);
		watch_settle_later(w, WATCH_QUIET_MS);
	}
	sfile_unref(nsf);	/* the shares hold it, if any */
	sfile_unref(sf);
}

void
watch_free(void)
{
	struct watch	*w;

	while ((w = TAILQ_FIRST(&watches)) != NULL)
		watch_drop(w->w_file);
	if (watch_ev != NULL)
		event_free(watch_ev);
	watch_ev = NULL;
	if (watch_fd != -1)
		close(watch_fd);
	watch_fd = -1;
}
