/*
 * loadgen_parse.c: strict parsers for fdist-loadgen's arguments.  A
 * benchmark run with a mistyped number is worse than no run, so every
 * value is checked whole and in range, and a bad one names its option.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loadgen.h"
#include "parse.h"

static const char *lg_parse_names[LG_NBEHAVIOURS] = {
	[LG_NORMAL] = "normal",
	[LG_NEVER_ACK] = "never-ack",
	[LG_CLOSE_NO_ACK] = "close-no-ack",
	[LG_RESET] = "reset",
	[LG_STALL] = "stall",
	[LG_SLOW] = "slow",
	[LG_GARBAGE] = "garbage",
	[LG_EARLY_ACK] = "early-ack",
};

const char *
lg_behaviour_name(enum lg_behaviour b)
{
	return (lg_parse_names[b]);
}

/* Digits only: strtoull alone would take signs, spaces and "0x". */
static int
lg_parse_digits(const char *s, char **end, uint64_t *out)
{
	unsigned long long	n;

	if (*s < '0' || *s > '9')
		return (-1);
	errno = 0;
	n = strtoull(s, end, 10);
	if (errno != 0)
		return (-1);
	*out = n;
	return (0);
}

/* A whole number from min to max, read as the daemon reads its counts. */
int
lg_parse_count(const char *opt, const char *s, uint64_t min, uint64_t max,
    uint64_t *out)
{
	char		 err[128];
	uint64_t	 n;

	if (parse_count(s, &n, err, sizeof(err)) == -1 || n < min || n > max) {
		fprintf(stderr, "%s: %s: %s must be a number from %llu to "
		    "%llu\n", LG_PROGNAME, s, opt, (unsigned long long)min,
		    (unsigned long long)max);
		return (-1);
	}
	*out = n;
	return (0);
}

/* Bytes, with an optional binary K, M or G, read as the daemon does. */
int
lg_parse_size(const char *opt, const char *s, uint64_t *out)
{
	char	err[128];

	if (parse_size(s, out, err, sizeof(err)) == -1) {
		fprintf(stderr, "%s: %s: %s\n", LG_PROGNAME, opt, err);
		return (-1);
	}
	return (0);
}

/* Seconds with up to three decimals ("2", "0.5"), more than zero. */
int
lg_parse_seconds(const char *opt, const char *s, int64_t *out_ns)
{
	char		*end;
	uint64_t	 whole, ms = 0;
	int		 digits = 0;

	if (lg_parse_digits(s, &end, &whole) == -1 || whole > 1000000)
		goto bad;
	if (*end == '.') {
		for (end++; *end >= '0' && *end <= '9'; end++) {
			if (++digits > 3)
				goto bad;
			ms = ms * 10 + (uint64_t)(*end - '0');
		}
		if (digits == 0)
			goto bad;
		for (; digits < 3; digits++)
			ms *= 10;
	}
	if (*end != '\0' || (whole == 0 && ms == 0))
		goto bad;
	*out_ns = (int64_t)whole * LG_NS + (int64_t)ms * 1000000;
	return (0);
bad:
	fprintf(stderr, "%s: %s: %s must be seconds from 0.001 to 1000000, "
	    "with at most three decimals\n", LG_PROGNAME, s, opt);
	return (-1);
}

/* A numeric address: IPv4, IPv6, or IPv6 in brackets. */
static int
lg_parse_host(const char *host, struct lg_addr *a)
{
	struct sockaddr_in	*sin = (struct sockaddr_in *)&a->a_ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&a->a_ss;
	char			 buf[INET6_ADDRSTRLEN];
	size_t			 len = strlen(host);

	if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
		host++;
		len -= 2;
	}
	if (len == 0 || len >= sizeof(buf))
		return (-1);
	memcpy(buf, host, len);
	buf[len] = '\0';
	memset(a, 0, sizeof(*a));
	if (inet_pton(AF_INET, buf, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		a->a_len = sizeof(*sin);
		return (0);
	}
	if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		a->a_len = sizeof(*sin6);
		return (0);
	}
	return (-1);
}

/* HOST:PORT or [V6]:PORT, numeric: a load test must not wait on DNS. */
int
lg_parse_target(const char *s, struct lg_addr *a)
{
	char		host[INET6_ADDRSTRLEN];
	uint16_t	port;
	bool		bracketed;

	if (parse_host_port(s, host, sizeof(host), &port, &bracketed) != 0 ||
	    lg_parse_host(host, a) == -1 ||
	    (bracketed && a->a_ss.ss_family != AF_INET6)) {
		fprintf(stderr, "%s: %s: --connect takes IPV4:PORT or "
		    "[IPV6]:PORT\n", LG_PROGNAME, s);
		return (-1);
	}
	if (a->a_ss.ss_family == AF_INET)
		((struct sockaddr_in *)&a->a_ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)&a->a_ss)->sin6_port = htons(port);
	return (0);
}

/* A source address without a port: the kernel picks one per connect. */
int
lg_parse_bind(const char *s, struct lg_addr *a)
{
	if (lg_parse_host(s, a) == -1) {
		fprintf(stderr, "%s: %s: --bind takes a numeric IPv4 or IPv6 "
		    "address\n", LG_PROGNAME, s);
		return (-1);
	}
	return (0);
}

static int
lg_parse_xdigit(char ch)
{
	if (ch >= '0' && ch <= '9')
		return (ch - '0');
	if (ch >= 'a' && ch <= 'f')
		return (ch - 'a' + 10);
	if (ch >= 'A' && ch <= 'F')
		return (ch - 'A' + 10);
	return (-1);
}

/* Exactly 64 hex digits. */
int
lg_parse_sha256(const char *s, unsigned char *md)
{
	int	hi, lo;
	size_t	i;

	if (strlen(s) != LG_SHA256_LEN * 2)
		goto bad;
	for (i = 0; i < LG_SHA256_LEN; i++) {
		hi = lg_parse_xdigit(s[2 * i]);
		lo = lg_parse_xdigit(s[2 * i + 1]);
		if (hi == -1 || lo == -1)
			goto bad;
		md[i] = (unsigned char)(hi << 4 | lo);
	}
	return (0);
bad:
	fprintf(stderr, "%s: %s: --expect-sha256 takes 64 hex digits\n",
	    LG_PROGNAME, s);
	return (-1);
}

/* NAME=PERCENT[,...]; the percentages must add up to 100. */
int
lg_parse_mix(const char *spec, unsigned int *mix)
{
	char		 item[64], *eq;
	const char	*p = spec, *comma;
	size_t		 len;
	uint64_t	 pct;
	unsigned int	 sum = 0;
	bool		 seen[LG_NBEHAVIOURS] = { false };
	int		 b;

	memset(mix, 0, sizeof(*mix) * LG_NBEHAVIOURS);
	for (;;) {
		comma = strchr(p, ',');
		len = comma != NULL ? (size_t)(comma - p) : strlen(p);
		if (len == 0 || len >= sizeof(item))
			goto bad;
		memcpy(item, p, len);
		item[len] = '\0';
		if ((eq = strchr(item, '=')) == NULL)
			goto bad;
		*eq++ = '\0';
		for (b = 0; b < LG_NBEHAVIOURS; b++)
			if (strcmp(item, lg_parse_names[b]) == 0)
				break;
		if (b == LG_NBEHAVIOURS) {
			fprintf(stderr, "%s: --mix: unknown behaviour \"%s\"\n",
			    LG_PROGNAME, item);
			return (-1);
		}
		if (seen[b]) {
			fprintf(stderr, "%s: --mix: %s given twice\n",
			    LG_PROGNAME, item);
			return (-1);
		}
		seen[b] = true;
		if (lg_parse_count("--mix percentage", eq, 0, 100, &pct) == -1)
			return (-1);
		mix[b] = (unsigned int)pct;
		sum += (unsigned int)pct;
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	if (sum != 100) {
		fprintf(stderr, "%s: --mix: percentages add up to %u, "
		    "not 100\n", LG_PROGNAME, sum);
		return (-1);
	}
	return (0);
bad:
	fprintf(stderr, "%s: %s: --mix takes NAME=PERCENT[,NAME=PERCENT...]\n",
	    LG_PROGNAME, spec);
	return (-1);
}

/*
 * The ack text with \0 \n \r \t \\ and \xHH escapes.  A NUL ends it
 * unless it already ends in NUL or LF, so "--ack 'OK\n'" sends "OK\n".
 */
int
lg_parse_ack(const char *s, char *buf, size_t size, size_t *lenp)
{
	size_t	len = 0;
	int	hi, lo;
	char	ch;

	while (*s != '\0') {
		if (len + 2 > size)
			goto bad;
		if ((ch = *s++) != '\\') {
			buf[len++] = ch;
			continue;
		}
		switch ((ch = *s++)) {
		case '0':	buf[len++] = '\0'; break;
		case 'n':	buf[len++] = '\n'; break;
		case 'r':	buf[len++] = '\r'; break;
		case 't':	buf[len++] = '\t'; break;
		case '\\':	buf[len++] = '\\'; break;
		case 'x':
			if ((hi = lg_parse_xdigit(s[0])) == -1 ||
			    (lo = lg_parse_xdigit(s[1])) == -1)
				goto bad;
			buf[len++] = (char)(hi << 4 | lo);
			s += 2;
			break;
		default:
			goto bad;
		}
	}
	if (len == 0 || (buf[len - 1] != '\0' && buf[len - 1] != '\n'))
		buf[len++] = '\0';
	*lenp = len;
	return (0);
bad:
	fprintf(stderr, "%s: --ack: too long (at most %zu bytes) or a bad "
	    "escape (\\0 \\n \\r \\t \\\\ \\xHH)\n", LG_PROGNAME, size - 2);
	return (-1);
}
