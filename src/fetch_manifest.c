/*
 * fdist-fetch --manifest: read a server's manifest (its format is in
 * fdistd(8)), find the share in it, and say where to fetch the share
 * from and what its SHA-256 must be, so the file is checked against what
 * the server announced, whatever its share then streams.  The manifest
 * is served like any file: read to EOF and acknowledged with its digest.
 */
#include <sys/socket.h>
#include <sys/types.h>

#include <netinet/in.h>
#include <arpa/inet.h>
#include <net/if.h>

#include <errno.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "addr.h"
#include "fetch.h"
#include "parse.h"

#define MANIFEST_MAX		(4 * 1024 * 1024)
#define MANIFEST_MAGIC		"fdist-manifest "
#define MANIFEST_VERSION	1

/* What the share's line says. */
struct manifest_entry {
	const char	*me_size;	/* value of size=, in the document */
	size_t		 me_sizelen;
	const char	*me_sha256;	/* value of sha256= */
	size_t		 me_sha256len;
	const char	*me_listen;
	size_t		 me_listenlen;
	bool		 me_found;
};

static int	fetch_manifest_read(int, const char *, int, char **, size_t *);
static void	fetch_manifest_ack(int, const char *, const char *,
		    const char *, size_t, int);
static int	fetch_manifest_parse(const char *, size_t, const char *,
		    struct manifest_entry *, const char *);
static void	fetch_manifest_fields(const char *, size_t,
		    struct manifest_entry *);
static int	fetch_manifest_size(const char *, size_t, uint64_t *);
static bool	fetch_manifest_loopback(const struct sockaddr *);
static bool	fetch_manifest_scope(const char *, const char *);
static int	fetch_manifest_pick(const char *, size_t,
		    const struct sockaddr_storage *, char *, size_t);

/*
 * Read the whole document within timeout_ms, however its bytes come: it
 * is small, and a server that drips it must not hold a run (the timer's
 * next sync waits for it) for ever.  Returns an exit status.
 */
static int
fetch_manifest_read(int fd, const char *target, int timeout_ms, char **docp,
    size_t *lenp)
{
	char	*doc, *bigger;
	size_t	 len = 0, cap = 64 * 1024;
	ssize_t	 n;
	int64_t	 deadline = fetch_now() + timeout_ms, left;

	if ((doc = malloc(cap)) == NULL) {
		fetch_warn("malloc");
		return (FETCH_EUSAGE);
	}
	for (;;) {
		if (len == cap) {
			if (cap >= MANIFEST_MAX) {
				fetch_warnx("%s: manifest of %d bytes or more",
				    target, MANIFEST_MAX);
				free(doc);
				return (FETCH_EMANIFEST);
			}
			if ((bigger = realloc(doc, cap * 2)) == NULL) {
				fetch_warn("realloc");
				free(doc);
				return (FETCH_EUSAGE);
			}
			doc = bigger;
			cap *= 2;
		}
		if ((left = deadline - fetch_now()) <= 0) {
			errno = ETIMEDOUT;
			n = -1;
		} else
			n = fetch_net_read(fd, doc + len, cap - len, (int)left);
		if (n == 0)
			break;
		if (n > 0) {
			len += (size_t)n;
			continue;
		}
		if (errno == ETIMEDOUT)
			fetch_warnx("%s: manifest: timed out after %zu bytes",
			    target, len);
		else if (errno == ECONNRESET && len == 0)
			fetch_warnx("%s: manifest: refused by the server "
			    "(connection reset before any data)", target);
		else
			fetch_warn("%s: manifest: connection lost after %zu "
			    "bytes", target, len);
		free(doc);
		return (errno == ETIMEDOUT ? FETCH_ETIMEOUT : FETCH_ERESET);
	}
	*docp = doc;
	*lenp = len;
	return (FETCH_OK);
}

/*
 * Acknowledge the document with its digest and the host id, as for any
 * file, so the server's record of it is verified.  Only reported if it
 * fails: the document is in hand.
 */
static void
fetch_manifest_ack(int fd, const char *target, const char *host,
    const char *doc, size_t len, int timeout_ms)
{
	static const char	hex[] = "0123456789abcdef";
	unsigned char		md[EVP_MAX_MD_SIZE];
	unsigned int		mdlen = 0, i;
	char			sum[65], msg[160];
	int			n;

	if (EVP_Digest(doc, len, md, &mdlen, EVP_sha256(), NULL) != 1 ||
	    mdlen != 32) {
		fetch_warnx("EVP_Digest failed");
		return;
	}
	for (i = 0; i < mdlen; i++) {
		sum[i * 2] = hex[md[i] >> 4];
		sum[i * 2 + 1] = hex[md[i] & 0xf];
	}
	sum[64] = '\0';
	n = snprintf(msg, sizeof(msg), "Thank you sha256=%s%s%s\n", sum,
	    host[0] != '\0' ? " host=" : "", host);
	if (n < 0 || (size_t)n >= sizeof(msg) ||
	    fetch_net_write_all(fd, msg, (size_t)n, timeout_ms) == -1 ||
	    fetch_net_finish(fd, timeout_ms) == -1)
		fetch_warn("%s: manifest: acknowledgement not confirmed",
		    target);
}

/*
 * The fields of a share's line after its name: key=value words, one
 * blank apart.  Keys this version does not know are skipped, so a
 * server may add some within version 1.
 */
static void
fetch_manifest_fields(const char *p, size_t len, struct manifest_entry *me)
{
	const char	*end = p + len, *word, *eq;
	size_t		 wlen;

	while (p < end) {
		word = p;
		while (p < end && *p != ' ')
			p++;
		wlen = (size_t)(p - word);
		if (p < end)
			p++;
		if ((eq = memchr(word, '=', wlen)) == NULL)
			continue;
		if ((size_t)(eq - word) == 4 && memcmp(word, "size", 4) == 0) {
			me->me_size = eq + 1;
			me->me_sizelen = wlen - 5;
		} else if ((size_t)(eq - word) == 6 &&
		    memcmp(word, "sha256", 6) == 0) {
			me->me_sha256 = eq + 1;
			me->me_sha256len = wlen - 7;
		} else if ((size_t)(eq - word) == 6 &&
		    memcmp(word, "listen", 6) == 0) {
			me->me_listen = eq + 1;
			me->me_listenlen = wlen - 7;
		}
	}
}

/*
 * Check the document's form and find the line of share name: the first
 * line names format version 1, the last is "end", lines end in LF.
 * Other kinds of line are skipped, as unknown fields are.  The text of a
 * bad document is not shown: it is the server's, not ours to print.
 */
static int
fetch_manifest_parse(const char *doc, size_t len, const char *name,
    struct manifest_entry *me, const char *target)
{
	const char	*p = doc, *end = doc + len, *nl, *v;
	size_t		 llen, nlen = strlen(name);
	unsigned long	 version;
	char		*vend;
	bool		 first = true, ended = false;

	memset(me, 0, sizeof(*me));
	if (memchr(doc, '\0', len) != NULL || len == 0 || doc[len - 1] != '\n')
		goto bad;
	for (; p < end; p = nl + 1) {
		nl = memchr(p, '\n', (size_t)(end - p));
		llen = (size_t)(nl - p);
		if (ended)
			goto bad;	/* nothing after "end" */
		if (first) {
			first = false;
			if (llen <= strlen(MANIFEST_MAGIC) ||
			    memcmp(p, MANIFEST_MAGIC, strlen(MANIFEST_MAGIC)) != 0)
				goto bad;
			v = p + strlen(MANIFEST_MAGIC);
			errno = 0;
			version = strtoul(v, &vend, 10);
			if (vend != nl || errno != 0 || *v < '0' || *v > '9')
				goto bad;
			if (version != MANIFEST_VERSION) {
				fetch_warnx("%s: manifest format %lu; this %s "
				    "reads format %d", target, version,
				    FETCH_PROGNAME, MANIFEST_VERSION);
				return (FETCH_EMANIFEST);
			}
			continue;
		}
		if (llen == 3 && memcmp(p, "end", 3) == 0) {
			ended = true;
			continue;
		}
		if (llen > 6 + nlen && memcmp(p, "share ", 6) == 0 &&
		    memcmp(p + 6, name, nlen) == 0 && p[6 + nlen] == ' ') {
			if (me->me_found)
				goto bad;
			me->me_found = true;
			fetch_manifest_fields(p + 7 + nlen, llen - 7 - nlen, me);
		}
	}
	if (!ended)
		goto bad;
	if (!me->me_found) {
		fetch_warnx("%s: the manifest lists no share '%s'", target,
		    name);
		return (FETCH_EMANIFEST);
	}
	if (me->me_size == NULL || me->me_sha256 == NULL ||
	    me->me_listen == NULL)
		goto bad;
	return (FETCH_OK);
bad:
	fetch_warnx("%s: not an fdist manifest, or a damaged one", target);
	return (FETCH_EMANIFEST);
}

/* A size= value: decimal, no sign, no leading zero; -1 if not. */
static int
fetch_manifest_size(const char *p, size_t len, uint64_t *size)
{
	uint64_t	n = 0;
	size_t		i;

	if (len == 0 || (p[0] == '0' && len > 1))
		return (-1);
	for (i = 0; i < len; i++) {
		if (p[i] < '0' || p[i] > '9' ||
		    n > (UINT64_MAX - (uint64_t)(p[i] - '0')) / 10)
			return (-1);
		n = n * 10 + (uint64_t)(p[i] - '0');
	}
	*size = n;
	return (0);
}

static bool
fetch_manifest_loopback(const struct sockaddr *sa)
{
	const struct sockaddr_in6	*sin6 = (const struct sockaddr_in6 *)sa;
	const uint8_t			*b = sin6->sin6_addr.s6_addr;

	if (sa->sa_family == AF_INET)
		return ((ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr)
		    >> 24) == 127);
	return (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr) ||
	    (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) && b[12] == 127));
}

/*
 * Whether "ADDR%SCOPE" from the manifest is an address of this host's
 * (its scope a number, or one of our interfaces, as the resolver takes
 * it).  The scope's text is the server's, shown in messages as the
 * address is: only the characters fdistd writes in one are taken.
 */
static bool
fetch_manifest_scope(const char *host, const char *scope)
{
	struct addrinfo	 hints, *res;
	size_t		 n = strlen(scope);

	if (n == 0 || n >= IF_NAMESIZE || strspn(scope, "0123456789"
	    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ._-") != n)
		return (false);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_INET6;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICHOST;
	if (getaddrinfo(host, NULL, &hints, &res) != 0)
		return (false);
	freeaddrinfo(res);
	return (true);
}

/*
 * The first address of the share's listen list that can be reached from
 * here, as HOST:PORT in out (fdist-fetch(1) has the rule):
 * - a wildcard ("*", 0.0.0.0, [::]) is the manifest's own address, with
 *   that port, when of the family the manifest was reached by ("*" of
 *   either);
 * - a loopback address only when the manifest was reached on loopback
 *   (another host's loopback is not ours);
 * - an IPv6 address with a scope only if that is one of this host's;
 * - any other numeric address as it is.
 * Returns -1 if there is none.
 */
static int
fetch_manifest_pick(const char *list, size_t len,
    const struct sockaddr_storage *peer, char *out, size_t outlen)
{
	struct sockaddr_storage	 ss;
	struct sockaddr_in	*sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6	*sin6 = (struct sockaddr_in6 *)&ss;
	const struct sockaddr_in6 *psin6 = (const struct sockaddr_in6 *)peer;
	char			 item[ADDR_STR_MAX + 8], host[ADDR_STR_MAX];
	const char		*p = list, *end = list + len, *comma;
	char			*pct;
	uint16_t		 port;
	bool			 bracketed, wild;
	int			 family, pfamily = peer->ss_family;

	if (pfamily == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&psin6->sin6_addr))
		pfamily = AF_INET;
	for (; p < end; p = comma + 1) {
		if ((comma = memchr(p, ',', (size_t)(end - p))) == NULL)
			comma = end;
		if ((size_t)(comma - p) >= sizeof(item))
			continue;
		memcpy(item, p, (size_t)(comma - p));
		item[comma - p] = '\0';
		if (parse_host_port(item, host, sizeof(host), &port,
		    &bracketed) != 0)
			continue;
		memset(&ss, 0, sizeof(ss));
		if ((pct = strchr(host, '%')) != NULL && bracketed) {
			if (!fetch_manifest_scope(host, pct + 1))
				continue;
			*pct = '\0';	/* the scope stays in item */
		}
		if (strcmp(host, "*") == 0 && !bracketed) {
			wild = true;
			family = pfamily;
		} else if (!bracketed && inet_pton(AF_INET, host,
		    &sin->sin_addr) == 1) {
			family = ss.ss_family = AF_INET;
			wild = sin->sin_addr.s_addr == htonl(INADDR_ANY);
		} else if (bracketed && inet_pton(AF_INET6, host,
		    &sin6->sin6_addr) == 1) {
			family = ss.ss_family = AF_INET6;
			wild = IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr);
		} else
			continue;	/* not a numeric address */
		if (wild) {
			if (family != pfamily)
				continue;
			memcpy(&ss, peer, sizeof(ss));
			if (ss.ss_family == AF_INET)
				sin->sin_port = htons(port);
			else
				sin6->sin6_port = htons(port);
			addr_format((struct sockaddr *)&ss, host, sizeof(host));
			/* addr_format shows a mapped address as IPv4. */
			snprintf(out, outlen, "%s", host);
			return (0);
		}
		if (fetch_manifest_loopback((struct sockaddr *)&ss) &&
		    !fetch_manifest_loopback((const struct sockaddr *)peer))
			continue;
		snprintf(out, outlen, "%s", item);
		return (0);
	}
	return (-1);
}

/*
 * Read the manifest at target and fill fs for share name.  Returns an
 * exit status: FETCH_EPENDING if the server has not computed the
 * share's digest yet, FETCH_EMANIFEST if the manifest cannot say how to
 * fetch it, or one of the connection's.
 */
int
fetch_manifest(const char *target, const char *name, const char *host,
    int timeout_ms, struct fetch_share *fs)
{
	struct manifest_entry	 me;
	struct sockaddr_storage	 peer;
	struct addrinfo		*res = NULL;
	socklen_t		 plen = sizeof(peer);
	char			*doc = NULL;
	size_t			 len, i;
	int			 fd = -1, rv;

	if ((rv = fetch_net_resolve(target, &res)) != FETCH_OK)
		goto out;
	if ((rv = fetch_net_connect(res, timeout_ms, &fd)) != FETCH_OK)
		goto out;
	if (getpeername(fd, (struct sockaddr *)&peer, &plen) == -1) {
		fetch_warn("%s: getpeername", target);
		rv = FETCH_ERESET;
		goto out;
	}
	if ((rv = fetch_manifest_read(fd, target, timeout_ms, &doc, &len)) !=
	    FETCH_OK)
		goto out;
	fetch_manifest_ack(fd, target, host, doc, len, timeout_ms);
	if ((rv = fetch_manifest_parse(doc, len, name, &me, target)) !=
	    FETCH_OK)
		goto out;
	rv = FETCH_EMANIFEST;
	if (fetch_manifest_size(me.me_size, me.me_sizelen, &fs->fs_size) ==
	    -1) {
		fetch_warnx("%s: not an fdist manifest, or a damaged one",
		    target);
		goto out;
	}
	if (me.me_sha256len == 7 && memcmp(me.me_sha256, "pending", 7) == 0) {
		fetch_warnx("%s: share '%s': the server has not computed its "
		    "SHA-256 yet; try again later", target, name);
		rv = FETCH_EPENDING;
		goto out;
	}
	if (me.me_sha256len == 6 && memcmp(me.me_sha256, "failed", 6) == 0) {
		fetch_warnx("%s: share '%s': the server could not compute its "
		    "SHA-256 (its log says why)", target, name);
		goto out;
	}
	if (me.me_sha256len != 64) {
		fetch_warnx("%s: share '%s': not a SHA-256 in the manifest",
		    target, name);
		goto out;
	}
	for (i = 0; i < 64; i++) {
		if (strchr("0123456789abcdef", me.me_sha256[i]) == NULL ||
		    me.me_sha256[i] == '\0') {
			fetch_warnx("%s: share '%s': not a SHA-256 in the "
			    "manifest", target, name);
			goto out;
		}
		fs->fs_sha256[i] = me.me_sha256[i];
	}
	fs->fs_sha256[64] = '\0';
	if (fetch_manifest_pick(me.me_listen, me.me_listenlen, &peer,
	    fs->fs_target, sizeof(fs->fs_target)) == -1) {
		fetch_warnx("%s: share '%s': none of its addresses can be "
		    "reached from here (%s(1) says which can)", target,
		    name, FETCH_PROGNAME);
		goto out;
	}
	rv = FETCH_OK;
out:
	free(doc);
	if (fd != -1)
		close(fd);
	if (res != NULL)
		freeaddrinfo(res);
	return (rv);
}
