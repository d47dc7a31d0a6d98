/*
 * log.h: what log.c gives log_record.c: the stderr line buffer and the
 * appenders records are put together with.
 */
#ifndef FDISTD_LOG_H
#define FDISTD_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * A buffer log_put*() append to.  They stop at lb_size, which keeps back
 * a byte for the NUL or the newline, and set lb_cut if they had to.
 */
struct logbuf {
	char	*lb_buf;
	size_t	 lb_len;
	size_t	 lb_size;
	bool	 lb_cut;
};

void	 log_put(struct logbuf *, const char *, size_t);
void	 log_puts(struct logbuf *, const char *);
void	 log_putu(struct logbuf *, uint64_t, size_t);
void	 log_put_escaped(struct logbuf *, const unsigned char *, size_t);

struct logbuf log_line_begin(void);
bool	 log_line_end(struct logbuf *);
void	 log_line(const char *, ...) __attribute__((format(printf, 1, 2)));
bool	 log_to_journal(void);

/* "2026-11-25T10:00:00.123Z" */
#define LOG_TIME_LEN	24
void	 log_timestamp(char [LOG_TIME_LEN + 1]);
const char *log_level_name(int);

#endif /* FDISTD_LOG_H */
