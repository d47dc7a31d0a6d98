/*
 * fdist-fetch output side: receive into FILE.part, publish it as FILE with
 * an atomic rename, and make sure no failure or signal leaves FILE.part.
 *
 * A run holds an exclusive flock(2) on its FILE.part from creating it to
 * renaming or removing it, and removes a FILE.part only while holding
 * that lock: so a run never takes another live run's part for a killed
 * run's leftover, and the name it renames is the file it wrote.
 */
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fetch.h"

#define FETCH_OUT_SUFFIX	".part"

struct fetch_out {
	int	 out_fd;
	int	 out_stream;	/* stdout or a device: no part, no rename */
	int	 out_owned;	/* out_fd is ours to close */
	char	*out_path;	/* FILE, or "-" */
	char	*out_part;	/* FILE.part while it may exist */
};

/*
 * The signal handler removes the part file itself: that covers every
 * place the program can block (resolver, a stalled stdout, fsync) with no
 * race between a flag check and the next system call.
 */
static char			out_sigpart[PATH_MAX];
static volatile sig_atomic_t	out_sigarmed;
static const int		out_sigs[] = { SIGINT, SIGTERM, SIGHUP };

static void	fetch_out_sighandler(int);
static void	fetch_out_hold(sigset_t *);
static void	fetch_out_release(const sigset_t *);
static int	fetch_out_same(int, const char *);
static int	fetch_out_stale(const char *, const char *);
static int	fetch_out_create(struct fetch_out *);
static int	fetch_out_syncdir(const char *);
static int	fetch_out_stream(struct fetch_out *);

/* Remove the part file, then die of the same signal so the shell sees it. */
static void
fetch_out_sighandler(int sig)
{
	if (out_sigarmed)
		unlink(out_sigpart);
	/* SA_RESETHAND restored the default action; it fires on return. */
	raise(sig);
}

/*
 * Install the handlers, leaving alone signals ignored by whoever started
 * us (nohup, background jobs). EPIPE is reported instead of SIGPIPE.
 */
void
fetch_out_signals(void)
{
	struct sigaction	sa, old;
	size_t			i;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fetch_out_sighandler;
	sa.sa_flags = SA_RESETHAND;
	sigfillset(&sa.sa_mask);
	for (i = 0; i < sizeof(out_sigs) / sizeof(out_sigs[0]); i++) {
		if (sigaction(out_sigs[i], NULL, &old) == 0 &&
		    old.sa_handler == SIG_IGN)
			continue;
		sigaction(out_sigs[i], &sa, NULL);
	}

	sa.sa_handler = SIG_IGN;
	sa.sa_flags = 0;
	sigaction(SIGPIPE, &sa, NULL);
}

/*
 * Stdout, or an existing device or FIFO such as /dev/null, is written in
 * place: renaming a file over /dev/null would replace the device node.
 */
static int
fetch_out_stream(struct fetch_out *out)
{
	out->out_stream = 1;
	if (strcmp(out->out_path, "-") == 0) {
		out->out_fd = STDOUT_FILENO;
		return (0);
	}
	out->out_fd = open(out->out_path, O_WRONLY | O_NOCTTY | O_CLOEXEC);
	if (out->out_fd == -1) {
		fetch_warn("%s", out->out_path);
		return (-1);
	}
	out->out_owned = 1;
	return (0);
}

/*
 * Hold off the handled signals while FILE.part changes hands, so that the
 * handler never removes a name that has just become free for another run.
 */
static void
fetch_out_hold(sigset_t *saved)
{
	sigset_t	set;
	size_t		i;

	sigemptyset(&set);
	for (i = 0; i < sizeof(out_sigs) / sizeof(out_sigs[0]); i++)
		sigaddset(&set, out_sigs[i]);
	sigprocmask(SIG_BLOCK, &set, saved);
}

/* Let the signals held off by fetch_out_hold through again. */
static void
fetch_out_release(const sigset_t *saved)
{
	sigprocmask(SIG_SETMASK, saved, NULL);
}

/* Whether path names the very file open on fd. */
static int
fetch_out_same(int fd, const char *path)
{
	struct stat	fst, st;

	return (fstat(fd, &fst) == 0 && lstat(path, &st) == 0 &&
	    fst.st_dev == st.st_dev && fst.st_ino == st.st_ino);
}

/*
 * FILE.part exists. A plain file with one link that nobody holds locked
 * is a leftover of a killed run: it is locked, checked to be still at its
 * name, and removed with the lock held, so no run can take it over
 * meanwhile. Anything else in its place (a symlink, FIFO, device or hard
 * link) is not ours and is left alone. Returns 0 when FILE.part is gone
 * (look again), else the exit status.
 */
static int
fetch_out_stale(const char *part, const char *path)
{
	struct stat	st, fst;
	int		fd, rv = FETCH_ELOCAL;
	const int	flags = O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;

	if (lstat(part, &st) == -1) {
		if (errno == ENOENT)
			return (0);		/* gone meanwhile */
		fetch_warn("%s", part);
		return (FETCH_ELOCAL);
	}
	if (S_ISLNK(st.st_mode)) {
		fetch_warnx("%s: is a symbolic link, not following it", part);
		return (FETCH_ELOCAL);
	}
	if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
		fetch_warnx("%s: exists and is not a plain file with one link",
		    part);
		return (FETCH_ELOCAL);
	}
	/* Open only to lock: for writing where we may, as NFS needs. */
	if ((fd = open(part, O_WRONLY | flags)) == -1 && errno == EACCES)
		fd = open(part, O_RDONLY | flags);
	if (fd == -1) {
		if (errno == ENOENT)
			return (0);
		fetch_warn("%s: cannot tell whether another %s is writing it",
		    part, FETCH_PROGNAME);
		return (FETCH_ELOCAL);
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		if (errno == EWOULDBLOCK) {
			fetch_warnx("%s: another %s is writing %s", part,
			    FETCH_PROGNAME, path);
			rv = FETCH_EBUSY;
		} else
			fetch_warn("flock %s", part);
		goto out;
	}
	if (fstat(fd, &fst) == -1) {
		fetch_warn("%s", part);
		goto out;
	}
	rv = 0;
	/* Changed since the lstat: look again rather than guess. */
	if (fst.st_dev != st.st_dev || fst.st_ino != st.st_ino ||
	    fst.st_nlink != 1 || !fetch_out_same(fd, part))
		goto out;
	if (unlink(part) == -1 && errno != ENOENT) {
		fetch_warn("%s", part);
		rv = FETCH_ELOCAL;
	}
out:
	close(fd);
	return (rv);
}

/*
 * Create FILE.part afresh (O_EXCL), so that its owner and mode are ours
 * and nobody else holds it open, and lock it. Until the lock is taken
 * another run may remove it as a leftover: then it is not at its name
 * any more, or that run holds the lock, and we start over.
 */
static int
fetch_out_create(struct fetch_out *out)
{
	const char	*part = out->out_part;
	int		 fd, rv, tries;

	for (tries = 0; tries < 3; tries++) {
		fd = open(part, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
		    O_CLOEXEC, 0644);
		if (fd == -1) {
			if (errno != EEXIST) {
				fetch_warn("%s", part);
				return (FETCH_ELOCAL);
			}
			if ((rv = fetch_out_stale(part, out->out_path)) != 0)
				return (rv);
			continue;
		}
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			if (fetch_out_same(fd, part)) {
				out->out_fd = fd;
				return (FETCH_OK);
			}
		} else if (errno != EWOULDBLOCK) {
			fetch_warn("flock %s", part);
			/* No run can lock here, so the name is still ours. */
			if (fetch_out_same(fd, part))
				unlink(part);
			close(fd);
			return (FETCH_ELOCAL);
		}
		close(fd);
	}
	fetch_warnx("%s: made again by someone else each time it was removed",
	    part);
	return (FETCH_ELOCAL);
}

/*
 * Open the destination: see fetch_out_stream, else a new FILE.part next
 * to FILE (fetch_out_create). Returns the exit status; FETCH_EBUSY when
 * another run is writing FILE.part.
 */
int
fetch_out_open(const char *path, struct fetch_out **outp)
{
	struct fetch_out	*out;
	struct stat		 st;
	sigset_t		 saved;
	int			 rv = FETCH_ELOCAL;

	*outp = NULL;
	if ((out = calloc(1, sizeof(*out))) == NULL) {
		fetch_warn("calloc");
		return (FETCH_ELOCAL);
	}
	out->out_fd = -1;
	if ((out->out_path = strdup(path)) == NULL) {
		fetch_warn("strdup");
		goto fail;
	}
	if (strcmp(path, "-") == 0 || (stat(path, &st) == 0 &&
	    (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ||
	    S_ISFIFO(st.st_mode)))) {
		if (fetch_out_stream(out) == -1)
			goto fail;
		*outp = out;
		return (FETCH_OK);
	}
	if (path[strlen(path) - 1] == '/' ||
	    (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))) {
		errno = EISDIR;
		fetch_warn("%s", path);
		goto fail;
	}
	if (asprintf(&out->out_part, "%s%s", path, FETCH_OUT_SUFFIX) == -1) {
		out->out_part = NULL;
		fetch_warn("asprintf");
		goto fail;
	}
	if (strlen(out->out_part) >= sizeof(out_sigpart)) {
		errno = ENAMETOOLONG;
		fetch_warn("%s", out->out_part);
		goto fail;
	}

	/*
	 * Arm the handler only once FILE.part is ours and locked; a signal
	 * meanwhile waits, so it still removes the part just made.
	 */
	fetch_out_hold(&saved);
	if ((rv = fetch_out_create(out)) == FETCH_OK) {
		memcpy(out_sigpart, out->out_part, strlen(out->out_part) + 1);
		out_sigarmed = 1;
		out->out_owned = 1;
	}
	fetch_out_release(&saved);
	if (rv != FETCH_OK)
		goto fail;
	*outp = out;
	return (FETCH_OK);

fail:
	fetch_out_free(out);
	return (rv);
}

/* Write all of buf; a nonblocking stdout inherited from the parent waits. */
int
fetch_out_write(struct fetch_out *out, const void *buf, size_t len)
{
	if (fetch_net_write_all(out->out_fd, buf, len, -1) == 0)
		return (0);
	fetch_warn("%s", out->out_part != NULL ? out->out_part :
	    strcmp(out->out_path, "-") == 0 ? "stdout" : out->out_path);
	return (-1);
}

/* fsync a directory so a rename inside it survives a crash. */
static int
fetch_out_syncdir(const char *path)
{
	const char	*slash;
	char		*dir;
	int		 fd, rv = -1;

	slash = strrchr(path, '/');
	if (slash == NULL)
		dir = strdup(".");
	else if (slash == path)
		dir = strdup("/");
	else
		dir = strndup(path, slash - path);
	if (dir == NULL) {
		fetch_warn("strdup");
		return (-1);
	}
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
		fetch_warn("%s", dir);
		goto out;
	}
	/* Some file systems cannot sync directories; nothing more to do. */
	if (fsync(fd) == -1 && errno != EINVAL) {
		fetch_warn("fsync %s", dir);
		close(fd);
		goto out;
	}
	close(fd);
	rv = 0;
out:
	free(dir);
	return (rv);
}

/*
 * Make the received bytes durable and publish them as FILE. After the
 * rename FILE is complete even if syncing the directory then fails.
 * Streams are synced when they can hold data: a disk, or a redirected file.
 * The lock is let go only after the rename, by the close.  A FILE gets
 * its digest sha256 as its mark (fetch_mark.c) before the rename; if
 * that fails, *markerr is its errno (else 0), and FILE is published.
 */
int
fetch_out_commit(struct fetch_out *out, const char *sha256, int *markerr)
{
	struct stat	st;
	sigset_t	saved;
	int		fd;

	*markerr = 0;
	if (out->out_stream) {
		if (fstat(out->out_fd, &st) == 0 && (S_ISREG(st.st_mode) ||
		    S_ISBLK(st.st_mode)) && fsync(out->out_fd) == -1) {
			fetch_warn("fsync %s", out->out_path);
			return (-1);
		}
		return (0);
	}
	if (fsync(out->out_fd) == -1) {
		fetch_warn("fsync %s", out->out_part);
		return (-1);
	}
	/* After the sync: its size and mtime are settled (NFS too). */
	if (fetch_mark_set(out->out_fd, sha256) == -1)
		*markerr = errno;
	fetch_out_hold(&saved);
	/* Other runs keep off a locked part; this catches anyone else. */
	if (!fetch_out_same(out->out_fd, out->out_part)) {
		fetch_warnx("%s: removed or replaced by someone else, %s left "
		    "as it was", out->out_part, out->out_path);
		out_sigarmed = 0;	/* what is there is not ours */
		fetch_out_release(&saved);
		return (-1);
	}
	if (rename(out->out_part, out->out_path) == -1) {
		fetch_warn("rename %s to %s", out->out_part, out->out_path);
		fetch_out_release(&saved);
		return (-1);
	}
	out_sigarmed = 0;
	fetch_out_release(&saved);
	free(out->out_part);
	out->out_part = NULL;
	fd = out->out_fd;
	out->out_fd = -1;
	out->out_owned = 0;
	if (close(fd) == -1) {
		fetch_warn("close %s", out->out_path);
		return (-1);
	}
	return (fetch_out_syncdir(out->out_path));
}

/*
 * The one way out: remove FILE.part unless it was published, then close.
 * It is removed while still locked, so no other run can have made its own
 * FILE.part at that name yet; the check is for anyone else.
 */
void
fetch_out_free(struct fetch_out *out)
{
	sigset_t	saved;

	if (out == NULL)
		return;
	if (out->out_part != NULL && out_sigarmed) {
		fetch_out_hold(&saved);
		if (fetch_out_same(out->out_fd, out->out_part))
			unlink(out->out_part);
		out_sigarmed = 0;
		fetch_out_release(&saved);
	}
	if (out->out_owned)
		close(out->out_fd);
	free(out->out_part);
	free(out->out_path);
	free(out);
}

/* The name to show the user: FILE, or "-" for stdout. */
const char *
fetch_out_name(struct fetch_out *out)
{
	return (out->out_path);
}
