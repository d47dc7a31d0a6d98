/*
 * fdist-fetch output side: receive into FILE.part, publish it as FILE with
 * an atomic rename, and make sure no failure or signal leaves FILE.part.
 */
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

static void	fetch_out_sighandler(int);
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
	static const int	sigs[] = { SIGINT, SIGTERM, SIGHUP };
	size_t			i;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fetch_out_sighandler;
	sa.sa_flags = SA_RESETHAND;
	sigfillset(&sa.sa_mask);
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		if (sigaction(sigs[i], NULL, &old) == 0 &&
		    old.sa_handler == SIG_IGN)
			continue;
		sigaction(sigs[i], &sa, NULL);
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
 * Create FILE.part afresh (O_EXCL), so that its owner and mode are ours
 * and nobody else holds it open: a leftover plain file with one link is
 * removed first.  Anything else in its place (a symlink, FIFO, device or
 * hard link) is not ours: it is left alone and the fetch fails.
 */
static int
fetch_out_create(const char *part)
{
	struct stat	st;
	int		fd, tries;

	for (tries = 0; tries < 3; tries++) {
		fd = open(part, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
		    O_CLOEXEC, 0644);
		if (fd != -1)
			return (fd);
		if (errno != EEXIST)
			break;
		if (lstat(part, &st) == -1) {
			if (errno == ENOENT)
				continue;	/* gone meanwhile */
			break;
		}
		if (S_ISLNK(st.st_mode)) {
			fetch_warnx("%s: is a symbolic link, not following it",
			    part);
			return (-1);
		}
		if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
			fetch_warnx("%s: exists and is not a plain file with "
			    "one link", part);
			return (-1);
		}
		if (unlink(part) == -1 && errno != ENOENT)
			break;
	}
	if (tries == 3)
		fetch_warnx("%s: made again by someone else each time it was "
		    "removed", part);
	else
		fetch_warn("%s", part);
	return (-1);
}

/*
 * Open the destination: see fetch_out_stream, else a new FILE.part next
 * to FILE (fetch_out_create).
 */
struct fetch_out *
fetch_out_open(const char *path)
{
	struct fetch_out	*out;
	struct stat		 st;

	if ((out = calloc(1, sizeof(*out))) == NULL) {
		fetch_warn("calloc");
		return (NULL);
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
		return (out);
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

	/* Arm before open so a signal right after creation still removes it. */
	memcpy(out_sigpart, out->out_part, strlen(out->out_part) + 1);
	out_sigarmed = 1;
	if ((out->out_fd = fetch_out_create(out->out_part)) == -1) {
		out_sigarmed = 0;	/* what is there is not ours */
		goto fail;
	}
	out->out_owned = 1;
	return (out);

fail:
	fetch_out_free(out);
	return (NULL);
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
 */
int
fetch_out_commit(struct fetch_out *out)
{
	struct stat	st;
	int		fd;

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
	fd = out->out_fd;
	out->out_fd = -1;
	out->out_owned = 0;
	if (close(fd) == -1) {
		fetch_warn("close %s", out->out_part);
		return (-1);
	}
	if (rename(out->out_part, out->out_path) == -1) {
		fetch_warn("rename %s to %s", out->out_part, out->out_path);
		return (-1);
	}
	out_sigarmed = 0;
	free(out->out_part);
	out->out_part = NULL;
	return (fetch_out_syncdir(out->out_path));
}

/* The one way out: close, and remove FILE.part unless it was published. */
void
fetch_out_free(struct fetch_out *out)
{
	if (out == NULL)
		return;
	if (out->out_owned)
		close(out->out_fd);
	if (out->out_part != NULL && out_sigarmed) {
		/* Disarm only after: a signal in between just unlinks again. */
		unlink(out->out_part);
		out_sigarmed = 0;
	}
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
