/*
 * parse.h: the strict parsers of the configuration, also used by
 * fdist-fetch and the load client so all read "30s", "1G" or
 * "[::1]:9000" the same way.  The number parsers return 0, or -1 with a
 * message in err.
 */
#ifndef PARSE_H
#define PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What parse_host_port() found wrong. */
#define PARSE_HP_FORM		(-1)	/* not HOST:PORT or [IPV6]:PORT */
#define PARSE_HP_BARE_V6	(-2)	/* an IPv6 address without brackets */
#define PARSE_HP_PORT		(-3)	/* the port is not 1 to 65535 */
#define PARSE_HP_LONG		(-4)	/* the host does not fit the buffer */

int	 parse_duration_ms(const char *, uint64_t *, char *, size_t);
int	 parse_size(const char *, uint64_t *, char *, size_t);
int	 parse_count(const char *, uint64_t *, char *, size_t);
int	 parse_host_port(const char *, char *, size_t, uint16_t *, bool *);

#endif /* PARSE_H */
