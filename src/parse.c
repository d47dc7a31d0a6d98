/*
 * parse.c: strict parsers for configuration values: durations, sizes,
 * counts, listen addresses and share names.  Each one accepts the whole
 * string or rejects it with a message; nothing is silently truncated.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fdistd.h"
#include "resolve.h"

struct unit {
	const char	*u_name;
	uint64_t	 u_factor;
};

static const struct unit duration_units[] = {
	{ "ms", 1 },
	{ "s", 1000 },
	{ "m", 60 * 1000 },
	{ "h", 60 * 60 * 1000 },
	{ "", 1000 },		/* a bare number is in seconds */
	{ NULL, 0 }
};

static const struct unit size_units[] = {
	{ "K", 1024 },
	{ "M", 1024 * 1024 },
	{ "G", 1024 * 1024 * 1024 },
	{ "", 1 },
	{ NULL, 0 }
};

/* Parse leading decimal digits into *value; return the rest, or NULL. */
static const char *
parse_digits(const char *s, uint64_t *value)
{
	char			*end;
	unsigned long long	 v;

	if (!isdigit((unsigned char)*s))
		return (NULL);
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return (NULL);
	*value = v;
	return (end);
}

/* A number followed by one of the units; the unit scales it. */
static int
parse_with_unit(const char *s, const struct unit *units, uint64_t *out,
    const char *what, const char *hint, char *err, size_t errlen)
{
	const struct unit	*u;
	const char		*rest;
	uint64_t		 v;

	if (*s == '\0') {
		snprintf(err, errlen, "empty value (expected a %s)", what);
		return (-1);
	}
	rest = parse_digits(s, &v);
	if (rest == NULL)
		goto bad;
	for (u = units; u->u_name != NULL; u++) {
		if (strcasecmp(rest, u->u_name) != 0)
			continue;
		if (v > UINT64_MAX / u->u_factor)
			goto bad;
		*out = v * u->u_factor;
		return (0);
	}
bad:
	snprintf(err, errlen, "invalid %s '%s' (%s)", what, s, hint);
	return (-1);
}

/* "250ms", "30s", "5m", "1h"; a bare number is seconds. */
int
parse_duration_ms(const char *s, uint64_t *ms, char *err, size_t errlen)
{
	return (parse_with_unit(s, duration_units, ms, "duration",
	    "use a whole number with ms, s, m or h", err, errlen));
}

/* "256", "64K", "10M", "1G": binary multiples. */
int
parse_size(const char *s, uint64_t *bytes, char *err, size_t errlen)
{
	return (parse_with_unit(s, size_units, bytes, "size",
	    "use a whole number, optionally followed by K, M or G", err,
	    errlen));
}

/* A plain whole number. */
int
parse_count(const char *s, uint64_t *n, char *err, size_t errlen)
{
	const char	*rest;

	rest = parse_digits(s, n);
	if (rest == NULL || *rest != '\0') {
		snprintf(err, errlen, "invalid number '%s'", s);
		return (-1);
	}
	return (0);
}

/* A share name: 1 to 63 letters, digits, '-', '_' or '.'. */
int
parse_share_name(const char *s, char *err, size_t errlen)
{
	size_t	i, len = strlen(s);

	if (len == 0 || len >= SHARE_NAME_MAX)
		goto bad;
	for (i = 0; i < len; i++) {
		if (!isalnum((unsigned char)s[i]) && s[i] != '-' &&
		    s[i] != '_' && s[i] != '.')
			goto bad;
	}
	return (0);
bad:
	snprintf(err, errlen, "invalid share name '%s' (use 1 to %d letters, "
	    "digits, '-', '_' or '.')", s, SHARE_NAME_MAX - 1);
	return (-1);
}

/* Append one address to the list, unless the list is full. */
static int
listen_add(struct listen_addr *list, size_t max, size_t *n,
    const struct sockaddr *sa, socklen_t len, char *err, size_t errlen)
{
	if (*n >= max) {
		snprintf(err, errlen, "too many listen addresses (at most %zu "
		    "per share)", max);
		return (-1);
	}
	memset(&list[*n], 0, sizeof(list[*n]));
	memcpy(&list[*n].la_ss, sa, len);
	list[*n].la_len = len;
	(*n)++;
	return (0);
}

/* "*" stands for every IPv4 and every IPv6 address. */
static int
listen_add_wildcard(struct listen_addr *list, size_t max, size_t *n,
    in_port_t port, char *err, size_t errlen)
{
	struct sockaddr_in	sin;
	struct sockaddr_in6	sin6;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = port;
	sin.sin_addr.s_addr = htonl(INADDR_ANY);
	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_port = port;
	sin6.sin6_addr = in6addr_any;
	if (listen_add(list, max, n, (struct sockaddr *)&sin, sizeof(sin),
	    err, errlen) == -1)
		return (-1);
	return (listen_add(list, max, n, (struct sockaddr *)&sin6,
	    sizeof(sin6), err, errlen));
}

/* Whether list[from..to) already holds the address. */
static bool
listen_seen(const struct listen_addr *list, size_t from, size_t to,
    const struct sockaddr *sa)
{
	size_t	i;

	for (i = from; i < to; i++) {
		if (addr_equal((const struct sockaddr *)&list[i].la_ss, sa))
			return (true);
	}
	return (false);
}

/*
 * Only the dotted-quad form is an IPv4 address: getaddrinfo would also
 * take what inet_aton(3) takes, 127.1, 0x7f.1, 0xA.0.0.1 or 017.0.0.1
 * (octal), which nobody means.
 */
static bool
listen_odd_ipv4(const char *host)
{
	struct in_addr	in4;

	return (inet_aton(host, &in4) == 1 &&
	    inet_pton(AF_INET, host, &in4) != 1);
}

/*
 * A zone on an address that is not link-local: the kernel ignores it at
 * bind(), so "[2001:db8::1%eth0]" and "[2001:db8::1%eth1]" would pass the
 * collision check and then collide.
 */
static bool
listen_stray_zone(const struct sockaddr_in6 *sin6)
{
	return (sin6->sin6_scope_id != 0 &&
	    !IN6_IS_ADDR_LINKLOCAL(&sin6->sin6_addr) &&
	    !IN6_IS_ADDR_MC_LINKLOCAL(&sin6->sin6_addr));
}

/* Resolve a host (numeric unless resolve is set) and add every address. */
static int
listen_add_host(struct listen_addr *list, size_t max, size_t *n,
    const char *host, in_port_t port, bool numeric, bool resolve,
    char *err, size_t errlen)
{
	struct addrinfo		 hints, *res, *ai;
	size_t			 first = *n;
	int			 rv;

	if (!numeric && listen_odd_ipv4(host)) {
		snprintf(err, errlen, "'%s' is not an IPv4 address (use four "
		    "decimal numbers, like 192.0.2.7)", host);
		return (-1);
	}

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if (numeric || !resolve)
		hints.ai_flags |= AI_NUMERICHOST;
	rv = resolve_host(host, "1", &hints, &res);
	if (rv != 0) {
		if (numeric)
			snprintf(err, errlen, "'%s' is not a numeric IPv6 "
			    "address", host);
		else if (!resolve)
			snprintf(err, errlen, "'%s' is not a numeric address",
			    host);
		else {
			snprintf(err, errlen, "cannot resolve '%s': %s", host,
			    resolve_strerror(rv));
			if (rv == EAI_AGAIN || rv == EAI_MEMORY ||
			    rv == RESOLVE_ETIMEOUT || rv == RESOLVE_ESTUCK)
				return (PARSE_LISTEN_RETRY);
		}
		return (-1);
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET && numeric) {
			snprintf(err, errlen, "'%s' is not an IPv6 address (write "
			    "IPv4 addresses without brackets)", host);
			freeaddrinfo(res);
			return (-1);
		} else if (ai->ai_family == AF_INET)
			((struct sockaddr_in *)ai->ai_addr)->sin_port = port;
		else if (ai->ai_family == AF_INET6) {
			if (IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)
			    ai->ai_addr)->sin6_addr)) {
				snprintf(err, errlen, "'%s' is an IPv4-mapped "
				    "address: listen on the IPv4 address itself",
				    host);
				freeaddrinfo(res);
				return (-1);
			}
			if (listen_stray_zone((struct sockaddr_in6 *)
			    ai->ai_addr)) {
				snprintf(err, errlen, "'%s': a zone is only for "
				    "link-local addresses (fe80::/10)", host);
				freeaddrinfo(res);
				return (-1);
			}
			((struct sockaddr_in6 *)ai->ai_addr)->sin6_port = port;
		} else
			continue;
		if (listen_seen(list, first, *n, ai->ai_addr))
			continue;	/* a name may resolve twice alike */
		if (listen_add(list, max, n, ai->ai_addr, ai->ai_addrlen,
		    err, errlen) == -1) {
			freeaddrinfo(res);
			return (-1);
		}
	}
	freeaddrinfo(res);
	return (0);
}

/*
 * Split "HOST:PORT" or "[IPV6]:PORT": the host, without brackets, goes to
 * host (hostlen bytes with the NUL), and *bracketed says it had them, so
 * that it is taken as an address and never looked up.  Returns 0 or one
 * of the PARSE_HP_ errors.
 */
int
parse_host_port(const char *s, char *host, size_t hostlen, uint16_t *port,
    bool *bracketed)
{
	const char	*colon, *hstart, *hend, *rest;
	uint64_t	 n;

	*bracketed = s[0] == '[';
	if (*bracketed) {
		hstart = s + 1;
		hend = strchr(hstart, ']');
		if (hend == NULL || hend[1] != ':')
			return (PARSE_HP_FORM);
		colon = hend + 1;
	} else {
		if ((colon = strrchr(s, ':')) == NULL)
			return (PARSE_HP_FORM);
		hstart = s;
		hend = colon;
		if (memchr(hstart, ':', (size_t)(hend - hstart)) != NULL)
			return (PARSE_HP_BARE_V6);
	}
	if (hend == hstart)
		return (PARSE_HP_FORM);
	if ((size_t)(hend - hstart) >= hostlen)
		return (PARSE_HP_LONG);
	rest = parse_digits(colon + 1, &n);
	if (rest == NULL || *rest != '\0' || n == 0 || n > 65535)
		return (PARSE_HP_PORT);
	memcpy(host, hstart, (size_t)(hend - hstart));
	host[hend - hstart] = '\0';
	*port = (uint16_t)n;
	return (0);
}

/* "HOST:PORT", "[V6]:PORT" or "*:PORT": add its addresses. */
static int
listen_add_item(const char *item, struct listen_addr *list, size_t max,
    size_t *n, bool resolve, char *err, size_t errlen)
{
	char		 host[256];
	uint16_t	 port;
	bool		 bracketed;

	switch (parse_host_port(item, host, sizeof(host), &port, &bracketed)) {
	case 0:
		break;
	case PARSE_HP_PORT:
		snprintf(err, errlen, "invalid port in '%s' (1 to 65535)", item);
		return (-1);
	default:
		snprintf(err, errlen, "invalid listen address '%s' (use "
		    "HOST:PORT, [IPV6]:PORT or *:PORT)", item);
		return (-1);
	}
	if (!bracketed && strcmp(host, "*") == 0)
		return (listen_add_wildcard(list, max, n, htons(port), err,
		    errlen));
	return (listen_add_host(list, max, n, host, htons(port), bracketed,
	    resolve, err, errlen));
}

/*
 * Copy the entry of the comma-separated list s that starts at *p into item,
 * blanks around it removed, and move *p past it; NULL after the last one.
 * An empty entry, or one of itemsize bytes or more, is an error naming
 * what the entries are.
 */
static int
parse_list_next(const char *s, const char **p, char *item, size_t itemsize,
    const char *what, char *err, size_t errlen)
{
	const char	*start = *p, *end;
	size_t		 len;

	while (*start == ' ' || *start == '\t')
		start++;
	end = start + strcspn(start, ",");
	len = (size_t)(end - start);
	while (len > 0 && (start[len - 1] == ' ' || start[len - 1] == '\t'))
		len--;
	if (len == 0) {
		snprintf(err, errlen, "empty %s in '%s'", what, s);
		return (-1);
	}
	if (len >= itemsize) {
		snprintf(err, errlen, "%s too long in '%s'", what, s);
		return (-1);
	}
	memcpy(item, start, len);
	item[len] = '\0';
	*p = *end == '\0' ? NULL : end + 1;
	return (0);
}

/*
 * A comma-separated list of listen addresses, appended to the *n already
 * in list, as parse_acl() appends networks.  Host names are looked up
 * only if resolve is set (never while fuzzing, say).
 */
int
parse_listen(const char *s, struct listen_addr *list, size_t max, size_t *n,
    bool resolve, char *err, size_t errlen)
{
	char		 item[300];
	const char	*p = s;
	int		 rv;

	while (p != NULL) {
		if (parse_list_next(s, &p, item, sizeof(item),
		    "listen address", err, errlen) == -1)
			return (-1);
		if ((rv = listen_add_item(item, list, max, n, resolve, err,
		    errlen)) != 0)
			return (rv);
	}
	return (0);
}

/* "192.0.2.0/24", "2001:db8::/32", or one address (a full-length prefix). */
static int
parse_cidr(const char *s, struct cidr *ci, char *err, size_t errlen)
{
	char		 host[INET6_ADDRSTRLEN + 1];
	struct in6_addr	 in6;
	const char	*slash = strchr(s, '/');
	size_t		 len = slash ? (size_t)(slash - s) : strlen(s);
	uint64_t	 prefix;
	int		 max, i;

	memset(ci, 0, sizeof(*ci));
	if (len == 0 || len >= sizeof(host))
		goto bad;
	memcpy(host, s, len);
	host[len] = '\0';
	if (inet_pton(AF_INET, host, ci->ci_addr) == 1) {
		ci->ci_family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, host, ci->ci_addr) == 1) {
		ci->ci_family = AF_INET6;
		max = 128;
	} else
		goto bad;
	prefix = (uint64_t)max;
	if (slash != NULL && (parse_count(slash + 1, &prefix, err,
	    errlen) == -1 || prefix > (uint64_t)max)) {
		snprintf(err, errlen, "invalid prefix length in '%s' (0 to %d)",
		    s, max);
		return (-1);
	}
	/*
	 * Peers are matched as IPv4 when IPv4-mapped, so a mapped network
	 * (::ffff:192.0.2.0/120) must be the IPv4 one (192.0.2.0/24).
	 */
	memcpy(&in6, ci->ci_addr, sizeof(in6));	/* ci_addr is unaligned */
	if (ci->ci_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&in6)) {
		if (prefix < 96) {
			snprintf(err, errlen, "'%s' mixes IPv4-mapped and other "
			    "IPv6 addresses (use a prefix of 96 or more)", s);
			return (-1);
		}
		memmove(ci->ci_addr, ci->ci_addr + 12, 4);
		memset(ci->ci_addr + 4, 0, 12);
		ci->ci_family = AF_INET;
		prefix -= 96;
	}
	ci->ci_prefix = (uint8_t)prefix;
	/* Keep only the network part: 10.1.2.3/8 is 10.0.0.0/8. */
	for (i = 0; i < 16; i++) {
		int	bits = (int)prefix - i * 8;

		if (bits <= 0)
			ci->ci_addr[i] = 0;
		else if (bits < 8)
			ci->ci_addr[i] &= (uint8_t)(0xff << (8 - bits));
	}
	return (0);
bad:
	snprintf(err, errlen, "invalid address or network '%s' (use an IPv4 or "
	    "IPv6 address, optionally with /PREFIX)", s);
	return (-1);
}

/* A comma-separated list of networks, appended to acl. */
int
parse_acl(const char *s, struct acl *acl, char *err, size_t errlen)
{
	char		 item[INET6_ADDRSTRLEN + 8];
	const char	*p = s;

	while (p != NULL) {
		if (parse_list_next(s, &p, item, sizeof(item), "network", err,
		    errlen) == -1)
			return (-1);
		if (acl->acl_n >= ACL_MAX) {
			snprintf(err, errlen, "too many networks (at most %d "
			    "per list)", ACL_MAX);
			return (-1);
		}
		if (parse_cidr(item, &acl->acl_nets[acl->acl_n], err,
		    errlen) == -1)
			return (-1);
		acl->acl_n++;
	}
	return (0);
}
