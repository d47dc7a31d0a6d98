/*
 * pool.h: the sendfile workers (pool.c).
 */
#ifndef FDISTD_POOL_H
#define FDISTD_POOL_H

#include <sys/types.h>
#include <sys/queue.h>

#include <stdbool.h>
#include <stdint.h>

struct event_base;

/* The most sendfile workers (workers = N). */
#define POOL_MAX	64

enum pool_job_state {
	POOL_IDLE,		/* the loop's */
	POOL_QUEUED,		/* waiting for a worker */
	POOL_RUNNING,		/* a worker is in sendfile() */
	POOL_DONE,		/* on the done queue, for the loop */
};

/*
 * One sendfile hand-off (pool_job_get()).  The loop fills in the socket,
 * file, offset and length; a worker sends what fits without blocking and
 * fills in the result; pj_done(pj_arg) then runs on the loop.  Only a
 * send in flight holds a job, not every connection.
 */
struct pool_job {
	TAILQ_ENTRY(pool_job)	 pj_entry;
	enum pool_job_state	 pj_state;	/* under the pool's lock */
	int			 pj_sock;
	int			 pj_file;
	uint64_t		 pj_off;
	size_t			 pj_want;
	/* Written by the worker, read by the loop once the job is back. */
	size_t			 pj_sent;
	int			 pj_errno;	/* 0: pj_want sent, or EOF */
	bool			 pj_eof;	/* sendfile() returned 0 */
	void			(*pj_done)(struct pool_job *);
	void			*pj_arg;	/* the loop's; never a worker's */
};

unsigned int pool_start(struct event_base *, unsigned int);
unsigned int pool_size(void);
unsigned int pool_auto_size(void);
struct pool_job *pool_job_get(void);
void	 pool_job_put(struct pool_job *);
void	 pool_submit(struct pool_job *);
void	 pool_reclaim(struct pool_job *);
void	 pool_free(void);

#endif
