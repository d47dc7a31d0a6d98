/*
 * log.c: daemon messages, and where they and the records (log_record.c)
 * go.
 *
 * Under systemd (stderr is the journal stream, or log=journal) messages
 * go to the journal with structured fields so operators can query them
 * with journalctl; otherwise each is one line on stderr, batched per
 * round of the event loop.  Client bytes reach neither without
 * escape_text().
 */
#include <sys/stat.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "fdistd.h"
#include "log.h"

static void	log_vemit(int, int, const char *, const char *, va_list)
		    __attribute__((format(printf, 4, 0)));

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

void
log_put(struct logbuf *lb, const char *s, size_t len)
{
	size_t	room = lb->lb_size - lb->lb_len;

	if (len > room) {
		len = room;
		lb->lb_cut = true;
	}
	memcpy(lb->lb_buf + lb->lb_len, s, len);
	lb->lb_len += len;
}

void
log_puts(struct logbuf *lb, const char *s)
{
	log_put(lb, s, strlen(s));
}

/* v in decimal; width > 0 pads it with zeros to that many digits. */
void
log_putu(struct logbuf *lb, uint64_t v, size_t width)
{
	char	digits[20];
	size_t	i = sizeof(digits);

	do {
		digits[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0 || sizeof(digits) - i < width);
	log_put(lb, digits + i, sizeof(digits) - i);
}

/* Peer bytes, through escape_text(); a cut may fall before an escape. */
void
log_put_escaped(struct logbuf *lb, const unsigned char *s, size_t len)
{
	size_t	room = lb->lb_size - lb->lb_len;
	size_t	w;

	/* escape_text() ends with a NUL: the byte kept back takes it. */
	w = escape_text(lb->lb_buf + lb->lb_len, room + 1, s, len);
	if (w + 4 > room)	/* it may have stopped short of an escape */
		lb->lb_cut = true;
	lb->lb_len += w;
}

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
void
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

/*
 * A line put together with log_put*() (a record, without printf): the
 * rest of this round's buffer, less a byte for the newline.
 */
struct logbuf
log_line_begin(void)
{
	return ((struct logbuf){ log_buf, log_len, sizeof(log_buf) - 1,
	    false });
}

/*
 * End the line begun: false if it did not fit after this round's lines,
 * which are then written out for the caller to put it again.  A line
 * longer than the whole buffer is kept cut.
 */
bool
log_line_end(struct logbuf *lb)
{
	if (lb->lb_cut && log_len != 0) {
		log_flush();
		return (false);
	}
	lb->lb_buf[lb->lb_len++] = '\n';
	log_len = lb->lb_len;
	return (true);
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

/* Whether records go to the journal, not to stderr. */
bool
log_to_journal(void)
{
	return (log_journal);
}

/*
 * "2026-11-25T10:00:00.123Z" (LOG_TIME_LEN bytes and a NUL): stderr
 * lines carry their own time.  The date part is formatted once a
 * second, not once a line.
 */
void
log_timestamp(char buf[LOG_TIME_LEN + 1])
{
	static time_t	last = -1;
	static char	date[32];
	struct timespec	ts;
	struct tm	tm;
	long		ms;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != last) {
		gmtime_r(&ts.tv_sec, &tm);
		/* Years past 9999 would not fit: cut, not overrun. */
		if (strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) !=
		    LOG_TIME_LEN - 5)
			memset(date, '?', LOG_TIME_LEN - 5);
		last = ts.tv_sec;
	}
	ms = ts.tv_nsec / 1000000;
	memcpy(buf, date, LOG_TIME_LEN - 5);
	buf[LOG_TIME_LEN - 5] = '.';
	buf[LOG_TIME_LEN - 4] = (char)('0' + ms / 100);
	buf[LOG_TIME_LEN - 3] = (char)('0' + ms / 10 % 10);
	buf[LOG_TIME_LEN - 2] = (char)('0' + ms % 10);
	buf[LOG_TIME_LEN - 1] = 'Z';
	buf[LOG_TIME_LEN] = '\0';
}

const char *
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
	char	msg[1024], ts[LOG_TIME_LEN + 1];
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
		log_timestamp(ts);
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
