/*
 * metrics_config.c: the metrics and metrics_allow keys of [fdistd]
 * (fdistd.ini(5)); metrics.c serves what they say.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <stdio.h>
#include <string.h>

#include "fdistd.h"

/* "metrics = ADDR:PORT": exactly one address. */
int
metrics_config_addr(struct metrics_config *mc, const char *value, int line,
    bool resolve, char *err, size_t errlen)
{
	struct listen_addr	la[2];
	size_t			n = 0;
	int			rv;

	rv = parse_listen(value, la, 2, &n, resolve, err, errlen);
	if (rv != 0 && n < 2)
		return (rv);
	if (n != 1) {
		snprintf(err, errlen, "'%s' is not one address (use HOST:PORT "
		    "or [IPV6]:PORT, say 127.0.0.1:9110)", value);
		return (-1);
	}
	mc->mc_addr = la[0];
	mc->mc_addr.la_line = line;
	mc->mc_line = line;
	return (0);
}

int
metrics_config_allow(struct metrics_config *mc, const char *value, int line,
    char *err, size_t errlen)
{
	mc->mc_allow_line = line;
	return (parse_acl(value, &mc->mc_allow, err, errlen));
}

/* The metrics address must be free of the shares' addresses. */
/* Whether the metrics address stays clear of a share's (or the manifest's). */
static int
metrics_config_clear_of(const struct metrics_config *mc,
    const struct share_config *sc, char *err, size_t errlen)
{
	char	name[ADDR_STR_MAX];
	size_t	i;

	for (i = 0; i < sc->sc_nlisten; i++) {
		if (!addr_overlaps((const struct sockaddr *)&mc->mc_addr.la_ss,
		    (const struct sockaddr *)&sc->sc_listen[i].la_ss))
			continue;
		addr_format((const struct sockaddr *)&mc->mc_addr.la_ss,
		    name, sizeof(name));
		snprintf(err, errlen, "metrics address %s overlaps a "
		    "listen address of [%s] (line %d)", name,
		    sc->sc_name, sc->sc_listen[i].la_line);
		return (-1);
	}
	return (0);
}

int
metrics_config_check(const struct config *cf, int *line, char *err,
    size_t errlen)
{
	const struct metrics_config	*mc = &cf->cf_metrics;
	const struct share_config	*sc;

	*line = mc->mc_allow_line;
	if (mc->mc_line == 0 && mc->mc_allow_line != 0) {
		snprintf(err, errlen, "metrics_allow without metrics (set "
		    "metrics = ADDR:PORT to serve them)");
		return (-1);
	}
	*line = mc->mc_line;
	if (mc->mc_line == 0)
		return (0);
	TAILQ_FOREACH(sc, &cf->cf_shares, sc_entry) {
		if (metrics_config_clear_of(mc, sc, err, errlen) == -1)
			return (-1);
	}
	return (metrics_config_clear_of(mc, &cf->cf_manifest, err, errlen));
}

/* For fdistd -t -v. */
void
metrics_config_dump(const struct metrics_config *mc, FILE *fp)
{
	char	name[ADDR_STR_MAX], net[INET6_ADDRSTRLEN];
	size_t	i;

	if (mc->mc_line == 0)
		return;
	addr_format((const struct sockaddr *)&mc->mc_addr.la_ss, name,
	    sizeof(name));
	fprintf(fp, "metrics = %s\n", name);
	if (mc->mc_allow.acl_n == 0)
		fprintf(fp, "metrics_allow = %s\n", METRICS_LOOPBACK);
	for (i = 0; i < mc->mc_allow.acl_n; i++) {
		inet_ntop(mc->mc_allow.acl_nets[i].ci_family,
		    mc->mc_allow.acl_nets[i].ci_addr, net, sizeof(net));
		fprintf(fp, "metrics_allow = %s/%u\n", net,
		    mc->mc_allow.acl_nets[i].ci_prefix);
	}
}
