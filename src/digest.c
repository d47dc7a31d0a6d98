/*
 * digest.c: the SHA-256 of each served file.  Hashing a large image takes
 * seconds, so a worker thread does it while the loop goes on serving; it
 * hands the result back through a pipe, and only the loop's thread ever
 * touches the file's reference count or its digest fields.
 */
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "fdistd.h"

#define DIGEST_CHUNK	(1024 * 1024)

struct digest_job {
	TAILQ_ENTRY(digest_job)	 dj_entry;
	struct sfile		*dj_file;	/* a reference, loop-owned */
	int			 dj_fd;
	uint64_t		 dj_size;
	pthread_t		 dj_thread;
	atomic_bool		 dj_cancel;
	int			 dj_error;	/* errno, or -1 for libcrypto */
	char			 dj_hex[65];
	struct timespec		 dj_start;
};

static TAILQ_HEAD(, digest_job)	jobs = TAILQ_HEAD_INITIALIZER(jobs);
static int			done_pipe[2] = { -1, -1 };
static struct event		*done_ev;

/* Hash the file with pread (sendfile's users never see its offset). */
static int
digest_compute(struct digest_job *dj, unsigned char *buf)
{
	EVP_MD_CTX	*ctx;
	unsigned char	 md[EVP_MAX_MD_SIZE];
	unsigned int	 mdlen, i;
	uint64_t	 off = 0;
	ssize_t		 n;
	int		 rv = -1;

	if ((ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		goto out;
	while (off < dj->dj_size) {
		if (atomic_load(&dj->dj_cancel)) {
			dj->dj_error = ECANCELED;
			goto out;
		}
		n = pread(dj->dj_fd, buf, DIGEST_CHUNK, (off_t)off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			dj->dj_error = n == 0 ? ESTALE : errno;
			goto out;
		}
		if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1)
			goto out;
		off += (uint64_t)n;
	}
	if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)
		goto out;
	for (i = 0; i < mdlen && i < 32; i++) {
		dj->dj_hex[i * 2] = "0123456789abcdef"[md[i] >> 4];
		dj->dj_hex[i * 2 + 1] = "0123456789abcdef"[md[i] & 0xf];
	}
	dj->dj_hex[64] = '\0';
	rv = 0;
out:
	EVP_MD_CTX_free(ctx);
	return (rv);
}

static void *
digest_worker(void *arg)
{
	struct digest_job	*dj = arg;
	unsigned char		*buf;

	dj->dj_error = -1;
	if ((buf = malloc(DIGEST_CHUNK)) == NULL)
		dj->dj_error = ENOMEM;
	else if (digest_compute(dj, buf) == 0)
		dj->dj_error = 0;
	free(buf);
	/* A pointer is far below PIPE_BUF: the write is whole. */
	while (write(done_pipe[1], &dj, sizeof(dj)) == -1 && errno == EINTR)
		;
	return (NULL);
}

static void
digest_finish(struct digest_job *dj)
{
	struct sfile	*sf = dj->dj_file;
	struct timespec	 now;
	double		 secs;

	pthread_join(dj->dj_thread, NULL);
	TAILQ_REMOVE(&jobs, dj, dj_entry);
	clock_gettime(CLOCK_MONOTONIC, &now);
	secs = (double)(now.tv_sec - dj->dj_start.tv_sec) +
	    (double)(now.tv_nsec - dj->dj_start.tv_nsec) / 1e9;
	if (dj->dj_error == 0) {
		memcpy(sf->sf_sha256, dj->dj_hex, sizeof(sf->sf_sha256));
		sf->sf_digest = DIGEST_READY;
		log_info("%s: sha256 %s (%.1f s)", sf->sf_path_log,
		    sf->sf_sha256, secs);
		server_digest_known(sf);
	} else {
		sf->sf_digest = DIGEST_FAILED;
		if (dj->dj_error != ECANCELED)
			log_warnx("%s: cannot compute sha256: %s",
			    sf->sf_path_log, dj->dj_error > 0 ?
			    strerror(dj->dj_error) : "libcrypto error");
	}
	conn_digest_known(sf);
	sfile_unref(sf);
	free(dj);
}

static void
digest_on_done(evutil_socket_t fd, short what, void *arg)
{
	struct digest_job	*dj;

	(void)what;
	(void)arg;
	while (read(fd, &dj, sizeof(dj)) == (ssize_t)sizeof(dj))
		digest_finish(dj);
}

void
digest_init(struct event_base *base)
{
	if (pipe2(done_pipe, O_CLOEXEC | O_NONBLOCK) == -1)
		fatal("pipe2");
	done_ev = event_new(base, done_pipe[0], EV_READ | EV_PERSIST,
	    digest_on_done, NULL);
	if (done_ev == NULL || event_add(done_ev, NULL) == -1)
		fatalx("cannot watch the digest pipe");
}

/* Start hashing a newly opened file (once per open file). */
void
digest_start(struct sfile *sf)
{
	struct digest_job	*dj;
	sigset_t		 all, old;
	int			 rv;

	if (sf->sf_digest != DIGEST_NONE)
		return;
	sf->sf_digest = DIGEST_PENDING;
	if ((dj = calloc(1, sizeof(*dj))) == NULL) {
		sf->sf_digest = DIGEST_FAILED;
		log_warn("%s: sha256", sf->sf_path_log);
		return;
	}
	dj->dj_file = sfile_ref(sf);
	dj->dj_fd = sf->sf_fd;
	dj->dj_size = sf->sf_size;
	clock_gettime(CLOCK_MONOTONIC, &dj->dj_start);
	/* Signals belong to the loop's thread, not the worker. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rv = pthread_create(&dj->dj_thread, NULL, digest_worker, dj);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rv != 0) {
		sf->sf_digest = DIGEST_FAILED;
		log_warnx("%s: sha256: %s", sf->sf_path_log, strerror(rv));
		sfile_unref(sf);
		free(dj);
		return;
	}
	TAILQ_INSERT_TAIL(&jobs, dj, dj_entry);
}

/*
 * Stop hashing files nothing serves any more (a reload replaced them, or
 * failed after opening them, and their last client is gone): the job's
 * is their last reference.  A file still sent to a client keeps its
 * worker, whose digest checks the ack.
 */
void
digest_prune(void)
{
	struct digest_job	*dj;

	TAILQ_FOREACH(dj, &jobs, dj_entry) {
		if (dj->dj_file->sf_refs == 1)
			atomic_store(&dj->dj_cancel, true);
	}
}

/* At exit: stop the workers and wait for them. */
void
digest_free(void)
{
	struct digest_job	*dj;

	TAILQ_FOREACH(dj, &jobs, dj_entry)
		atomic_store(&dj->dj_cancel, true);
	while ((dj = TAILQ_FIRST(&jobs)) != NULL)
		digest_finish(dj);
	if (done_ev != NULL)
		event_free(done_ev);
	done_ev = NULL;
	if (done_pipe[0] != -1) {
		close(done_pipe[0]);
		close(done_pipe[1]);
	}
	done_pipe[0] = done_pipe[1] = -1;
}
