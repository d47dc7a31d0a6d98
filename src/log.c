/*
 * log.c: daemon messages and the one record per transfer.
 *
 * Under systemd (stderr is the journal stream, or log=journal) records go
 * to the journal with structured fields so operators can query them with
 * journalctl; otherwise each is one line on stderr.  Client bytes reach
 * neither without escape_text().
 */
#include <sys/stat.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "fdistd.h"

/* "Transfer finished": see systemd/fdistd.catalog. */
#define MESSAGE_ID_TRANSFER	"68da270df4994c348ba467a048bebbc3"

static void	log_vemit(int, int, const char *, const char *, va_list)
		    __attribute__((format(printf, 4, 0)));
static void	log_line(const char *, ...)
		    __attribute__((format(printf, 1, 2)));
static void	log_field(struct iovec *, size_t *, char *, size_t,
		    const char *, ...) __attribute__((format(printf, 5, 6)));

static bool	log_journal;
static int	log_verbose;
/*
 * stderr lines wait here until the event loop has handled the events
 * of this round (log_flush), so a busy round costs one write, not one
 * per record.  It holds the longest record whole: an ack of ack_max
 * bytes escaped at four bytes each, the file name too, and the rest.
 */
#define LOG_LINE_MAX	(ESCAPE_BUFSIZE(ACK_MAX_LIMIT) + \
			    ESCAPE_BUFSIZE(PATH_MAX) + 1024)
static char	log_buf[LOG_LINE_MAX];
static size_t	log_len;

/* Write out the stderr lines of this round of the event loop. */
void
log_flush(void)
{
	size_t	off = 0;
	ssize_t	n;

	while (off < log_len) {
		n = write(STDERR_FILENO, log_buf + off, log_len - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;		/* nowhere to complain to */
		off += (size_t)n;
	}
	log_len = 0;
}

/* Append one line for stderr; a line that would not fit flushes first. */
static void
log_line(const char *fmt, ...)
{
	va_list	ap;
	int	n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(log_buf + log_len, sizeof(log_buf) - log_len, fmt,
		    ap);
		va_end(ap);
		if (n < 0)
			return;
		if ((size_t)n < sizeof(log_buf) - log_len) {
			log_len += (size_t)n;
			return;
		}
		if (log_len == 0) {	/* longer than the buffer: cut */
			log_len = sizeof(log_buf) - 1;
			log_buf[log_len - 1] = '\n';
			return;
		}
		log_flush();
	}
}

/* Whether stderr is the stream systemd connected to the journal. */
static bool
log_stderr_is_journal(void)
{
	const char		*env = getenv("JOURNAL_STREAM");
	struct stat		 st;
	unsigned long long	 dev, ino;

	if (env == NULL || sscanf(env, "%llu:%llu", &dev, &ino) != 2)
		return (false);
	if (fstat(STDERR_FILENO, &st) == -1)
		return (false);
	return (st.st_dev == dev && st.st_ino == ino);
}

/* Choose where messages go; verbose > 0 shows debug messages. */
void
log_init(enum log_mode mode, int verbose)
{
	log_verbose = verbose;
	log_set_mode(mode);
}

void
log_set_mode(enum log_mode mode)
{
	if (mode == LOG_AUTO)
		log_journal = log_stderr_is_journal();
	else
		log_journal = (mode == LOG_JOURNAL);
}

/*
 * "2026-11-25T10:00:00.123Z": stderr lines carry their own time.  The
 * date part is formatted once a second, not once a line.
 */
static void
log_timestamp(char *buf, size_t len)
{
	static time_t	last = -1;
	static char	date[32];
	struct timespec	ts;
	struct tm	tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != last) {
		gmtime_r(&ts.tv_sec, &tm);
		strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
		last = ts.tv_sec;
	}
	snprintf(buf, len, "%s.%03ldZ", date, ts.tv_nsec / 1000000);
}

static const char *
log_level_name(int priority)
{
	switch (priority) {
	case LOG_CRIT:
		return ("fatal");
	case LOG_WARNING:
		return ("warning");
	case LOG_INFO:
		return ("info");
	default:
		return ("debug");
	}
}


/*
 * Write one message, with strerror(errnum) appended if errnum != 0 and,
 * in the journal, the catalog's MESSAGE_ID if msgid is set.
 */
static void
log_vemit(int priority, int errnum, const char *msgid, const char *fmt,
    va_list ap)
{
	char	msg[1024], ts[48];
	int	saved_errno = errno;

	if (priority == LOG_DEBUG && log_verbose == 0)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (errnum != 0) {
		size_t	len = strlen(msg);

		snprintf(msg + len, sizeof(msg) - len, ": %s",
		    strerror(errnum));
	}
	if (log_journal)
		sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", priority,
		    "SYSLOG_IDENTIFIER=fdistd",
		    msgid != NULL ? "MESSAGE_ID=%s" : NULL, msgid, NULL);
	else {
		log_timestamp(ts, sizeof(ts));
		log_line("%s %s: %s\n", ts, log_level_name(priority),
		    msg);
	}
	errno = saved_errno;
}

/* A warning with the current errno's description. */
void
log_warn(const char *fmt, ...)
{
	va_list	ap;
	int	errnum = errno;

	va_start(ap, fmt);
	log_vemit(LOG_WARNING, errnum, NULL, fmt, ap);
	va_end(ap);
}

/* A daemon event with an entry in systemd/fdistd.catalog. */
void
log_event(int priority, const char *msgid, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vemit(priority, 0, msgid, fmt, ap);
	va_end(ap);
}

/* Log and exit(1), with errno's description. */
void
fatal(const char *fmt, ...)
{
	va_list	ap;
	int	errnum = errno;

	va_start(ap, fmt);
	log_vemit(LOG_CRIT, errnum, NULL, fmt, ap);
	va_end(ap);
	log_flush();
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	log_vemit(LOG_CRIT, 0, NULL, fmt, ap);
	va_end(ap);
	log_flush();
	exit(1);
}

/* Append one "NAME=value" journal field, formatted into buf. */
static void
log_field(struct iovec *iov, size_t *n, char *buf, size_t len,
    const char *fmt, ...)
{
	va_list	ap;
	int	w;

	va_start(ap, fmt);
	w = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	if (w < 0)
		return;
	iov[*n].iov_base = buf;
	iov[*n].iov_len = (size_t)w < len ? (size_t)w : len - 1;
	(*n)++;
}

static const char *const outcome_names[] = {
	[OUTCOME_ACKED] = "acked",
	[OUTCOME_ACK_MISMATCH] = "ack-mismatch",
	[OUTCOME_NO_ACK] = "no-ack",
	[OUTCOME_ACK_TIMEOUT] = "ack-timeout",
	[OUTCOME_ABORTED] = "aborted",
	[OUTCOME_SEND_TIMEOUT] = "send-timeout",
	[OUTCOME_FILE_CHANGED] = "file-changed",
	[OUTCOME_SHUTDOWN] = "shutdown",
	[OUTCOME_DENIED] = "denied",
	[OUTCOME_BUSY] = "busy",
	[OUTCOME_PROXY_ERROR] = "proxy-error",
	[OUTCOME_PROBE] = "probe",
};
_Static_assert(sizeof(outcome_names) / sizeof(outcome_names[0]) ==
    OUTCOME_PROBE + 1, "every outcome has a name");

/* A balancer's health check is routine, like a transfer acked. */
static bool
log_quiet(const struct transfer_record *tr)
{
	return (tr->tr_status == OUTCOME_ACKED ||
	    tr->tr_status == OUTCOME_PROBE);
}

/* The status a record of this outcome has (the metrics' label too). */
const char *
log_outcome_name(enum outcome outcome)
{
	return (outcome_names[outcome]);
}

/* The record as one key=value line on stderr. */
static void
log_transfer_line(const struct transfer_record *tr, const char *file,
    const char *ack, const char *host_id)
{
	char	ts[48];
	bool	acked = log_quiet(tr);

	log_timestamp(ts, sizeof(ts));
	log_line("%s %s: transfer share=%s peer=%s%s%s file=\"%s\" "
	    "bytes=%" PRIu64 " size=%" PRIu64 " duration_usec=%" PRIu64
	    " status=%s%s%s%s%s%s%s%s%s%s%s version=%s%s%s%s%s\n", ts,
	    acked ? "info" : "warning",
	    tr->tr_share, tr->tr_peer, tr->tr_proxy ? " proxy=" : "",
	    tr->tr_proxy ? tr->tr_proxy : "", file, tr->tr_bytes, tr->tr_size,
	    tr->tr_duration_usec, outcome_names[tr->tr_status],
	    tr->tr_reason ? " reason=\"" : "",
	    tr->tr_reason ? tr->tr_reason : "", tr->tr_reason ? "\"" : "",
	    ack ? " ack=\"" : "", ack ? ack : "", ack ? "\"" : "",
	    tr->tr_verified ? " verified=" : "",
	    tr->tr_verified ? tr->tr_verified : "",
	    tr->tr_verified ? " sha256=" : "",
	    tr->tr_verified ? tr->tr_sha256 : "", tr->tr_version,
	    tr->tr_file_sha256 ? " file_sha256=" : "",
	    tr->tr_file_sha256 ? tr->tr_file_sha256 : "",
	    host_id ? " host_id=" : "", host_id ? host_id : "");
}

/*
 * The record of one finished transfer: a structured journal entry, or
 * one key=value line.  The ack is escaped here and nowhere else.
 */
void
log_transfer(const struct transfer_record *tr)
{
	static char	 ack[sizeof("FDIST_ACK=") +
			    ESCAPE_BUFSIZE(ACK_MAX_LIMIT)];
	const size_t	 ackoff = sizeof("FDIST_ACK=") - 1;
	char		 ffile[sizeof("FDIST_FILE=") + ESCAPE_BUFSIZE(PATH_MAX)];
	char		 f[16][160], msg[512], msgack[201];
	char		 host[ESCAPE_BUFSIZE(ACK_HOST_MAX)];
	struct iovec	 iov[21];
	size_t		 n = 0;
	const char	*status = outcome_names[tr->tr_status];
	const char	*host_id = NULL;
	bool		 acked = log_quiet(tr);
	bool		 has_ack = tr->tr_ack_bytes > 0;

	memcpy(ack, "FDIST_ACK=", ackoff);
	escape_text(ack + ackoff, sizeof(ack) - ackoff, tr->tr_ack,
	    tr->tr_acklen);
	/* ack_host_claim() let only [A-Za-z0-9._-] through: a no-op. */
	if (tr->tr_host_id != NULL) {
		escape_text(host, sizeof(host),
		    (const unsigned char *)tr->tr_host_id,
		    strlen(tr->tr_host_id));
		host_id = host;
	}
	if (!log_journal) {
		log_transfer_line(tr, tr->tr_file, has_ack ? ack + ackoff : NULL,
		    host_id);
		return;
	}
	/* The human line shows a short ack, cut between escapes. */
	escape_text(msgack, sizeof(msgack), tr->tr_ack, tr->tr_acklen);
	if (tr->tr_reason != NULL)
		log_field(iov, &n, msg, sizeof(msg), "MESSAGE=%s [%s] %s: "
		    "refused (%s)", tr->tr_peer, tr->tr_share, status,
		    tr->tr_reason);
	else
		log_field(iov, &n, msg, sizeof(msg), "MESSAGE=%s [%s] %s: %"
		    PRIu64 "/%" PRIu64 " bytes in %" PRIu64 ".%03" PRIu64
		    " s%s%s%s", tr->tr_peer, tr->tr_share, status,
		    tr->tr_bytes, tr->tr_size, tr->tr_duration_usec / 1000000,
		    tr->tr_duration_usec / 1000 % 1000,
		    has_ack ? ", ack \"" : "", has_ack ? msgack : "",
		    has_ack ? "\"" : "");
	log_field(iov, &n, f[0], sizeof(f[0]), "MESSAGE_ID=%s",
	    MESSAGE_ID_TRANSFER);
	log_field(iov, &n, f[1], sizeof(f[1]), "PRIORITY=%d",
	    acked ? LOG_INFO : LOG_WARNING);
	log_field(iov, &n, f[2], sizeof(f[2]), "SYSLOG_IDENTIFIER=fdistd");
	log_field(iov, &n, f[3], sizeof(f[3]), "FDIST_SHARE=%s",
	    tr->tr_share);
	log_field(iov, &n, f[4], sizeof(f[4]), "FDIST_PEER=%s", tr->tr_peer);
	log_field(iov, &n, f[5], sizeof(f[5]), "FDIST_BYTES=%" PRIu64,
	    tr->tr_bytes);
	log_field(iov, &n, f[6], sizeof(f[6]), "FDIST_SIZE=%" PRIu64,
	    tr->tr_size);
	log_field(iov, &n, f[7], sizeof(f[7]), "FDIST_DURATION_USEC=%" PRIu64,
	    tr->tr_duration_usec);
	log_field(iov, &n, f[8], sizeof(f[8]), "FDIST_STATUS=%s",
	    status);
	if (tr->tr_verified != NULL) {
		log_field(iov, &n, f[9], sizeof(f[9]), "FDIST_VERIFIED=%s",
		    tr->tr_verified);
		log_field(iov, &n, f[10], sizeof(f[10]), "FDIST_SHA256=%s",
		    tr->tr_sha256);
	}
	if (tr->tr_reason != NULL)
		log_field(iov, &n, f[11], sizeof(f[11]), "FDIST_REASON=%s",
		    tr->tr_reason);
	log_field(iov, &n, f[12], sizeof(f[12]), "FDIST_VERSION=%s",
	    tr->tr_version);
	if (tr->tr_file_sha256 != NULL)
		log_field(iov, &n, f[13], sizeof(f[13]),
		    "FDIST_FILE_SHA256=%s", tr->tr_file_sha256);
	if (host_id != NULL)
		log_field(iov, &n, f[14], sizeof(f[14]), "FDIST_HOST_ID=%s",
		    host_id);
	if (tr->tr_proxy != NULL)
		log_field(iov, &n, f[15], sizeof(f[15]), "FDIST_PROXY=%s",
		    tr->tr_proxy);
	log_field(iov, &n, ffile, sizeof(ffile), "FDIST_FILE=%s", tr->tr_file);
	if (has_ack) {
		iov[n].iov_base = ack;
		iov[n].iov_len = strlen(ack);
		n++;
	}
	sd_journal_sendv(iov, (int)n);
}

/*
 * How many refusals of one share, status and reason were only counted, in
 * a window, and not logged one by one: with the records, every refusal
 * is accounted.  share is NULL if its name could not be kept.
 */
void
log_refusals(const char *share, enum outcome outcome, const char *reason,
    uint64_t count, unsigned int window_ms)
{
	const char	*status = outcome_names[outcome];
	char		 ts[48];
	bool		 quiet = outcome == OUTCOME_PROBE;

	if (!log_journal) {
		log_timestamp(ts, sizeof(ts));
		log_line("%s %s: refusals%s%s status=%s reason=\"%s\" "
		    "count=%" PRIu64 " window_ms=%u\n", ts,
		    quiet ? "info" : "warning",
		    share != NULL ? " share=" : "", share != NULL ? share : "",
		    status, reason, count, window_ms);
		return;
	}
	sd_journal_send("MESSAGE=%" PRIu64 " more connections%s%s%s refused "
	    "(%s: %s) in the last %u ms, not logged one by one", count,
	    share != NULL ? " to [" : "", share != NULL ? share : "",
	    share != NULL ? "]" : "", status, reason, window_ms,
	    "MESSAGE_ID=" MSGID_REFUSALS, "PRIORITY=%d",
	    quiet ? LOG_INFO : LOG_WARNING,
	    "SYSLOG_IDENTIFIER=fdistd", "FDIST_STATUS=%s", status,
	    "FDIST_REASON=%s", reason, "FDIST_COUNT=%" PRIu64, count,
	    share != NULL ? "FDIST_SHARE=%s" : NULL, share, NULL);
}

/*
 * Which version a share serves and what is known of its digest: the
 * record a report takes "the version this share serves now" from.  It is
 * written when a share starts serving a version (at start-up, at a
 * reload), and again when the digest becomes known or cannot be
 * computed.  With the digest it has FDIST_FILE_SHA256, which transfer
 * records without it join by FDIST_VERSION; without, FDIST_DIGEST says
 * pending (also for a file whose hashing is about to start) or failed.
 */
void
log_digest(const char *share, const struct sfile *sf)
{
	const char	*state = NULL, *value;
	int		 prio = LOG_INFO;
	char		 ts[48];

	if (sf->sf_digest == DIGEST_FAILED) {
		state = "failed";
		prio = LOG_WARNING;
	} else if (sf->sf_digest != DIGEST_READY)
		state = "pending";
	value = state != NULL ? state : sf->sf_sha256;
	if (!log_journal) {
		log_timestamp(ts, sizeof(ts));
		log_line("%s %s: digest share=%s file=\"%s\" version=%s %s=%s "
		    "size=%" PRIu64 "\n", ts, log_level_name(prio), share,
		    sf->sf_path_log, sf->sf_version,
		    state != NULL ? "digest" : "file_sha256", value,
		    sf->sf_size);
		return;
	}
	sd_journal_send("MESSAGE=share [%s] serves %s, version %s, sha256 %s",
	    share, sf->sf_path_log, sf->sf_version, value,
	    "MESSAGE_ID=" MSGID_DIGEST, "PRIORITY=%d", prio,
	    "SYSLOG_IDENTIFIER=fdistd", "FDIST_SHARE=%s", share,
	    "FDIST_FILE=%s", sf->sf_path_log,
	    "FDIST_VERSION=%s", sf->sf_version,
	    state != NULL ? "FDIST_DIGEST=%s" : "FDIST_FILE_SHA256=%s", value,
	    "FDIST_SIZE=%" PRIu64, sf->sf_size, NULL);
}
