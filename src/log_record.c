/*
 * log_record.c: the one record per transfer, and the daemon's other
 * records (refusals counted, the digest a share serves).
 *
 * The record of a transfer is put together by hand (log_put*()), not by
 * printf: at thousands of transfers a second, stdio's formatting, which
 * copies its string arguments a few bytes at a time, took most of the
 * daemon's own instructions.  Journal fields are built the same way.
 */
#include <inttypes.h>
#include <limits.h>
#include <string.h>
#include <syslog.h>
#include <sys/uio.h>

#include <systemd/sd-journal.h>

#include "fdistd.h"
#include "log.h"

/* "Transfer finished": see systemd/fdistd.catalog. */
#define MESSAGE_ID_TRANSFER	"68da270df4994c348ba467a048bebbc3"

/*
 * A journal record's fields: each one "NAME=value" in a buffer of its
 * own, f[i] for the i-th field unless it needs a larger one, cut at
 * JOURNAL_FIELD_MAX - 1 bytes.
 */
#define JOURNAL_FIELDS		21
#define JOURNAL_FIELD_MAX	160
struct journal_fields {
	struct iovec	jf_iov[JOURNAL_FIELDS];
	size_t		jf_n;
	char		jf_f[JOURNAL_FIELDS][JOURNAL_FIELD_MAX];
};

/*
 * Start the next field, "NAME=" (name has its "="), in buf (len bytes),
 * or in its own f[] if buf is NULL; the value is appended after, and
 * log_field_end() adds it.
 */
static struct logbuf
log_field(struct journal_fields *jf, char *buf, size_t len, const char *name)
{
	struct logbuf	lb = { buf, 0, len - 1, false };

	if (buf == NULL)
		lb = (struct logbuf){ jf->jf_f[jf->jf_n], 0,
		    JOURNAL_FIELD_MAX - 1, false };
	log_puts(&lb, name);
	return (lb);
}

static void
log_field_end(struct journal_fields *jf, const struct logbuf *lb)
{
	jf->jf_iov[jf->jf_n].iov_base = lb->lb_buf;
	jf->jf_iov[jf->jf_n].iov_len = lb->lb_len;
	jf->jf_n++;
}

/* One "NAME=value" journal field, value a string. */
static void
log_field_str(struct journal_fields *jf, const char *name, const char *value)
{
	struct logbuf	lb = log_field(jf, NULL, 0, name);

	log_puts(&lb, value);
	log_field_end(jf, &lb);
}

/* One "NAME=value" journal field, value a number. */
static void
log_field_u64(struct journal_fields *jf, const char *name, uint64_t value)
{
	struct logbuf	lb = log_field(jf, NULL, 0, name);

	log_putu(&lb, value, 0);
	log_field_end(jf, &lb);
}

/* " key=value" on a stderr line (key has its " " and "="); NULL: none. */
static void
log_put_pair(struct logbuf *lb, const char *key, const char *value)
{
	if (value == NULL)
		return;
	log_puts(lb, key);
	log_puts(lb, value);
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
log_transfer_line(const struct transfer_record *tr)
{
	struct logbuf	 lb;
	char		 ts[LOG_TIME_LEN + 1];

	log_timestamp(ts);
	do {
		lb = log_line_begin();
		log_put(&lb, ts, LOG_TIME_LEN);
		log_puts(&lb, log_quiet(tr) ? " info: transfer share=" :
		    " warning: transfer share=");
		log_puts(&lb, tr->tr_share);
		log_puts(&lb, " peer=");
		log_puts(&lb, tr->tr_peer);
		log_put_pair(&lb, " proxy=", tr->tr_proxy);
		log_puts(&lb, " file=\"");
		log_puts(&lb, tr->tr_file);
		log_puts(&lb, "\" bytes=");
		log_putu(&lb, tr->tr_bytes, 0);
		log_puts(&lb, " size=");
		log_putu(&lb, tr->tr_size, 0);
		log_puts(&lb, " duration_usec=");
		log_putu(&lb, tr->tr_duration_usec, 0);
		log_puts(&lb, " status=");
		log_puts(&lb, outcome_names[tr->tr_status]);
		if (tr->tr_reason != NULL) {
			log_put_pair(&lb, " reason=\"", tr->tr_reason);
			log_puts(&lb, "\"");
		}
		if (tr->tr_ack_bytes > 0) {
			log_puts(&lb, " ack=\"");
			log_put_escaped(&lb, tr->tr_ack, tr->tr_acklen);
			log_puts(&lb, "\"");
		}
		if (tr->tr_verified != NULL) {
			log_put_pair(&lb, " verified=", tr->tr_verified);
			log_put_pair(&lb, " sha256=", tr->tr_sha256);
		}
		log_put_pair(&lb, " version=", tr->tr_version);
		log_put_pair(&lb, " file_sha256=", tr->tr_file_sha256);
		/* ack_host_claim() let only [A-Za-z0-9._-] through. */
		if (tr->tr_host_id != NULL) {
			log_puts(&lb, " host_id=");
			log_put_escaped(&lb,
			    (const unsigned char *)tr->tr_host_id,
			    strlen(tr->tr_host_id));
		}
	} while (!log_line_end(&lb));
}

/*
 * The record of one finished transfer: a structured journal entry, or
 * one key=value line.  The ack is escaped here and nowhere else.
 */
void
log_transfer(const struct transfer_record *tr)
{
	static char		 ack[sizeof("FDIST_ACK=") +
				    ESCAPE_BUFSIZE(ACK_MAX_LIMIT)];
	static char		 file[sizeof("FDIST_FILE=") +
				    ESCAPE_BUFSIZE(PATH_MAX)];
	char			 msg[512], msgack[201];
	char			 host[ESCAPE_BUFSIZE(ACK_HOST_MAX)];
	struct journal_fields	 jf;
	struct logbuf		 lb;
	const char		*status = outcome_names[tr->tr_status];
	bool			 has_ack = tr->tr_ack_bytes > 0;

	if (!log_to_journal()) {
		log_transfer_line(tr);
		return;
	}
	jf.jf_n = 0;
	/* The human line shows a short ack, cut between escapes. */
	lb = log_field(&jf, msg, sizeof(msg), "MESSAGE=");
	log_puts(&lb, tr->tr_peer);
	log_puts(&lb, " [");
	log_puts(&lb, tr->tr_share);
	log_puts(&lb, "] ");
	log_puts(&lb, status);
	if (tr->tr_reason != NULL) {
		log_puts(&lb, ": refused (");
		log_puts(&lb, tr->tr_reason);
		log_puts(&lb, ")");
	} else {
		log_puts(&lb, ": ");
		log_putu(&lb, tr->tr_bytes, 0);
		log_puts(&lb, "/");
		log_putu(&lb, tr->tr_size, 0);
		log_puts(&lb, " bytes in ");
		log_putu(&lb, tr->tr_duration_usec / 1000000, 0);
		log_puts(&lb, ".");
		log_putu(&lb, tr->tr_duration_usec / 1000 % 1000, 3);
		log_puts(&lb, " s");
		if (has_ack) {
			escape_text(msgack, sizeof(msgack), tr->tr_ack,
			    tr->tr_acklen);
			log_puts(&lb, ", ack \"");
			log_puts(&lb, msgack);
			log_puts(&lb, "\"");
		}
	}
	log_field_end(&jf, &lb);
	log_field_str(&jf, "MESSAGE_ID=", MESSAGE_ID_TRANSFER);
	log_field_u64(&jf, "PRIORITY=", log_quiet(tr) ? LOG_INFO : LOG_WARNING);
	log_field_str(&jf, "SYSLOG_IDENTIFIER=", "fdistd");
	log_field_str(&jf, "FDIST_SHARE=", tr->tr_share);
	log_field_str(&jf, "FDIST_PEER=", tr->tr_peer);
	log_field_u64(&jf, "FDIST_BYTES=", tr->tr_bytes);
	log_field_u64(&jf, "FDIST_SIZE=", tr->tr_size);
	log_field_u64(&jf, "FDIST_DURATION_USEC=", tr->tr_duration_usec);
	log_field_str(&jf, "FDIST_STATUS=", status);
	if (tr->tr_verified != NULL) {
		log_field_str(&jf, "FDIST_VERIFIED=", tr->tr_verified);
		log_field_str(&jf, "FDIST_SHA256=", tr->tr_sha256);
	}
	if (tr->tr_reason != NULL)
		log_field_str(&jf, "FDIST_REASON=", tr->tr_reason);
	log_field_str(&jf, "FDIST_VERSION=", tr->tr_version);
	if (tr->tr_file_sha256 != NULL)
		log_field_str(&jf, "FDIST_FILE_SHA256=", tr->tr_file_sha256);
	/* ack_host_claim() let only [A-Za-z0-9._-] through: a no-op. */
	if (tr->tr_host_id != NULL) {
		escape_text(host, sizeof(host),
		    (const unsigned char *)tr->tr_host_id,
		    strlen(tr->tr_host_id));
		log_field_str(&jf, "FDIST_HOST_ID=", host);
	}
	if (tr->tr_proxy != NULL)
		log_field_str(&jf, "FDIST_PROXY=", tr->tr_proxy);
	lb = log_field(&jf, file, sizeof(file), "FDIST_FILE=");
	log_puts(&lb, tr->tr_file);
	log_field_end(&jf, &lb);
	if (has_ack) {
		lb = log_field(&jf, ack, sizeof(ack), "FDIST_ACK=");
		log_put_escaped(&lb, tr->tr_ack, tr->tr_acklen);
		log_field_end(&jf, &lb);
	}
	sd_journal_sendv(jf.jf_iov, (int)jf.jf_n);
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
	char		 ts[LOG_TIME_LEN + 1];
	bool		 quiet = outcome == OUTCOME_PROBE;

	if (!log_to_journal()) {
		log_timestamp(ts);
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
	char		 ts[LOG_TIME_LEN + 1];

	if (sf->sf_digest == DIGEST_FAILED) {
		state = "failed";
		prio = LOG_WARNING;
	} else if (sf->sf_digest != DIGEST_READY)
		state = "pending";
	value = state != NULL ? state : sf->sf_sha256;
	if (!log_to_journal()) {
		log_timestamp(ts);
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
