/*
 * pool.c: sendfile workers, so that large transfers use every core.
 *
 * On loopback and fast links most of a transfer's CPU is spent inside
 * sendfile(): building segments and, on loopback, the receiver's side of
 * TCP too.  One event loop does that on one core.  So the loop hands the
 * sendfile() call of a large, unlimited send to a small pool of threads,
 * as nginx's thread pools do, and goes on with everything else: the
 * accept, the ack, the record, the limits and the rate sharing stay in
 * the loop and in conn_*.c.  A worker sends what fits in the socket
 * without blocking and puts the job on a locked done queue; an eventfd
 * wakes the loop, which takes the jobs back one at a time.  A worker
 * touches only its job: never the connection, its share or its file.
 */
#include <sys/types.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "fdistd.h"
#include "pool.h"

TAILQ_HEAD(pool_jobs, pool_job);

static pthread_mutex_t	pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t	pool_work = PTHREAD_COND_INITIALIZER;	/* queued */
static pthread_cond_t	pool_back = PTHREAD_COND_INITIALIZER;	/* done */
static struct pool_jobs	pool_queue = TAILQ_HEAD_INITIALIZER(pool_queue);
static struct pool_jobs	pool_done = TAILQ_HEAD_INITIALIZER(pool_done);
/* Jobs not out, kept for the next sends: the loop's, no lock. */
static struct pool_jobs	pool_spare = TAILQ_HEAD_INITIALIZER(pool_spare);
static bool		pool_stop;
static pthread_t	pool_threads[POOL_MAX];
static unsigned int	pool_nthreads;
static int		pool_fd = -1;		/* eventfd: done jobs */
static struct event	*pool_ev;

/* Send what fits; the socket is non-blocking, so this never waits. */
static void
pool_sendfile(struct pool_job *pj)
{
	off_t	off = (off_t)pj->pj_off;
	ssize_t	n;

	pj->pj_sent = 0;
	pj->pj_errno = 0;
	pj->pj_eof = false;
	while (pj->pj_sent < pj->pj_want) {
		n = sendfile(pj->pj_sock, pj->pj_file, &off,
		    pj->pj_want - pj->pj_sent);
		if (n > 0) {
			pj->pj_sent += (size_t)n;
			continue;
		}
		if (n == 0) {
			pj->pj_eof = true;
			return;
		}
		if (errno == EINTR)
			continue;
		pj->pj_errno = errno;
		return;
	}
}

static void *
pool_worker(void *arg)
{
	struct pool_job	*pj;
	uint64_t	 one = 1;

	(void)arg;
	pthread_mutex_lock(&pool_lock);
	for (;;) {
		while (TAILQ_EMPTY(&pool_queue) && !pool_stop)
			pthread_cond_wait(&pool_work, &pool_lock);
		if ((pj = TAILQ_FIRST(&pool_queue)) == NULL)
			break;		/* stopping, and nothing left */
		TAILQ_REMOVE(&pool_queue, pj, pj_entry);
		pj->pj_state = POOL_RUNNING;
		pthread_mutex_unlock(&pool_lock);

		pool_sendfile(pj);

		pthread_mutex_lock(&pool_lock);
		pj->pj_state = POOL_DONE;
		TAILQ_INSERT_TAIL(&pool_done, pj, pj_entry);
		pthread_cond_broadcast(&pool_back);
		/*
		 * A wake-up per job: the loop takes only the jobs it counted
		 * when it woke, so a job put back later needs its own.
		 */
		if (write(pool_fd, &one, sizeof(one)) == -1 && errno != EAGAIN)
			abort();	/* an eventfd write cannot fail */
	}
	pthread_mutex_unlock(&pool_lock);
	return (NULL);
}

/*
 * Give the loop the jobs that are back, one at a time: a callback may
 * reclaim another job of the queue (pool_reclaim), which must then not
 * run again.  Only the jobs there at the start are taken, so workers
 * finishing meanwhile cannot keep the loop here.
 */
static void
pool_on_done(evutil_socket_t fd, short what, void *arg)
{
	struct pool_job	*pj;
	uint64_t	 count;
	size_t		 n = 0, i;

	(void)what;
	(void)arg;
	if (read(fd, &count, sizeof(count)) == -1 && errno != EAGAIN)
		return;
	pthread_mutex_lock(&pool_lock);
	TAILQ_FOREACH(pj, &pool_done, pj_entry)
		n++;
	pthread_mutex_unlock(&pool_lock);
	for (i = 0; i < n; i++) {
		pthread_mutex_lock(&pool_lock);
		if ((pj = TAILQ_FIRST(&pool_done)) != NULL) {
			TAILQ_REMOVE(&pool_done, pj, pj_entry);
			pj->pj_state = POOL_IDLE;
		}
		pthread_mutex_unlock(&pool_lock);
		if (pj == NULL)
			break;
		pj->pj_done(pj);
	}
}

/* The number of CPUs this process may run on: what workers = auto is. */
unsigned int
pool_auto_size(void)
{
	cpu_set_t	set;
	int		n;

	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		n = CPU_COUNT(&set);
	else
		n = (int)sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		return (1);
	return (n > POOL_MAX ? POOL_MAX : (unsigned int)n);
}

/*
 * Start n workers; with n of 1 the loop keeps sending by itself and no
 * thread is made.  Workers block every signal: the loop takes them.  If
 * threads cannot be made (TasksMax=, a pids limit), the daemon serves
 * all the same, with the workers it got or none.  Returns the number of
 * threads that send file data, the loop counted if it is the one.
 */
unsigned int
pool_start(struct event_base *base, unsigned int n)
{
	sigset_t	all, old;
	int		rv = 0;

	if (n <= 1)
		return (1);
	if (n > POOL_MAX)
		n = POOL_MAX;
	if ((pool_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
		log_warn("sendfile workers: eventfd; the event loop sends "
		    "alone");
		return (1);
	}
	pool_ev = event_new(base, pool_fd, EV_READ | EV_PERSIST, pool_on_done,
	    NULL);
	if (pool_ev == NULL || event_add(pool_ev, NULL) == -1) {
		log_warnx("sendfile workers: cannot watch their eventfd; the "
		    "event loop sends alone");
		pool_free();
		return (1);
	}
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	while (pool_nthreads < n) {
		rv = pthread_create(&pool_threads[pool_nthreads], NULL,
		    pool_worker, NULL);
		if (rv != 0)
			break;
		pthread_setname_np(pool_threads[pool_nthreads], "fdistd-send");
		pool_nthreads++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rv != 0) {
		log_warnx("sendfile workers: %u of %u started: %s; %s",
		    pool_nthreads, n, strerror(rv), pool_nthreads > 0 ?
		    "serving with those" : "the event loop sends alone");
		if (pool_nthreads == 0) {
			pool_free();
			return (1);
		}
	}
	return (pool_nthreads);
}

/* The workers running: 0 when the loop sends by itself. */
unsigned int
pool_size(void)
{
	return (pool_nthreads);
}

/*
 * A job for one send: a spare one, or a new one; NULL if out of memory.
 * There are never more than the sends in flight at the busiest moment.
 */
struct pool_job *
pool_job_get(void)
{
	struct pool_job	*pj;

	if ((pj = TAILQ_FIRST(&pool_spare)) != NULL) {
		TAILQ_REMOVE(&pool_spare, pj, pj_entry);
		return (pj);
	}
	return (calloc(1, sizeof(*pj)));
}

/* A job that is back (or was never handed off), kept for the next. */
void
pool_job_put(struct pool_job *pj)
{
	TAILQ_INSERT_HEAD(&pool_spare, pj, pj_entry);
}

/* Hand a job to the workers; its pj_done runs on the loop when back. */
void
pool_submit(struct pool_job *pj)
{
	pthread_mutex_lock(&pool_lock);
	pj->pj_state = POOL_QUEUED;
	TAILQ_INSERT_TAIL(&pool_queue, pj, pj_entry);
	pthread_cond_signal(&pool_work);
	pthread_mutex_unlock(&pool_lock);
}

/*
 * Take a job back now, its pj_done not called: the connection is ending.
 * A queued job is taken off the queue unsent; a running one is waited
 * for: its sendfile() calls, up to pj_want bytes into a non-blocking
 * socket (and the file reads under them, as when the loop sends itself).
 * The job's result says what was sent.
 */
void
pool_reclaim(struct pool_job *pj)
{
	pthread_mutex_lock(&pool_lock);
	switch (pj->pj_state) {
	case POOL_QUEUED:
		TAILQ_REMOVE(&pool_queue, pj, pj_entry);
		pj->pj_sent = 0;
		pj->pj_errno = 0;
		pj->pj_eof = false;
		break;
	case POOL_RUNNING:
		while (pj->pj_state == POOL_RUNNING)
			pthread_cond_wait(&pool_back, &pool_lock);
		/* FALLTHROUGH */
	case POOL_DONE:
		TAILQ_REMOVE(&pool_done, pj, pj_entry);
		break;
	case POOL_IDLE:
		break;
	}
	pj->pj_state = POOL_IDLE;
	pthread_mutex_unlock(&pool_lock);
}

/* Stop the workers (every job is back by now: no connection is left). */
void
pool_free(void)
{
	struct pool_job	*pj;
	unsigned int	 i;

	pthread_mutex_lock(&pool_lock);
	pool_stop = true;
	pthread_cond_broadcast(&pool_work);
	pthread_mutex_unlock(&pool_lock);
	for (i = 0; i < pool_nthreads; i++)
		pthread_join(pool_threads[i], NULL);
	pool_nthreads = 0;
	while ((pj = TAILQ_FIRST(&pool_spare)) != NULL) {
		TAILQ_REMOVE(&pool_spare, pj, pj_entry);
		free(pj);
	}
	if (pool_ev != NULL)
		event_free(pool_ev);
	pool_ev = NULL;
	if (pool_fd != -1)
		close(pool_fd);
	pool_fd = -1;
}
