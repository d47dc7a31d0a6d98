/*
 * fuzz_record.c: the transfer record as log_record.c puts it together by
 * hand, against the same record formatted here with snprintf() from
 * fdistd(8)'s description: the stderr line and every journal field, byte
 * for byte; and addr_format() against inet_ntop() and snprintf(), cut to
 * any buffer length; and records too long for two to fit a round's
 * buffer, each whole.  (The ack's escaping is fuzz_escape's; here it is
 * escape_text() on both sides.)
 *
 * Input: a flags byte, a status byte, three 8-byte numbers, four address
 * bytes, two port bytes, a length byte; then NUL-separated strings
 * (share, peer, proxy, reason, verified, sha256, version, file_sha256,
 * host id, file) and the rest as the ack.
 */
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "addr.h"
#include "fdistd.h"
#include "fuzz.h"

int	fdistd_verbose;

#define OUT_MAX	(2 * (ESCAPE_BUFSIZE(ACK_MAX_LIMIT) + 65536))
static char	journal[OUT_MAX];
static size_t	journal_len;

/* The journal, as log_record.c calls it: its fields, a line each. */
int
sd_journal_sendv(const struct iovec *iov, int n)
{
	int	i;

	journal_len = 0;
	for (i = 0; i < n; i++) {
		FUZZ_CHECK(journal_len + iov[i].iov_len + 1 <= sizeof(journal),
		    "fields too long");
		memcpy(journal + journal_len, iov[i].iov_base, iov[i].iov_len);
		journal_len += iov[i].iov_len;
		journal[journal_len++] = '\n';
	}
	return (0);
}

static const char *
take(const uint8_t **p, const uint8_t *end)
{
	const uint8_t	*nul = memchr(*p, '\0', (size_t)(end - *p));
	const char	*s = (const char *)*p;

	if (nul == NULL)
		return (NULL);
	*p = nul + 1;
	return (s);
}

static uint64_t
take_u64(const uint8_t *p)
{
	uint64_t	v = 0;
	int		i;

	for (i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return (v);
}

static const char *const statuses[] = {
	"acked", "ack-mismatch", "no-ack", "ack-timeout", "aborted",
	"send-timeout", "file-changed", "shutdown", "denied", "busy",
	"proxy-error", "probe",
};

/* The stderr line after its timestamp, as printf would write it. */
static int
ref_line(char *out, size_t len, const struct transfer_record *tr,
    const char *ack)
{
	bool	quiet = tr->tr_status == OUTCOME_ACKED ||
		    tr->tr_status == OUTCOME_PROBE;

	return (snprintf(out, len, " %s: transfer share=%s peer=%s%s%s "
	    "file=\"%s\" bytes=%" PRIu64 " size=%" PRIu64 " duration_usec=%"
	    PRIu64 " status=%s%s%s%s%s%s%s%s%s%s%s version=%s%s%s%s%s\n",
	    quiet ? "info" : "warning", tr->tr_share, tr->tr_peer,
	    tr->tr_proxy ? " proxy=" : "", tr->tr_proxy ? tr->tr_proxy : "",
	    tr->tr_file, tr->tr_bytes, tr->tr_size, tr->tr_duration_usec,
	    statuses[tr->tr_status],
	    tr->tr_reason ? " reason=\"" : "",
	    tr->tr_reason ? tr->tr_reason : "", tr->tr_reason ? "\"" : "",
	    ack ? " ack=\"" : "", ack ? ack : "", ack ? "\"" : "",
	    tr->tr_verified ? " verified=" : "",
	    tr->tr_verified ? tr->tr_verified : "",
	    tr->tr_verified ? " sha256=" : "",
	    tr->tr_verified ? tr->tr_sha256 : "", tr->tr_version,
	    tr->tr_file_sha256 ? " file_sha256=" : "",
	    tr->tr_file_sha256 ? tr->tr_file_sha256 : "",
	    tr->tr_host_id ? " host_id=" : "",
	    tr->tr_host_id ? tr->tr_host_id : ""));
}

/* A journal field as printf would write it, cut as the record's are. */
static size_t
ref_field(char *out, size_t len, size_t cut, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static size_t
ref_field(char *out, size_t len, size_t cut, const char *fmt, ...)
{
	va_list	ap;
	int	w;

	va_start(ap, fmt);
	w = vsnprintf(out, len < cut ? len : cut, fmt, ap);
	va_end(ap);
	FUZZ_CHECK(w >= 0 && len > 1, "reference field failed");
	if ((size_t)w > cut - 1)
		w = (int)(cut - 1);
	if ((size_t)w + 1 > len)
		w = (int)len - 1;
	out[w] = '\n';
	return ((size_t)w + 1);
}

/* Every field, in log_transfer()'s order, a line each. */
static size_t
ref_journal(char *out, size_t len, const struct transfer_record *tr,
    const char *ack)
{
	const char	*status = statuses[tr->tr_status];
	char		 msgack[201];
	size_t		 o = 0;
	bool		 quiet = tr->tr_status == OUTCOME_ACKED ||
			    tr->tr_status == OUTCOME_PROBE;

	escape_text(msgack, sizeof(msgack), tr->tr_ack, tr->tr_acklen);
	if (tr->tr_reason != NULL)
		o += ref_field(out + o, len - o, 512, "MESSAGE=%s [%s] %s: "
		    "refused (%s)", tr->tr_peer, tr->tr_share, status,
		    tr->tr_reason);
	else
		o += ref_field(out + o, len - o, 512, "MESSAGE=%s [%s] %s: %"
		    PRIu64 "/%" PRIu64 " bytes in %" PRIu64 ".%03" PRIu64
		    " s%s%s%s", tr->tr_peer, tr->tr_share, status,
		    tr->tr_bytes, tr->tr_size, tr->tr_duration_usec / 1000000,
		    tr->tr_duration_usec / 1000 % 1000,
		    ack ? ", ack \"" : "", ack ? msgack : "", ack ? "\"" : "");
	o += ref_field(out + o, len - o, 160,
	    "MESSAGE_ID=68da270df4994c348ba467a048bebbc3");
	o += ref_field(out + o, len - o, 160, "PRIORITY=%d",
	    quiet ? LOG_INFO : LOG_WARNING);
	o += ref_field(out + o, len - o, 160, "SYSLOG_IDENTIFIER=fdistd");
	o += ref_field(out + o, len - o, 160, "FDIST_SHARE=%s", tr->tr_share);
	o += ref_field(out + o, len - o, 160, "FDIST_PEER=%s", tr->tr_peer);
	o += ref_field(out + o, len - o, 160, "FDIST_BYTES=%" PRIu64,
	    tr->tr_bytes);
	o += ref_field(out + o, len - o, 160, "FDIST_SIZE=%" PRIu64,
	    tr->tr_size);
	o += ref_field(out + o, len - o, 160, "FDIST_DURATION_USEC=%" PRIu64,
	    tr->tr_duration_usec);
	o += ref_field(out + o, len - o, 160, "FDIST_STATUS=%s", status);
	if (tr->tr_verified != NULL) {
		o += ref_field(out + o, len - o, 160, "FDIST_VERIFIED=%s",
		    tr->tr_verified);
		o += ref_field(out + o, len - o, 160, "FDIST_SHA256=%s",
		    tr->tr_sha256);
	}
	if (tr->tr_reason != NULL)
		o += ref_field(out + o, len - o, 160, "FDIST_REASON=%s",
		    tr->tr_reason);
	o += ref_field(out + o, len - o, 160, "FDIST_VERSION=%s",
	    tr->tr_version);
	if (tr->tr_file_sha256 != NULL)
		o += ref_field(out + o, len - o, 160, "FDIST_FILE_SHA256=%s",
		    tr->tr_file_sha256);
	if (tr->tr_host_id != NULL)
		o += ref_field(out + o, len - o, 160, "FDIST_HOST_ID=%s",
		    tr->tr_host_id);
	if (tr->tr_proxy != NULL)
		o += ref_field(out + o, len - o, 160, "FDIST_PROXY=%s",
		    tr->tr_proxy);
	o += ref_field(out + o, len - o, sizeof("FDIST_FILE=") +
	    ESCAPE_BUFSIZE(PATH_MAX), "FDIST_FILE=%s", tr->tr_file);
	if (ack != NULL)
		o += ref_field(out + o, len - o, len, "FDIST_ACK=%s", ack);
	return (o);
}

/*
 * stderr_catch() .. stderr_caught(): what log.c writes to stderr in
 * between (log_flush(), also a flush a full buffer makes), caught in a
 * memory file.  A crash in between reports to that file too: libFuzzer
 * still fails the run and keeps the input, to be run again by hand.
 */
static int	stderr_mem = -1, stderr_saved = -1;

static void
stderr_catch(void)
{
	if (stderr_mem == -1) {
		stderr_mem = memfd_create("fuzz_record", 0);
		stderr_saved = dup(STDERR_FILENO);
		FUZZ_CHECK(stderr_mem != -1 && stderr_saved != -1, "no memfd");
	}
	FUZZ_CHECK(ftruncate(stderr_mem, 0) == 0 &&
	    lseek(stderr_mem, 0, SEEK_SET) == 0 &&
	    dup2(stderr_mem, STDERR_FILENO) != -1, "memfd");
}

static size_t
stderr_caught(char *out, size_t len)
{
	ssize_t	n;

	log_flush();
	FUZZ_CHECK(dup2(stderr_saved, STDERR_FILENO) != -1, "stderr back");
	n = pread(stderr_mem, out, len, 0);
	FUZZ_CHECK(n >= 0 && (size_t)n < len, "read back %zd", n);
	return ((size_t)n);
}

static void
check_addr(const uint8_t a[4], const uint8_t port[2], uint8_t lenb,
    bool mapped)
{
	struct sockaddr_in	sin = { .sin_family = AF_INET };
	struct sockaddr_in6	sin6 = { .sin6_family = AF_INET6 };
	char			got[ADDR_STR_MAX], want[ADDR_STR_MAX];
	char			host[INET_ADDRSTRLEN];
	size_t			len = lenb % (ADDR_STR_MAX + 1);

	memcpy(&sin.sin_addr, a, 4);
	memcpy(&sin.sin_port, port, 2);
	sin6.sin6_addr.s6_addr[10] = sin6.sin6_addr.s6_addr[11] = 0xff;
	memcpy(&sin6.sin6_addr.s6_addr[12], a, 4);
	sin6.sin6_port = sin.sin_port;
	memset(got, 'Z', sizeof(got));
	memset(want, 'Z', sizeof(want));
	addr_format(mapped ? (struct sockaddr *)&sin6 :
	    (struct sockaddr *)&sin, got, len);
	inet_ntop(AF_INET, a, host, sizeof(host));
	snprintf(want, len, "%s:%u", host, ntohs(sin.sin_port));
	FUZZ_CHECK(memcmp(got, want, sizeof(got)) == 0,
	    "addr_format(len %zu) wrote \"%.*s\", not \"%.*s\"", len,
	    (int)strnlen(got, sizeof(got)), got,
	    (int)strnlen(want, sizeof(want)), want);
}

/* Once: every digit count of an octet and of a port, whole and cut. */
static void
check_addr_edges(void)
{
	static const unsigned int	octets[] = { 0, 9, 10, 99, 100, 255 };
	static const unsigned int	ports[] = { 0, 9, 10, 99, 100, 999,
					    1000, 9999, 10000, 65535 };
	static bool			done;
	uint8_t				a[4], port[2];
	size_t				i, j, len;

	if (done)
		return;
	done = true;
	for (i = 0; i < sizeof(octets) / sizeof(octets[0]); i++)
		for (j = 0; j < sizeof(ports) / sizeof(ports[0]); j++)
			for (len = 0; len <= 24; len++) {
				memset(a, (int)octets[i], sizeof(a));
				a[(i + j) % 4] = (uint8_t)octets[j % 6];
				port[0] = (uint8_t)(ports[j] >> 8);
				port[1] = (uint8_t)ports[j];
				check_addr(a, port, (uint8_t)len, len % 2);
			}
}

/*
 * Once: records of the longest ack, escaped at four bytes a byte, do not
 * fit two to a round's buffer; each must come out whole, the round's
 * lines written out before it, not cut.
 */
static void
check_full_round(void)
{
	static unsigned char	 big[ACK_MAX_LIMIT];
	static char		 got[4 * OUT_MAX / 2], want[OUT_MAX / 2];
	static char		 ack[ESCAPE_BUFSIZE(ACK_MAX_LIMIT)];
	static bool		 done;
	struct transfer_record	 tr = {
		.tr_share = "img", .tr_file = "/srv/img", .tr_peer = "[::1]:9",
		.tr_version = "1-2-3-4", .tr_ack = big,
		.tr_acklen = sizeof(big), .tr_ack_bytes = sizeof(big),
	};
	size_t			 i, n, w;

	if (done)
		return;
	done = true;
	memset(big, 0x80, sizeof(big));
	escape_text(ack, sizeof(ack), big, sizeof(big));
	w = (size_t)ref_line(want, sizeof(want), &tr, ack);
	log_init(LOG_STDERR, 0);
	stderr_catch();
	for (i = 0; i < 3; i++)
		log_transfer(&tr);
	n = stderr_caught(got, sizeof(got));
	FUZZ_CHECK(n == 3 * (24 + w), "%zu bytes for 3 long records, not "
	    "3 x %zu", n, 24 + w);
	for (i = 0; i < 3; i++)
		FUZZ_CHECK(memcmp(got + i * (24 + w) + 24, want, w) == 0,
		    "long record %zu differs from printf's", i);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char			 got[OUT_MAX], want[OUT_MAX];
	static char			 ack[ESCAPE_BUFSIZE(ACK_MAX_LIMIT)];
	const char			*s[10];
	const uint8_t			*p = data, *end = data + size;
	struct transfer_record		 tr = { 0 };
	size_t				 i, n, w, acklen;
	uint8_t				 flags;

	if (size < 2 + 24 + 7)
		return (0);
	check_addr_edges();
	check_full_round();
	flags = data[0];
	check_addr(data + 26, data + 30, data[32], flags & 0x80);
	p = data + 33;
	for (i = 0; i < 10; i++)
		if ((s[i] = take(&p, end)) == NULL)
			return (0);
	acklen = (size_t)(end - p);
	if (acklen > ACK_MAX_LIMIT || strlen(s[9]) > PATH_MAX)
		return (0);
	tr.tr_status = (enum outcome)(data[1] % (OUTCOME_PROBE + 1));
	tr.tr_bytes = take_u64(data + 2);
	tr.tr_size = take_u64(data + 10);
	tr.tr_duration_usec = take_u64(data + 18);
	tr.tr_share = s[0];
	tr.tr_peer = s[1];
	tr.tr_proxy = flags & 0x01 ? s[2] : NULL;
	tr.tr_reason = flags & 0x02 ? s[3] : NULL;
	tr.tr_verified = flags & 0x04 ? s[4] : NULL;
	tr.tr_sha256 = s[5];
	tr.tr_version = s[6];
	tr.tr_file_sha256 = flags & 0x08 ? s[7] : NULL;
	tr.tr_host_id = flags & 0x10 ? s[8] : NULL;
	tr.tr_file = s[9];
	tr.tr_ack = p;
	tr.tr_acklen = acklen;
	tr.tr_ack_bytes = flags & 0x20 ? acklen + (flags & 0x40) : 0;
	escape_text(ack, sizeof(ack), tr.tr_ack, tr.tr_acklen);
	/* The host id passes escape_text() unchanged only when it is clean. */
	if (tr.tr_host_id != NULL &&
	    strspn(tr.tr_host_id, "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
	    strlen(tr.tr_host_id))
		tr.tr_host_id = NULL;

	/* stderr: two records in one round, each whole after its time. */
	log_init(LOG_STDERR, 0);
	stderr_catch();
	log_transfer(&tr);
	log_transfer(&tr);
	n = stderr_caught(got, sizeof(got));
	w = (size_t)ref_line(want, sizeof(want), &tr,
	    tr.tr_ack_bytes > 0 ? ack : NULL);
	FUZZ_CHECK(n == 2 * (24 + w), "%zu bytes on stderr, not 2 x %zu", n,
	    24 + w);
	for (i = 0; i < 2; i++) {
		const char	*line = got + i * (24 + w);

		FUZZ_CHECK(line[4] == '-' && line[10] == 'T' &&
		    line[19] == '.' && line[23] == 'Z', "timestamp %.24s",
		    line);
		if (memcmp(line + 24, want, w) != 0) {
			fuzz_hexdump("got", line + 24, w);
			fuzz_hexdump("want", want, w);
		}
		FUZZ_CHECK(memcmp(line + 24, want, w) == 0,
		    "record %zu differs from printf's", i);
	}

	/* The journal's fields. */
	log_init(LOG_JOURNAL, 0);
	log_transfer(&tr);
	w = ref_journal(want, sizeof(want), &tr,
	    tr.tr_ack_bytes > 0 ? ack : NULL);
	if (journal_len != w || memcmp(journal, want, w) != 0) {
		fuzz_hexdump("got", journal, journal_len);
		fuzz_hexdump("want", want, w);
	}
	FUZZ_CHECK(journal_len == w && memcmp(journal, want, w) == 0,
	    "journal fields differ from printf's");
	return (0);
}
