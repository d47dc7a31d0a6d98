/*
 * fdist-fetch: download the file an fdistd share serves, check its
 * SHA-256 and acknowledge it. See fdist-fetch(1).
 */
#include <sys/types.h>

#include <netdb.h>

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "fetch.h"
#include "parse.h"
#include "stdfds.h"

#ifndef FDIST_VERSION
#define FDIST_VERSION		"0.1.0"
#endif

/* Large reads keep system calls and digest calls per byte low. */
#define FETCH_BUFSIZE		(1024 * 1024)
#define FETCH_ACK_MAX		200
#define FETCH_TIMEOUT_DEFAULT	(30 * 1000)
#define FETCH_TIMEOUT_MAX	(24 * 3600 * 1000)
#define FETCH_PROGRESS_MS	100
#define FETCH_HEXLEN		64
#define FETCH_HOST_MAX		64	/* fdistd's ACK_HOST_MAX */

enum {
	FETCH_OPT_ACK = 256,
	FETCH_OPT_TIMEOUT,
	FETCH_OPT_EXPECT,
	FETCH_OPT_HOST_ID,
	FETCH_OPT_MANIFEST,
	FETCH_OPT_IF_CHANGED
};

struct fetch {
	const char		*f_target;	/* HOST:PORT as given */
	const char		*f_manifest;	/* --manifest HOST:PORT */
	const char		*f_share;	/* SHARE, with --manifest */
	struct fetch_share	 f_fs;		/* what the manifest says */
	int			 f_if_changed;
	const char		*f_output;	/* "-" for stdout */
	const char		*f_ack;		/* --ack words or NULL */
	const char		*f_timeout_arg;	/* --timeout as given */
	int			 f_timeout;	/* ms without progress */
	int			 f_quiet;
	int			 f_progress;	/* redraw a status line */
	char			 f_expect[FETCH_HEXLEN + 1];	/* "" if none */
	char			 f_host[FETCH_HOST_MAX + 1];	/* "" if none */
	int			 f_host_set;	/* by --host-id */
	char			 f_got[FETCH_HEXLEN + 1];

	int			 f_sock;
	struct fetch_out	*f_out;
	EVP_MD_CTX		*f_md;
	unsigned char		*f_buf;
	uint64_t		 f_bytes;
	int64_t			 f_start;	/* monotonic ms */
	int64_t			 f_drawn;	/* last progress redraw */
};

/* The progress line is on screen without its newline. */
static int	fetch_line_open;

static void	fetch_usage(FILE *, int);
static void	fetch_vwarn(int, const char *, va_list)
		    __attribute__((format(printf, 2, 0)));
static int	fetch_parse_duration(const char *, int *);
static int	fetch_parse_sha256(const char *, char *);
static int	fetch_check_ack(const char *);
static int	fetch_check_host_id(const char *);
static int	fetch_check_share(const char *);
static int	fetch_check_options(struct fetch *);
static void	fetch_default_host_id(struct fetch *);
static int	fetch_options(struct fetch *, int, char **);
static void	fetch_human(double, const char *, char *, size_t);
static void	fetch_progress(struct fetch *, int);
static int	fetch_receive_error(struct fetch *);
static int	fetch_receive(struct fetch *);
static int	fetch_digest_hex(struct fetch *);
static void	fetch_ack(struct fetch *, const char *);
static int	fetch_run(struct fetch *);

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
"                          (bare N is seconds; default 30s)\n"
"      --expect-sha256 HEX fail unless the SHA-256 of the file is HEX\n"
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
"  4  no progress for the --timeout duration after connecting\n"
"  5  the SHA-256 differs from --expect-sha256\n"
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
	fprintf(fp, "usage: %s [-qhV] [-o FILE|-] [--ack TEXT] [--timeout DUR]\n"
	    "                   [--expect-sha256 HEX] [--host-id NAME] "
	    "[--if-changed]\n"
	    "                   HOST:PORT | --manifest HOST:PORT SHARE\n",
	    FETCH_PROGNAME);
	if (full)
		fprintf(fp, "\n%s", fetch_help);
}

/* Messages go after the progress line, never into it. */
static void
fetch_vwarn(int error, const char *fmt, va_list ap)
{
	if (fetch_line_open) {
		fputc('\n', stderr);
		fetch_line_open = 0;
	}
	fprintf(stderr, "%s: ", FETCH_PROGNAME);
	vfprintf(stderr, fmt, ap);
	if (error != 0)
		fprintf(stderr, ": %s", strerror(error));
	fputc('\n', stderr);
}

/* Report an error with strerror(errno); errno is preserved. */
void
fetch_warn(const char *fmt, ...)
{
	va_list	ap;
	int	saved = errno;

	va_start(ap, fmt);
	fetch_vwarn(saved, fmt, ap);
	va_end(ap);
	errno = saved;
}

/* Report an error that has no errno. */
void
fetch_warnx(const char *fmt, ...)
{
	va_list	ap;
	int	saved = errno;

	va_start(ap, fmt);
	fetch_vwarn(0, fmt, ap);
	va_end(ap);
	errno = saved;
}

/* Monotonic milliseconds, for deadlines that survive clock changes. */
int64_t
fetch_now(void)
{
	struct timespec	ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
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
static int
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
		{ "quiet",		no_argument, NULL, 'q' },
		{ "help",		no_argument, NULL, 'h' },
		{ "version",		no_argument, NULL, 'V' },
		{ NULL,			0, NULL, 0 }
	};
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

/* Format a byte count in binary units, such as "1.5 GiB". */
static void
fetch_human(double v, const char *suffix, char *buf, size_t len)
{
	static const char	*units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	size_t			 i = 0;

	while (v >= 1024 && i < sizeof(units) / sizeof(units[0]) - 1) {
		v /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%.0f %s%s", v, units[i], suffix);
	else
		snprintf(buf, len, "%.1f %s%s", v, units[i], suffix);
}

/* Redraw the status line at most ten times a second; final ends it. */
static void
fetch_progress(struct fetch *f, int final)
{
	char	size[32], rate[32];
	int64_t	now, ms;

	now = fetch_now();
	if (!final && now - f->f_drawn < FETCH_PROGRESS_MS)
		return;
	f->f_drawn = now;
	ms = now - f->f_start;
	fetch_human((double)f->f_bytes, "", size, sizeof(size));
	fetch_human(ms > 0 ? f->f_bytes * 1000.0 / ms : 0, "/s", rate,
	    sizeof(rate));
	fprintf(stderr, "\r%12s  %14s  %d:%02d:%02d ", size, rate,
	    (int)(ms / 3600000), (int)(ms / 60000 % 60), (int)(ms / 1000 % 60));
	fetch_line_open = 1;
	if (final) {
		fputc('\n', stderr);
		fetch_line_open = 0;
	}
}

/* Map a failed read to a message and an exit code. */
static int
fetch_receive_error(struct fetch *f)
{
	unsigned long long	n = f->f_bytes;

	if (errno == ETIMEDOUT) {
		fetch_warnx("%s: timed out after %llu bytes (no data for %s)",
		    f->f_target, n, f->f_timeout_arg);
		return (FETCH_ETIMEOUT);
	}
	if (errno == ECONNRESET && n == 0) {
		fetch_warnx("%s: refused by the server (connection reset "
		    "before any data)", f->f_target);
		return (FETCH_ERESET);
	}
	fetch_warn("%s: connection lost after %llu bytes", f->f_target, n);
	return (FETCH_ERESET);
}

/*
 * Read until the server's EOF; every buffer feeds the digest and the
 * output. The protocol has no length, so only EOF ends the file.
 */
static int
fetch_receive(struct fetch *f)
{
	ssize_t	n;

	f->f_start = f->f_drawn = fetch_now();
	for (;;) {
		n = fetch_net_read(f->f_sock, f->f_buf, FETCH_BUFSIZE,
		    f->f_timeout);
		if (n == 0)
			break;
		if (n == -1)
			return (fetch_receive_error(f));
		if (EVP_DigestUpdate(f->f_md, f->f_buf, n) != 1) {
			fetch_warnx("EVP_DigestUpdate failed");
			return (FETCH_EUSAGE);
		}
		if (fetch_out_write(f->f_out, f->f_buf, n) == -1)
			return (FETCH_ELOCAL);
		f->f_bytes += n;
		if (f->f_progress)
			fetch_progress(f, 0);
	}
	if (f->f_progress)
		fetch_progress(f, 1);
	return (FETCH_OK);
}

/* Finish the digest into f_got as lowercase hex. */
static int
fetch_digest_hex(struct fetch *f)
{
	static const char	hex[] = "0123456789abcdef";
	unsigned char		md[EVP_MAX_MD_SIZE];
	unsigned int		len = 0, i;

	if (EVP_DigestFinal_ex(f->f_md, md, &len) != 1 ||
	    len * 2 != FETCH_HEXLEN) {
		fetch_warnx("EVP_DigestFinal_ex failed");
		return (-1);
	}
	for (i = 0; i < len; i++) {
		f->f_got[i * 2] = hex[md[i] >> 4];
		f->f_got[i * 2 + 1] = hex[md[i] & 0xf];
	}
	f->f_got[FETCH_HEXLEN] = '\0';
	return (0);
}

/*
 * Send "<what> sha256=<hex>[ host=NAME][ TEXT]\n" and wait for it to be
 * taken.  The host id comes before TEXT, so a server's ack_max that cuts
 * a long TEXT keeps it.  The file is already settled, so a failed ack is
 * only reported.
 */
static void
fetch_ack(struct fetch *f, const char *what)
{
	char	msg[3 * FETCH_HEXLEN + 64 + FETCH_HOST_MAX + 8 + FETCH_ACK_MAX];
	int	len;

	len = snprintf(msg, sizeof(msg), "%s%s%s%s%s\n", what,
	    f->f_host[0] != '\0' ? " host=" : "", f->f_host,
	    f->f_ack != NULL ? " " : "", f->f_ack != NULL ? f->f_ack : "");
	if (len < 0 || (size_t)len >= sizeof(msg)) {
		fetch_warnx("acknowledgement too long");
		return;
	}
	if (fetch_net_write_all(f->f_sock, msg, len, f->f_timeout) == -1 ||
	    fetch_net_finish(f->f_sock, f->f_timeout) == -1)
		fetch_warn("%s: acknowledgement not confirmed", f->f_target);
}

/* Resolve, connect, receive, check, publish, acknowledge. */
static int
fetch_run(struct fetch *f)
{
	struct addrinfo	*res = NULL;
	char		 what[3 * FETCH_HEXLEN + 64];
	int		 rv, markerr;

	if (f->f_manifest != NULL) {
		if ((rv = fetch_manifest(f->f_manifest, f->f_share, f->f_host,
		    f->f_timeout, &f->f_fs)) != FETCH_OK)
			goto out;
		f->f_target = f->f_fs.fs_target;
		memcpy(f->f_expect, f->f_fs.fs_sha256, sizeof(f->f_expect));
	}
	/* Nothing more to connect to: the digest is known, and FILE's. */
	if (f->f_if_changed && fetch_mark_current(f->f_output, f->f_expect)) {
		if (!f->f_quiet)
			fprintf(stderr, "sha256=%s  %s (unchanged, not "
			    "fetched)\n", f->f_expect, f->f_output);
		rv = FETCH_CURRENT;
		goto out;
	}
	if ((rv = fetch_net_resolve(f->f_target, &res)) != FETCH_OK)
		goto out;
	/* Open the output first: a local problem should not cost a transfer. */
	if ((rv = fetch_out_open(f->f_output, &f->f_out)) != FETCH_OK)
		goto out;
	if ((rv = fetch_net_connect(res, f->f_timeout, &f->f_sock)) !=
	    FETCH_OK)
		goto out;
	if ((rv = fetch_receive(f)) != FETCH_OK)
		goto out;
	if (fetch_digest_hex(f) == -1) {
		rv = FETCH_EUSAGE;
		goto out;
	}

	if (f->f_expect[0] != '\0' && strcmp(f->f_expect, f->f_got) != 0) {
		fetch_warnx("%s: sha256 mismatch: got %s, expected %s",
		    fetch_out_name(f->f_out), f->f_got, f->f_expect);
		fetch_out_free(f->f_out);
		f->f_out = NULL;
		/*
		 * Say so, and claim the digest we got: the server logs the
		 * rejection as ack-mismatch, and whether our copy was its
		 * file (we expected another) or a damaged one.
		 */
		snprintf(what, sizeof(what), "sha256-mismatch sha256=%s "
		    "expected=%s", f->f_got, f->f_expect);
		fetch_ack(f, what);
		rv = FETCH_EDIGEST;
		goto out;
	}
	/* On failure close without an ack: the server logs a missing ack. */
	if (fetch_out_commit(f->f_out, f->f_got, &markerr) == -1) {
		rv = FETCH_ELOCAL;
		goto out;
	}
	if (markerr != 0 && f->f_if_changed) {
		errno = markerr;
		fetch_warn("%s: cannot keep its SHA-256 in %s, so --if-changed "
		    "will fetch it every time", fetch_out_name(f->f_out),
		    FETCH_MARK_XATTR);
	}
	if (!f->f_quiet)
		fprintf(stderr, "sha256=%s  %s\n", f->f_got,
		    fetch_out_name(f->f_out));
	snprintf(what, sizeof(what), "Thank you sha256=%s", f->f_got);
	fetch_ack(f, what);
	rv = FETCH_OK;

out:
	if (f->f_sock != -1)
		close(f->f_sock);
	fetch_out_free(f->f_out);
	f->f_out = NULL;
	if (res != NULL)
		freeaddrinfo(res);
	return (rv);
}

int
main(int argc, char **argv)
{
	struct fetch	f;
	int		rv, closed;

	if ((closed = stdfds_hold()) == -1)
		return (FETCH_ELOCAL);
	memset(&f, 0, sizeof(f));
	f.f_sock = -1;
	f.f_timeout = FETCH_TIMEOUT_DEFAULT;
	f.f_timeout_arg = "30s";
	if ((rv = fetch_options(&f, argc, argv)) != -1)
		return (rv);
	if ((closed & (1 << STDOUT_FILENO)) && strcmp(f.f_output, "-") == 0) {
		fetch_warnx("stdout: %s", strerror(EBADF));
		return (FETCH_ELOCAL);
	}

	fetch_out_signals();
	if ((f.f_buf = malloc(FETCH_BUFSIZE)) == NULL) {
		fetch_warn("malloc");
		return (FETCH_EUSAGE);
	}
	if ((f.f_md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(f.f_md, EVP_sha256(), NULL) != 1) {
		fetch_warnx("cannot set up SHA-256");
		rv = FETCH_EUSAGE;
		goto out;
	}
	rv = fetch_run(&f);
out:
	EVP_MD_CTX_free(f.f_md);
	free(f.f_buf);
	return (rv);
}
