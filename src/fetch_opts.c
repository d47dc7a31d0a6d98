/*
 * fdist-fetch: the command line, its checks and its help.
 */
#include <sys/types.h>

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fetch.h"
#include "parse.h"

#ifndef FDIST_VERSION
#define FDIST_VERSION		"0.1.0"
#endif

enum {
	FETCH_OPT_ACK = 256,
	FETCH_OPT_TIMEOUT,
	FETCH_OPT_EXPECT,
	FETCH_OPT_HOST_ID,
	FETCH_OPT_MANIFEST,
	FETCH_OPT_IF_CHANGED,
	FETCH_OPT_MAX_SIZE
};

static void	fetch_usage(FILE *, int);
static int	fetch_parse_duration(const char *, int *);
static int	fetch_parse_sha256(const char *, char *);
static int	fetch_check_ack(const char *);
static int	fetch_check_host_id(const char *);
static int	fetch_check_share(const char *);
static int	fetch_check_options(struct fetch *);
static void	fetch_default_host_id(struct fetch *);

static const char fetch_help[] =
"Download the file an fdistd share serves at HOST:PORT ([ADDR]:PORT for\n"
"IPv6), check its SHA-256 and acknowledge it to the server. With --manifest,\n"
"find share SHARE in the server's manifest and fetch it from its address,\n"
"refusing any copy whose SHA-256 is not the one the manifest announced.\n"
"\n"
"  -o, --output FILE|-     write FILE through FILE.part, renamed over FILE\n"
"                          only when complete; - writes to stdout. Default:\n"
"                          stdout if it is not a terminal, else -o is required\n"
"      --ack TEXT          append TEXT to the acknowledgement (printable,\n"
"                          at most 200 bytes)\n"
"      --timeout DUR       longest wait without progress, N[ms|s|m|h]\n"
"                          (bare N is seconds; default 30s); with\n"
"                          --manifest, also for the whole manifest\n"
"      --expect-sha256 HEX fail unless the SHA-256 of the file is HEX\n"
"      --max-size N[K|M|G] fail as soon as the server sends more than N\n"
"                          bytes (K, M, G: binary multiples); with\n"
"                          --manifest, its size is the bound if lower\n"
"      --manifest HOST:PORT  read the manifest there; the argument is SHARE\n"
"      --if-changed        fetch only if FILE does not hold that SHA-256 yet\n"
"                          (as recorded in its user.fdist.sha256 attribute);\n"
"                          needs -o FILE and --manifest or --expect-sha256\n"
"      --host-id NAME      name this host in the acknowledgement as NAME\n"
"                          (1-64 of A-Z a-z 0-9 . _ -; default: the host\n"
"                          name; '' sends none)\n"
"  -q, --quiet             no progress line and no final digest line\n"
"  -h, --help              show this help and exit\n"
"  -V, --version           show the version and exit\n"
"\n"
"Exit status:\n"
"  0  the file was received, checked and saved\n"
"  1  usage error or internal error\n"
"  2  HOST could not be resolved or no address accepted the connection\n"
"  3  the server refused (reset before any data) or the connection broke\n"
"  4  no progress for the --timeout duration after connecting, or the\n"
"     manifest not read whole in that time\n"
"  5  the SHA-256 differs from --expect-sha256 or the manifest's, or the\n"
"     share sent more than --max-size or the manifest's size\n"
"  6  the output could not be written, synced or renamed\n"
"  7  another fdist-fetch is writing FILE; nothing was changed\n"
"  8  --if-changed: FILE already holds that SHA-256; nothing was fetched\n"
"  9  the manifest has no SHA-256 for SHARE yet; try again later\n"
" 10  the manifest does not list SHARE, has no address for it that can be\n"
"     reached, says its SHA-256 failed, or is not a manifest\n";

/* Print the synopsis, and with full the option list and exit codes. */
static void
fetch_usage(FILE *fp, int full)
{
	/* Two forms, as fdist-fetch(1) has them: --expect-sha256 and
	 * --manifest exclude each other. */
	fprintf(fp, "usage: %s [-qhV] [-o FILE|-] [--ack TEXT] [--timeout DUR]\n"
	    "                   [--expect-sha256 HEX] [--max-size N] "
	    "[--host-id NAME]\n"
	    "                   [--if-changed] HOST:PORT\n"
	    "       %s [-qhV] [-o FILE|-] [--ack TEXT] [--timeout DUR]\n"
	    "                   [--max-size N] [--host-id NAME] "
	    "[--if-changed]\n"
	    "                   --manifest HOST:PORT SHARE\n",
	    FETCH_PROGNAME, FETCH_PROGNAME);
	if (full)
		fprintf(fp, "\n%s", fetch_help);
}
/*
 * A duration as the configuration reads it (parse_duration_ms: N, Nms, Ns,
 * Nm or Nh), in milliseconds, 1 ms to 24 h.
 */
static int
fetch_parse_duration(const char *s, int *ms)
{
	char		err[128];
	uint64_t	v;

	if (parse_duration_ms(s, &v, err, sizeof(err)) == -1 || v < 1 ||
	    v > FETCH_TIMEOUT_MAX)
		return (-1);
	*ms = (int)v;
	return (0);
}

/* Accept 64 hex digits in either case; store them in lowercase. */
static int
fetch_parse_sha256(const char *s, char *out)
{
	size_t	i;
	char	c;

	if (strlen(s) != FETCH_HEXLEN)
		return (-1);
	for (i = 0; i < FETCH_HEXLEN; i++) {
		c = s[i];
		if (c >= 'A' && c <= 'F')
			c = c - 'A' + 'a';
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return (-1);
		out[i] = c;
	}
	out[FETCH_HEXLEN] = '\0';
	return (0);
}

/* The ack is one line the server logs: no control bytes, bounded size. */
static int
fetch_check_ack(const char *s)
{
	const unsigned char	*p;

	if (strlen(s) > FETCH_ACK_MAX)
		return (-1);
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p < 0x20 || *p == 0x7f)
			return (-1);
	}
	return (0);
}

/*
 * A host id as fdistd reads it from the ack: 1 to 64 bytes of
 * [A-Za-z0-9._-], so it is one token and needs no escaping.
 */
static int
fetch_check_host_id(const char *s)
{
	size_t	len = strlen(s);

	if (len < 1 || len > FETCH_HOST_MAX ||
	    strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789._-") != len)
		return (-1);
	return (0);
}

/* A share name as fdistd allows it: 1-63 of [A-Za-z0-9._-]. */
static int
fetch_check_share(const char *s)
{
	size_t	len = strlen(s);

	if (len < 1 || len > 63 ||
	    strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789._-") != len)
		return (-1);
	return (0);
}

/* Without --host-id: the host name, if it can be a host id. */
static void
fetch_default_host_id(struct fetch *f)
{
	char	name[256];

	f->f_host[0] = '\0';
	if (gethostname(name, sizeof(name)) == -1) {
		fetch_warn("gethostname: sending no host id");
		return;
	}
	name[sizeof(name) - 1] = '\0';
	if (fetch_check_host_id(name) == -1) {
		fetch_warnx("host name \"%.64s\" is not a host id (1-%d of "
		    "A-Z a-z 0-9 . _ -): sending none; see --host-id", name,
		    FETCH_HOST_MAX);
		return;
	}
	memcpy(f->f_host, name, strlen(name) + 1);
}

/* What the options say together: the digest --if-changed compares. */
static int
fetch_check_options(struct fetch *f)
{
	if (f->f_share != NULL && fetch_check_share(f->f_share) == -1) {
		fetch_warnx("%s: SHARE must be 1 to 63 of A-Z a-z 0-9 . _ -",
		    f->f_share);
		return (-1);
	}
	if (f->f_manifest != NULL && f->f_expect[0] != '\0') {
		fetch_warnx("--expect-sha256: with --manifest, the manifest "
		    "gives the SHA-256");
		return (-1);
	}
	if (f->f_if_changed && f->f_manifest == NULL && f->f_expect[0] == '\0') {
		fetch_warnx("--if-changed: needs --manifest or --expect-sha256 "
		    "(the SHA-256 FILE is compared with)");
		return (-1);
	}
	if (f->f_if_changed && (f->f_output == NULL ||
	    strcmp(f->f_output, "-") == 0)) {
		fetch_warnx("--if-changed: needs -o FILE");
		return (-1);
	}
	return (0);
}

/*
 * Fill f from the command line. Returns -1 to continue, or the exit code
 * when the program should stop here (usage errors, --help, --version).
 */
int
fetch_options(struct fetch *f, int argc, char **argv)
{
	static const struct option	longopts[] = {
		{ "output",		required_argument, NULL, 'o' },
		{ "ack",		required_argument, NULL, FETCH_OPT_ACK },
		{ "timeout",		required_argument, NULL,
		    FETCH_OPT_TIMEOUT },
		{ "expect-sha256",	required_argument, NULL,
		    FETCH_OPT_EXPECT },
		{ "host-id",		required_argument, NULL,
		    FETCH_OPT_HOST_ID },
		{ "manifest",		required_argument, NULL,
		    FETCH_OPT_MANIFEST },
		{ "if-changed",		no_argument, NULL,
		    FETCH_OPT_IF_CHANGED },
		{ "max-size",		required_argument, NULL,
		    FETCH_OPT_MAX_SIZE },
		{ "quiet",		no_argument, NULL, 'q' },
		{ "help",		no_argument, NULL, 'h' },
		{ "version",		no_argument, NULL, 'V' },
		{ NULL,			0, NULL, 0 }
	};
	char				err[128];
	int				ch;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":o:qhV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'o':
			f->f_output = optarg;
			if (*optarg == '\0') {
				fetch_warnx("-o: empty file name");
				return (FETCH_EUSAGE);
			}
			break;
		case FETCH_OPT_ACK:
			if (fetch_check_ack(optarg) == -1) {
				fetch_warnx("--ack: TEXT must be at most %d "
				    "bytes without control characters",
				    FETCH_ACK_MAX);
				return (FETCH_EUSAGE);
			}
			f->f_ack = *optarg != '\0' ? optarg : NULL;
			break;
		case FETCH_OPT_TIMEOUT:
			if (fetch_parse_duration(optarg, &f->f_timeout) == -1) {
				fetch_warnx("--timeout: %s: expected N, Nms, "
				    "Ns, Nm or Nh, from 1ms to 24h", optarg);
				return (FETCH_EUSAGE);
			}
			f->f_timeout_arg = optarg;
			break;
		case FETCH_OPT_EXPECT:
			if (fetch_parse_sha256(optarg, f->f_expect) == -1) {
				fetch_warnx("--expect-sha256: expected 64 hex "
				    "digits");
				return (FETCH_EUSAGE);
			}
			break;
		case FETCH_OPT_HOST_ID:
			if (*optarg != '\0' &&
			    fetch_check_host_id(optarg) == -1) {
				fetch_warnx("--host-id: NAME must be 1 to %d "
				    "bytes of A-Z a-z 0-9 . _ - (or '' for "
				    "none)", FETCH_HOST_MAX);
				return (FETCH_EUSAGE);
			}
			snprintf(f->f_host, sizeof(f->f_host), "%s", optarg);
			f->f_host_set = 1;
			break;
		case FETCH_OPT_MANIFEST:
			f->f_manifest = optarg;
			break;
		case FETCH_OPT_IF_CHANGED:
			f->f_if_changed = 1;
			break;
		case FETCH_OPT_MAX_SIZE:
			if (parse_size(optarg, &f->f_max, err,
			    sizeof(err)) == -1) {
				fetch_warnx("--max-size: %s", err);
				return (FETCH_EUSAGE);
			}
			break;
		case 'q':
			f->f_quiet = 1;
			break;
		case 'h':
			fetch_usage(stdout, 1);
			return (FETCH_OK);
		case 'V':
			printf("%s %s\n", FETCH_PROGNAME, FDIST_VERSION);
			return (FETCH_OK);
		case ':':
			fetch_warnx("%s: option requires an argument",
			    argv[optind - 1]);
			fetch_usage(stderr, 0);
			return (FETCH_EUSAGE);
		default:
			if (optopt != 0)
				fetch_warnx("-%c: unknown option", optopt);
			else
				fetch_warnx("%s: unknown option",
				    argv[optind - 1]);
			fetch_usage(stderr, 0);
			return (FETCH_EUSAGE);
		}
	}
	if (argc - optind != 1) {
		fetch_usage(stderr, 0);
		return (FETCH_EUSAGE);
	}
	if (f->f_manifest != NULL)
		f->f_share = argv[optind];
	else
		f->f_target = argv[optind];
	if (fetch_check_options(f) == -1)
		return (FETCH_EUSAGE);

	if (f->f_output == NULL) {
		if (isatty(STDOUT_FILENO)) {
			fetch_warnx("stdout is a terminal: use -o FILE, "
			    "or -o - to really write there");
			return (FETCH_EUSAGE);
		}
		f->f_output = "-";
	}
	f->f_progress = !f->f_quiet && isatty(STDERR_FILENO);
	if (!f->f_host_set)
		fetch_default_host_id(f);
	return (-1);
}
