/*
 * fair.c: a share's rate divided among the clients it is sending to.
 *
 * The share keeps one clock: the bytes each of its clients has earned
 * so far.  It runs at share_rate_limit divided by the number of clients
 * being sent to at each moment, and a client's fair tokens are what the
 * clock has moved since it last looked, capped at a burst.  So a change
 * in their number is accounted for once, for all of them, by running
 * the clock at the old rate up to that moment; a new client starts with
 * nothing and earns only while it is there; and no client can take more
 * than its part however often others come and go.
 *
 * A client short of fair tokens sleeps until the clock reaches a value.
 * The sleepers are in a heap by that value, under one timer per share:
 * when the number of clients changes, only that timer moves, however
 * long the waits (at 1 byte a second, a wait is hours).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "fdistd.h"

#define FAIR_IDLE	SIZE_MAX	/* fc_slot of a client not sleeping */
/* The clock's steps: rate * step must fit in 64 bits at 100G/s. */
#define FAIR_STEP_USEC	(64 * 1000000LL)
/* No timer sooner than this: a clock that fires early must not spin. */
#define FAIR_MIN_WAIT_USEC 1000

void
fair_init(struct fair *fr)
{
	memset(fr, 0, sizeof(*fr));
	clock_gettime(CLOCK_MONOTONIC, &fr->fr_last);
}

void
fair_free(struct fair *fr)
{
	if (fr->fr_timer != NULL)
		event_free(fr->fr_timer);
	free(fr->fr_heap);
}

/* Run the clock up to now at the rate of the clients there were. */
static void
fair_advance(struct fair *fr, const struct timespec *now)
{
	int64_t		ns, usec, step;
	uint64_t	per, acc;

	ns = (int64_t)(now->tv_sec - fr->fr_last.tv_sec) * 1000000000 +
	    (now->tv_nsec - fr->fr_last.tv_nsec);
	if (ns < 1000)
		return;
	/* Whole microseconds only: the rest counts next time. */
	usec = ns / 1000;
	fr->fr_last = *now;
	fr->fr_last.tv_nsec -= (long)(ns % 1000);
	if (fr->fr_last.tv_nsec < 0) {
		fr->fr_last.tv_sec--;
		fr->fr_last.tv_nsec += 1000000000;
	}
	if (fr->fr_rate == 0 || fr->fr_clients == 0)
		return;
	per = (uint64_t)fr->fr_clients * 1000000;
	for (; usec > 0; usec -= step) {
		step = usec < FAIR_STEP_USEC ? usec : FAIR_STEP_USEC;
		acc = fr->fr_rate * (uint64_t)step + fr->fr_frac;
		fr->fr_clock += acc / per;
		fr->fr_frac = acc % per;
	}
}

/* The number of clients changes: the fraction of a byte keeps its value. */
static void
fair_count(struct fair *fr, uint32_t clients)
{
	if (fr->fr_clients > 0 && clients > 0)
		fr->fr_frac = fr->fr_frac * clients / fr->fr_clients;
	else
		fr->fr_frac = 0;
	fr->fr_clients = clients;
}

/* The most fair tokens a client may hold: a burst of its part. */
static uint64_t
fair_burst(const struct fair *fr)
{
	return (bucket_burst(fr->fr_rate /
	    (fr->fr_clients > 0 ? fr->fr_clients : 1)));
}

static void
fair_heap_set(struct fair *fr, size_t i, struct fair_client *fc)
{
	fr->fr_heap[i] = fc;
	fc->fc_slot = i;
}

static void
fair_heap_up(struct fair *fr, size_t i)
{
	struct fair_client	*fc = fr->fr_heap[i];
	size_t			 parent;

	while (i > 0) {
		parent = (i - 1) / 2;
		if (fr->fr_heap[parent]->fc_due <= fc->fc_due)
			break;
		fair_heap_set(fr, i, fr->fr_heap[parent]);
		i = parent;
	}
	fair_heap_set(fr, i, fc);
}

static void
fair_heap_down(struct fair *fr, size_t i)
{
	struct fair_client	*fc = fr->fr_heap[i];
	size_t			 child;

	for (;;) {
		child = 2 * i + 1;
		if (child >= fr->fr_waiting)
			break;
		if (child + 1 < fr->fr_waiting &&
		    fr->fr_heap[child + 1]->fc_due < fr->fr_heap[child]->fc_due)
			child++;
		if (fc->fc_due <= fr->fr_heap[child]->fc_due)
			break;
		fair_heap_set(fr, i, fr->fr_heap[child]);
		i = child;
	}
	fair_heap_set(fr, i, fc);
}

static void
fair_heap_remove(struct fair *fr, struct fair_client *fc)
{
	size_t			 i = fc->fc_slot;
	struct fair_client	*last;

	fc->fc_slot = FAIR_IDLE;
	last = fr->fr_heap[--fr->fr_waiting];
	if (last == fc)
		return;
	fair_heap_set(fr, i, last);
	fair_heap_up(fr, i);
	fair_heap_down(fr, last->fc_slot);
}

/*
 * Set the share's timer for when the clock reaches the first sleeper's
 * value at today's number of clients; called whenever either changes.
 */
static void
fair_arm(struct fair *fr)
{
	struct timeval	tv;
	uint64_t	need, num, usec;

	if (fr->fr_waiting == 0 || fr->fr_rate == 0) {
		if (fr->fr_timer != NULL)
			evtimer_del(fr->fr_timer);
		return;
	}
	need = fr->fr_heap[0]->fc_due > fr->fr_clock ?
	    fr->fr_heap[0]->fc_due - fr->fr_clock : 0;
	/* need * clients / rate seconds, rounded up, without overflow. */
	num = need * fr->fr_clients;
	usec = num / fr->fr_rate * 1000000 +
	    (num % fr->fr_rate * 1000000 + fr->fr_rate - 1) / fr->fr_rate;
	if (usec < FAIR_MIN_WAIT_USEC)
		usec = FAIR_MIN_WAIT_USEC;
	tv.tv_sec = (time_t)(usec / 1000000);
	tv.tv_usec = (suseconds_t)(usec % 1000000);
	evtimer_add(fr->fr_timer, &tv);
}

/* The share's timer: wake every sleeper the clock has reached. */
static void
fair_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct fair		*fr = arg;
	struct fair_client	*fc;
	struct timespec		 now;

	(void)fd;
	(void)what;
	clock_gettime(CLOCK_MONOTONIC, &now);
	fair_advance(fr, &now);
	while (fr->fr_waiting > 0 && fr->fr_heap[0]->fc_due <= fr->fr_clock) {
		fc = fr->fr_heap[0];
		fair_heap_remove(fr, fc);
		event_active(fc->fc_wake, EV_TIMEOUT, 1);
	}
	fair_arm(fr);
}

/* A reload's share_rate_limit; what the old one earned is kept. */
void
fair_set_rate(struct fair *fr, uint64_t rate)
{
	struct timespec	now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	fair_advance(fr, &now);
	fr->fr_rate = rate;
	if (rate == 0) {
		/* No limit: every sleeper may go now. */
		while (fr->fr_waiting > 0) {
			event_active(fr->fr_heap[0]->fc_wake, EV_TIMEOUT, 1);
			fair_heap_remove(fr, fr->fr_heap[0]);
		}
	}
	fair_arm(fr);
}

/*
 * A client to send to, woken through wake (a timer made active) when it
 * has slept for its part.  It starts with nothing: it earns from now on.
 * The room for it in the heap, and the share's timer, are made now, not
 * when it has to wait.  -1: no memory.
 */
int
fair_join(struct fair *fr, struct fair_client *fc, struct event *wake)
{
	struct fair_client	**heap;
	struct timespec		  now;
	size_t			  room;

	if (fr->fr_timer == NULL &&
	    (fr->fr_timer = evtimer_new(event_get_base(wake), fair_on_timer,
	    fr)) == NULL)
		return (-1);
	if (fr->fr_clients >= fr->fr_room) {
		room = fr->fr_room > 0 ? fr->fr_room * 2 : 16;
		if ((heap = reallocarray(fr->fr_heap, room,
		    sizeof(*heap))) == NULL)
			return (-1);
		fr->fr_heap = heap;
		fr->fr_room = room;
	}
	/* Without a limit the clock stands: fair_set_rate() moves it on. */
	if (fr->fr_rate != 0) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		fair_advance(fr, &now);
	}
	fair_count(fr, fr->fr_clients + 1);
	fc->fc_seen = fr->fr_clock;
	fc->fc_tokens = 0;
	fc->fc_due = 0;
	fc->fc_slot = FAIR_IDLE;
	fc->fc_wake = wake;
	if (fr->fr_rate != 0)
		fair_arm(fr);
	return (0);
}

/* The client has everything, or is gone: the others' parts grow now. */
void
fair_leave(struct fair *fr, struct fair_client *fc)
{
	struct timespec	now;

	if (fr->fr_rate == 0) {
		fair_count(fr, fr->fr_clients - 1);
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &now);
	fair_advance(fr, &now);
	if (fc->fc_slot != FAIR_IDLE)
		fair_heap_remove(fr, fc);
	fair_count(fr, fr->fr_clients - 1);
	fair_arm(fr);
}

/* The client's fair tokens now; UINT64_MAX without a share_rate_limit. */
uint64_t
fair_available(struct fair *fr, struct fair_client *fc,
    const struct timespec *now)
{
	uint64_t	burst;
	bool		first;

	if (fr->fr_rate == 0)
		return (UINT64_MAX);
	fair_advance(fr, now);
	/* Awake, whatever woke it: in the heap only while it sleeps. */
	if (fc->fc_slot != FAIR_IDLE) {
		first = fc->fc_slot == 0;
		fair_heap_remove(fr, fc);
		if (first)
			fair_arm(fr);
	}
	fc->fc_tokens += fr->fr_clock - fc->fc_seen;
	fc->fc_seen = fr->fr_clock;
	burst = fair_burst(fr);
	if (fc->fc_tokens > burst)
		fc->fc_tokens = burst;
	return (fc->fc_tokens);
}

void
fair_take(struct fair_client *fc, uint64_t n)
{
	fc->fc_tokens = n < fc->fc_tokens ? fc->fc_tokens - n : 0;
}

/*
 * Out of fair tokens (fair_available() just said how many): sleep until
 * a quarter of a burst is there, or the want bytes left to send if
 * fewer.  Returns whether the client sleeps here; if not, its fair part
 * is not what it waits for.
 */
bool
fair_wait(struct fair *fr, struct fair_client *fc, uint64_t want)
{
	uint64_t	target = fair_burst(fr) / 4;

	if (fr->fr_rate == 0)
		return (false);
	if (fc->fc_slot != FAIR_IDLE)
		return (true);
	if (want < target)
		target = want;
	if (fc->fc_tokens >= target)
		return (false);
	fc->fc_due = fc->fc_seen + target - fc->fc_tokens;
	fair_heap_set(fr, fr->fr_waiting++, fc);
	fair_heap_up(fr, fc->fc_slot);
	if (fc->fc_slot == 0)
		fair_arm(fr);
	return (true);
}
