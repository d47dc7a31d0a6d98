/*
 * bucket.c: token buckets for rate limits.  Tokens are bytes; they accrue
 * at the rate and are capped at a small burst (a twentieth of a second's
 * worth), so a limited transfer stays smooth rather than bursting far
 * over its rate after an idle spell.
 */
#include <time.h>

#include "fdistd.h"

#define BUCKET_BURST_DIVISOR	20
#define BUCKET_MIN_BURST	(16 * 1024)

/* The most a bucket of this rate holds (fair.c caps a client's part so). */
uint64_t
bucket_burst(uint64_t rate)
{
	uint64_t	burst = rate / BUCKET_BURST_DIVISOR;

	return (burst < BUCKET_MIN_BURST ? BUCKET_MIN_BURST : burst);
}

void
bucket_init(struct bucket *bk, uint64_t rate)
{
	bk->bk_rate = rate;
	bk->bk_burst = bucket_burst(rate);
	bk->bk_tokens = (int64_t)bk->bk_burst;
	clock_gettime(CLOCK_MONOTONIC, &bk->bk_last);
}

/*
 * Change the rate (a reload), keeping the tokens already earned: those
 * since the last look are counted at the old rate before it goes.
 */
void
bucket_set_rate(struct bucket *bk, uint64_t rate)
{
	struct timespec	now;
	int64_t		tokens;

	clock_gettime(CLOCK_MONOTONIC, &now);
	bucket_available(bk, &now);
	tokens = bk->bk_tokens;
	bucket_init(bk, rate);
	bk->bk_last = now;
	if (tokens < bk->bk_tokens)
		bk->bk_tokens = tokens;
}

/* Bytes that may be sent now; UINT64_MAX without a limit. */
uint64_t
bucket_available(struct bucket *bk, const struct timespec *now)
{
	int64_t		usec;
	uint64_t	earned;

	if (bk->bk_rate == 0)
		return (UINT64_MAX);
	usec = (int64_t)(now->tv_sec - bk->bk_last.tv_sec) * 1000000 +
	    (now->tv_nsec - bk->bk_last.tv_nsec) / 1000;
	/* A second fills any bucket (the burst is 1/20 s): no overflow. */
	if (usec > 1000000) {
		bk->bk_tokens = (int64_t)bk->bk_burst;
		bk->bk_last = *now;
		usec = 0;
	}
	if (usec > 0) {
		earned = bk->bk_rate * (uint64_t)usec / 1000000;
		if (earned > 0) {
			bk->bk_tokens += (int64_t)earned;
			if (bk->bk_tokens > (int64_t)bk->bk_burst)
				bk->bk_tokens = (int64_t)bk->bk_burst;
			/* Keep the fraction of a byte not yet earned. */
			bk->bk_last = *now;
			bk->bk_last.tv_nsec -= (long)((usec - (int64_t)(earned *
			    1000000 / bk->bk_rate)) * 1000);
			if (bk->bk_last.tv_nsec < 0) {
				bk->bk_last.tv_sec--;
				bk->bk_last.tv_nsec += 1000000000;
			}
		}
	}
	return (bk->bk_tokens > 0 ? (uint64_t)bk->bk_tokens : 0);
}

void
bucket_take(struct bucket *bk, uint64_t n)
{
	if (bk->bk_rate != 0)
		bk->bk_tokens -= (int64_t)n;
}

/* Microseconds until a quarter of the burst is there again. */
uint64_t
bucket_wait_usec(const struct bucket *bk)
{
	int64_t	need = (int64_t)bk->bk_burst / 4 - bk->bk_tokens;

	if (bk->bk_rate == 0 || need <= 0)
		return (0);
	return ((uint64_t)need * 1000000 / bk->bk_rate + 1);
}
