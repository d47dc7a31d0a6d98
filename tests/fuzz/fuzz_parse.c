/*
 * fuzz_parse.c: the value parsers of parse.c, each against a reference
 * written here from fdistd.ini(5), and parse_listen (resolve=false, so
 * no DNS) against itself: item by item, with a smaller maximum, and
 * through addr_format().  parse_acl likewise, item by item, appended to
 * a list already partly full, and through inet_ntop(); then acl_match()
 * on addresses in and just outside each network, against a bitwise
 * reference.
 *
 * Input: one NUL-terminated string (an embedded NUL ends it) given to
 * every parser.
 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fdistd.h"
#include "fuzz.h"

int	fdistd_verbose;

struct ref_unit {
	const char	*name;
	uint64_t	 factor;
};

static const struct ref_unit ref_durations[] = {
	{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
	{ "", 1000 }, { NULL, 0 }
};
static const struct ref_unit ref_sizes[] = {
	{ "k", 1ULL << 10 }, { "m", 1ULL << 20 }, { "g", 1ULL << 30 },
	{ "", 1 }, { NULL, 0 }
};

/* Decimal digits (at least one) that fit in 64 bits; the rest, or NULL. */
static const char *
ref_number(const char *s, uint64_t *v)
{
	uint64_t	n = 0;

	if (*s < '0' || *s > '9')
		return (NULL);
	for (; *s >= '0' && *s <= '9'; s++) {
		if (n > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return (NULL);
		n = n * 10 + (uint64_t)(*s - '0');
	}
	*v = n;
	return (s);
}

/* "A whole decimal number followed by a unit ... in upper or lower case". */
static int
ref_with_unit(const char *s, const struct ref_unit *units, uint64_t *out)
{
	const char	*rest;
	uint64_t	 v;
	size_t		 i;

	if ((rest = ref_number(s, &v)) == NULL)
		return (-1);
	for (; units->name != NULL; units++) {
		if (strlen(rest) != strlen(units->name))
			continue;
		for (i = 0; rest[i] != '\0'; i++) {
			if ((rest[i] | 0x20) != units->name[i])
				break;
		}
		if (rest[i] != '\0')
			continue;
		if (v != 0 && units->factor > UINT64_MAX / v)
			return (-1);
		*out = v * units->factor;
		return (0);
	}
	return (-1);
}

static int
ref_share_name(const char *s)
{
	size_t	i, len = strlen(s);

	if (len < 1 || len > 63)
		return (-1);
	for (i = 0; i < len; i++) {
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' &&
		    s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
		    s[i] == '-' || s[i] == '_' || s[i] == '.'))
			return (-1);
	}
	return (0);
}

static void
check_err(int rv, const char *err, size_t errlen, const char *what)
{
	if (rv == 0)
		return;
	FUZZ_CHECK(rv == -1, "%s returned %d", what, rv);
	FUZZ_CHECK(memchr(err, '\0', errlen) != NULL, "%s: err not terminated",
	    what);
	FUZZ_CHECK(errlen < 2 || err[0] != '\0', "%s failed without a "
	    "message", what);
}

static void
check_number(const char *s, char *err, size_t errlen)
{
	uint64_t	got = 0xdeadbeef, want = 0;
	int		rv, ref;

	err[0] = '\0';
	rv = parse_duration_ms(s, &got, err, errlen);
	check_err(rv, err, errlen, "parse_duration_ms");
	ref = ref_with_unit(s, ref_durations, &want);
	FUZZ_CHECK(rv == ref, "parse_duration_ms returned %d, expected %d",
	    rv, ref);
	FUZZ_CHECK(rv == -1 || got == want, "parse_duration_ms: %llu ms, "
	    "expected %llu", (unsigned long long)got, (unsigned long long)want);

	err[0] = '\0';
	rv = parse_size(s, &got, err, errlen);
	check_err(rv, err, errlen, "parse_size");
	ref = ref_with_unit(s, ref_sizes, &want);
	FUZZ_CHECK(rv == ref, "parse_size returned %d, expected %d", rv, ref);
	FUZZ_CHECK(rv == -1 || got == want, "parse_size: %llu, expected %llu",
	    (unsigned long long)got, (unsigned long long)want);

	err[0] = '\0';
	rv = parse_count(s, &got, err, errlen);
	check_err(rv, err, errlen, "parse_count");
	ref = ref_number(s, &want) != NULL && *ref_number(s, &want) == '\0' ?
	    0 : -1;
	FUZZ_CHECK(rv == ref, "parse_count returned %d, expected %d", rv, ref);
	FUZZ_CHECK(rv == -1 || got == want, "parse_count: %llu, expected %llu",
	    (unsigned long long)got, (unsigned long long)want);

	err[0] = '\0';
	rv = parse_share_name(s, err, errlen);
	check_err(rv, err, errlen, "parse_share_name");
	FUZZ_CHECK(rv == ref_share_name(s), "parse_share_name returned %d",
	    rv);
}

/* Scope ids and IPv4-mapped addresses do not survive addr_format(). */
static bool
format_keeps(const struct sockaddr *sa)
{
	const struct sockaddr_in6	*sin6 =
	    (const struct sockaddr_in6 *)sa;

	if (sa->sa_family != AF_INET6)
		return (true);
	return (sin6->sin6_scope_id == 0 &&
	    !IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr));
}

/* The checks of one successful parse_listen(). */
static void
check_list(const struct listen_addr *list, size_t n, size_t max,
    size_t nitems)
{
	const struct sockaddr_in	*sin;
	const struct sockaddr_in6	*sin6;
	struct listen_addr		 one[SHARE_LISTEN_MAX];
	char				 name[ADDR_STR_MAX], err[ERR_MAX];
	size_t				 i, m;

	FUZZ_CHECK(n >= 1 && n <= max, "%zu addresses for max %zu", n, max);
	FUZZ_CHECK(n >= nitems && n <= 2 * nitems, "%zu addresses from %zu "
	    "items", n, nitems);
	for (i = 0; i < n; i++) {
		sin = (const struct sockaddr_in *)&list[i].la_ss;
		sin6 = (const struct sockaddr_in6 *)&list[i].la_ss;
		if (list[i].la_ss.ss_family == AF_INET) {
			FUZZ_CHECK(list[i].la_len == sizeof(*sin),
			    "AF_INET with length %u", list[i].la_len);
			FUZZ_CHECK(sin->sin_port != 0, "port 0");
		} else {
			FUZZ_CHECK(list[i].la_ss.ss_family == AF_INET6,
			    "family %d", list[i].la_ss.ss_family);
			FUZZ_CHECK(list[i].la_len == sizeof(*sin6),
			    "AF_INET6 with length %u", list[i].la_len);
			FUZZ_CHECK(sin6->sin6_port != 0, "port 0");
		}
		/* What the logs print must parse back to the same address. */
		addr_format((const struct sockaddr *)&list[i].la_ss, name,
		    sizeof(name));
		if (!format_keeps((const struct sockaddr *)&list[i].la_ss))
			continue;
		m = 0;
		FUZZ_CHECK(parse_listen(name, one, SHARE_LISTEN_MAX, &m, false,
		    err, sizeof(err)) == 0, "'%s' does not parse back: %s",
		    name, err);
		FUZZ_CHECK(m == 1 || (m == 2 && name[0] == '*'),
		    "'%s' parses back to %zu addresses", name, m);
		FUZZ_CHECK(addr_equal((const struct sockaddr *)&one[0].la_ss,
		    (const struct sockaddr *)&list[i].la_ss),
		    "'%s' parses back to another address", name);
	}
}

static void
check_listen(const char *s, size_t smallmax)
{
	struct listen_addr	 full[SHARE_LISTEN_MAX], part[SHARE_LISTEN_MAX];
	struct listen_addr	*small;
	char			 err[ERR_MAX], *item;
	const char		*p, *comma;
	size_t			 n, m, k, total = 0, nitems = 0;
	int			 rv, rvs, rvi, allok = 1;

	err[0] = '\0';
	n = 0;
	rv = parse_listen(s, full, SHARE_LISTEN_MAX, &n, false, err,
	    sizeof(err));
	check_err(rv, err, sizeof(err), "parse_listen");

	/* The list is its items, parsed one by one, end to end. */
	for (p = s;; p = comma + 1) {
		comma = strchr(p, ',');
		k = comma ? (size_t)(comma - p) : strlen(p);
		item = strndup(p, k);
		err[0] = '\0';
		m = 0;
		rvi = parse_listen(item, part, SHARE_LISTEN_MAX, &m, false, err,
		    sizeof(err));
		check_err(rvi, err, sizeof(err), "parse_listen(item)");
		if (rvi == 0 && allok && total + m <= SHARE_LISTEN_MAX) {
			FUZZ_CHECK(rv == -1 || memcmp(&full[total], part,
			    m * sizeof(part[0])) == 0, "item %zu ('%s') parses "
			    "otherwise alone", nitems, item);
		}
		free(item);
		if (rvi == -1)
			allok = 0;
		else
			total += m;
		nitems++;
		if (comma == NULL)
			break;
	}
	FUZZ_CHECK(rv == ((allok && total <= SHARE_LISTEN_MAX) ? 0 : -1),
	    "parse_listen returned %d, its %zu items one by one %s (%zu "
	    "addresses)", rv, nitems, allok ? "succeed" : "do not", total);
	if (rv == 0) {
		FUZZ_CHECK(n == total, "%zu addresses, items give %zu", n, total);
		check_list(full, n, SHARE_LISTEN_MAX, nitems);
	}

	/* With room for fewer: the same, or "too many". */
	small = malloc(smallmax * sizeof(*small));
	err[0] = '\0';
	m = 0;
	rvs = parse_listen(s, small, smallmax, &m, false, err, sizeof(err));
	check_err(rvs, err, sizeof(err), "parse_listen(small max)");
	if (rv == 0 && n <= smallmax) {
		FUZZ_CHECK(rvs == 0 && m == n && memcmp(small, full,
		    n * sizeof(*small)) == 0, "max %zu changes the result",
		    smallmax);
	} else
		FUZZ_CHECK(rvs == -1, "max %zu accepts what max %d does not",
		    smallmax, SHARE_LISTEN_MAX);
	free(small);
}

/* The peer as acl.c must see it: IPv4-mapped IPv6 is IPv4. */
static int
ref_peer(const struct sockaddr_storage *ss, const uint8_t **a)
{
	const struct sockaddr_in6	*sin6 = (const void *)ss;

	if (ss->ss_family == AF_INET) {
		*a = (const uint8_t *)&((const struct sockaddr_in *)
		    (const void *)ss)->sin_addr;
		return (AF_INET);
	}
	if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
		*a = sin6->sin6_addr.s6_addr + 12;
		return (AF_INET);
	}
	*a = sin6->sin6_addr.s6_addr;
	return (AF_INET6);
}

/* Whether the first prefix bits of the peer are the network's. */
static bool
ref_acl_match(const struct acl *acl, const struct sockaddr_storage *ss)
{
	const uint8_t	*a;
	int		 family = ref_peer(ss, &a), b;
	size_t		 i;

	for (i = 0; i < acl->acl_n; i++) {
		if (acl->acl_nets[i].ci_family != family)
			continue;
		for (b = 0; b < acl->acl_nets[i].ci_prefix; b++) {
			if (((a[b / 8] ^ acl->acl_nets[i].ci_addr[b / 8]) &
			    (0x80 >> (b % 8))) != 0)
				break;
		}
		if (b == acl->acl_nets[i].ci_prefix)
			return (true);
	}
	return (false);
}

static void
make_peer(struct sockaddr_storage *ss, int family, const uint8_t *addr,
    bool mapped)
{
	struct sockaddr_in	*sin = (void *)ss;
	struct sockaddr_in6	*sin6 = (void *)ss;

	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET && !mapped) {
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, addr, 4);
	} else if (family == AF_INET) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr.s6_addr[10] = 0xff;
		sin6->sin6_addr.s6_addr[11] = 0xff;
		memcpy(sin6->sin6_addr.s6_addr + 12, addr, 4);
	} else {
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, addr, 16);
	}
}

/* acl_match() on each network's address, and with one bit flipped. */
static void
check_match(const struct acl *acl, uint8_t seed)
{
	struct sockaddr_storage	 ss;
	const struct cidr	*ci;
	uint8_t			 a[16];
	size_t			 i;
	int			 bits, b, k;

	for (i = 0; i < acl->acl_n; i++) {
		ci = &acl->acl_nets[i];
		bits = ci->ci_family == AF_INET ? 32 : 128;
		for (k = -1; k < 3; k++) {
			memcpy(a, ci->ci_addr, 16);
			b = k == -1 ? -1 : k == 0 ? (ci->ci_prefix ?
			    ci->ci_prefix - 1 : -1) : (seed + k * 37) % bits;
			if (b >= 0)
				a[b / 8] ^= (uint8_t)(0x80 >> (b % 8));
			make_peer(&ss, ci->ci_family, a, false);
			FUZZ_CHECK(acl_match(acl, (struct sockaddr *)&ss) ==
			    ref_acl_match(acl, &ss), "acl_match differs on "
			    "network #%zu with bit %d flipped", i, b);
			/* A network accepted must match its own address. */
			if (b < 0)
				FUZZ_CHECK(acl_match(acl, (struct sockaddr *)&ss),
				    "network #%zu does not match itself", i);
			if (ci->ci_family != AF_INET)
				continue;
			make_peer(&ss, AF_INET, a, true);
			FUZZ_CHECK(acl_match(acl, (struct sockaddr *)&ss) ==
			    ref_acl_match(acl, &ss), "acl_match differs on "
			    "IPv4-mapped network #%zu, bit %d", i, b);
		}
	}
}

/* One parsed network: a family, a prefix in range, no host bits. */
static void
check_cidr(const struct cidr *ci)
{
	struct acl	*again;
	char		 text[INET6_ADDRSTRLEN + 8], err[ERR_MAX];
	int		 bits, b;

	FUZZ_CHECK(ci->ci_family == AF_INET || ci->ci_family == AF_INET6,
	    "network of family %d", ci->ci_family);
	bits = ci->ci_family == AF_INET ? 32 : 128;
	FUZZ_CHECK(ci->ci_prefix <= bits, "prefix /%u", ci->ci_prefix);
	for (b = ci->ci_prefix; b < 128; b++)
		FUZZ_CHECK((ci->ci_addr[b / 8] & (0x80 >> (b % 8))) == 0,
		    "bit %d set past the prefix /%u", b, ci->ci_prefix);
	/* As config_dump() prints it, it parses to the same network. */
	inet_ntop(ci->ci_family, ci->ci_addr, text, INET6_ADDRSTRLEN);
	snprintf(text + strlen(text), 8, "/%u", ci->ci_prefix);
	again = calloc(1, sizeof(*again));
	FUZZ_CHECK(parse_acl(text, again, err, sizeof(err)) == 0 &&
	    again->acl_n == 1 && memcmp(&again->acl_nets[0], ci,
	    sizeof(*ci)) == 0, "'%s' does not parse back to itself", text);
	free(again);
}

static void
check_acl(const char *s, uint8_t seed)
{
	struct acl	*acl, *saved, *one;
	char		 err[ERR_MAX], *item;
	const char	*p, *comma;
	size_t		 before = seed % (ACL_MAX + 1), i, k, nitems = 0;
	int		 rv, rvi, allok = 1;

	acl = calloc(1, sizeof(*acl));
	for (i = 0; i < before; i++) {
		acl->acl_nets[i].ci_family = AF_INET;
		acl->acl_nets[i].ci_addr[0] = (uint8_t)i;
		acl->acl_nets[i].ci_prefix = 8;
	}
	acl->acl_n = before;
	saved = malloc(sizeof(*saved));
	memcpy(saved, acl, sizeof(*saved));
	err[0] = '\0';
	rv = parse_acl(s, acl, err, sizeof(err));
	check_err(rv, err, sizeof(err), "parse_acl");
	FUZZ_CHECK(acl->acl_n <= ACL_MAX, "acl_n %zu", acl->acl_n);
	FUZZ_CHECK(memcmp(acl->acl_nets, saved->acl_nets,
	    before * sizeof(acl->acl_nets[0])) == 0,
	    "parse_acl changed the networks already in the list");

	one = malloc(sizeof(*one));
	for (p = s;; p = comma + 1) {
		comma = strchr(p, ',');
		k = comma ? (size_t)(comma - p) : strlen(p);
		item = strndup(p, k);
		memset(one, 0, sizeof(*one));
		err[0] = '\0';
		rvi = parse_acl(item, one, err, sizeof(err));
		check_err(rvi, err, sizeof(err), "parse_acl(item)");
		if (rvi == 0) {
			FUZZ_CHECK(one->acl_n == 1, "item '%s' gives %zu "
			    "networks", item, one->acl_n);
			check_cidr(&one->acl_nets[0]);
			if (rv == 0)
				FUZZ_CHECK(memcmp(&acl->acl_nets[before + nitems],
				    &one->acl_nets[0], sizeof(one->acl_nets[0]))
				    == 0, "item '%s' parses otherwise alone",
				    item);
		} else
			allok = 0;
		free(item);
		nitems++;
		if (comma == NULL || nitems > ACL_MAX)
			break;
	}
	FUZZ_CHECK(rv == (allok && before + nitems <= ACL_MAX ? 0 : -1),
	    "parse_acl returned %d for %zu items after %zu networks", rv,
	    nitems, before);
	if (rv == 0) {
		FUZZ_CHECK(acl->acl_n == before + nitems, "%zu networks after "
		    "%zu and %zu items", acl->acl_n, before, nitems);
		check_match(acl, seed);
	}
	free(one);
	free(saved);
	free(acl);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	*s, *err;
	size_t	 errlen;

	s = malloc(size + 1);
	memcpy(s, data, size);
	s[size] = '\0';

	/* Messages quote the value: a short err buffer must cut, not spill. */
	errlen = size > 0 && data[0] & 1 ? 1 + data[size - 1] % 48 : ERR_MAX;
	err = malloc(errlen);
	check_number(s, err, errlen);
	free(err);

	check_listen(s, 1 + size % SHARE_LISTEN_MAX);
	check_acl(s, size > 0 ? data[size - 1] : 0);
	free(s);
	return (0);
}
