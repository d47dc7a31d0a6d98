/*
 * fdist-fetch: download the file an fdistd share serves, check its
 * SHA-256 and acknowledge it. See fdist-fetch(1).
 */
#include <sys/types.h>

#include <netdb.h>

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "fetch.h"
#include "stdfds.h"

/* The progress line is on screen without its newline. */
static int	fetch_line_open;

static void	fetch_vwarn(int, const char *, va_list)
		    __attribute__((format(printf, 2, 0)));
static void	fetch_human(double, const char *, char *, size_t);
static void	fetch_progress(struct fetch *, int);
static int	fetch_receive_error(struct fetch *);
static int	fetch_receive(struct fetch *);
static int	fetch_digest_hex(struct fetch *);
static void	fetch_ack(struct fetch *, const char *);
static int	fetch_run(struct fetch *);

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
 * output. The protocol has no length, so only EOF ends the file; but
 * with --manifest the size is known, and with --max-size a bound is
 * given: a share that streams past it (without end, it may be) is cut
 * off before a byte more is written.
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
		if ((uint64_t)n > f->f_max - f->f_bytes) {
			if (f->f_max_manifest)
				fetch_warnx("%s: more than the %llu bytes the "
				    "manifest announced", f->f_target,
				    (unsigned long long)f->f_max);
			else
				fetch_warnx("%s: more than --max-size, %llu "
				    "bytes", f->f_target,
				    (unsigned long long)f->f_max);
			return (FETCH_EDIGEST);
		}
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
		/* The lower bound is the one that applies. */
		if (f->f_fs.fs_size <= f->f_max) {
			f->f_max = f->f_fs.fs_size;
			f->f_max_manifest = 1;
		}
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
	f.f_max = UINT64_MAX;		/* no bound but EOF */
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
