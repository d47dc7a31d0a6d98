/*
 * config.c: load and validate /etc/fdistd.ini.
 *
 * inih does the INI syntax.  The daemon feeds it lines through its own
 * reader so that it knows the line number of every key (Debian builds
 * inih without INI_HANDLER_LINENO), can reject lines longer than inih's
 * fixed 200-byte buffer instead of letting them be cut, and sees section
 * headers even when a section holds no keys.  The first error stops the
 * load with "file:line: what is wrong"; a config is returned only whole.
 */
#include <sys/types.h>
#include <sys/stat.h>

#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fdistd.h"

#define DEFAULT_ACK_TIMEOUT_MS		(30 * 1000)
#define DEFAULT_SEND_TIMEOUT_MS		(60 * 1000)
#define DEFAULT_ACK_MAX			256
#define DEFAULT_MAX_CLIENTS		10000
#define DEFAULT_SHUTDOWN_TIMEOUT_MS	(30 * 1000)

static void	config_vfail(struct config_parse *, int, const char *, va_list)
		    __attribute__((format(printf, 3, 0)));
static int	config_fail(struct config_parse *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));
static int	config_fail_at(struct config_parse *, int, const char *, ...)
		    __attribute__((format(printf, 3, 4)));

/* The key's index in config_set_keys, or NKEYS if there is no such key. */
static int
config_key_index(const char *name)
{
	int	i;

	for (i = 0; i < NKEYS; i++) {
		if (strcmp(config_set_keys[i].k_name, name) == 0)
			break;
	}
	return (i);
}

/*
 * Record the first error as "file:line: message" (no line if 0).  The
 * message quotes bytes of the file: escape it, so that checking a
 * hostile file cannot put control sequences on a terminal.
 */
static void
config_vfail(struct config_parse *cp, int line, const char *fmt, va_list ap)
{
	char	msg[ERR_MAX], full[ERR_MAX + 64];

	if (cp->cp_failed)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (line > 0)
		snprintf(full, sizeof(full), "%s:%d: %s", cp->cp_cf->cf_path,
		    line, msg);
	else
		snprintf(full, sizeof(full), "%s: %s", cp->cp_cf->cf_path, msg);
	escape_text(cp->cp_err, cp->cp_errlen, (const unsigned char *)full,
	    strlen(full));
	cp->cp_failed = true;
}

/* The first error, at the line being read; 0 for inih's handler. */
static int
config_fail(struct config_parse *cp, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	config_vfail(cp, cp->cp_lineno, fmt, ap);
	va_end(ap);
	return (0);
}

/*
 * After the last share, the manifest if it listens: the configs that
 * bind addresses.  No share can be called MANIFEST_SHARE.
 */
const struct share_config *
config_next_listening(const struct config *cf, const struct share_config *sc)
{
	const struct share_config	*m = &cf->cf_manifest;

	if (sc == m)
		return (NULL);
	if (TAILQ_NEXT(sc, sc_entry) != NULL)
		return (TAILQ_NEXT(sc, sc_entry));
	return (m->sc_nlisten > 0 ? m : NULL);
}

/* A "[name]" line: start the global section or a new share. */
static int
config_section(struct config_parse *cp, const char *line)
{
	struct config		*cf = cp->cp_cf;
	struct share_config	*sc;
	char			 name[128], err[ERR_MAX];
	const char		*end = strchr(line, ']'), *after;
	size_t			 len;

	if (end == NULL)
		return (config_fail(cp, "syntax error: missing ']' in section "
		    "header"));
	after = end + 1 + strspn(end + 1, " \t");
	if (*after != '\0' && strchr(";#", *after) == NULL)
		return (config_fail(cp, "syntax error: text after ']' in "
		    "section header"));
	line++;
	while (*line == ' ' || *line == '\t')
		line++;
	len = (size_t)(end - line);
	while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	if (len >= sizeof(name))
		return (config_fail(cp, "section name too long"));
	memcpy(name, line, len);
	name[len] = '\0';
	cp->cp_in_section = true;

	if (strcmp(name, "fdistd") == 0) {
		if (cf->cf_global_line != 0)
			return (config_fail(cp, "duplicate section [fdistd] "
			    "(first on line %d)", cf->cf_global_line));
		cf->cf_global_line = cp->cp_lineno;
		cp->cp_share = NULL;
		return (1);
	}
	if (parse_share_name(name, err, sizeof(err)) == -1)
		return (config_fail(cp, "%s", err));
	TAILQ_FOREACH(sc, &cf->cf_shares, sc_entry) {
		if (strcmp(sc->sc_name, name) == 0)
			return (config_fail(cp, "duplicate share [%s] (first "
			    "on line %d)", name, sc->sc_line));
	}
	if ((sc = calloc(1, sizeof(*sc))) == NULL)
		return (config_fail(cp, "%s", strerror(errno)));
	memcpy(sc->sc_name, name, len + 1);	/* parse_share_name checked */
	sc->sc_line = cp->cp_lineno;
	sc->sc_fd = -1;
	TAILQ_INSERT_TAIL(&cf->cf_shares, sc, sc_entry);
	cf->cf_nshares++;
	cp->cp_share = sc;
	return (1);
}

/*
 * inih's reader: hand over one line at a time, keeping count.  Leading
 * blanks are dropped so that inih never takes a line for the
 * continuation of the previous value.
 */
static char *
config_read_line(char *buf, int size, void *arg)
{
	struct config_parse	*cp = arg;
	ssize_t			 n;
	size_t			 len;
	char			*p;

	if (cp->cp_failed)
		return (NULL);
	n = getline(&cp->cp_line, &cp->cp_linecap, cp->cp_fp);
	if (n == -1) {
		if (ferror(cp->cp_fp))
			config_fail(cp, "read error: %s", strerror(errno));
		return (NULL);
	}
	cp->cp_lineno++;
	p = cp->cp_line;
	if (memchr(p, '\0', (size_t)n) != NULL) {
		config_fail(cp, "NUL byte in line");
		return (NULL);
	}
	if (cp->cp_lineno == 1 && strncmp(p, "\xef\xbb\xbf", 3) == 0)
		p += 3;		/* a UTF-8 byte order mark */
	len = strcspn(p, "\r\n");
	if (len + 3 > (size_t)size || len + 3 > INIH_LINE_MAX) {
		config_fail(cp, "line too long (%zu characters; at most %d)",
		    len, INIH_LINE_MAX - 3);
		return (NULL);
	}
	p += strspn(p, " \t");
	len = strcspn(p, "\r\n");
	if (p[len] == '\r' && p[len + 1] != '\n' && p[len + 1] != '\0') {
		config_fail(cp, "carriage return inside a line");
		return (NULL);
	}
	p[len] = '\0';
	if (*p == '[' && config_section(cp, p) == 0)
		return (NULL);
	/* Caught here, inih's error would come after later ones of ours. */
	if (*p != '\0' && *p != '[' && *p != ';' && *p != '#' &&
	    strpbrk(p, "=:") == NULL) {
		config_fail(cp, "syntax error: expected [section], key = value "
		    "or a comment");
		return (NULL);
	}
	memcpy(buf, p, len + 1);
	return (buf);
}

/* inih's handler: one "key = value" of the current section. */
static int
config_handle(void *arg, const char *section, const char *name,
    const char *value)
{
	struct config_parse	*cp = arg;
	const struct config_key	*k;
	unsigned int		*set;
	int			*lines;
	char			 err[ERR_MAX];
	size_t			 i;

	(void)section;		/* config_section tracked it */
	if (cp->cp_failed)
		return (0);
	if (strpbrk(name, " \t") != NULL)
		return (config_fail(cp, "syntax error: expected key = value"));
	if (!cp->cp_in_section)
		return (config_fail(cp, "'%s' is outside any section (put "
		    "global settings under [fdistd])", name));
	if ((i = config_key_index(name)) == NKEYS)
		return (config_fail(cp, "unknown key '%s' in [%s]", name,
		    cp->cp_share ? cp->cp_share->sc_name : "fdistd"));
	k = &config_set_keys[i];
	if (cp->cp_share == NULL && !(k->k_scope & KEY_GLOBAL))
		return (config_fail(cp, "'%s' belongs in a share section, "
		    "not in [fdistd]", name));
	if (cp->cp_share != NULL && !(k->k_scope & KEY_SHARE))
		return (config_fail(cp, "'%s' is a global setting: put it "
		    "under [fdistd]", name));
	set = cp->cp_share ? &cp->cp_share->sc_keys_set : &cp->cp_cf->cf_keys_set;
	lines = cp->cp_share ? cp->cp_share->sc_key_line :
	    cp->cp_cf->cf_key_line;
	if (KEY_IS_SET(*set, i) && !(k->k_scope & KEY_REPEAT))
		return (config_fail(cp, "duplicate key '%s' (first set on line "
		    "%d)", name, lines[i]));
	*set |= 1U << i;
	lines[i] = cp->cp_lineno;
	if (k->k_set(cp, value, err, sizeof(err)) == -1)
		return (config_fail(cp, "%s: %s", name, err));
	return (1);
}

/* The first error, at a given line (0: the file as a whole). */
static int
config_fail_at(struct config_parse *cp, int line, const char *fmt, ...)
{
	va_list	ap;

	va_start(ap, fmt);
	config_vfail(cp, line, fmt, ap);
	va_end(ap);
	return (-1);
}

/* The first address configured before la that cannot be bound with it. */
static const struct listen_addr *
config_collision(const struct config *cf, const struct listen_addr *la,
    const struct share_config **owner)
{
	const struct share_config	*sc;
	size_t				 i;

	CONFIG_FOREACH_LISTENING(sc, cf) {
		for (i = 0; i < sc->sc_nlisten; i++) {
			if (&sc->sc_listen[i] == la)
				return (NULL);
			if (addr_overlaps((const struct sockaddr *)&la->la_ss,
			    (const struct sockaddr *)&sc->sc_listen[i].la_ss)) {
				*owner = sc;
				return (&sc->sc_listen[i]);
			}
		}
	}
	return (NULL);
}

/* No two listen addresses, in any shares, may collide. */
static int
config_check_listen(struct config_parse *cp)
{
	const struct share_config	*sc, *owner;
	const struct listen_addr	*la, *first;
	char				 name[ADDR_STR_MAX];
	char				 other[ADDR_STR_MAX];
	size_t				 i;

	CONFIG_FOREACH_LISTENING(sc, cp->cp_cf) {
		for (i = 0; i < sc->sc_nlisten; i++) {
			la = &sc->sc_listen[i];
			if ((first = config_collision(cp->cp_cf, la,
			    &owner)) == NULL)
				continue;
			addr_format((const struct sockaddr *)&la->la_ss, name,
			    sizeof(name));
			if (addr_equal((const struct sockaddr *)&la->la_ss,
			    (const struct sockaddr *)&first->la_ss))
				return (config_fail_at(cp, la->la_line,
				    "listen address %s is already used by [%s] "
				    "(line %d)", name, owner->sc_name,
				    first->la_line));
			addr_format((const struct sockaddr *)&first->la_ss,
			    other, sizeof(other));
			return (config_fail_at(cp, la->la_line,
			    "listen address %s overlaps %s of [%s] (line %d)",
			    name, other, owner->sc_name, first->la_line));
		}
	}
	return (0);
}

/* Open a share's file now: it must exist and be a regular file. */
static int
config_open_file(struct config_parse *cp, struct share_config *sc)
{
	struct stat	st;
	char		why[ERR_MAX];
	int		fd, errnum;

	fd = open(sc->sc_path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd == -1) {
		errnum = errno;
		sandbox_explain(sc->sc_path, errnum, why, sizeof(why));
		return (config_fail_at(cp, sc->sc_path_line, "file %s: %s%s",
		    sc->sc_path, strerror(errnum), why));
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		close(fd);
		return (config_fail_at(cp, sc->sc_path_line, "file %s: not a "
		    "regular file", sc->sc_path));
	}
	sc->sc_fd = fd;
	return (0);
}

/* A share takes the global value of each limit it does not set. */
static void
config_inherit(struct share_config *sc, const struct config *cf)
{
	if (!KEY_IS_SET(sc->sc_keys_set, KEY_ACK_TIMEOUT))
		sc->sc_limits.lim_ack_timeout_ms =
		    cf->cf_limits.lim_ack_timeout_ms;
	if (!KEY_IS_SET(sc->sc_keys_set, KEY_SEND_TIMEOUT))
		sc->sc_limits.lim_send_timeout_ms =
		    cf->cf_limits.lim_send_timeout_ms;
	if (!KEY_IS_SET(sc->sc_keys_set, KEY_ACK_MAX))
		sc->sc_limits.lim_ack_max = cf->cf_limits.lim_ack_max;
	if (!KEY_IS_SET(sc->sc_keys_set, KEY_MAX_PER_IP))
		sc->sc_limits.lim_max_per_ip = cf->cf_limits.lim_max_per_ip;
	if (!KEY_IS_SET(sc->sc_keys_set, KEY_RATE_LIMIT))
		sc->sc_limits.lim_rate = cf->cf_limits.lim_rate;
	if (!KEY_IS_SET(sc->sc_keys_set, KEY_SHARE_RATE_LIMIT))
		sc->sc_limits.lim_share_rate = cf->cf_limits.lim_share_rate;
	/* A share's own allow list replaces the global one. */
	if (!KEY_IS_SET(sc->sc_keys_set, KEY_ALLOW))
		sc->sc_allow = cf->cf_allow;
}

/* Every share complete, defaults inherited, addresses distinct. */
static int
config_check(struct config_parse *cp)
{
	struct config		*cf = cp->cp_cf;
	struct share_config	*sc;
	char			 err[ERR_MAX];
	int			 line;

	if (TAILQ_EMPTY(&cf->cf_shares))
		return (config_fail_at(cp, 0, "no shares configured (add a "
		    "[name] section with listen and file)"));
	TAILQ_FOREACH(sc, &cf->cf_shares, sc_entry) {
		if (sc->sc_nlisten == 0)
			return (config_fail_at(cp, sc->sc_line, "share [%s] "
			    "has no listen address", sc->sc_name));
		if (sc->sc_path == NULL)
			return (config_fail_at(cp, sc->sc_line, "share [%s] "
			    "has no file", sc->sc_name));
		config_inherit(sc, cf);
		if (config_proxy_check(&sc->sc_proxy, &cf->cf_proxy,
		    sc->sc_name, &line, err, sizeof(err)) == -1)
			return (config_fail_at(cp, line, "%s", err));
	}
	/* The manifest's limits and PROXY settings are the global ones. */
	config_inherit(&cf->cf_manifest, cf);
	if (config_proxy_check(&cf->cf_manifest.sc_proxy, &cf->cf_proxy,
	    MANIFEST_SHARE, &line, err, sizeof(err)) == -1)
		return (config_fail_at(cp, line, "%s", err));
	if (config_check_listen(cp) == -1)
		return (-1);
	if (metrics_config_check(cf, &line, err, sizeof(err)) == -1)
		return (config_fail_at(cp, line, "%s", err));
	if (!cp->cp_system)
		return (0);
	TAILQ_FOREACH(sc, &cf->cf_shares, sc_entry) {
		if (config_open_file(cp, sc) == -1)
			return (-1);
	}
	return (0);
}

static struct config *
config_new(const char *path)
{
	struct config	*cf;

	if ((cf = calloc(1, sizeof(*cf))) == NULL)
		return (NULL);
	if ((cf->cf_path = strdup(path)) == NULL) {
		free(cf);
		return (NULL);
	}
	cf->cf_limits.lim_ack_timeout_ms = DEFAULT_ACK_TIMEOUT_MS;
	cf->cf_limits.lim_send_timeout_ms = DEFAULT_SEND_TIMEOUT_MS;
	cf->cf_limits.lim_ack_max = DEFAULT_ACK_MAX;
	cf->cf_max_clients = DEFAULT_MAX_CLIENTS;
	cf->cf_shutdown_timeout_ms = DEFAULT_SHUTDOWN_TIMEOUT_MS;
	cf->cf_log = LOG_AUTO;
	config_proxy_defaults(&cf->cf_proxy);
	cf->cf_manifest.sc_fd = -1;
	TAILQ_INIT(&cf->cf_shares);
	return (cf);
}

/*
 * Load a configuration from a stream named path.  With system set, the
 * shares' files are opened (and kept open) and host names resolved;
 * without, only the text is checked.  On failure, *retry (if not NULL)
 * says whether the resolver failed for now, so that a later try might
 * load the same file.
 */
struct config *
config_load_stream(FILE *fp, const char *path, bool system, char *err,
    size_t errlen, bool *retry)
{
	struct config_parse	 cp;
	int			 rv;

	memset(&cp, 0, sizeof(cp));
	cp.cp_fp = fp;
	cp.cp_system = system;
	cp.cp_err = err;
	cp.cp_errlen = errlen;
	if ((cp.cp_cf = config_new(path)) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return (NULL);
	}
	rv = ini_parse_stream(config_read_line, &cp, config_handle, &cp);
	free(cp.cp_line);
	if (!cp.cp_failed && rv > 0)
		config_fail_at(&cp, rv, "syntax error");
	else if (!cp.cp_failed && rv != 0)
		config_fail_at(&cp, 0, "cannot parse (error %d)", rv);
	if (!cp.cp_failed)
		config_check(&cp);
	if (retry != NULL)
		*retry = cp.cp_failed && cp.cp_retry;
	if (cp.cp_failed) {
		config_free(cp.cp_cf);
		return (NULL);
	}
	return (cp.cp_cf);
}

/* Load the configuration file at path; *retry as config_load_stream(). */
struct config *
config_load(const char *path, bool system, char *err, size_t errlen,
    bool *retry)
{
	struct config	*cf;
	FILE		*fp;
	char		 msg[ERR_MAX];

	if (retry != NULL)
		*retry = false;
	if ((fp = fopen(path, "re")) == NULL) {
		/* Escaped as every other error is: see config_vfail(). */
		snprintf(msg, sizeof(msg), "%s: %s", path, strerror(errno));
		escape_text(err, errlen, (const unsigned char *)msg,
		    strlen(msg));
		return (NULL);
	}
	cf = config_load_stream(fp, path, system, err, errlen, retry);
	fclose(fp);
	return (cf);
}

/* Free a configuration, closing any files it still holds. */
void
config_free(struct config *cf)
{
	struct share_config	*sc;

	if (cf == NULL)
		return;
	while ((sc = TAILQ_FIRST(&cf->cf_shares)) != NULL) {
		TAILQ_REMOVE(&cf->cf_shares, sc, sc_entry);
		if (sc->sc_fd != -1)
			close(sc->sc_fd);
		free(sc->sc_path);
		free(sc);
	}
	free(cf->cf_path);
	free(cf);
}

/* The line a share set a key on (the last, for a list), or 0. */
int
config_share_key_line(const struct share_config *sc, const char *key)
{
	int	i = config_key_index(key);

	if (i == NKEYS || !KEY_IS_SET(sc->sc_keys_set, i))
		return (0);
	return (sc->sc_key_line[i]);
}
