/*
 * loadgen_report.c: counters per behaviour, the latency histogram of
 * normal transfers, and the report printed at the end of a run.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "loadgen.h"

/*
 * Latency buckets: exact below 64 us, then 32 per power of two, so a
 * percentile is off by at most 1/32 without keeping every sample.
 */
#define LG_HIST_SUB		32
#define LG_HIST_BUCKETS		(64 * LG_HIST_SUB)

struct lg_counts {
	uint64_t	lc_started;
	uint64_t	lc_ok;
	uint64_t	lc_refused;
	uint64_t	lc_failed;
	uint64_t	lc_bytes;
	uint64_t	lc_fails[LG_NFAILS];
};

static struct lg_counts	lg_report_counts[LG_NBEHAVIOURS];
static uint64_t		lg_report_hist[LG_HIST_BUCKETS];
static uint64_t		lg_report_nlat;
static uint64_t		lg_report_maxlat;
static FILE		*lg_report_tracefp;

static const char *lg_report_fail_names[LG_NFAILS] = {
	[LG_FAIL_NONE] = "none",
	[LG_FAIL_TIMEOUT] = "timeout",
	[LG_FAIL_SIZE] = "size",
	[LG_FAIL_DIGEST] = "digest",
	[LG_FAIL_RESET] = "reset",
	[LG_FAIL_ACK_LOST] = "ack-lost",
	[LG_FAIL_REFUSED] = "refused",
	[LG_FAIL_CONNECT] = "connect",
	[LG_FAIL_HTTP] = "http",
	[LG_FAIL_IO] = "io",
	[LG_FAIL_LOCAL] = "local",
	[LG_FAIL_INTERRUPTED] = "interrupted",
};

static unsigned int
lg_report_bucket(uint64_t us)
{
	unsigned int	e;

	if (us < 2 * LG_HIST_SUB)
		return ((unsigned int)us);
	e = (unsigned int)(63 - __builtin_clzll(us)) - 5;
	return (e * LG_HIST_SUB + (unsigned int)(us >> e));
}

/* The largest value a bucket holds, so percentiles never flatter. */
static uint64_t
lg_report_bucket_top(unsigned int b)
{
	unsigned int	e;
	uint64_t	m;

	if (b < 2 * LG_HIST_SUB)
		return (b);
	e = b / LG_HIST_SUB - 1;
	m = b - e * LG_HIST_SUB;
	return (((m + 1) << e) - 1);
}

static uint64_t
lg_report_percentile(double p)
{
	uint64_t	want, seen = 0;
	unsigned int	b;

	if (lg_report_nlat == 0)
		return (0);
	want = (uint64_t)(p * (double)lg_report_nlat + 0.999999);
	if (want == 0)
		want = 1;
	for (b = 0; b < LG_HIST_BUCKETS; b++) {
		seen += lg_report_hist[b];
		if (seen >= want)
			break;
	}
	if (b == LG_HIST_BUCKETS)
		return (lg_report_maxlat);
	return (lg_report_bucket_top(b) < lg_report_maxlat ?
	    lg_report_bucket_top(b) : lg_report_maxlat);
}

void
lg_report_start(enum lg_behaviour b)
{
	lg_report_counts[b].lc_started++;
}

/* Count one finished transfer; latency is kept for normal ones only. */
void
lg_report_end(enum lg_behaviour b, enum lg_outcome outcome,
    enum lg_fail fail, uint64_t bytes, int64_t latency_ns)
{
	struct lg_counts	*lc = &lg_report_counts[b];
	uint64_t		 us;

	lc->lc_bytes += bytes;
	switch (outcome) {
	case LG_OK:
		lc->lc_ok++;
		if (b != LG_NORMAL)
			break;
		us = latency_ns > 0 ? (uint64_t)latency_ns / 1000 : 0;
		lg_report_hist[lg_report_bucket(us)]++;
		lg_report_nlat++;
		if (us > lg_report_maxlat)
			lg_report_maxlat = us;
		break;
	case LG_REFUSED:
		lc->lc_refused++;
		break;
	case LG_FAILED:
		lc->lc_failed++;
		lc->lc_fails[fail]++;
		break;
	}
}

/* --trace: one line per transfer, to join with the server's records. */
int
lg_report_trace_open(const char *path)
{
	if ((lg_report_tracefp = fopen(path, "w")) == NULL) {
		fprintf(stderr, "%s: %s: %s\n", LG_PROGNAME, path,
		    strerror(errno));
		return (-1);
	}
	return (0);
}

/* The local address is the server's peer= field; "-" if never bound. */
void
lg_report_trace(int fd, enum lg_behaviour b, enum lg_outcome outcome,
    enum lg_fail fail, uint64_t bytes, int64_t latency_ns)
{
	static const char	*outcomes[] = { "ok", "refused", "failed" };
	struct sockaddr_storage	 ss;
	socklen_t		 len = sizeof(ss);
	char			 peer[ADDR_STR_MAX];

	if (lg_report_tracefp == NULL)
		return;
	if (fd >= 0 && getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
		addr_format((struct sockaddr *)&ss, peer, sizeof(peer));
	else
		strcpy(peer, "-");
	fprintf(lg_report_tracefp, "peer=%s behaviour=%s outcome=%s fail=%s "
	    "bytes=%" PRIu64 " usec=%" PRId64 "\n", peer, lg_behaviour_name(b),
	    outcomes[outcome], lg_report_fail_names[fail], bytes,
	    latency_ns / 1000);
}

void
lg_report_trace_close(void)
{
	if (lg_report_tracefp != NULL && fclose(lg_report_tracefp) != 0)
		fprintf(stderr, "%s: --trace: %s\n", LG_PROGNAME,
		    strerror(errno));
	lg_report_tracefp = NULL;
}

bool
lg_report_failed(void)
{
	int	b;

	for (b = 0; b < LG_NBEHAVIOURS; b++)
		if (lg_report_counts[b].lc_failed > 0)
			return (true);
	return (false);
}

static bool
lg_report_shown(int b)
{
	return (lg_opt.o_mix[b] > 0 || lg_report_counts[b].lc_started > 0);
}

static void
lg_report_sum(struct lg_counts *all)
{
	int	b, f;

	memset(all, 0, sizeof(*all));
	for (b = 0; b < LG_NBEHAVIOURS; b++) {
		all->lc_started += lg_report_counts[b].lc_started;
		all->lc_ok += lg_report_counts[b].lc_ok;
		all->lc_refused += lg_report_counts[b].lc_refused;
		all->lc_failed += lg_report_counts[b].lc_failed;
		all->lc_bytes += lg_report_counts[b].lc_bytes;
		for (f = 0; f < LG_NFAILS; f++)
			all->lc_fails[f] += lg_report_counts[b].lc_fails[f];
	}
}

static void
lg_report_text(const struct lg_counts *all, double secs)
{
	const struct lg_counts	*lc;
	int			 b, f;

	for (b = 0; b < LG_NBEHAVIOURS; b++) {
		if (!lg_report_shown(b))
			continue;
		lc = &lg_report_counts[b];
		printf("behaviour=%s started=%" PRIu64 " ok=%" PRIu64
		    " refused=%" PRIu64 " failed=%" PRIu64 " bytes=%" PRIu64,
		    lg_behaviour_name(b), lc->lc_started, lc->lc_ok,
		    lc->lc_refused, lc->lc_failed, lc->lc_bytes);
		for (f = 1; f < LG_NFAILS; f++)
			if (lc->lc_fails[f] > 0)
				printf(" fail_%s=%" PRIu64,
				    lg_report_fail_names[f], lc->lc_fails[f]);
		putchar('\n');
	}
	printf("total started=%" PRIu64 " ok=%" PRIu64 " refused=%" PRIu64
	    " failed=%" PRIu64 " bytes=%" PRIu64 " elapsed=%.3fs "
	    "transfers/s=%.1f MiB/s=%.1f\n", all->lc_started, all->lc_ok,
	    all->lc_refused, all->lc_failed, all->lc_bytes, secs,
	    (double)all->lc_ok / secs,
	    (double)all->lc_bytes / (1024.0 * 1024.0) / secs);
	printf("latency normal n=%" PRIu64 " p50=%.3fms p99=%.3fms "
	    "max=%.3fms\n", lg_report_nlat,
	    (double)lg_report_percentile(0.50) / 1000.0,
	    (double)lg_report_percentile(0.99) / 1000.0,
	    (double)lg_report_maxlat / 1000.0);
}

static void
lg_report_json_counts(const struct lg_counts *lc)
{
	int	f;

	printf("{\"started\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"refused\":%"
	    PRIu64 ",\"failed\":%" PRIu64 ",\"bytes\":%" PRIu64
	    ",\"fails\":{", lc->lc_started, lc->lc_ok, lc->lc_refused,
	    lc->lc_failed, lc->lc_bytes);
	for (f = 1; f < LG_NFAILS; f++)
		printf("%s\"%s\":%" PRIu64, f > 1 ? "," : "",
		    lg_report_fail_names[f], lc->lc_fails[f]);
	printf("}}");
}

static void
lg_report_json(const struct lg_counts *all, double secs)
{
	int	b;
	bool	first = true;

	printf("{\"elapsed_s\":%.6f,\"transfers_per_s\":%.3f,"
	    "\"mib_per_s\":%.3f,\"seed\":%" PRIu64 ",\"total\":", secs,
	    (double)all->lc_ok / secs,
	    (double)all->lc_bytes / (1024.0 * 1024.0) / secs, lg_opt.o_seed);
	lg_report_json_counts(all);
	printf(",\"latency_us\":{\"n\":%" PRIu64 ",\"p50\":%" PRIu64
	    ",\"p99\":%" PRIu64 ",\"max\":%" PRIu64 "},\"behaviours\":{",
	    lg_report_nlat, lg_report_percentile(0.50),
	    lg_report_percentile(0.99), lg_report_maxlat);
	for (b = 0; b < LG_NBEHAVIOURS; b++) {
		if (!lg_report_shown(b))
			continue;
		printf("%s\"%s\":", first ? "" : ",", lg_behaviour_name(b));
		lg_report_json_counts(&lg_report_counts[b]);
		first = false;
	}
	printf("}}\n");
}

/* The report: one line per behaviour, totals, latency; JSON if asked. */
void
lg_report_print(int64_t elapsed_ns, bool json)
{
	struct lg_counts	all;
	double			secs;

	secs = elapsed_ns > 0 ? (double)elapsed_ns / LG_NS : 1e-9;
	lg_report_sum(&all);
	lg_report_text(&all, secs);
	if (json)
		lg_report_json(&all, secs);
	fflush(stdout);
}
