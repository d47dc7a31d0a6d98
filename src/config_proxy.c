/*
 * config_proxy.c: the keys of the PROXY protocol, proxy_protocol,
 * proxy_from and proxy_timeout.  Each may be set in [fdistd], as the
 * default of every share, or in a share, which then overrides that one
 * key; a share that speaks the protocol must know whom to believe.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <arpa/inet.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "fdistd.h"

#define DEFAULT_PROXY_TIMEOUT_MS	(5 * 1000)
#define PROXY_TIMEOUT_MAX_MS		(60 * 60 * 1000)

void
config_proxy_defaults(struct proxy_config *pc)
{
	memset(pc, 0, sizeof(*pc));
	pc->pc_timeout_ms = DEFAULT_PROXY_TIMEOUT_MS;
}

int
config_proxy_set_on(struct proxy_config *pc, const char *value, int line,
    char *err, size_t errlen)
{
	if (strcmp(value, "yes") == 0)
		pc->pc_on = true;
	else if (strcmp(value, "no") == 0)
		pc->pc_on = false;
	else {
		snprintf(err, errlen, "invalid value '%s' (use yes or no)",
		    value);
		return (-1);
	}
	pc->pc_on_line = line;
	return (0);
}

/* Each proxy_from line adds to the list, as allow and deny do. */
int
config_proxy_set_from(struct proxy_config *pc, const char *value, int line,
    char *err, size_t errlen)
{
	if (parse_acl(value, &pc->pc_from, err, errlen) == -1)
		return (-1);
	pc->pc_from_line = line;
	return (0);
}

int
config_proxy_set_timeout(struct proxy_config *pc, const char *value,
    int line, char *err, size_t errlen)
{
	uint64_t	ms;

	if (parse_duration_ms(value, &ms, err, errlen) == -1)
		return (-1);
	if (ms < 1 || ms > PROXY_TIMEOUT_MAX_MS) {
		snprintf(err, errlen, "'%s' is out of range (1ms to 1h)",
		    value);
		return (-1);
	}
	pc->pc_timeout_ms = ms;
	pc->pc_timeout_line = line;
	return (0);
}

/*
 * A share takes each key it does not set from [fdistd] (global); a
 * share's own proxy_from replaces the global list.  Then proxy_protocol
 * needs a proxy_from: -1, with the line to blame in *line.
 */
int
config_proxy_check(struct proxy_config *pc, const struct proxy_config *global,
    const char *share, int *line, char *err, size_t errlen)
{
	if (pc->pc_on_line == 0)
		pc->pc_on = global->pc_on;
	if (pc->pc_from_line == 0)
		pc->pc_from = global->pc_from;
	if (pc->pc_timeout_line == 0)
		pc->pc_timeout_ms = global->pc_timeout_ms;
	if (pc->pc_on && pc->pc_from.acl_n == 0) {
		*line = pc->pc_on_line ? pc->pc_on_line : global->pc_on_line;
		snprintf(err, errlen, "share [%s]: proxy_protocol = yes needs "
		    "proxy_from, the balancers' addresses", share);
		return (-1);
	}
	return (0);
}

/* For fdistd -t -v: the settings in force. */
void
config_proxy_dump(const struct proxy_config *pc, FILE *fp)
{
	char	buf[INET6_ADDRSTRLEN];
	size_t	i;

	fprintf(fp, "proxy_protocol = %s\n", pc->pc_on ? "yes" : "no");
	for (i = 0; i < pc->pc_from.acl_n; i++) {
		inet_ntop(pc->pc_from.acl_nets[i].ci_family,
		    pc->pc_from.acl_nets[i].ci_addr, buf, sizeof(buf));
		fprintf(fp, "proxy_from = %s/%u\n", buf,
		    pc->pc_from.acl_nets[i].ci_prefix);
	}
	fprintf(fp, "proxy_timeout = %" PRIu64 "ms\n", pc->pc_timeout_ms);
}
