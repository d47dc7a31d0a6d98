/*
 * fdist-loadgen: a single-threaded epoll load client for fdistd.  It
 * keeps -c clients in flight, each behaving as --mix says (normal,
 * never-ack, reset, stall, ...), verifies the bytes of every client that
 * reads the whole file, and prints one line per behaviour at the end.
 *
 * This file holds the options and the event loop; loadgen_conn.c runs
 * the connections and loadgen_report.c counts them.
 */
#include <sys/types.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"

#define LG_EVENTS		1024	/* epoll reports per wait */
#define LG_FDS_SPARE		16	/* stdio, epoll and the like */
#define LG_CONCURRENCY_MAX	1000000
#define LG_DEFAULT_COUNT	1000
#define LG_RATE_MAX		10000000

enum {
	LG_OPT_CONNECT = 256,
	LG_OPT_BIND,
	LG_OPT_EXPECT_SIZE,
	LG_OPT_EXPECT_SHA256,
	LG_OPT_VERIFY,
	LG_OPT_MIX,
	LG_OPT_ACK,
	LG_OPT_HOLD,
	LG_OPT_SLOW_RATE,
	LG_OPT_TIMEOUT,
	LG_OPT_PROTO,
	LG_OPT_PATH,
	LG_OPT_NO_REFUSALS,
	LG_OPT_SEED,
	LG_OPT_JSON,
	LG_OPT_TRACE,
	LG_OPT_RATE
};

struct lg_options		 lg_opt;
static uint64_t			 lg_rng;
static volatile sig_atomic_t	 lg_signals;
static bool			 lg_verify_set;
/* --rate: when the run began, and when the next start is due (0: now). */
static int64_t			 lg_run_start;
static int64_t			 lg_next_start;

static const char lg_help[] =
"Keep N clients of an fdistd share (or an HTTP server) busy and report.\n"
"\n"
"  -c, --concurrency N    clients in flight at once (default 1)\n"
"  -n, --count N          transfers in all (default 1000 without -t)\n"
"  -t, --duration SECS    start transfers for this long; with -n, the\n"
"                         first limit reached ends the run\n"
"      --rate N           start at most N transfers per second, on a\n"
"                         schedule kept to the millisecond (still at\n"
"                         most -c at once): servers compared at one\n"
"                         load, not each at the client's ceiling; a\n"
"                         run that falls behind catches up as clients\n"
"                         end\n"
"      --connect HOST:PORT  IPV4:PORT or [IPV6]:PORT; repeat to spread\n"
"                         transfers over several ports (round robin)\n"
"      --bind ADDR        source address; repeat for round robin (each\n"
"                         adds an ephemeral port range)\n"
"      --expect-size N    file (body) size; required\n"
"      --expect-sha256 HEX  file digest; turns on --verify=sha256\n"
"      --verify size|sha256|discard  what to check of each whole\n"
"                         transfer (default: sha256 if a digest is\n"
"                         given); discard checks the size and lets the\n"
"                         kernel drop the bytes (recv MSG_TRUNC): the\n"
"                         client copies nothing, to see what a server\n"
"                         can push\n"
"      --mix SPEC         NAME=PERCENT,... adding up to 100 (default\n"
"                         normal=100); see behaviours below\n"
"      --ack TEXT         ack to send; escapes \\0 \\n \\r \\t \\\\ \\xHH;\n"
"                         a NUL is added unless it ends in NUL or LF\n"
"                         (default \"Thank you\" and a NUL)\n"
"      --hold SECS        how long stall and never-ack clients hold the\n"
"                         connection (default 10); make it longer than\n"
"                         the server's send_timeout and ack_timeout\n"
"      --slow-rate BYTES  bytes per second of a slow client (default 64K)\n"
"      --timeout SECS     hard limit per transfer, counted as failed\n"
"                         (default 60); must exceed --hold\n"
"      --proto fdist|http  http: send GET PATH HTTP/1.0, strip the\n"
"                         response header, no ack (default fdist)\n"
"      --path /PATH       the path of --proto http (default /)\n"
"      --no-refusals      count refusals as failures\n"
"      --seed N           random seed (reset points, garbage)\n"
"      --json             also print the summary as one line of JSON\n"
"      --trace FILE       write a line per transfer (local address,\n"
"                         behaviour, outcome) to join with the server's\n"
"                         peer= records; costs a system call each\n"
"  -h, --help             this text\n"
"\n"
"Sizes take K, M or G (binary); SECS take up to three decimals.\n"
"\n"
"Behaviours:\n"
"  normal        read to EOF, verify, send the ack, close; a reset in\n"
"                answer to the ack (the server had given up) fails it\n"
"                as ack-lost\n"
"  never-ack     read to EOF, verify, hold (from EOF) without sending\n"
"  close-no-ack  read to EOF, verify, close\n"
"  reset         read a random part of the file, close with a reset\n"
"  stall         small receive buffer, read nothing, hold (from the\n"
"                connect), close\n"
"  slow          read at --slow-rate, verify, send the ack, close\n"
"  garbage       read to EOF, verify, send 1 MiB without NUL or LF\n"
"  early-ack     send the ack at once, read to EOF, verify, close\n"
"--proto http allows normal, close-no-ack, reset, stall and slow.\n"
"\n"
"A reset or refusal before any byte counts as refused, not failed\n"
"(unless --no-refusals).  Exit status: 0 if no transfer failed (wrong\n"
"size or digest, timeout, unexpected reset or error), 1 otherwise,\n"
"2 for usage errors.\n";

/* Monotonic nanoseconds. */
int64_t
lg_now(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t)ts.tv_sec * LG_NS + ts.tv_nsec);
}

/* splitmix64: fast, and reproducible from --seed. */
uint64_t
lg_random(void)
{
	uint64_t	z = (lg_rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return (z ^ (z >> 31));
}

static void
lg_usage(void)
{
	fprintf(stderr, "usage: %s [-c N] [-n N] [-t SECS] --connect "
	    "HOST:PORT [--bind ADDR]\n"
	    "           --expect-size N [--expect-sha256 HEX] [--mix SPEC] "
	    "[options]\n"
	    "Try '%s --help'.\n", LG_PROGNAME, LG_PROGNAME);
}

static void
lg_on_signal(int sig)
{
	(void)sig;
	lg_signals++;
}

/* Defaults: one normal client, the reference client's ack. */
static void
lg_defaults(void)
{
	memset(&lg_opt, 0, sizeof(lg_opt));
	lg_opt.o_concurrency = 1;
	lg_opt.o_verify = LG_VERIFY_SIZE;
	lg_opt.o_mix[LG_NORMAL] = 100;
	memcpy(lg_opt.o_ack, "Thank you", 10);
	lg_opt.o_acklen = 10;
	lg_opt.o_hold_ns = 10 * LG_NS;
	lg_opt.o_slow_rate = 64 * 1024;
	lg_opt.o_timeout_ns = 60 * LG_NS;
	lg_opt.o_proto = LG_PROTO_FDIST;
	strcpy(lg_opt.o_path, "/");
	lg_opt.o_seed = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32;
}

static int
lg_option_value(int ch, const char *arg)
{
	uint64_t	n;

	switch (ch) {
	case 'c':
		if (lg_parse_count("-c", arg, 1, LG_CONCURRENCY_MAX, &n) == -1)
			return (-1);
		lg_opt.o_concurrency = (unsigned int)n;
		return (0);
	case 'n':
		return (lg_parse_count("-n", arg, 1, UINT64_MAX / 2,
		    &lg_opt.o_count));
	case 't':
		return (lg_parse_seconds("-t", arg, &lg_opt.o_duration_ns));
	case LG_OPT_RATE:
		return (lg_parse_count("--rate", arg, 1, LG_RATE_MAX,
		    &lg_opt.o_rate));
	case LG_OPT_CONNECT:
		if (lg_opt.o_nconnect == LG_TARGETS_MAX) {
			fprintf(stderr, "%s: at most %d --connect\n",
			    LG_PROGNAME, LG_TARGETS_MAX);
			return (-1);
		}
		return (lg_parse_target(arg,
		    &lg_opt.o_connect[lg_opt.o_nconnect++]));
	case LG_OPT_BIND:
		if (lg_opt.o_nbind == LG_TARGETS_MAX) {
			fprintf(stderr, "%s: at most %d --bind\n",
			    LG_PROGNAME, LG_TARGETS_MAX);
			return (-1);
		}
		return (lg_parse_bind(arg, &lg_opt.o_bind[lg_opt.o_nbind++]));
	case LG_OPT_EXPECT_SIZE:
		lg_opt.o_have_size = true;
		return (lg_parse_size("--expect-size", arg,
		    &lg_opt.o_expect_size));
	case LG_OPT_EXPECT_SHA256:
		lg_opt.o_have_sha256 = true;
		return (lg_parse_sha256(arg, lg_opt.o_expect_sha256));
	default:
		break;
	}
	return (1);
}

/* The options that are words rather than numbers and addresses. */
static int
lg_option_word(int ch, const char *arg)
{
	uint64_t	n;

	switch (ch) {
	case LG_OPT_VERIFY:
		lg_verify_set = true;
		if (strcmp(arg, "size") == 0)
			lg_opt.o_verify = LG_VERIFY_SIZE;
		else if (strcmp(arg, "sha256") == 0)
			lg_opt.o_verify = LG_VERIFY_SHA256;
		else if (strcmp(arg, "discard") == 0)
			lg_opt.o_verify = LG_VERIFY_DISCARD;
		else
			break;
		return (0);
	case LG_OPT_MIX:
		return (lg_parse_mix(arg, lg_opt.o_mix));
	case LG_OPT_ACK:
		return (lg_parse_ack(arg, lg_opt.o_ack, sizeof(lg_opt.o_ack),
		    &lg_opt.o_acklen));
	case LG_OPT_HOLD:
		return (lg_parse_seconds("--hold", arg, &lg_opt.o_hold_ns));
	case LG_OPT_SLOW_RATE:
		if (lg_parse_size("--slow-rate", arg, &lg_opt.o_slow_rate) ==
		    -1)
			return (-1);
		if (lg_opt.o_slow_rate > 0)
			return (0);
		break;
	case LG_OPT_TIMEOUT:
		return (lg_parse_seconds("--timeout", arg,
		    &lg_opt.o_timeout_ns));
	case LG_OPT_PROTO:
		if (strcmp(arg, "fdist") == 0)
			lg_opt.o_proto = LG_PROTO_FDIST;
		else if (strcmp(arg, "http") == 0)
			lg_opt.o_proto = LG_PROTO_HTTP;
		else
			break;
		return (0);
	case LG_OPT_PATH:
		/* It goes into a request line: no spaces or line breaks. */
		if (arg[0] != '/' || strlen(arg) >= sizeof(lg_opt.o_path) ||
		    strpbrk(arg, " \t\r\n") != NULL)
			break;
		strcpy(lg_opt.o_path, arg);
		return (0);
	case LG_OPT_SEED:
		if (lg_parse_count("--seed", arg, 0, UINT64_MAX, &n) == -1)
			return (-1);
		lg_opt.o_seed = n;
		return (0);
	default:
		return (1);
	}
	fprintf(stderr, "%s: %s: invalid value\n", LG_PROGNAME, arg);
	return (-1);
}

/* Whether every target has a --bind address of its family. */
static int
lg_check_bind(void)
{
	size_t	i, j;

	if (lg_opt.o_nbind == 0)
		return (0);
	for (i = 0; i < lg_opt.o_nconnect; i++) {
		for (j = 0; j < lg_opt.o_nbind; j++)
			if (lg_opt.o_bind[j].a_ss.ss_family ==
			    lg_opt.o_connect[i].a_ss.ss_family)
				break;
		if (j == lg_opt.o_nbind) {
			fprintf(stderr, "%s: a --connect target has no --bind "
			    "address of its family\n", LG_PROGNAME);
			return (-1);
		}
	}
	return (0);
}

/* Options that are only wrong together. */
static int
lg_check(void)
{
	const char	*why = NULL;

	if (lg_opt.o_nconnect == 0)
		why = "--connect is required";
	else if (!lg_opt.o_have_size)
		why = "--expect-size is required";
	else if (lg_opt.o_verify == LG_VERIFY_SHA256 && !lg_opt.o_have_sha256)
		why = "--verify=sha256 needs --expect-sha256";
	else if (lg_opt.o_verify == LG_VERIFY_DISCARD && lg_opt.o_have_sha256)
		why = "--verify=discard checks no digest: drop --expect-sha256";
	else if ((lg_opt.o_mix[LG_STALL] > 0 ||
	    lg_opt.o_mix[LG_NEVER_ACK] > 0) &&
	    lg_opt.o_hold_ns >= lg_opt.o_timeout_ns)
		why = "--hold must be shorter than --timeout";
	else if (lg_opt.o_proto == LG_PROTO_HTTP &&
	    (lg_opt.o_mix[LG_NEVER_ACK] > 0 || lg_opt.o_mix[LG_GARBAGE] > 0 ||
	    lg_opt.o_mix[LG_EARLY_ACK] > 0))
		why = "--proto http has no ack: no never-ack, garbage or "
		    "early-ack";
	if (why != NULL) {
		fprintf(stderr, "%s: %s\n", LG_PROGNAME, why);
		return (-1);
	}
	if (lg_opt.o_have_sha256 && !lg_verify_set)
		lg_opt.o_verify = LG_VERIFY_SHA256;
	if (lg_opt.o_count == 0 && lg_opt.o_duration_ns == 0)
		lg_opt.o_count = LG_DEFAULT_COUNT;
	return (lg_check_bind());
}

/*
 * Parse the command line.  Returns -1 to exit with the usage status, 1
 * to exit at once with success (--help), 0 to run.
 */
static int
lg_options(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "concurrency",	required_argument, NULL, 'c' },
		{ "count",		required_argument, NULL, 'n' },
		{ "duration",		required_argument, NULL, 't' },
		{ "rate",		required_argument, NULL, LG_OPT_RATE },
		{ "connect",		required_argument, NULL,
		    LG_OPT_CONNECT },
		{ "bind",		required_argument, NULL, LG_OPT_BIND },
		{ "expect-size",	required_argument, NULL,
		    LG_OPT_EXPECT_SIZE },
		{ "expect-sha256",	required_argument, NULL,
		    LG_OPT_EXPECT_SHA256 },
		{ "verify",		required_argument, NULL,
		    LG_OPT_VERIFY },
		{ "mix",		required_argument, NULL, LG_OPT_MIX },
		{ "ack",		required_argument, NULL, LG_OPT_ACK },
		{ "hold",		required_argument, NULL, LG_OPT_HOLD },
		{ "slow-rate",		required_argument, NULL,
		    LG_OPT_SLOW_RATE },
		{ "timeout",		required_argument, NULL,
		    LG_OPT_TIMEOUT },
		{ "proto",		required_argument, NULL, LG_OPT_PROTO },
		{ "path",		required_argument, NULL, LG_OPT_PATH },
		{ "no-refusals",	no_argument,	   NULL,
		    LG_OPT_NO_REFUSALS },
		{ "seed",		required_argument, NULL, LG_OPT_SEED },
		{ "json",		no_argument,	   NULL, LG_OPT_JSON },
		{ "trace",		required_argument, NULL, LG_OPT_TRACE },
		{ "help",		no_argument,	   NULL, 'h' },
		{ NULL,			0,		   NULL, 0 }
	};
	int	ch, rv;

	lg_defaults();
	while ((ch = getopt_long(argc, argv, "c:n:t:h", longopts, NULL)) !=
	    -1) {
		switch (ch) {
		case 'h':
			printf("usage: %s [options]\n\n%s", LG_PROGNAME,
			    lg_help);
			return (1);
		case LG_OPT_NO_REFUSALS:
			lg_opt.o_no_refusals = true;
			continue;
		case LG_OPT_JSON:
			lg_opt.o_json = true;
			continue;
		case LG_OPT_TRACE:
			lg_opt.o_trace = optarg;
			continue;
		case '?':
			lg_usage();
			return (-1);
		default:
			break;
		}
		if ((rv = lg_option_value(ch, optarg)) == 1)
			rv = lg_option_word(ch, optarg);
		if (rv != 0)
			return (-1);
	}
	if (optind != argc) {
		fprintf(stderr, "%s: unexpected argument \"%s\"\n",
		    LG_PROGNAME, argv[optind]);
		lg_usage();
		return (-1);
	}
	return (lg_check());
}

/*
 * Every client is a descriptor: take the hard limit, and refuse a
 * concurrency that cannot fit rather than fail mid-run.
 */
static int
lg_raise_nofile(void)
{
	struct rlimit	rl;
	rlim_t		need = (rlim_t)lg_opt.o_concurrency + LG_FDS_SPARE;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return (-1);
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < need) {
		fprintf(stderr, "%s: -c %u needs %llu descriptors, the limit "
		    "is %llu\n", LG_PROGNAME, lg_opt.o_concurrency,
		    (unsigned long long)need, (unsigned long long)rl.rlim_cur);
		return (-1);
	}
	return (0);
}

/* Smooth weighted round robin: exact shares, evenly interleaved. */
static enum lg_behaviour
lg_next_behaviour(void)
{
	static int	current[LG_NBEHAVIOURS];
	int		b, best = LG_NORMAL;

	for (b = 0; b < LG_NBEHAVIOURS; b++) {
		current[b] += (int)lg_opt.o_mix[b];
		if (current[b] > current[best])
			best = b;
	}
	current[best] -= 100;
	return ((enum lg_behaviour)best);
}

/*
 * The next --bind address of the target's family.  Each behaviour has
 * its own round robin over targets and sources: one shared with the
 * behaviour cycle could lock a behaviour to one port.
 */
static const struct lg_addr *
lg_next_bind(enum lg_behaviour b, const struct lg_addr *to)
{
	static size_t	next[LG_NBEHAVIOURS];
	size_t		i;

	for (i = 0; i < lg_opt.o_nbind; i++) {
		next[b] = (next[b] + 1) % lg_opt.o_nbind;
		if (lg_opt.o_bind[next[b]].a_ss.ss_family ==
		    to->a_ss.ss_family)
			return (&lg_opt.o_bind[next[b]]);
	}
	return (NULL);
}

/*
 * Whether --rate allows another start now; if not, lg_next_start says
 * when it will.
 */
static bool
lg_rate_allows(uint64_t started)
{
	int64_t	due;

	if (lg_opt.o_rate == 0)
		return (true);
	/* In two parts, so that started * LG_NS cannot overflow. */
	due = lg_run_start + (int64_t)(started / lg_opt.o_rate) * LG_NS +
	    (int64_t)(started % lg_opt.o_rate * (uint64_t)LG_NS /
	    lg_opt.o_rate);
	if (lg_now() >= due) {
		lg_next_start = 0;
		return (true);
	}
	lg_next_start = due;
	return (false);
}

/* Start transfers until the slots are full or the run has enough. */
static bool
lg_fill(uint64_t *started, int64_t end)
{
	static size_t		 next[LG_NBEHAVIOURS];
	const struct lg_addr	*to;
	enum lg_behaviour	 b;

	while (lg_conn_active() < lg_opt.o_concurrency) {
		if (lg_opt.o_count != 0 && *started >= lg_opt.o_count)
			return (false);
		if (end != 0 && lg_now() >= end)
			return (false);
		if (!lg_rate_allows(*started))
			return (true);
		b = lg_next_behaviour();
		to = &lg_opt.o_connect[next[b]++ % lg_opt.o_nconnect];
		(*started)++;
		if (lg_conn_start(b, to, lg_next_bind(b, to)) == -1) {
			fprintf(stderr, "%s: out of file descriptors; not "
			    "starting more transfers\n", LG_PROGNAME);
			return (false);
		}
	}
	return (true);
}

/* Milliseconds epoll may sleep: until the next timer, rounded up. */
static int
lg_wait_ms(int64_t end, bool starting)
{
	int64_t	wake = lg_conn_next_wake(), now, ms;

	if (starting && end != 0 && (wake == -1 || end < wake))
		wake = end;
	if (starting && lg_next_start != 0 &&
	    (wake == -1 || lg_next_start < wake))
		wake = lg_next_start;
	if (wake == -1)
		return (-1);
	now = lg_now();
	if (wake <= now)
		return (0);
	ms = (wake - now + 999999) / 1000000;
	return (ms > 60000 ? 60000 : (int)ms);
}

/* The event loop; returns the elapsed time. */
static int64_t
lg_run(void)
{
	struct epoll_event	evs[LG_EVENTS];
	uint64_t		started = 0;
	int64_t			start = lg_now(), end = 0;
	bool			starting = true;
	int			i, n, seen = 0;

	lg_run_start = start;
	if (lg_opt.o_duration_ns != 0)
		end = start + lg_opt.o_duration_ns;
	for (;;) {
		if (lg_signals != seen) {
			seen = lg_signals;
			starting = false;
			if (seen > 1)
				lg_conn_abort_all();
		}
		if (starting)
			starting = lg_fill(&started, end);
		if (!starting && lg_conn_active() == 0)
			break;
		n = epoll_wait(lg_conn_epfd, evs, LG_EVENTS,
		    lg_wait_ms(end, starting));
		if (n == -1 && errno != EINTR) {
			fprintf(stderr, "%s: epoll_wait: %s\n", LG_PROGNAME,
			    strerror(errno));
			lg_conn_abort_all();
			break;
		}
		for (i = 0; i < n; i++)
			lg_conn_event(evs[i].data.u64, evs[i].events);
		lg_conn_expire(lg_now());
	}
	return (lg_now() - start);
}

int
main(int argc, char **argv)
{
	struct sigaction	sa;
	int64_t			elapsed;
	int			rv;

	if ((rv = lg_options(argc, argv)) != 0)
		return (rv == 1 ? LG_EXIT_OK : LG_EXIT_USAGE);
	lg_rng = lg_opt.o_seed;
	if (lg_raise_nofile() == -1)
		return (LG_EXIT_USAGE);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	/* No SA_RESTART: a signal must wake epoll_wait(2). */
	sa.sa_handler = lg_on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (lg_opt.o_trace != NULL &&
	    lg_report_trace_open(lg_opt.o_trace) == -1)
		return (LG_EXIT_FAIL);
	if (lg_conn_init(lg_opt.o_concurrency) == -1)
		return (LG_EXIT_FAIL);
	elapsed = lg_run();
	lg_report_trace_close();
	lg_report_print(elapsed, lg_opt.o_json);
	lg_conn_free_all();
	return (lg_report_failed() ? LG_EXIT_FAIL : LG_EXIT_OK);
}
