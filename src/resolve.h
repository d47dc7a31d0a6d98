/*
 * resolve.h: getaddrinfo(3) with a bound on the wait (resolve.c); used
 * by parse.c, so by every program that links it.
 */
#ifndef RESOLVE_H
#define RESOLVE_H

struct addrinfo;

#define RESOLVE_TIMEOUT_MS	10000
#define RESOLVE_TIMEOUT_TEXT	"10 s"

/* resolve_host()'s own errors; getaddrinfo's EAI_ codes are negative. */
#define RESOLVE_ETIMEOUT	1
#define RESOLVE_ESTUCK		2

int		 resolve_host(const char *, const char *,
		    const struct addrinfo *, struct addrinfo **);
const char	*resolve_strerror(int);

#endif /* RESOLVE_H */
