/*
 * report_hosts.c: the expected hosts (--hosts FILE) and the table of
 * hosts by key: an address without its port, or a claimed host id.  The
 * table is what bounds fdist-report's memory by hosts, not records.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <netdb.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"

static uint64_t	report_hosts_hash(const char *);
static int	report_hosts_grow(struct report *);
static int	report_hosts_bind(struct report *, const char *,
		    struct report_host *);
static struct report_host *report_hosts_new(struct report *, const char *,
		    const char *, int);
static int	report_hosts_numeric(const struct addrinfo *, char *, size_t);
static int	report_hosts_line(struct report *, const char *, int, char *);

/* FNV-1a: short keys, no adversary (the keys come from our daemon). */
static uint64_t
report_hosts_hash(const char *s)
{
	uint64_t	h = 14695981039346656037ULL;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return (h);
}

/* Double the buckets once there are as many keys as buckets. */
static int
report_hosts_grow(struct report *r)
{
	struct report_key	**nb, *k, *next;
	size_t			  ncap = r->r_keycap ? r->r_keycap * 2 : 1024;
	size_t			  i, b;

	if ((nb = calloc(ncap, sizeof(*nb))) == NULL)
		return (-1);
	for (i = 0; i < r->r_keycap; i++) {
		for (k = r->r_keys[i]; k != NULL; k = next) {
			next = k->rk_next;
			b = report_hosts_hash(k->rk_key) & (ncap - 1);
			k->rk_next = nb[b];
			nb[b] = k;
		}
	}
	free(r->r_keys);
	r->r_keys = nb;
	r->r_keycap = ncap;
	return (0);
}

/* The host a key (see report_hosts_key) stands for, or NULL. */
struct report_host *
report_hosts_find(struct report *r, const char *key)
{
	struct report_key	*k;

	if (r->r_keycap == 0)
		return (NULL);
	k = r->r_keys[report_hosts_hash(key) & (r->r_keycap - 1)];
	for (; k != NULL; k = k->rk_next)
		if (strcmp(k->rk_key, key) == 0)
			return (k->rk_host);
	return (NULL);
}

/* Let key stand for h. */
static int
report_hosts_bind(struct report *r, const char *key, struct report_host *h)
{
	struct report_key	*k;
	size_t			 b;

	if (r->r_nkeys >= r->r_keycap && report_hosts_grow(r) == -1)
		return (-1);
	if ((k = malloc(sizeof(*k))) == NULL)
		return (-1);
	if ((k->rk_key = strdup(key)) == NULL) {
		free(k);
		return (-1);
	}
	k->rk_host = h;
	b = report_hosts_hash(key) & (r->r_keycap - 1);
	k->rk_next = r->r_keys[b];
	r->r_keys[b] = k;
	r->r_nkeys++;
	return (0);
}

static struct report_host *
report_hosts_new(struct report *r, const char *name, const char *label,
    int line)
{
	struct report_host	*h, **nh;
	size_t			 ncap;

	if (r->r_nhosts == r->r_hostcap) {
		ncap = r->r_hostcap ? r->r_hostcap * 2 : 256;
		if ((nh = reallocarray(r->r_hosts, ncap, sizeof(*nh))) == NULL)
			return (NULL);
		r->r_hosts = nh;
		r->r_hostcap = ncap;
	}
	if ((h = calloc(1, sizeof(*h))) == NULL)
		return (NULL);
	if ((h->rh_name = strdup(name)) == NULL ||
	    (label != NULL && (h->rh_label = strdup(label)) == NULL)) {
		free(h->rh_name);
		free(h);
		return (NULL);
	}
	h->rh_line = line;
	h->rh_fserver = REPORT_NOSERVER;
	h->rh_server = REPORT_NOSERVER;
	h->rh_dirty = 1;
	r->r_hosts[r->r_nhosts++] = h;
	return (h);
}

/* A host seen in the records, without --hosts: its key is its name. */
struct report_host *
report_hosts_add(struct report *r, const char *key)
{
	struct report_host	*h;

	if ((h = report_hosts_new(r, key, NULL, 0)) == NULL ||
	    report_hosts_bind(r, key, h) == -1) {
		report_warn("out of memory");
		return (NULL);
	}
	return (h);
}

/*
 * The key of an address as the daemon logs a peer ("192.0.2.1:5000",
 * "[2001:db8::1]:5000") or of a host id (lowercased): the form the
 * table is keyed by.  -1 if s is not of that form.
 */
int
report_hosts_key(const char *s, char *key, size_t len,
    enum report_match match)
{
	const char	*end;
	size_t		 n, i;

	if (match == MATCH_HOST_ID) {
		n = strlen(s);
		if (n == 0 || n >= len)
			return (-1);
		for (i = 0; i <= n; i++)
			key[i] = (char)tolower((unsigned char)s[i]);
		return (0);
	}
	if (*s == '[') {
		if ((end = strchr(s, ']')) == NULL)
			return (-1);
		s++;
	} else if ((end = strrchr(s, ':')) == NULL)
		end = s + strlen(s);
	n = (size_t)(end - s);
	if (n == 0 || n >= len)
		return (-1);
	memcpy(key, s, n);
	key[n] = '\0';
	return (0);
}

/*
 * An address as the daemon logs a peer: a v4-mapped IPv6 one (a client
 * of a dual-stack listener) as plain IPv4, see addr.c.
 */
static int
report_hosts_numeric(const struct addrinfo *ai, char *key, size_t len)
{
	const struct sockaddr_in6	*sin6;

	if (ai->ai_family == AF_INET6) {
		sin6 = (const struct sockaddr_in6 *)ai->ai_addr;
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
			return (inet_ntop(AF_INET, &sin6->sin6_addr.s6_addr[12],
			    key, len) == NULL ? -1 : 0);
	}
	return (getnameinfo(ai->ai_addr, ai->ai_addrlen, key, len, NULL, 0,
	    NI_NUMERICHOST) != 0 ? -1 : 0);
}

/*
 * One line of the hosts file: "HOST [LABEL]" with HOST an address or a
 * name (resolved now, every address it has), or with --match host-id
 * the id a client claims.
 */
static int
report_hosts_line(struct report *r, const char *path, int line, char *s)
{
	struct addrinfo		 hints, *res, *ai;
	struct report_host	*h, *other;
	char			 key[NI_MAXHOST], bare[REPORT_NAME_MAX];
	char			*name, *label, *p;
	size_t			 n;
	int			 e, bound = 0;

	if ((p = strchr(s, '#')) != NULL &&
	    (p == s || isspace((unsigned char)p[-1])))
		*p = '\0';
	name = s + strspn(s, " \t\r\n");
	if (*name == '\0')
		return (0);
	p = name + strcspn(name, " \t\r\n");
	label = NULL;
	if (*p != '\0') {
		*p++ = '\0';
		label = p + strspn(p, " \t\r\n");
		for (p = label + strlen(label); p > label &&
		    isspace((unsigned char)p[-1]); p--)
			;
		*p = '\0';
		if (*label == '\0')
			label = NULL;
	}
	if (strlen(name) >= REPORT_NAME_MAX) {
		report_warnx("%s:%d: host name too long", path, line);
		return (-1);
	}
	if ((h = report_hosts_new(r, name, label, line)) == NULL) {
		report_warn("out of memory");
		return (-1);
	}
	if (r->r_match == MATCH_HOST_ID) {
		report_hosts_key(name, key, sizeof(key), MATCH_HOST_ID);
		if ((other = report_hosts_find(r, key)) != NULL) {
			report_warnx("%s:%d: %s is listed twice (first on "
			    "line %d)", path, line, name, other->rh_line);
			return (-1);
		}
		return (report_hosts_bind(r, key, h));
	}
	/* "[2001:db8::1]" as the records write it is an address too. */
	p = name;
	if (*name == '[' && (n = strlen(name)) > 2 && name[n - 1] == ']') {
		memcpy(bare, name + 1, n - 2);
		bare[n - 2] = '\0';
		p = bare;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	if ((e = getaddrinfo(p, NULL, &hints, &res)) != 0) {
		report_warnx("%s:%d: cannot resolve %s: %s", path, line, name,
		    e == EAI_SYSTEM ? strerror(errno) : gai_strerror(e));
		return (-1);
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if (report_hosts_numeric(ai, key, sizeof(key)) == -1)
			continue;
		if ((other = report_hosts_find(r, key)) == h)
			continue;
		if (other != NULL) {
			report_warnx("%s:%d: %s is %s, already listed on "
			    "line %d", path, line, name, key, other->rh_line);
			freeaddrinfo(res);
			return (-1);
		}
		if (report_hosts_bind(r, key, h) == -1) {
			freeaddrinfo(res);
			report_warn("out of memory");
			return (-1);
		}
		bound++;
	}
	freeaddrinfo(res);
	if (bound == 0) {
		report_warnx("%s:%d: %s has no address", path, line, name);
		return (-1);
	}
	return (0);
}

/* Read the expected hosts from path ("-" for stdin). */
int
report_hosts_load(struct report *r, const char *path)
{
	FILE	*fp;
	char	*buf = NULL;
	size_t	 cap = 0;
	ssize_t	 n;
	int	 line = 0, rv = 0;

	if (strcmp(path, "-") == 0) {
		fp = stdin;
		path = "(stdin)";
	} else if ((fp = fopen(path, "r")) == NULL) {
		report_warn("%s", path);
		return (-1);
	}
	while (rv == 0 && (n = getline(&buf, &cap, fp)) != -1) {
		line++;
		if (memchr(buf, '\0', (size_t)n) != NULL) {
			report_warnx("%s:%d: NUL byte", path, line);
			rv = -1;
			break;
		}
		rv = report_hosts_line(r, path, line, buf);
	}
	if (rv == 0 && ferror(fp)) {
		report_warn("%s", path);
		rv = -1;
	}
	free(buf);
	if (fp != stdin)
		fclose(fp);
	if (rv == 0 && r->r_nhosts == 0) {
		report_warnx("%s: no hosts listed", path);
		rv = -1;
	}
	return (rv);
}

void
report_hosts_free(struct report *r)
{
	struct report_key	*k, *next;
	size_t			 i;

	for (i = 0; i < r->r_keycap; i++)
		for (k = r->r_keys[i]; k != NULL; k = next) {
			next = k->rk_next;
			free(k->rk_key);
			free(k);
		}
	free(r->r_keys);
	for (i = 0; i < r->r_nhosts; i++) {
		free(r->r_hosts[i]->rh_name);
		free(r->r_hosts[i]->rh_label);
		free(r->r_hosts[i]->rh_ack);
		free(r->r_hosts[i]);
	}
	free(r->r_hosts);
}
