/*
 * addr.c: socket addresses: formatting for logs and comparing the
 * addresses of listeners.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <net/if.h>

#include <stdio.h>
#include <string.h>

#include "fdistd.h"

/* v in decimal at p; returns the end. */
static char *
addr_decimal(char *p, unsigned int v)
{
	char	digits[5];	/* a port or an octet */
	size_t	n = 0;

	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	while (n > 0)
		*p++ = digits[--n];
	return (p);
}

/*
 * "192.0.2.1:9000" by hand, not by inet_ntop() and snprintf(): every
 * transfer's record has its peer, and stdio took twice the instructions
 * of the rest of the accept.
 */
static void
addr_format_v4(const unsigned char a[4], in_port_t port, char *buf,
    size_t len)
{
	char		 out[sizeof("255.255.255.255:65535")];
	char		*p = out;
	size_t		 i, n;

	for (i = 0; i < 4; i++) {
		p = addr_decimal(p, a[i]);
		*p++ = i < 3 ? '.' : ':';
	}
	p = addr_decimal(p, ntohs(port));
	if (len == 0)
		return;
	n = (size_t)(p - out);
	if (n > len - 1)
		n = len - 1;	/* cut, as snprintf would */
	memcpy(buf, out, n);
	buf[n] = '\0';
}

/* "192.0.2.1:9000" or "[2001:db8::1]:9000"; IPv4-mapped IPv6 as IPv4. */
void
addr_format(const struct sockaddr *sa, char *buf, size_t len)
{
	const struct sockaddr_in	*sin = (const struct sockaddr_in *)sa;
	const struct sockaddr_in6	*sin6 = (const struct sockaddr_in6 *)sa;
	char				 host[INET6_ADDRSTRLEN];
	char				 ifname[IF_NAMESIZE];

	switch (sa->sa_family) {
	case AF_INET:
		addr_format_v4((const unsigned char *)&sin->sin_addr,
		    sin->sin_port, buf, len);
		break;
	case AF_INET6:
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			addr_format_v4(&sin6->sin6_addr.s6_addr[12],
			    sin6->sin6_port, buf, len);
			break;
		}
		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		if (sin6->sin6_scope_id != 0 &&
		    if_indextoname(sin6->sin6_scope_id, ifname) != NULL)
			snprintf(buf, len, "[%s%%%s]:%u", host, ifname,
			    ntohs(sin6->sin6_port));
		else
			snprintf(buf, len, "[%s]:%u", host,
			    ntohs(sin6->sin6_port));
		break;
	default:
		snprintf(buf, len, "(family %d)", sa->sa_family);
		break;
	}
}

static in_port_t
addr_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (((const struct sockaddr_in *)sa)->sin_port);
	return (((const struct sockaddr_in6 *)sa)->sin6_port);
}

/* Same family, address, scope and port. */
bool
addr_equal(const struct sockaddr *a, const struct sockaddr *b)
{
	const struct sockaddr_in6	*a6 = (const struct sockaddr_in6 *)a;
	const struct sockaddr_in6	*b6 = (const struct sockaddr_in6 *)b;

	if (a->sa_family != b->sa_family || addr_port(a) != addr_port(b))
		return (false);
	if (a->sa_family == AF_INET)
		return (((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		    ((const struct sockaddr_in *)b)->sin_addr.s_addr);
	return (memcmp(&a6->sin6_addr, &b6->sin6_addr,
	    sizeof(a6->sin6_addr)) == 0 &&
	    a6->sin6_scope_id == b6->sin6_scope_id);
}

/* 0.0.0.0 or [::]. */
static bool
addr_is_wildcard(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (((const struct sockaddr_in *)sa)->sin_addr.s_addr ==
		    htonl(INADDR_ANY));
	return (IN6_IS_ADDR_UNSPECIFIED(
	    &((const struct sockaddr_in6 *)sa)->sin6_addr));
}

/*
 * Whether two listeners could not both bind: the same port and family
 * with one of them on the wildcard address.  (IPv6 listeners are
 * IPv6-only, so [::] does not collide with 0.0.0.0.)
 */
bool
addr_overlaps(const struct sockaddr *a, const struct sockaddr *b)
{
	if (addr_equal(a, b))
		return (true);
	if (a->sa_family != b->sa_family || addr_port(a) != addr_port(b))
		return (false);
	return (addr_is_wildcard(a) || addr_is_wildcard(b));
}
