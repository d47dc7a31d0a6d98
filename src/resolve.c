/*
 * resolve.c: look up a listen host name within a bound.  getaddrinfo(3)
 * cannot be told to give up, and a DNS server that never answers (or an
 * NSS module that hangs) would hold fdistd -t, the start or a reload as
 * long as it likes.  So the lookup runs in a thread of its own and the
 * caller waits at most RESOLVE_TIMEOUT_MS.  A lookup given up on is left
 * to end by itself and frees what it found; at most RESOLVE_STUCK_MAX
 * may be outstanding, so a dead resolver costs a bounded number of
 * threads, and past that a lookup fails at once.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "resolve.h"

#define RESOLVE_STUCK_MAX	4

/* One lookup; freed by the caller, or by the worker if given up on. */
struct resolve_job {
	pthread_cond_t	 rj_cond;
	char		*rj_host;
	char		*rj_serv;
	struct addrinfo	 rj_hints;
	struct addrinfo	*rj_res;
	int		 rj_rv;
	int		 rj_errno;	/* errno is the worker's own */
	bool		 rj_done;
	bool		 rj_abandoned;
};

/* Guards every job's rj_res, rj_rv, rj_done, rj_abandoned and stuck. */
static pthread_mutex_t	resolve_mtx = PTHREAD_MUTEX_INITIALIZER;
static unsigned int	resolve_stuck;

static void
resolve_job_free(struct resolve_job *rj)
{
	pthread_cond_destroy(&rj->rj_cond);
	free(rj->rj_host);
	free(rj->rj_serv);
	free(rj);
}

static void *
resolve_worker(void *arg)
{
	struct resolve_job	*rj = arg;
	struct addrinfo		*res = NULL;
	int			 rv, saved;

	rv = getaddrinfo(rj->rj_host, rj->rj_serv, &rj->rj_hints, &res);
	saved = errno;
	pthread_mutex_lock(&resolve_mtx);
	if (rj->rj_abandoned) {
		resolve_stuck--;
		pthread_mutex_unlock(&resolve_mtx);
		if (rv == 0)
			freeaddrinfo(res);
		resolve_job_free(rj);
		return (NULL);
	}
	rj->rj_rv = rv;
	rj->rj_errno = saved;
	rj->rj_res = res;
	rj->rj_done = true;
	pthread_cond_signal(&rj->rj_cond);
	pthread_mutex_unlock(&resolve_mtx);
	return (NULL);
}

static struct resolve_job *
resolve_job_new(const char *host, const char *serv,
    const struct addrinfo *hints)
{
	struct resolve_job	*rj;
	pthread_condattr_t	 ca;

	if ((rj = calloc(1, sizeof(*rj))) == NULL)
		return (NULL);
	rj->rj_host = strdup(host);
	rj->rj_serv = strdup(serv);
	rj->rj_hints = *hints;
	if (rj->rj_host == NULL || rj->rj_serv == NULL ||
	    pthread_condattr_init(&ca) != 0) {
		free(rj->rj_host);
		free(rj->rj_serv);
		free(rj);
		return (NULL);
	}
	/* The deadline must not move with the wall clock. */
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (pthread_cond_init(&rj->rj_cond, &ca) != 0) {
		pthread_condattr_destroy(&ca);
		free(rj->rj_host);
		free(rj->rj_serv);
		free(rj);
		return (NULL);
	}
	pthread_condattr_destroy(&ca);
	return (rj);
}

/* Start the worker, detached, with every signal blocked in it. */
static int
resolve_spawn(struct resolve_job *rj)
{
	pthread_attr_t	 attr;
	pthread_t	 t;
	sigset_t	 all, old;
	int		 rv;

	if ((rv = pthread_attr_init(&attr)) != 0)
		return (rv);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rv = pthread_create(&t, &attr, resolve_worker, rj);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	return (rv);
}

/*
 * getaddrinfo(host, serv, hints, res), or RESOLVE_ETIMEOUT if no answer
 * came within RESOLVE_TIMEOUT_MS, or RESOLVE_ESTUCK if too many earlier
 * lookups are still waiting for theirs.  Numeric hosts need no thread.
 */
int
resolve_host(const char *host, const char *serv,
    const struct addrinfo *hints, struct addrinfo **res)
{
	struct resolve_job	*rj;
	struct addrinfo		 numeric;
	struct timespec		 deadline;
	int			 rv;

	if (hints->ai_flags & AI_NUMERICHOST)
		return (getaddrinfo(host, serv, hints, res));
	/*
	 * An address needs no resolver, and so no thread: a detached one
	 * would linger for a moment after its answer.
	 */
	numeric = *hints;
	numeric.ai_flags |= AI_NUMERICHOST;
	if ((rv = getaddrinfo(host, serv, &numeric, res)) != EAI_NONAME)
		return (rv);
	pthread_mutex_lock(&resolve_mtx);
	rv = resolve_stuck >= RESOLVE_STUCK_MAX ? RESOLVE_ESTUCK : 0;
	pthread_mutex_unlock(&resolve_mtx);
	if (rv != 0)
		return (rv);
	if ((rj = resolve_job_new(host, serv, hints)) == NULL)
		return (EAI_MEMORY);
	if ((rv = resolve_spawn(rj)) != 0) {
		resolve_job_free(rj);
		errno = rv;
		return (EAI_SYSTEM);
	}
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += RESOLVE_TIMEOUT_MS / 1000;
	pthread_mutex_lock(&resolve_mtx);
	while (!rj->rj_done) {
		if (pthread_cond_timedwait(&rj->rj_cond, &resolve_mtx,
		    &deadline) == ETIMEDOUT && !rj->rj_done)
			break;
	}
	if (!rj->rj_done) {
		rj->rj_abandoned = true;
		resolve_stuck++;
		pthread_mutex_unlock(&resolve_mtx);
		return (RESOLVE_ETIMEOUT);
	}
	pthread_mutex_unlock(&resolve_mtx);
	rv = rj->rj_rv;
	errno = rj->rj_errno;
	*res = rj->rj_res;
	resolve_job_free(rj);
	return (rv);
}

/* What a resolve_host() error means. */
const char *
resolve_strerror(int rv)
{
	switch (rv) {
	case RESOLVE_ETIMEOUT:
		return ("no answer within " RESOLVE_TIMEOUT_TEXT);
	case RESOLVE_ESTUCK:
		return ("earlier lookups still wait for the resolver");
	case EAI_SYSTEM:
		return (strerror(errno));
	default:
		return (gai_strerror(rv));
	}
}
