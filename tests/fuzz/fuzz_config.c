/*
 * fuzz_config.c: the configuration loader, through config_load_stream()
 * with system=false (no file is opened, no name looked up), on the input
 * as the file's text.
 *
 * A failed load must say "fuzz.ini:LINE: why" (or "fuzz.ini: why") on
 * one line, with LINE a line of the input.  A successful one must hold
 * only what fdistd.ini(5) allows, and what config_dump() (fdistd -t -v)
 * prints of it must load again to the same configuration.
 */
#include <sys/socket.h>
#include <netinet/in.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fdistd.h"
#include "fuzz.h"

#define PATH		"fuzz.ini"
#define LINE_MAX_TEXT	197		/* fdistd.ini(5) */
#define DAY_MS		(24ULL * 60 * 60 * 1000)

int	fdistd_verbose;

static FILE	*devnull;

static int
count_lines(const uint8_t *data, size_t size)
{
	size_t	i;
	int	n = 0;

	for (i = 0; i < size; i++) {
		if (data[i] == '\n')
			n++;
	}
	if (size > 0 && data[size - 1] != '\n')
		n++;
	return (n);
}

static void
check_error(const char *err, size_t errlen, int nlines)
{
	const char	*p;
	long		 line;
	char		*end;

	FUZZ_CHECK(memchr(err, '\0', errlen) != NULL, "err not terminated");
	FUZZ_CHECK(err[0] != '\0', "load failed with an empty message");
	FUZZ_CHECK(strchr(err, '\n') == NULL, "message of several lines: %s",
	    err);
	FUZZ_CHECK(strncmp(err, PATH ":", strlen(PATH ":")) == 0,
	    "message does not start with the path: %s", err);
	p = err + strlen(PATH ":");
	if (*p == ' ') {
		FUZZ_CHECK(p[1] != '\0', "no message after the path: %s", err);
		return;
	}
	line = strtol(p, &end, 10);
	FUZZ_CHECK(end != p && *end == ':' && end[1] == ' ' && end[2] != '\0',
	    "neither 'path: msg' nor 'path:line: msg': %s", err);
	FUZZ_CHECK(line >= 1 && line <= nlines, "line %ld of %d lines: %s",
	    line, nlines, err);
}

static void
check_limits(const struct limits *lim, const char *where)
{
	FUZZ_CHECK(lim->lim_ack_timeout_ms >= 1 &&
	    lim->lim_ack_timeout_ms <= DAY_MS, "%s: ack_timeout %llu", where,
	    (unsigned long long)lim->lim_ack_timeout_ms);
	FUZZ_CHECK(lim->lim_send_timeout_ms >= 1 &&
	    lim->lim_send_timeout_ms <= DAY_MS, "%s: send_timeout %llu",
	    where, (unsigned long long)lim->lim_send_timeout_ms);
	FUZZ_CHECK(lim->lim_ack_max >= 1 && lim->lim_ack_max <= ACK_MAX_LIMIT,
	    "%s: ack_max %u", where, lim->lim_ack_max);
	FUZZ_CHECK(lim->lim_max_per_ip <= 1000000, "%s: max_per_ip %u", where,
	    lim->lim_max_per_ip);
	FUZZ_CHECK(lim->lim_rate == 0 || (lim->lim_rate >= 1024 &&
	    lim->lim_rate <= 100ULL << 30), "%s: rate_limit %llu", where,
	    (unsigned long long)lim->lim_rate);
	FUZZ_CHECK(lim->lim_share_rate == 0 || (lim->lim_share_rate >= 1024 &&
	    lim->lim_share_rate <= 100ULL << 30), "%s: share_rate_limit %llu",
	    where, (unsigned long long)lim->lim_share_rate);
}

static void
check_acl(const struct acl *acl, const char *where)
{
	const struct cidr	*ci;
	size_t			 i;
	int			 b;

	FUZZ_CHECK(acl->acl_n <= ACL_MAX, "%s: %zu networks", where,
	    acl->acl_n);
	for (i = 0; i < acl->acl_n; i++) {
		ci = &acl->acl_nets[i];
		FUZZ_CHECK((ci->ci_family == AF_INET && ci->ci_prefix <= 32) ||
		    (ci->ci_family == AF_INET6 && ci->ci_prefix <= 128),
		    "%s: network of family %d, prefix /%u", where,
		    ci->ci_family, ci->ci_prefix);
		for (b = ci->ci_prefix; b < 128; b++)
			FUZZ_CHECK((ci->ci_addr[b / 8] & (0x80 >> (b % 8))) == 0,
			    "%s: host bits in network #%zu", where, i);
	}
}

static bool
acl_equal(const struct acl *a, const struct acl *b)
{
	return (a->acl_n == b->acl_n && memcmp(a->acl_nets, b->acl_nets,
	    a->acl_n * sizeof(a->acl_nets[0])) == 0);
}

/* fdistd.ini(5), PROXY PROTOCOL; share: a share's, after inheriting. */
static void
check_proxy(const struct proxy_config *pc, const char *where, bool share)
{
	check_acl(&pc->pc_from, where);
	FUZZ_CHECK(pc->pc_timeout_ms >= 1 && pc->pc_timeout_ms <= 3600000,
	    "%s: proxy_timeout %llu", where,
	    (unsigned long long)pc->pc_timeout_ms);
	if (share)
		FUZZ_CHECK(!pc->pc_on || pc->pc_from.acl_n > 0,
		    "%s: proxy_protocol without proxy_from", where);
}

static bool
proxy_equal(const struct proxy_config *a, const struct proxy_config *b)
{
	return (a->pc_on == b->pc_on && a->pc_timeout_ms == b->pc_timeout_ms &&
	    acl_equal(&a->pc_from, &b->pc_from));
}

/* Written independently of addr_overlaps(): fdistd.ini(5), listen. */
static bool
collide(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	const struct sockaddr_in	*a4 = (const void *)a, *b4 = (const void *)b;
	const struct sockaddr_in6	*a6 = (const void *)a, *b6 = (const void *)b;

	if (a->ss_family != b->ss_family)
		return (false);
	if (a->ss_family == AF_INET)
		return (a4->sin_port == b4->sin_port &&
		    (a4->sin_addr.s_addr == b4->sin_addr.s_addr ||
		    a4->sin_addr.s_addr == 0 || b4->sin_addr.s_addr == 0));
	return (a6->sin6_port == b6->sin6_port &&
	    ((memcmp(&a6->sin6_addr, &b6->sin6_addr, 16) == 0 &&
	    a6->sin6_scope_id == b6->sin6_scope_id) ||
	    IN6_IS_ADDR_UNSPECIFIED(&a6->sin6_addr) ||
	    IN6_IS_ADDR_UNSPECIFIED(&b6->sin6_addr)));
}

/* fdistd.ini(5): one metrics address, no share's; metrics_allow needs it. */
static void
check_metrics(const struct config *cf, int nlines)
{
	const struct metrics_config	*mc = &cf->cf_metrics;
	const struct share_config	*sc;
	size_t				 i;

	check_acl(&mc->mc_allow, "metrics_allow");
	FUZZ_CHECK(mc->mc_line >= 0 && mc->mc_line <= nlines, "metrics on "
	    "line %d", mc->mc_line);
	FUZZ_CHECK(mc->mc_line != 0 || (mc->mc_allow_line == 0 &&
	    mc->mc_allow.acl_n == 0), "metrics_allow without metrics");
	if (mc->mc_line == 0)
		return;
	FUZZ_CHECK(((const struct sockaddr_in *)&mc->mc_addr.la_ss)->sin_port
	    != 0, "metrics: port 0");
	TAILQ_FOREACH(sc, &cf->cf_shares, sc_entry) {
		for (i = 0; i < sc->sc_nlisten; i++)
			FUZZ_CHECK(!collide(&mc->mc_addr.la_ss,
			    &sc->sc_listen[i].la_ss), "metrics collides with "
			    "[%s] address #%zu", sc->sc_name, i);
	}
}

/* Whether config_dump() loses something of the address. */
static bool
dump_loses(const struct sockaddr_storage *ss)
{
	const struct sockaddr_in6	*sin6 = (const void *)ss;

	return (ss->ss_family == AF_INET6 && (sin6->sin6_scope_id != 0 ||
	    IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)));
}

/* Everything a loaded configuration promises; whether dump can reload. */
static bool
check_config(const struct config *cf, int nlines)
{
	const struct share_config	*sc, *sc2;
	const struct listen_addr	*la;
	size_t				 n = 0, i, j;
	char				 err[ERR_MAX];
	bool				 exact = true;

	FUZZ_CHECK(strcmp(cf->cf_path, PATH) == 0, "path %s", cf->cf_path);
	check_limits(&cf->cf_limits, "[fdistd]");
	FUZZ_CHECK(cf->cf_max_clients >= 1 && cf->cf_max_clients <= 1000000,
	    "max_clients %u", cf->cf_max_clients);
	FUZZ_CHECK(cf->cf_shutdown_timeout_ms <= DAY_MS, "shutdown_timeout "
	    "%llu", (unsigned long long)cf->cf_shutdown_timeout_ms);
	FUZZ_CHECK(cf->cf_log == LOG_AUTO || cf->cf_log == LOG_JOURNAL ||
	    cf->cf_log == LOG_STDERR, "log %d", (int)cf->cf_log);
	check_acl(&cf->cf_allow, "[fdistd] allow");
	check_acl(&cf->cf_deny, "[fdistd] deny");
	check_proxy(&cf->cf_proxy, "[fdistd] proxy", false);
	check_metrics(cf, nlines);
	FUZZ_CHECK(cf->cf_global_line >= 0 && cf->cf_global_line <= nlines,
	    "[fdistd] on line %d", cf->cf_global_line);
	FUZZ_CHECK(!TAILQ_EMPTY(&cf->cf_shares), "a config without shares");
	TAILQ_FOREACH(sc, &cf->cf_shares, sc_entry) {
		n++;
		FUZZ_CHECK(memchr(sc->sc_name, '\0', SHARE_NAME_MAX) != NULL,
		    "share name not terminated");
		FUZZ_CHECK(parse_share_name(sc->sc_name, err, sizeof(err)) == 0,
		    "invalid share name [%s]", sc->sc_name);
		FUZZ_CHECK(strcmp(sc->sc_name, "fdistd") != 0,
		    "a share named fdistd");
		FUZZ_CHECK(sc->sc_line >= 1 && sc->sc_line <= nlines,
		    "[%s] on line %d", sc->sc_name, sc->sc_line);
		FUZZ_CHECK(sc->sc_path != NULL, "[%s] has no file",
		    sc->sc_name);
		FUZZ_CHECK(sc->sc_path[0] == '/', "[%s]: relative file '%s'",
		    sc->sc_name, sc->sc_path);
		FUZZ_CHECK(strpbrk(sc->sc_path, "\r\n") == NULL,
		    "[%s]: line end in file", sc->sc_name);
		FUZZ_CHECK(sc->sc_path_line > sc->sc_line &&
		    sc->sc_path_line <= nlines, "[%s] file on line %d",
		    sc->sc_name, sc->sc_path_line);
		FUZZ_CHECK(sc->sc_fd == -1, "a file opened with system=false");
		FUZZ_CHECK(sc->sc_nlisten >= 1 &&
		    sc->sc_nlisten <= SHARE_LISTEN_MAX, "[%s]: %zu addresses",
		    sc->sc_name, sc->sc_nlisten);
		check_limits(&sc->sc_limits, sc->sc_name);
		FUZZ_CHECK(sc->sc_max_clients <= 1000000, "[%s]: max_clients %u",
		    sc->sc_name, sc->sc_max_clients);
		check_acl(&sc->sc_allow, "share allow");
		check_acl(&sc->sc_deny, "share deny");
		check_proxy(&sc->sc_proxy, "share proxy", true);
		for (sc2 = TAILQ_NEXT(sc, sc_entry); sc2 != NULL;
		    sc2 = TAILQ_NEXT(sc2, sc_entry))
			FUZZ_CHECK(strcmp(sc->sc_name, sc2->sc_name) != 0,
			    "share [%s] twice", sc->sc_name);
		for (i = 0; i < sc->sc_nlisten; i++) {
			la = &sc->sc_listen[i];
			FUZZ_CHECK((la->la_ss.ss_family == AF_INET &&
			    la->la_len == sizeof(struct sockaddr_in)) ||
			    (la->la_ss.ss_family == AF_INET6 &&
			    la->la_len == sizeof(struct sockaddr_in6)),
			    "[%s]: family %d, length %u", sc->sc_name,
			    la->la_ss.ss_family, la->la_len);
			FUZZ_CHECK(((const struct sockaddr_in *)&la->la_ss)->
			    sin_port != 0, "[%s]: port 0", sc->sc_name);
			FUZZ_CHECK(la->la_line > sc->sc_line &&
			    la->la_line <= nlines, "[%s]: listen on line %d",
			    sc->sc_name, la->la_line);
			if (dump_loses(&la->la_ss))
				exact = false;
		}
	}
	FUZZ_CHECK(n == cf->cf_nshares, "cf_nshares %zu, list %zu",
	    cf->cf_nshares, n);
	/* The manifest's addresses collide with none of the shares'. */
	sc2 = &cf->cf_manifest;
	FUZZ_CHECK(sc2->sc_nlisten <= SHARE_LISTEN_MAX, "manifest: %zu "
	    "addresses", sc2->sc_nlisten);
	for (j = 0; j < sc2->sc_nlisten; j++) {
		if (dump_loses(&sc2->sc_listen[j].la_ss))
			exact = false;
		TAILQ_FOREACH(sc, &cf->cf_shares, sc_entry) {
			for (i = 0; i < sc->sc_nlisten; i++)
				FUZZ_CHECK(!collide(&sc->sc_listen[i].la_ss,
				    &sc2->sc_listen[j].la_ss), "[%s] #%zu "
				    "collides with manifest #%zu", sc->sc_name,
				    i, j);
		}
	}
	/* No two addresses in the whole file may collide. */
	TAILQ_FOREACH(sc, &cf->cf_shares, sc_entry) {
		for (i = 0; i < sc->sc_nlisten; i++) {
			for (sc2 = sc; sc2 != NULL;
			    sc2 = TAILQ_NEXT(sc2, sc_entry)) {
				for (j = sc2 == sc ? i + 1 : 0;
				    j < sc2->sc_nlisten; j++)
					FUZZ_CHECK(!collide(
					    &sc->sc_listen[i].la_ss,
					    &sc2->sc_listen[j].la_ss),
					    "[%s] #%zu collides with [%s] #%zu",
					    sc->sc_name, i, sc2->sc_name, j);
			}
		}
	}
	return (exact);
}

static bool
limits_equal(const struct limits *a, const struct limits *b)
{
	return (a->lim_ack_timeout_ms == b->lim_ack_timeout_ms &&
	    a->lim_send_timeout_ms == b->lim_send_timeout_ms &&
	    a->lim_ack_max == b->lim_ack_max &&
	    a->lim_max_per_ip == b->lim_max_per_ip &&
	    a->lim_rate == b->lim_rate &&
	    a->lim_share_rate == b->lim_share_rate);
}

/* The dump, loaded again, is the same configuration. */
static void
check_reload(const struct config *cf)
{
	struct config			*cf2;
	const struct share_config	*a, *b;
	char				*text = NULL, err[ERR_MAX], *line, *nl;
	size_t				 textlen = 0, i;
	FILE				*fp;

	fp = open_memstream(&text, &textlen);
	FUZZ_CHECK(fp != NULL, "open_memstream");
	config_dump(cf, fp);
	fclose(fp);
	/* Lines the file format does not allow: see the report. */
	for (line = text; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
		if ((size_t)(nl - line) > LINE_MAX_TEXT) {
			free(text);
			return;
		}
	}
	fp = fmemopen(text, textlen, "r");
	FUZZ_CHECK(fp != NULL, "fmemopen");
	err[0] = '\0';
	cf2 = config_load_stream(fp, PATH, false, err, sizeof(err), NULL);
	fclose(fp);
	if (cf2 == NULL)
		fuzz_hexdump("dump", text, textlen);
	FUZZ_CHECK(cf2 != NULL, "config_dump's output does not load: %s", err);
	FUZZ_CHECK(limits_equal(&cf->cf_limits, &cf2->cf_limits) &&
	    cf->cf_max_clients == cf2->cf_max_clients &&
	    cf->cf_shutdown_timeout_ms == cf2->cf_shutdown_timeout_ms &&
	    cf->cf_log == cf2->cf_log && cf->cf_nshares == cf2->cf_nshares &&
	    acl_equal(&cf->cf_allow, &cf2->cf_allow) &&
	    acl_equal(&cf->cf_deny, &cf2->cf_deny) &&
	    proxy_equal(&cf->cf_proxy, &cf2->cf_proxy) &&
	    cf->cf_manifest.sc_nlisten == cf2->cf_manifest.sc_nlisten,
	    "the dump reloads with other global settings");
	for (i = 0; i < cf->cf_manifest.sc_nlisten; i++)
		FUZZ_CHECK(addr_equal(
		    (const struct sockaddr *)&cf->cf_manifest.sc_listen[i].la_ss,
		    (const struct sockaddr *)&cf2->cf_manifest.sc_listen[i].la_ss),
		    "manifest address #%zu reloads otherwise", i);
	FUZZ_CHECK((cf->cf_metrics.mc_line != 0) ==
	    (cf2->cf_metrics.mc_line != 0) && (cf->cf_metrics.mc_line == 0 ||
	    (addr_equal((const struct sockaddr *)&cf->cf_metrics.mc_addr.la_ss,
	    (const struct sockaddr *)&cf2->cf_metrics.mc_addr.la_ss) &&
	    (cf->cf_metrics.mc_allow.acl_n == 0 ?
	    cf2->cf_metrics.mc_allow.acl_n == 2 :
	    acl_equal(&cf->cf_metrics.mc_allow, &cf2->cf_metrics.mc_allow)))),
	    "the dump reloads with other metrics settings");
	for (a = TAILQ_FIRST(&cf->cf_shares), b = TAILQ_FIRST(&cf2->cf_shares);
	    a != NULL && b != NULL; a = TAILQ_NEXT(a, sc_entry),
	    b = TAILQ_NEXT(b, sc_entry)) {
		FUZZ_CHECK(strcmp(a->sc_name, b->sc_name) == 0 &&
		    strcmp(a->sc_path, b->sc_path) == 0 &&
		    a->sc_nlisten == b->sc_nlisten &&
		    limits_equal(&a->sc_limits, &b->sc_limits) &&
		    a->sc_max_clients == b->sc_max_clients &&
		    acl_equal(&a->sc_allow, &b->sc_allow) &&
		    acl_equal(&a->sc_deny, &b->sc_deny) &&
		    proxy_equal(&a->sc_proxy, &b->sc_proxy),
		    "share [%s] reloads otherwise", a->sc_name);
		for (i = 0; i < a->sc_nlisten; i++)
			FUZZ_CHECK(a->sc_listen[i].la_len ==
			    b->sc_listen[i].la_len && addr_equal(
			    (const struct sockaddr *)&a->sc_listen[i].la_ss,
			    (const struct sockaddr *)&b->sc_listen[i].la_ss),
			    "[%s] address #%zu reloads otherwise", a->sc_name,
			    i);
	}
	config_free(cf2);
	free(text);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config	*cf;
	char		*text, *err;
	FILE		*fp;

	if (devnull == NULL && (devnull = fopen("/dev/null", "we")) == NULL)
		abort();
	text = malloc(size ? size : 1);
	memcpy(text, data, size);
	err = malloc(ERR_MAX);
	err[0] = '\0';
	if ((fp = fmemopen(text, size, "r")) == NULL)
		abort();
	cf = config_load_stream(fp, PATH, false, err, ERR_MAX, NULL);
	fclose(fp);
	if (cf == NULL)
		check_error(err, ERR_MAX, count_lines(data, size));
	else {
		if (check_config(cf, count_lines(data, size)))
			check_reload(cf);
		config_dump(cf, devnull);
		config_free(cf);
	}
	free(err);
	free(text);
	return (0);
}
