/*
 * config_set.c: the keys of fdistd.ini(5), each with the function that
 * parses its value into the section being read; config.c reads the
 * file and calls them through config_set_keys.
 */
#include <sys/types.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fdistd.h"
#include "pool.h"

#define TIMEOUT_MIN_MS	1
#define TIMEOUT_MAX_MS	(24ULL * 60 * 60 * 1000)
#define CLIENTS_MAX	1000000

static int	config_set_ack_timeout(struct config_parse *, const char *,
		    char *, size_t);
static int	config_set_send_timeout(struct config_parse *, const char *,
		    char *, size_t);
static int	config_set_ack_max(struct config_parse *, const char *, char *,
		    size_t);
static int	config_set_max_clients(struct config_parse *, const char *,
		    char *, size_t);
static int	config_set_shutdown_timeout(struct config_parse *,
		    const char *, char *, size_t);
static int	config_set_log(struct config_parse *, const char *, char *,
		    size_t);
static int	config_set_max_per_ip(struct config_parse *, const char *,
		    char *, size_t);
static int	config_set_rate(struct config_parse *, const char *, char *,
		    size_t);
static int	config_set_share_rate(struct config_parse *, const char *,
		    char *, size_t);
static int	config_set_allow(struct config_parse *, const char *, char *,
		    size_t);
static int	config_set_deny(struct config_parse *, const char *, char *,
		    size_t);
static int	config_set_listen(struct config_parse *, const char *, char *,
		    size_t);
static int	config_set_file(struct config_parse *, const char *, char *,
		    size_t);
static int	config_set_proxy(struct config_parse *, const char *, char *,
		    size_t);
static int	config_set_proxy_from(struct config_parse *, const char *,
		    char *, size_t);
static int	config_set_proxy_timeout(struct config_parse *, const char *,
		    char *, size_t);
static int	config_set_manifest(struct config_parse *, const char *,
		    char *, size_t);
static int	config_set_metrics(struct config_parse *, const char *, char *,
		    size_t);
static int	config_set_metrics_allow(struct config_parse *, const char *,
		    char *, size_t);
static int	config_set_workers(struct config_parse *, const char *, char *,
		    size_t);

const struct config_key config_set_keys[NKEYS] = {
	[KEY_ACK_TIMEOUT] = { "ack_timeout", KEY_BOTH,
	    config_set_ack_timeout },
	[KEY_SEND_TIMEOUT] = { "send_timeout", KEY_BOTH,
	    config_set_send_timeout },
	[KEY_ACK_MAX] = { "ack_max", KEY_BOTH, config_set_ack_max },
	[KEY_MAX_PER_IP] = { "max_per_ip", KEY_BOTH, config_set_max_per_ip },
	[KEY_RATE_LIMIT] = { "rate_limit", KEY_BOTH, config_set_rate },
	[KEY_SHARE_RATE_LIMIT] = { "share_rate_limit", KEY_BOTH,
	    config_set_share_rate },
	[KEY_MAX_CLIENTS] = { "max_clients", KEY_BOTH,
	    config_set_max_clients },
	[KEY_SHUTDOWN_TIMEOUT] = { "shutdown_timeout", KEY_GLOBAL,
	    config_set_shutdown_timeout },
	[KEY_LOG] = { "log", KEY_GLOBAL, config_set_log },
	[KEY_LISTEN] = { "listen", KEY_SHARE | KEY_REPEAT,
	    config_set_listen },
	[KEY_FILE] = { "file", KEY_SHARE, config_set_file },
	[KEY_ALLOW] = { "allow", KEY_BOTH | KEY_REPEAT, config_set_allow },
	[KEY_DENY] = { "deny", KEY_BOTH | KEY_REPEAT, config_set_deny },
	[KEY_PROXY] = { "proxy_protocol", KEY_BOTH, config_set_proxy },
	[KEY_PROXY_FROM] = { "proxy_from", KEY_BOTH | KEY_REPEAT,
	    config_set_proxy_from },
	[KEY_PROXY_TIMEOUT] = { "proxy_timeout", KEY_BOTH,
	    config_set_proxy_timeout },
	[KEY_MANIFEST] = { "manifest", KEY_GLOBAL, config_set_manifest },
	[KEY_METRICS] = { "metrics", KEY_GLOBAL, config_set_metrics },
	[KEY_METRICS_ALLOW] = { "metrics_allow", KEY_GLOBAL | KEY_REPEAT,
	    config_set_metrics_allow },
	[KEY_WORKERS] = { "workers", KEY_GLOBAL, config_set_workers },
};
_Static_assert(NKEYS <= CONFIG_KEYS_MAX &&
    CONFIG_KEYS_MAX <= sizeof(unsigned int) * 8, "too many keys");

/* The limits the key being set applies to. */
static struct limits *
config_limits(struct config_parse *cp)
{
	if (cp->cp_share != NULL)
		return (&cp->cp_share->sc_limits);
	return (&cp->cp_cf->cf_limits);
}

static int
config_timeout(const char *value, uint64_t min, uint64_t *ms, char *err,
    size_t errlen)
{
	if (parse_duration_ms(value, ms, err, errlen) == -1)
		return (-1);
	if (*ms < min || *ms > TIMEOUT_MAX_MS) {
		snprintf(err, errlen, "'%s' is out of range (%s to 24h)", value,
		    min == 0 ? "0" : "1ms");
		return (-1);
	}
	return (0);
}

static int
config_set_ack_timeout(struct config_parse *cp, const char *value,
    char *err, size_t errlen)
{
	return (config_timeout(value, TIMEOUT_MIN_MS,
	    &config_limits(cp)->lim_ack_timeout_ms, err, errlen));
}

static int
config_set_send_timeout(struct config_parse *cp, const char *value,
    char *err, size_t errlen)
{
	return (config_timeout(value, TIMEOUT_MIN_MS,
	    &config_limits(cp)->lim_send_timeout_ms, err, errlen));
}

static int
config_set_shutdown_timeout(struct config_parse *cp, const char *value,
    char *err, size_t errlen)
{
	return (config_timeout(value, 0, &cp->cp_cf->cf_shutdown_timeout_ms,
	    err, errlen));
}

static int
config_set_ack_max(struct config_parse *cp, const char *value, char *err,
    size_t errlen)
{
	uint64_t	n;

	if (parse_size(value, &n, err, errlen) == -1)
		return (-1);
	if (n < 1 || n > ACK_MAX_LIMIT) {
		snprintf(err, errlen, "'%s' is out of range (1 to 64K)", value);
		return (-1);
	}
	config_limits(cp)->lim_ack_max = (uint32_t)n;
	return (0);
}

static int
config_set_max_clients(struct config_parse *cp, const char *value,
    char *err, size_t errlen)
{
	uint64_t	n;

	if (parse_count(value, &n, err, errlen) == -1)
		return (-1);
	if (n < 1 || n > CLIENTS_MAX) {
		snprintf(err, errlen, "'%s' is out of range (1 to %d)", value,
		    CLIENTS_MAX);
		return (-1);
	}
	if (cp->cp_share != NULL)
		cp->cp_share->sc_max_clients = (uint32_t)n;
	else
		cp->cp_cf->cf_max_clients = (uint32_t)n;
	return (0);
}

static int
config_set_max_per_ip(struct config_parse *cp, const char *value,
    char *err, size_t errlen)
{
	uint64_t	n;

	if (parse_count(value, &n, err, errlen) == -1)
		return (-1);
	if (n > CLIENTS_MAX) {
		snprintf(err, errlen, "'%s' is out of range (0 for no limit, "
		    "or up to %d)", value, CLIENTS_MAX);
		return (-1);
	}
	config_limits(cp)->lim_max_per_ip = (uint32_t)n;
	return (0);
}

/* A rate in bytes per second: 0 (no limit), or 1K to 100G. */
static int
config_rate(const char *value, uint64_t *rate, char *err, size_t errlen)
{
	if (parse_size(value, rate, err, errlen) == -1)
		return (-1);
	if (*rate != 0 && (*rate < 1024 || *rate > 100ULL << 30)) {
		snprintf(err, errlen, "'%s' is out of range (0 for no limit, or "
		    "1K to 100G bytes per second)", value);
		return (-1);
	}
	return (0);
}

static int
config_set_rate(struct config_parse *cp, const char *value, char *err,
    size_t errlen)
{
	return (config_rate(value, &config_limits(cp)->lim_rate, err, errlen));
}

static int
config_set_share_rate(struct config_parse *cp, const char *value,
    char *err, size_t errlen)
{
	return (config_rate(value, &config_limits(cp)->lim_share_rate, err,
	    errlen));
}

static int
config_set_allow(struct config_parse *cp, const char *value, char *err,
    size_t errlen)
{
	return (parse_acl(value, cp->cp_share ? &cp->cp_share->sc_allow :
	    &cp->cp_cf->cf_allow, err, errlen));
}

static int
config_set_deny(struct config_parse *cp, const char *value, char *err,
    size_t errlen)
{
	return (parse_acl(value, cp->cp_share ? &cp->cp_share->sc_deny :
	    &cp->cp_cf->cf_deny, err, errlen));
}

/* The proxy_* keys are config_proxy.c's, for the section being read. */
static struct proxy_config *
config_proxy(struct config_parse *cp)
{
	return (cp->cp_share ? &cp->cp_share->sc_proxy : &cp->cp_cf->cf_proxy);
}

static int
config_set_proxy(struct config_parse *cp, const char *value, char *err,
    size_t errlen)
{
	return (config_proxy_set_on(config_proxy(cp), value, cp->cp_lineno,
	    err, errlen));
}

static int
config_set_proxy_from(struct config_parse *cp, const char *value, char *err,
    size_t errlen)
{
	return (config_proxy_set_from(config_proxy(cp), value, cp->cp_lineno,
	    err, errlen));
}

static int
config_set_proxy_timeout(struct config_parse *cp, const char *value,
    char *err, size_t errlen)
{
	return (config_proxy_set_timeout(config_proxy(cp), value,
	    cp->cp_lineno, err, errlen));
}

/* A parse_listen() result as a setter's, noting a failure for now. */
static int
config_listen_result(struct config_parse *cp, int rv)
{
	if (rv == PARSE_LISTEN_RETRY)
		cp->cp_retry = true;
	return (rv == 0 ? 0 : -1);
}

static int
config_listen(struct config_parse *cp, const char *value,
    struct share_config *sc, char *err, size_t errlen)
{
	return (config_listen_result(cp, parse_listen(value, sc->sc_listen,
	    SHARE_LISTEN_MAX, &sc->sc_nlisten, cp->cp_system, err, errlen)));
}

/* The metrics keys are metrics.c's. */
static int
config_set_metrics(struct config_parse *cp, const char *value, char *err,
    size_t errlen)
{
	return (config_listen_result(cp, metrics_config_addr(
	    &cp->cp_cf->cf_metrics, value, cp->cp_lineno, cp->cp_system, err,
	    errlen)));
}

static int
config_set_metrics_allow(struct config_parse *cp, const char *value,
    char *err, size_t errlen)
{
	return (metrics_config_allow(&cp->cp_cf->cf_metrics, value,
	    cp->cp_lineno, err, errlen));
}

static int
config_set_log(struct config_parse *cp, const char *value, char *err,
    size_t errlen)
{
	if (strcmp(value, "auto") == 0)
		cp->cp_cf->cf_log = LOG_AUTO;
	else if (strcmp(value, "journal") == 0)
		cp->cp_cf->cf_log = LOG_JOURNAL;
	else if (strcmp(value, "stderr") == 0)
		cp->cp_cf->cf_log = LOG_STDERR;
	else {
		snprintf(err, errlen, "invalid value '%s' (use auto, journal "
		    "or stderr)", value);
		return (-1);
	}
	return (0);
}

/* auto (0): a sendfile worker per CPU; 1: the loop sends by itself. */
static int
config_set_workers(struct config_parse *cp, const char *value, char *err,
    size_t errlen)
{
	uint64_t	n;

	if (strcmp(value, "auto") == 0) {
		cp->cp_cf->cf_workers = 0;
		return (0);
	}
	if (parse_count(value, &n, err, errlen) == -1 || n < 1 ||
	    n > POOL_MAX) {
		snprintf(err, errlen, "invalid value '%s' (use auto, or a "
		    "number from 1 to %d)", value, POOL_MAX);
		return (-1);
	}
	cp->cp_cf->cf_workers = (unsigned int)n;
	return (0);
}

static int
config_set_listen(struct config_parse *cp, const char *value, char *err,
    size_t errlen)
{
	struct share_config	*sc = cp->cp_share;
	size_t			 i = sc->sc_nlisten;

	/* Each listen line adds to the share's addresses. */
	if (config_listen(cp, value, sc, err, errlen) == -1)
		return (-1);
	for (; i < sc->sc_nlisten; i++)
		sc->sc_listen[i].la_line = cp->cp_lineno;
	return (0);
}

static int
config_set_file(struct config_parse *cp, const char *value, char *err,
    size_t errlen)
{
	if (value[0] != '/') {
		snprintf(err, errlen, "'%s' is not an absolute path", value);
		return (-1);
	}
	free(cp->cp_share->sc_path);
	if ((cp->cp_share->sc_path = strdup(value)) == NULL) {
		snprintf(err, errlen, "%s", strerror(errno));
		return (-1);
	}
	cp->cp_share->sc_path_line = cp->cp_lineno;
	return (0);
}

/* The manifest's addresses: a share of its own (manifest.c). */
static int
config_set_manifest(struct config_parse *cp, const char *value, char *err,
    size_t errlen)
{
	struct share_config	*sc = &cp->cp_cf->cf_manifest;
	size_t			 i;

	if (config_listen(cp, value, sc, err, errlen) == -1)
		return (-1);
	for (i = 0; i < sc->sc_nlisten; i++)
		sc->sc_listen[i].la_line = cp->cp_lineno;
	snprintf(sc->sc_name, sizeof(sc->sc_name), "%s", MANIFEST_SHARE);
	sc->sc_line = cp->cp_lineno;
	return (0);
}
