/*
 * fdist-report: which hosts have the version of a share's file, read
 * from fdistd's journal records.  See fdist-report(1).
 */
#include <sys/types.h>

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "report.h"
#include "parse.h"

#ifndef FDIST_VERSION
#define FDIST_VERSION		"0.1.0"
#endif

#define REPORT_WAIT_MAX		(7ULL * 24 * 3600 * 1000)
#define REPORT_TICK_USEC	(1000 * 1000)
#define REPORT_SETTLE_MS	1000

enum {
	REPORT_OPT_FILE = 256,
	REPORT_OPT_SINCE,
	REPORT_OPT_UNTIL,
	REPORT_OPT_SHARE,
	REPORT_OPT_SHA256,
	REPORT_OPT_HOSTS,
	REPORT_OPT_MATCH,
	REPORT_OPT_ONLY,
	REPORT_OPT_JSON,
	REPORT_OPT_ACCEPT,
	REPORT_OPT_WAIT,
	REPORT_OPT_UNIT
};

/* The progress line is on screen without its newline. */
int	report_line_open;

static const char *const report_state_names[RS_COUNT] = {
	[RS_MISSING] = "missing",
	[RS_FAILED] = "failed",
	[RS_OLD] = "old",
	[RS_UNVERIFIED] = "unverified",
	[RS_DONE] = "done",
};

static void	report_usage(FILE *, int);
static void	report_vwarn(int, const char *, va_list)
		    __attribute__((format(printf, 2, 0)));
static int	report_parse_time(const char *, uint64_t *);
static int	report_parse_only(const char *, unsigned int *);
static int	report_options(struct report *, int, char **);
static int	report_evaluate_all(struct report *, int);
static int	report_wait(struct report *);
static void	report_wait_summary(struct report *);

static const char report_help[] =
"Report which hosts have the version of a share's file, from fdistd's\n"
"records in the journal.\n"
"\n"
"  -D, --directory DIR     read the journal files in DIR (e.g. what\n"
"                          systemd-journal-remote wrote) instead of the\n"
"                          local journal\n"
"      --file FILE         read this journal file (may be repeated)\n"
"      --since TIME        only records from TIME on; --until TIME: up to\n"
"      --until TIME        TIME (\"2026-12-01 14:00\", @EPOCH, -2h, today)\n"
"      --share NAME        the share (required if several are in the journal)\n"
"      --sha256 HEX        the version; default: the one the share serves now\n"
"      --hosts FILE|-      the expected hosts, one a line: ADDRESS or NAME,\n"
"                          optionally a label; default: every peer seen\n"
"      --match address|host-id\n"
"                          match hosts by peer address (default) or by the\n"
"                          id a client claims (fdist-fetch --host-id)\n"
"      --only STATE[,...]  list only hosts in these states (missing, failed,\n"
"                          old, unverified, done)\n"
"      --accept-unverified count acks without a digest claim as done\n"
"      --json              one JSON document: a summary and every host\n"
"      --wait[=DUR]        follow the journal until every host is done (and\n"
"                          the digest known) or DUR (N[ms|s|m|h], at most\n"
"                          7 days; none: no limit) has passed\n"
"      --unit UNIT         count the records of this unit (a name or a\n"
"                          pattern; may be repeated) as fdistd's too: only\n"
"                          those of root and fdistd.service count otherwise\n"
"  -h, --help              show this help and exit\n"
"  -V, --version           show the version and exit\n"
"\n"
"Exit status:\n"
"  0  every expected host is done\n"
"  1  some host is not done (or no host was seen)\n"
"  2  usage error, or the journal or the hosts file could not be read\n"
"\n"
"Examples:\n"
"  fdist-report --share debian-12 --hosts lab.txt\n"
"  fdist-report -D /var/log/journal/remote --share debian-12 --json\n"
"  fdist-report --share debian-12 --hosts lab.txt --wait=30m   # after a reload\n"
"  fdist-report --share debian-12 --hosts lab.txt --sha256 \"$sum\" --wait=30m\n";

static void
report_usage(FILE *fp, int full)
{
	fprintf(fp, "usage: %s [-hV] [-D DIR | --file FILE] [--since TIME] "
	    "[--until TIME]\n"
	    "                    [--share NAME] [--sha256 HEX] [--hosts FILE|-]\n"
	    "                    [--match address|host-id]\n"
	    "                    [--only STATES] [--accept-unverified] "
	    "[--json] [--wait[=DUR]]\n"
	    "                    [--unit UNIT]\n", REPORT_PROGNAME);
	if (full)
		fprintf(fp, "\n%s", report_help);
}

/* End the progress line, so a message starts on a line of its own. */
void
report_line_clear(void)
{
	if (report_line_open) {
		fputc('\n', stderr);
		report_line_open = 0;
	}
}

static void
report_vwarn(int error, const char *fmt, va_list ap)
{
	report_line_clear();
	fprintf(stderr, "%s: ", REPORT_PROGNAME);
	vfprintf(stderr, fmt, ap);
	if (error != 0)
		fprintf(stderr, ": %s", strerror(error));
	fputc('\n', stderr);
}

void
report_warn(const char *fmt, ...)
{
	va_list	ap;
	int	saved = errno;

	va_start(ap, fmt);
	report_vwarn(saved, fmt, ap);
	va_end(ap);
	errno = saved;
}

void
report_warnx(const char *fmt, ...)
{
	va_list	ap;
	int	saved = errno;

	va_start(ap, fmt);
	report_vwarn(0, fmt, ap);
	va_end(ap);
	errno = saved;
}

const char *
report_state_name(enum report_state s)
{
	return (s < RS_COUNT ? report_state_names[s] : "?");
}

/*
 * A time as journalctl takes the common ones: "YYYY-MM-DD[ HH:MM[:SS]]"
 * (local time), "@SECONDS", "-DURATION" (that long ago), "now", "today",
 * "yesterday"; in realtime microseconds.
 */
static int
report_parse_time(const char *s, uint64_t *usec)
{
	struct tm	 tm, day;
	time_t		 now = time(NULL), t;
	uint64_t	 v;
	char		 err[128], *end;
	const char	*p;

	if (strcmp(s, "now") == 0) {
		*usec = (uint64_t)now * 1000000;
		return (0);
	}
	if (strcmp(s, "today") == 0 || strcmp(s, "yesterday") == 0) {
		localtime_r(&now, &tm);
		tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
		if (s[0] == 'y')
			tm.tm_mday--;
		tm.tm_isdst = -1;
		*usec = (uint64_t)mktime(&tm) * 1000000;
		return (0);
	}
	if (s[0] == '@') {
		/* "@SECONDS[.FRACTION]", to the microsecond */
		errno = 0;
		v = strtoull(s + 1, &end, 10);
		if (s[1] < '0' || s[1] > '9' || errno != 0 ||
		    v > UINT64_MAX / 1000000 - 1)
			return (-1);
		*usec = v * 1000000;
		if (*end == '.') {
			for (p = end + 1, v = 100000; *p >= '0' && *p <= '9';
			    p++, v /= 10)
				*usec += (uint64_t)(*p - '0') * v;
			if (p == end + 1)
				return (-1);
			end = (char *)(uintptr_t)p;
		}
		return (*end == '\0' ? 0 : -1);
	}
	if (s[0] == '-') {
		if (parse_duration_ms(s + 1, &v, err, sizeof(err)) == -1 ||
		    v / 1000 > (uint64_t)now)
			return (-1);
		*usec = (uint64_t)now * 1000000 - v * 1000;
		return (0);
	}
	memset(&tm, 0, sizeof(tm));
	if ((p = strptime(s, "%Y-%m-%d", &tm)) == NULL)
		return (-1);
	if (*p == ' ' || *p == 'T') {
		end = strptime(p + 1, "%H:%M", &tm);
		if (end == NULL)
			return (-1);
		p = end;
		if (*p == ':' && (p = strptime(p + 1, "%S", &tm)) == NULL)
			return (-1);
	}
	if (*p != '\0')
		return (-1);
	tm.tm_isdst = -1;
	day = tm;
	if ((t = mktime(&tm)) == (time_t)-1 || t < 0)
		return (-1);
	/* strptime takes day 31 of any month; mktime would roll it over. */
	if (tm.tm_mday != day.tm_mday || tm.tm_mon != day.tm_mon ||
	    tm.tm_year != day.tm_year)
		return (-1);
	*usec = (uint64_t)t * 1000000;
	return (0);
}

static int
report_parse_only(const char *s, unsigned int *mask)
{
	char		 buf[64];
	const char	*p = s;
	size_t		 n;
	int		 i;

	*mask = 0;
	while (*p != '\0') {
		n = strcspn(p, ",");
		if (n == 0 || n >= sizeof(buf))
			return (-1);
		memcpy(buf, p, n);
		buf[n] = '\0';
		for (i = 0; i < RS_COUNT; i++)
			if (strcmp(buf, report_state_names[i]) == 0)
				break;
		if (i == RS_COUNT)
			return (-1);
		*mask |= 1U << i;
		p += n;
		if (*p == ',' && *++p == '\0')
			return (-1);
	}
	return (*mask != 0 ? 0 : -1);
}

static int
report_options(struct report *r, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "directory",	required_argument, NULL, 'D' },
		{ "file",	required_argument, NULL, REPORT_OPT_FILE },
		{ "since",	required_argument, NULL, REPORT_OPT_SINCE },
		{ "until",	required_argument, NULL, REPORT_OPT_UNTIL },
		{ "share",	required_argument, NULL, REPORT_OPT_SHARE },
		{ "sha256",	required_argument, NULL, REPORT_OPT_SHA256 },
		{ "hosts",	required_argument, NULL, REPORT_OPT_HOSTS },
		{ "match",	required_argument, NULL, REPORT_OPT_MATCH },
		{ "only",	required_argument, NULL, REPORT_OPT_ONLY },
		{ "json",	no_argument, NULL, REPORT_OPT_JSON },
		{ "accept-unverified", no_argument, NULL, REPORT_OPT_ACCEPT },
		{ "wait",	optional_argument, NULL, REPORT_OPT_WAIT },
		{ "unit",	required_argument, NULL, REPORT_OPT_UNIT },
		{ "help",	no_argument, NULL, 'h' },
		{ "version",	no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	char		 err[128];
	const char	**nf;
	size_t		 i;
	int		 ch;

	while ((ch = getopt_long(argc, argv, "D:hV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'D':
			r->r_dir = optarg;
			break;
		case REPORT_OPT_FILE:
			nf = reallocarray(r->r_files, r->r_nfiles + 2,
			    sizeof(*nf));
			if (nf == NULL) {
				report_warn("out of memory");
				return (-1);
			}
			r->r_files = nf;
			nf[r->r_nfiles++] = optarg;
			nf[r->r_nfiles] = NULL;
			break;
		case REPORT_OPT_SINCE:
		case REPORT_OPT_UNTIL:
			if (report_parse_time(optarg, ch == REPORT_OPT_SINCE ?
			    &r->r_since : &r->r_until) == -1) {
				report_warnx("--%s: invalid time '%s'",
				    ch == REPORT_OPT_SINCE ? "since" : "until",
				    optarg);
				return (-1);
			}
			break;
		case REPORT_OPT_SHARE:
			r->r_share = optarg;
			break;
		case REPORT_OPT_SHA256:
			for (i = 0; optarg[i] != '\0' && i < REPORT_HEXLEN;
			    i++) {
				r->r_sha[i] = (char)(optarg[i] >= 'A' &&
				    optarg[i] <= 'F' ? optarg[i] - 'A' + 'a' :
				    optarg[i]);
				if (strchr("0123456789abcdef", r->r_sha[i]) ==
				    NULL)
					break;
			}
			if (i != REPORT_HEXLEN || optarg[i] != '\0') {
				report_warnx("--sha256: expected 64 hex digits");
				return (-1);
			}
			r->r_sha[i] = '\0';
			r->r_sha_given = 1;
			break;
		case REPORT_OPT_HOSTS:
			r->r_hosts_path = optarg;
			break;
		case REPORT_OPT_MATCH:
			if (strcmp(optarg, "address") == 0)
				r->r_match = MATCH_ADDRESS;
			else if (strcmp(optarg, "host-id") == 0)
				r->r_match = MATCH_HOST_ID;
			else {
				report_warnx("--match: address or host-id");
				return (-1);
			}
			break;
		case REPORT_OPT_ONLY:
			if (report_parse_only(optarg, &r->r_only) == -1) {
				report_warnx("--only: states are missing, "
				    "failed, old, unverified and done, "
				    "separated by commas");
				return (-1);
			}
			break;
		case REPORT_OPT_JSON:
			r->r_json = 1;
			break;
		case REPORT_OPT_ACCEPT:
			r->r_accept_unverified = 1;
			break;
		case REPORT_OPT_WAIT:
			r->r_wait = 1;
			if (optarg != NULL && (parse_duration_ms(optarg,
			    &r->r_wait_ms, err, sizeof(err)) == -1 ||
			    r->r_wait_ms == 0 || r->r_wait_ms > REPORT_WAIT_MAX)) {
				report_warnx("--wait: expected a duration "
				    "N[ms|s|m|h] of 1 ms to 7 days");
				return (-1);
			}
			break;
		case REPORT_OPT_UNIT:
			if (report_trust_add_unit(r, optarg) == -1)
				return (-1);
			break;
		case 'h':
			report_usage(stdout, 1);
			exit(REPORT_OK);
		case 'V':
			printf("%s %s\n", REPORT_PROGNAME, FDIST_VERSION);
			exit(REPORT_OK);
		default:
			report_usage(stderr, 0);
			return (-1);
		}
	}
	if (optind != argc) {
		report_warnx("unexpected argument '%s'", argv[optind]);
		report_usage(stderr, 0);
		return (-1);
	}
	if (r->r_dir != NULL && r->r_nfiles > 0) {
		report_warnx("-D and --file exclude each other");
		return (-1);
	}
	if (r->r_since >= r->r_until) {
		report_warnx("--since must be before --until");
		return (-1);
	}
	if (r->r_wait && r->r_until != UINT64_MAX) {
		report_warnx("--wait follows the journal: no --until with it");
		return (-1);
	}
	return (0);
}

/* Whether the host counts as done (unverified ones with the option). */
int
report_is_done(const struct report_host *h)
{
	return (h->rh_state == RS_DONE);
}

/*
 * Whether the rollout is complete, with left hosts not done: never while
 * the version's digest is not known, which a done host needs.
 */
int
report_complete(const struct report *r, size_t left)
{
	return (left == 0 && r->r_nhosts > 0 && r->r_sha[0] != '\0');
}

/*
 * Evaluate the hosts that changed (all, when the version or a version's
 * digest did); with report set, print each change of state.  Returns
 * how many are not done.
 */
static int
report_evaluate_all(struct report *r, int report)
{
	struct report_host	*h;
	enum report_state	 before;
	size_t			 i;
	int			 all = r->r_target_changed, left = 0;

	r->r_target_changed = 0;
	for (i = 0; i < r->r_nhosts; i++) {
		h = r->r_hosts[i];
		if (all || h->rh_dirty) {
			before = h->rh_state;
			report_fold_eval(r, h);
			if (report && before != h->rh_state)
				report_out_change(r, h);
		}
		if (!report_is_done(h))
			left++;
	}
	return (left);
}

/* Monotonic milliseconds. */
static uint64_t
report_now(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000);
}

/*
 * Without a terminal: the summary line, at start and again whenever the
 * version changes or its digest becomes known.
 */
static void
report_wait_summary(struct report *r)
{
	static enum report_digest	 digest = RD_NONE;
	static char			 sha[REPORT_HEXLEN + 1];
	static int			 version = -1, shown;
	size_t				 counts[RS_COUNT];

	if (shown && digest == r->r_digest && version == r->r_version &&
	    strcmp(sha, r->r_sha) == 0)
		return;
	shown = 1;
	digest = r->r_digest;
	version = r->r_version;
	memcpy(sha, r->r_sha, sizeof(sha));
	report_out_counts(r, counts);
	report_out_summary(stderr, r, counts);
}

/*
 * Follow the journal until every host is done, with the version's
 * digest known, or --wait's time is up.  sd_journal_wait() sleeps on the
 * journal's inotify fd; the tick only redraws the progress line.
 */
static int
report_wait(struct report *r)
{
	size_t		 counts[RS_COUNT], n;
	uint64_t	 start = report_now(), now, left, settle;
	int		 e, tty = isatty(STDERR_FILENO);

	if (report_fold_target(r) == -1)
		return (-1);
	report_evaluate_all(r, 0);
	if (!tty)
		report_wait_summary(r);
	for (;;) {
		if (report_fold_target(r) == -1)
			return (-1);
		n = (size_t)report_evaluate_all(r, !tty &&
		    r->r_digest != RD_NONE);
		if (!tty)
			report_wait_summary(r);
		now = report_now();
		/*
		 * Complete on the default version: only after a second of
		 * following.  The record of the version a reload makes the
		 * share serve is sent before the reload completes, but a busy
		 * journald may store it after a script's next command reads.
		 */
		settle = report_complete(r, n) && !r->r_sha_given ?
		    REPORT_SETTLE_MS - (now - start < REPORT_SETTLE_MS ?
		    now - start : REPORT_SETTLE_MS) : 0;
		if (report_complete(r, n) && settle == 0)
			break;
		if (tty) {
			report_out_counts(r, counts);
			report_out_progress(r, counts,
			    (double)(now - start) / 1000.0);
		}
		if (r->r_wait_ms > 0 && now - start >= r->r_wait_ms)
			break;
		left = r->r_wait_ms > 0 ? (r->r_wait_ms - (now - start)) * 1000
		    : REPORT_TICK_USEC;
		if (left > REPORT_TICK_USEC)
			left = REPORT_TICK_USEC;
		if (settle > 0 && left > settle * 1000)
			left = settle * 1000;
		if ((e = sd_journal_wait(r->r_j, left)) < 0) {
			report_warnx("cannot follow the journal: %s",
			    strerror(-e));
			return (-1);
		}
		if (e != SD_JOURNAL_NOP && report_read_process(r) == -1)
			return (-1);
	}
	report_line_clear();
	return (0);
}

int
main(int argc, char **argv)
{
	struct report	 r;
	char		*share = NULL;
	size_t		 i, left = 0;
	int		 rv = REPORT_EUSAGE, known = 1;

	memset(&r, 0, sizeof(r));
	r.r_until = UINT64_MAX;
	r.r_version = -1;
	if (report_trust_add_unit(&r, REPORT_UNIT) == -1 ||
	    report_options(&r, argc, argv) == -1)
		goto out;
	if (r.r_hosts_path != NULL &&
	    report_hosts_load(&r, r.r_hosts_path) == -1)
		goto out;
	if (report_read_open(&r) == -1)
		goto out;
	if (r.r_share == NULL && report_read_share(&r, &share) == -1)
		goto out;
	if (report_read_digests(&r) == -1)
		goto out;
	/*
	 * Without a digest record, a share of no record at all is most
	 * likely a wrong name: said, and with nothing to say which version
	 * to report on, exit 2 as for a share of no digest record.
	 */
	if (r.r_nservers == 0 && (known = report_read_known(&r)) == -1)
		goto out;
	if (!known && !r.r_sha_given && !r.r_wait)
		goto out;
	if (report_fold_target(&r) == -1 || report_read_scan(&r) == -1)
		goto out;
	if (r.r_wait && report_wait(&r) == -1)
		goto out;
	if (r.r_records == 0 && known && report_read_empty(&r) == -1)
		goto out;
	r.r_target_changed = 1;
	report_evaluate_all(&r, 0);
	for (i = 0; i < r.r_nhosts; i++)
		if (!report_is_done(r.r_hosts[i]))
			left++;
	if (r.r_json)
		report_out_json(stdout, &r);
	else
		report_out_table(stdout, &r);
	if (fflush(stdout) == EOF || ferror(stdout)) {
		report_warn("stdout");
		goto out;
	}
	rv = report_complete(&r, left) ? REPORT_OK : REPORT_NOTDONE;
out:
	if (r.r_j != NULL)
		sd_journal_close(r.r_j);
	report_hosts_free(&r);
	for (i = 0; i < r.r_nversions; i++)
		free(r.r_versions[i].rv_token);
	free(r.r_versions);
	free(r.r_servers);
	free(r.r_files);
	report_trust_free(&r);
	free(share);
	return (rv);
}
