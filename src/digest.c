/*
 * digest.c: the SHA-256 of each served file.  Hashing a large image takes
 * seconds, so a worker thread does it while the loop goes on serving.  A
 * finished job is put on a locked queue and an eventfd wakes the loop,
 * which empties the queue: a completion can never be lost, however many
 * are in flight (the eventfd only counts wake-ups; the queue holds them).
 * Only the loop's thread ever touches the file's reference count or its
 * digest fields.
 */
#include <sys/types.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#include <errno.h>
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
/* dj_error values of our own, beside errno values. */
#define DIGEST_ELIBCRYPTO	(-1)
#define DIGEST_ESHRANK		(-2)	/* pread found the end early */

struct digest_job {
	TAILQ_ENTRY(digest_job)	 dj_entry;	/* jobs: the loop's */
	TAILQ_ENTRY(digest_job)	 dj_done_entry;	/* done: under done_lock */
	struct sfile		*dj_file;	/* a reference, loop-owned */
	int			 dj_fd;
	uint64_t		 dj_size;
	pthread_t		 dj_thread;
	atomic_bool		 dj_cancel;
	bool			 dj_joined;
	/* Written by the worker, read by the loop after done_lock. */
	int			 dj_error;	/* errno, or DIGEST_E* */
	uint64_t		 dj_found;	/* the size, if it shrank */
	char			 dj_hex[65];
	struct timespec		 dj_start;
};
TAILQ_HEAD(digest_jobs, digest_job);

static struct digest_jobs	jobs = TAILQ_HEAD_INITIALIZER(jobs);
static struct digest_jobs	done = TAILQ_HEAD_INITIALIZER(done);
static pthread_mutex_t		done_lock = PTHREAD_MUTEX_INITIALIZER;
static int			done_fd = -1;	/* eventfd */
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
		if (n == 0) {
			struct stat	st;

			dj->dj_error = DIGEST_ESHRANK;
			dj->dj_found = fstat(dj->dj_fd, &st) == 0 ?
			    (uint64_t)st.st_size : off;
			goto out;
		}
		if (n == -1) {
			dj->dj_error = errno;
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

	uint64_t		 one = 1;

	dj->dj_error = DIGEST_ELIBCRYPTO;
	if ((buf = malloc(DIGEST_CHUNK)) == NULL)
		dj->dj_error = ENOMEM;
	else if (digest_compute(dj, buf) == 0)
		dj->dj_error = 0;
	free(buf);
	pthread_mutex_lock(&done_lock);
	TAILQ_INSERT_TAIL(&done, dj, dj_done_entry);
	pthread_mutex_unlock(&done_lock);
	/*
	 * Only a wake-up: the job is queued already.  An eventfd counter
	 * cannot overflow from a few adds, so this cannot fail with EAGAIN.
	 */
	while (write(done_fd, &one, sizeof(one)) == -1 && errno == EINTR)
		;
	return (NULL);
}

/* Why a job did not give a digest, in words. */
static void
digest_log_failure(const struct digest_job *dj, const struct sfile *sf)
{
	if (sf->sf_changed)
		log_warnx("%s: sha256 abandoned: the file changed while "
		    "being hashed", sf->sf_path_log);
	else if (dj->dj_error == ECANCELED)
		return;		/* nothing serves the file any more */
	else if (dj->dj_error == DIGEST_ESHRANK)
		log_warnx("%s: cannot compute sha256: the file shrank from "
		    "%llu to %llu bytes while being hashed (replace files by "
		    "rename, then reload)", sf->sf_path_log,
		    (unsigned long long)dj->dj_size,
		    (unsigned long long)dj->dj_found);
	else if (dj->dj_error == DIGEST_ELIBCRYPTO)
		log_warnx("%s: cannot compute sha256: libcrypto error",
		    sf->sf_path_log);
	else
		log_warnx("%s: cannot compute sha256: %s", sf->sf_path_log,
		    strerror(dj->dj_error));
}

static void
digest_finish(struct digest_job *dj)
{
	struct sfile	*sf = dj->dj_file;
	struct timespec	 now;
	double		 secs;

	if (!dj->dj_joined)
		pthread_join(dj->dj_thread, NULL);
	TAILQ_REMOVE(&jobs, dj, dj_entry);
	clock_gettime(CLOCK_MONOTONIC, &now);
	secs = (double)(now.tv_sec - dj->dj_start.tv_sec) +
	    (double)(now.tv_nsec - dj->dj_start.tv_nsec) / 1e9;
	/*
	 * A change seen meanwhile may have been read half-done; so may one
	 * that raised no event (watch_changed_now() looks at the mtime).
	 */
	if (dj->dj_error == 0 && !watch_changed_now(sf)) {
		memcpy(sf->sf_sha256, dj->dj_hex, sizeof(sf->sf_sha256));
		sf->sf_digest = DIGEST_READY;
		log_info("%s: sha256 %s (%.1f s)", sf->sf_path_log,
		    sf->sf_sha256, secs);
		server_digest_known(sf);
	} else {
		sf->sf_digest = DIGEST_FAILED;
		digest_log_failure(dj, sf);
		/* Not cancelled (nothing serves it), nor changed in place. */
		if (dj->dj_error != ECANCELED && !sf->sf_changed)
			server_digest_known(sf);
	}
	server_manifest();	/* pending no more */
	conn_digest_known(sf);
	sfile_unref(sf);
	free(dj);
}

/* Take every finished job off the queue, then finish each. */
static void
digest_drain(void)
{
	struct digest_jobs	 batch = TAILQ_HEAD_INITIALIZER(batch);
	struct digest_job	*dj;

	pthread_mutex_lock(&done_lock);
	while ((dj = TAILQ_FIRST(&done)) != NULL) {
		TAILQ_REMOVE(&done, dj, dj_done_entry);
		TAILQ_INSERT_TAIL(&batch, dj, dj_done_entry);
	}
	pthread_mutex_unlock(&done_lock);
	while ((dj = TAILQ_FIRST(&batch)) != NULL) {
		TAILQ_REMOVE(&batch, dj, dj_done_entry);
		digest_finish(dj);
	}
}

static void
digest_on_done(evutil_socket_t fd, short what, void *arg)
{
	uint64_t	count;

	(void)what;
	(void)arg;
	/* Read the count first: a job queued after the drain wakes us again. */
	if (read(fd, &count, sizeof(count)) == -1 && errno != EAGAIN &&
	    errno != EINTR)
		log_warn("digest eventfd");
	digest_drain();
}

void
digest_init(struct event_base *base)
{
	if ((done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) == -1)
		fatal("eventfd");
	done_ev = event_new(base, done_fd, EV_READ | EV_PERSIST,
	    digest_on_done, NULL);
	if (done_ev == NULL || event_add(done_ev, NULL) == -1)
		fatalx("cannot watch the digest eventfd");
}

/*
 * Start hashing a file: a newly opened one, or, on reload, one kept
 * whose hashing failed (a read error may have passed).  Not a file
 * that changed in place: its new content is a file of its own.
 */
void
digest_start(struct sfile *sf)
{
	struct digest_job	*dj;
	sigset_t		 all, old;
	int			 rv;

	if (sf->sf_digest == DIGEST_PENDING ||
	    sf->sf_digest == DIGEST_READY || sf->sf_changed)
		return;
	if (sf->sf_digest == DIGEST_FAILED) {
		log_info("%s: computing sha256 again", sf->sf_path_log);
		sf->sf_digest = DIGEST_PENDING;
		server_digest_known(sf);	/* its shares: pending again */
	}
	sf->sf_digest = DIGEST_PENDING;
	if ((dj = calloc(1, sizeof(*dj))) == NULL) {
		sf->sf_digest = DIGEST_FAILED;
		log_warn("%s: sha256", sf->sf_path_log);
		server_digest_known(sf);
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
		log_warnx("%s: cannot start computing sha256: %s (a reload "
		    "tries again)", sf->sf_path_log, strerror(rv));
		server_digest_known(sf);
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

/* The file changed in place: what its worker reads is no version. */
void
digest_cancel(struct sfile *sf)
{
	struct digest_job	*dj;

	TAILQ_FOREACH(dj, &jobs, dj_entry) {
		if (dj->dj_file == sf)
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
	/* Each worker has queued its job before it returns. */
	TAILQ_FOREACH(dj, &jobs, dj_entry) {
		pthread_join(dj->dj_thread, NULL);
		dj->dj_joined = true;
	}
	digest_drain();
	if (done_ev != NULL)
		event_free(done_ev);
	done_ev = NULL;
	if (done_fd != -1)
		close(done_fd);
	done_fd = -1;
}
