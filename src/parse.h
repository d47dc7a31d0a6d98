/*
 * parse.h: the strict number parsers of the configuration, also used by
 * fdist-fetch's options so both read "30s" or "1G" the same way.  Each
 * returns 0, or -1 with a message in err.
 */
#ifndef PARSE_H
#define PARSE_H

#include <stddef.h>
#include <stdint.h>

int	 parse_duration_ms(const char *, uint64_t *, char *, size_t);
int	 parse_size(const char *, uint64_t *, char *, size_t);
int	 parse_count(const char *, uint64_t *, char *, size_t);

#endif /* PARSE_H */
