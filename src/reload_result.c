/*
 * reload_result.c: how a reload ended, told to whoever asked for it.
 *
 * systemd 252 has no Type=notify-reload: its ExecReload= must learn the
 * daemon's result itself.  The daemon writes the result of each reload
 * to $RUNTIME_DIRECTORY/reload (RuntimeDirectory= of the unit, the one
 * place the sandbox lets it write), numbered, with its pid and when its
 * load began; "fdistd -r PID" (the unit's ExecReload=) notes the time,
 * sends SIGHUP, waits a bounded time for the result of a load that
 * began since and exits with the result.  A later number would not do:
 * a load that began before the signal (another reload's) may end just
 * after the helper read the file, and it may have read an older file.  A signal
 * carries no reply, a file outlives the helper's start: nothing has to
 * listen, and a reload sent by plain kill(1) is recorded the same way.
 */
#include <sys/inotify.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fdistd.h"

#define RELOAD_FILE		"reload"
#define RELOAD_TMP		"reload.tmp"
#define RELOAD_POLL_MS		200	/* re-read even if inotify is silent */

static uint64_t		 reload_generation;
static uint64_t		 reload_began;	/* the next result's load, usec */
static bool		 reload_write_failed;

struct reload_result {
	long		 rr_pid;
	uint64_t	 rr_generation;
	uint64_t	 rr_started;	/* CLOCK_MONOTONIC, usec */
	bool		 rr_have_started;
	bool		 rr_ok;
	char		 rr_message[ERR_MAX + 128];
};

static const char *
reload_result_dir(void)
{
	const char	*dir = getenv("RUNTIME_DIRECTORY");

	/* systemd lists several with ':'; the unit has one. */
	if (dir == NULL || *dir != '/' || strchr(dir, ':') != NULL)
		return (NULL);
	return (dir);
}

static uint64_t
reload_result_now_usec(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000);
}

/*
 * The daemon: the load whose result is reported next begins now (a new
 * worker's, or a reload answered at once).
 */
void
reload_result_begin(void)
{
	reload_began = reload_result_now_usec();
}

/*
 * The daemon: record how reload number n ended, replacing the file
 * whole (rename), so a reader never sees half of it.
 */
void
reload_result_report(bool ok, const char *message)
{
	char		 path[PATH_MAX], tmp[PATH_MAX], line[ERR_MAX + 128];
	const char	*dir;
	size_t		 i;
	FILE		*fp;
	int		 fd;

	reload_generation++;
	if ((dir = reload_result_dir()) == NULL)
		return;
	/* One line: the message is already escaped, but be sure. */
	snprintf(line, sizeof(line), "%s", message);
	for (i = 0; line[i] != '\0'; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	snprintf(path, sizeof(path), "%s/%s", dir, RELOAD_FILE);
	snprintf(tmp, sizeof(tmp), "%s/%s", dir, RELOAD_TMP);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
	    0600);
	if (fd == -1 || (fp = fdopen(fd, "w")) == NULL) {
		if (fd != -1)
			close(fd);
		goto fail;
	}
	fprintf(fp, "pid %ld\ngeneration %" PRIu64 "\nstarted %" PRIu64 "\n"
	    "result %s\nmessage %s\n", (long)getpid(), reload_generation,
	    reload_began, ok ? "ok" : "failed", line);
	if (fclose(fp) != 0 || rename(tmp, path) == -1)
		goto fail;
	reload_write_failed = false;
	return;
fail:
	/* Once per episode: each reload would say the same. */
	if (!reload_write_failed)
		log_warn("cannot record the reload's result in %s", path);
	reload_write_failed = true;
}

/* Read the last result; false if there is none (yet) or it is unreadable. */
static bool
reload_result_read(const char *path, struct reload_result *rr)
{
	char	 buf[sizeof(rr->rr_message) + 128], *line, *next;
	ssize_t	 n;
	int	 fd;
	bool	 have_pid = false, have_gen = false, have_result = false;

	memset(rr, 0, sizeof(*rr));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) == -1)
		return (false);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return (false);
	buf[n] = '\0';
	for (line = buf; line != NULL && *line != '\0'; line = next) {
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		if (sscanf(line, "pid %ld", &rr->rr_pid) == 1)
			have_pid = true;
		else if (sscanf(line, "generation %" SCNu64,
		    &rr->rr_generation) == 1)
			have_gen = true;
		else if (sscanf(line, "started %" SCNu64,
		    &rr->rr_started) == 1)
			rr->rr_have_started = true;
		else if (strcmp(line, "result ok") == 0)
			have_result = rr->rr_ok = true;
		else if (strcmp(line, "result failed") == 0)
			have_result = true;
		else if (strncmp(line, "message ", 8) == 0)
			snprintf(rr->rr_message, sizeof(rr->rr_message), "%s",
			    line + 8);
	}
	return (have_pid && have_gen && have_result);
}

/* The result of a load that began at or after asked (by our signal)? */
static bool
reload_result_ours(const struct reload_result *rr, long pid, uint64_t asked,
    uint64_t before)
{
	if (rr->rr_pid != pid)
		return (false);
	/* A daemon of before the started line: the generation only. */
	if (!rr->rr_have_started)
		return (rr->rr_generation > before);
	return (rr->rr_started >= asked);
}

/*
 * The ExecReload= helper: signal the daemon pid and wait up to
 * RELOAD_WAIT_S for the result of the reload that signal started.
 * Returns the exit status: 0 reloaded, 1 not (the daemon's reason on
 * standard error).
 */
int
reload_result_client(const char *pidarg)
{
	struct reload_result	 rr;
	char			 path[PATH_MAX], *end;
	const char		*dir;
	uint64_t		 before = 0, asked;
	int64_t			 deadline;
	long			 pid;
	int			 ifd, timeout;

	errno = 0;
	pid = strtol(pidarg, &end, 10);
	if (errno != 0 || end == pidarg || *end != '\0' || pid <= 1 ||
	    pid > INT_MAX) {
		fprintf(stderr, "fdistd: -r: invalid pid '%s' (the unit "
		    "passes $MAINPID)\n", pidarg);
		return (2);
	}
	if ((dir = reload_result_dir()) == NULL) {
		fprintf(stderr, "fdistd: -r: RUNTIME_DIRECTORY is not set: "
		    "the daemon reports reloads there, and the unit's "
		    "RuntimeDirectory= sets it\n");
		return (2);
	}
	snprintf(path, sizeof(path), "%s/%s", dir, RELOAD_FILE);
	if (reload_result_read(path, &rr) && rr.rr_pid == pid)
		before = rr.rr_generation;
	/* Watch before signalling, so no rename can be missed. */
	ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (ifd != -1 && inotify_add_watch(ifd, dir, IN_MOVED_TO) == -1) {
		close(ifd);
		ifd = -1;
	}
	asked = reload_result_now_usec();
	if (kill((pid_t)pid, SIGHUP) == -1) {
		fprintf(stderr, "fdistd: reload: cannot signal pid %ld: %s\n",
		    pid, strerror(errno));
		if (ifd != -1)
			close(ifd);
		return (1);
	}
	deadline = (int64_t)(asked / 1000) + RELOAD_WAIT_S * 1000;
	for (;;) {
		if (reload_result_read(path, &rr) &&
		    reload_result_ours(&rr, pid, asked, before))
			break;
		if (kill((pid_t)pid, 0) == -1 && errno == ESRCH) {
			fprintf(stderr, "fdistd: reload failed: pid %ld "
			    "exited before it reported the reload\n", pid);
			goto fail;
		}
		if ((timeout = (int)(deadline -
		    (int64_t)(reload_result_now_usec() / 1000))) <= 0) {
			fprintf(stderr, "fdistd: reload failed: pid %ld did "
			    "not report the reload within %d seconds\n", pid,
			    RELOAD_WAIT_S);
			goto fail;
		}
		if (timeout > RELOAD_POLL_MS)
			timeout = RELOAD_POLL_MS;
		if (ifd != -1) {
			struct pollfd	pfd = { .fd = ifd, .events = POLLIN };
			char		buf[4096];

			if (poll(&pfd, 1, timeout) > 0)
				while (read(ifd, buf, sizeof(buf)) > 0)
					;
		} else
			poll(NULL, 0, timeout);
	}
	if (ifd != -1)
		close(ifd);
	if (!rr.rr_ok) {
		fprintf(stderr, "fdistd: reload failed, still serving the "
		    "previous configuration: %s\n", rr.rr_message);
		return (1);
	}
	printf("fdistd: %s\n", rr.rr_message);
	return (0);
fail:
	if (ifd != -1)
		close(ifd);
	return (1);
}
