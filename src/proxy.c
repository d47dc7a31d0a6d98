/*
 * proxy.c: the PROXY protocol header a load balancer (HAProxy's
 * send-proxy and send-proxy-v2, IPVS setups) puts before a client's
 * bytes, as HAProxy's proxy-protocol.txt specifies it: version 1, one
 * line of text of at most 107 bytes with its CRLF, and version 2, a
 * 16-byte binary block and the length it announces.
 *
 * Pure functions, bytes in and a result out: the caller feeds whatever
 * it has so far and learns whether the header is complete (and how long
 * it is), needs more bytes (all of them are then still header), or can
 * never be one.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <string.h>

#include "fdistd.h"

#define PROXY_V1_MAX		107	/* with the CRLF */
#define PROXY_V2_FIXED		16

static const unsigned char proxy_v1_sig[] = "PROXY ";
static const unsigned char proxy_v2_sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};

/* Does buf (len bytes) start like sig, as far as it goes? */
static bool
proxy_prefix(const unsigned char *buf, size_t len, const unsigned char *sig,
    size_t siglen)
{
	return (memcmp(buf, sig, len < siglen ? len : siglen) == 0);
}

/* A decimal without leading zeros, at most max; *p moves past it. */
static bool
proxy_v1_number(const char **p, const char *end, unsigned long max,
    unsigned long *val)
{
	const char	*s = *p;
	unsigned long	 n = 0;

	if (s == end || *s < '0' || *s > '9')
		return (false);
	if (*s == '0' && s + 1 < end && s[1] >= '0' && s[1] <= '9')
		return (false);
	while (s < end && *s >= '0' && *s <= '9') {
		n = n * 10 + (unsigned long)(*s - '0');
		if (n > max)
			return (false);
		s++;
	}
	*p = s;
	*val = n;
	return (true);
}

/* The next field, up to a space or the end; false if empty or too long. */
static bool
proxy_v1_field(const char **p, const char *end, char *buf, size_t len)
{
	const char	*s = *p;
	size_t		 n;

	while (s < end && *s != ' ')
		s++;
	n = (size_t)(s - *p);
	if (n == 0 || n >= len)
		return (false);
	memcpy(buf, *p, n);
	buf[n] = '\0';
	*p = s;
	return (true);
}

/* A canonical dotted quad: four numbers 0 to 255, no leading zeros. */
static bool
proxy_v1_ipv4(const char *s, struct in_addr *in)
{
	const char	*end = s + strlen(s);
	unsigned long	 b;
	uint32_t	 a = 0;
	int		 i;

	for (i = 0; i < 4; i++) {
		if (i > 0 && (s == end || *s++ != '.'))
			return (false);
		if (!proxy_v1_number(&s, end, 255, &b))
			return (false);
		a = a << 8 | (uint32_t)b;
	}
	if (s != end)
		return (false);
	in->s_addr = htonl(a);
	return (true);
}

/*
 * The specification says hex groups, but a dotted IPv4 tail is taken
 * too: HAProxy prints an IPv4-mapped client with inet_ntop(), as
 * "::ffff:192.0.2.7".
 */
static bool
proxy_v1_ipv6(const char *s, struct in6_addr *in6)
{
	return (inet_pton(AF_INET6, s, in6) == 1);
}

/* One address of the family, into ss with the port set later. */
static bool
proxy_v1_addr(const char **p, const char *end, int family,
    struct sockaddr_storage *ss)
{
	char			 buf[INET6_ADDRSTRLEN + 1];
	struct sockaddr_in	*sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)ss;

	if (!proxy_v1_field(p, end, buf, sizeof(buf)))
		return (false);
	memset(ss, 0, sizeof(*ss));
	ss->ss_family = (sa_family_t)family;
	if (family == AF_INET)
		return (proxy_v1_ipv4(buf, &sin->sin_addr));
	return (proxy_v1_ipv6(buf, &sin6->sin6_addr));
}

static void
proxy_set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

static bool
proxy_space(const char **p, const char *end)
{
	if (*p == end || **p != ' ')
		return (false);
	(*p)++;
	return (true);
}

/* "PROXY TCP4 src dst sport dport\r\n" in line (len bytes, no CRLF). */
static enum proxy_result
proxy_v1_line(const char *line, size_t len, struct proxy_header *ph)
{
	const char	*p = line + sizeof(proxy_v1_sig) - 1;
	const char	*end = line + len;
	char		 proto[8];
	unsigned long	 sport, dport;
	int		 family;

	if (!proxy_v1_field(&p, end, proto, sizeof(proto)))
		return (PROXY_MALFORMED);
	if (strcmp(proto, "UNKNOWN") == 0) {
		/* Whatever follows is to be ignored. */
		ph->ph_local = true;
		return (PROXY_OK);
	}
	if (strcmp(proto, "TCP4") == 0)
		family = AF_INET;
	else if (strcmp(proto, "TCP6") == 0)
		family = AF_INET6;
	else
		return (PROXY_MALFORMED);
	if (!proxy_space(&p, end) ||
	    !proxy_v1_addr(&p, end, family, &ph->ph_src) ||
	    !proxy_space(&p, end) ||
	    !proxy_v1_addr(&p, end, family, &ph->ph_dst) ||
	    !proxy_space(&p, end) ||
	    !proxy_v1_number(&p, end, 65535, &sport) ||
	    !proxy_space(&p, end) ||
	    !proxy_v1_number(&p, end, 65535, &dport) || p != end)
		return (PROXY_MALFORMED);
	proxy_set_port(&ph->ph_src, (uint16_t)sport);
	proxy_set_port(&ph->ph_dst, (uint16_t)dport);
	ph->ph_srclen = family == AF_INET ? sizeof(struct sockaddr_in) :
	    sizeof(struct sockaddr_in6);
	return (PROXY_OK);
}

static enum proxy_result
proxy_v1(const unsigned char *buf, size_t len, struct proxy_header *ph)
{
	const unsigned char	*lf;
	size_t			 n = len < PROXY_V1_MAX ? len : PROXY_V1_MAX;
	size_t			 i;

	ph->ph_version = 1;
	/* Printable US-ASCII only, up to the CRLF. */
	for (i = 0; i < n && buf[i] != '\r'; i++) {
		if (buf[i] < 0x20 || buf[i] > 0x7e)
			return (PROXY_MALFORMED);
	}
	if (i == n)
		return (len >= PROXY_V1_MAX ? PROXY_OVERSIZED : PROXY_MORE);
	if (i + 1 == n)
		return (len >= PROXY_V1_MAX ? PROXY_OVERSIZED : PROXY_MORE);
	lf = buf + i + 1;
	if (*lf != '\n')
		return (PROXY_MALFORMED);
	ph->ph_len = i + 2;
	return (proxy_v1_line((const char *)buf, i, ph));
}

/* The address block of a version 2 PROXY command. */
static enum proxy_result
proxy_v2_addr(const unsigned char *a, size_t len, unsigned char fam,
    struct proxy_header *ph)
{
	struct sockaddr_in	*src4 = (struct sockaddr_in *)&ph->ph_src;
	struct sockaddr_in	*dst4 = (struct sockaddr_in *)&ph->ph_dst;
	struct sockaddr_in6	*src6 = (struct sockaddr_in6 *)&ph->ph_src;
	struct sockaddr_in6	*dst6 = (struct sockaddr_in6 *)&ph->ph_dst;
	unsigned int		 af = fam >> 4, proto = fam & 0x0f;

	if (af > 3 || proto > 2)
		return (PROXY_MALFORMED);
	/*
	 * UNSPEC, UNIX and datagrams carry no TCP peer: as the
	 * specification allows, fall back to the real connection.  The
	 * length must still hold the addresses the family announces.
	 */
	if ((af == 1 && len < 12) || (af == 2 && len < 36) ||
	    (af == 3 && len < 216))
		return (PROXY_MALFORMED);
	if (af == 0 || af == 3 || proto != 1) {
		ph->ph_local = true;
		return (PROXY_OK);
	}
	memset(&ph->ph_src, 0, sizeof(ph->ph_src));
	memset(&ph->ph_dst, 0, sizeof(ph->ph_dst));
	if (af == 1) {
		src4->sin_family = dst4->sin_family = AF_INET;
		memcpy(&src4->sin_addr, a, 4);
		memcpy(&dst4->sin_addr, a + 4, 4);
		memcpy(&src4->sin_port, a + 8, 2);
		memcpy(&dst4->sin_port, a + 10, 2);
		ph->ph_srclen = sizeof(*src4);
	} else {
		src6->sin6_family = dst6->sin6_family = AF_INET6;
		memcpy(&src6->sin6_addr, a, 16);
		memcpy(&dst6->sin6_addr, a + 16, 16);
		memcpy(&src6->sin6_port, a + 32, 2);
		memcpy(&dst6->sin6_port, a + 34, 2);
		ph->ph_srclen = sizeof(*src6);
	}
	return (PROXY_OK);
}

static enum proxy_result
proxy_v2(const unsigned char *buf, size_t len, struct proxy_header *ph)
{
	size_t	alen;

	ph->ph_version = 2;
	if (len < 13)
		return (PROXY_MORE);
	/* Version 2, command LOCAL (0) or PROXY (1); nothing else. */
	if ((buf[12] & 0xf0) != 0x20 || (buf[12] & 0x0f) > 1)
		return (PROXY_MALFORMED);
	if (len < PROXY_V2_FIXED)
		return (PROXY_MORE);
	alen = (size_t)buf[14] << 8 | buf[15];
	if (PROXY_V2_FIXED + alen > PROXY_HEADER_MAX)
		return (PROXY_OVERSIZED);
	if (len < PROXY_V2_FIXED + alen)
		return (PROXY_MORE);
	ph->ph_len = PROXY_V2_FIXED + alen;
	if ((buf[12] & 0x0f) == 0) {
		/* A health check: ignore the family and addresses. */
		ph->ph_local = true;
		ph->ph_check = true;
		return (PROXY_OK);
	}
	/* The TLVs after the addresses are skipped with them. */
	return (proxy_v2_addr(buf + PROXY_V2_FIXED, alen, buf[13], ph));
}

/*
 * Parse the first len bytes of a connection.  PROXY_MORE means that the
 * header, if it is one, is longer than len; PROXY_OK fills in ph, whose
 * ph_len bytes of buf are the whole header.
 */
enum proxy_result
proxy_parse(const unsigned char *buf, size_t len, struct proxy_header *ph)
{
	memset(ph, 0, sizeof(*ph));
	if (len == 0)
		return (PROXY_MORE);
	if (proxy_prefix(buf, len, proxy_v2_sig, sizeof(proxy_v2_sig))) {
		if (len < sizeof(proxy_v2_sig))
			return (PROXY_MORE);
		return (proxy_v2(buf, len, ph));
	}
	if (proxy_prefix(buf, len, proxy_v1_sig, sizeof(proxy_v1_sig) - 1)) {
		if (len < sizeof(proxy_v1_sig) - 1)
			return (PROXY_MORE);
		return (proxy_v1(buf, len, ph));
	}
	return (PROXY_MALFORMED);
}

