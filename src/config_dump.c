/*
 * config_dump.c: print the effective configuration (fdistd -t -v) in
 * lines fdistd can read back.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <arpa/inet.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "fdistd.h"

static void
config_dump_limits(const struct limits *lim, FILE *fp)
{
	fprintf(fp, "ack_timeout = %" PRIu64 "ms\n", lim->lim_ack_timeout_ms);
	fprintf(fp, "send_timeout = %" PRIu64 "ms\n",
	    lim->lim_send_timeout_ms);
	fprintf(fp, "ack_max = %" PRIu32 "\n", lim->lim_ack_max);
	fprintf(fp, "max_per_ip = %" PRIu32 "\n", lim->lim_max_per_ip);
	fprintf(fp, "rate_limit = %" PRIu64 "\n", lim->lim_rate);
	fprintf(fp, "share_rate_limit = %" PRIu64 "\n", lim->lim_share_rate);
}

/*
 * A list key in lines fdistd can read back: a new "key = " line before
 * an item that would make the line too long, since each line adds.
 */
struct config_dump_list {
	FILE		*dl_fp;
	const char	*dl_key;
	size_t		 dl_col;
};

static void
config_dump_item(struct config_dump_list *dl, const char *item)
{
	size_t	len = strlen(item);
	int	n;

	if (dl->dl_col != 0 && dl->dl_col + 2 + len > INIH_LINE_MAX - 3) {
		fputc('\n', dl->dl_fp);
		dl->dl_col = 0;
	}
	if (dl->dl_col == 0)
		n = fprintf(dl->dl_fp, "%s = %s", dl->dl_key, item);
	else
		n = fprintf(dl->dl_fp, ", %s", item);
	if (n > 0)
		dl->dl_col += (size_t)n;
}

static void
config_dump_end(struct config_dump_list *dl)
{
	if (dl->dl_col != 0)
		fputc('\n', dl->dl_fp);
}

static void
config_dump_acl(const char *key, const struct acl *acl, FILE *fp)
{
	struct config_dump_list	dl = { fp, key, 0 };
	char			buf[INET6_ADDRSTRLEN], item[INET6_ADDRSTRLEN + 5];
	size_t			i;

	for (i = 0; i < acl->acl_n; i++) {
		inet_ntop(acl->acl_nets[i].ci_family, acl->acl_nets[i].ci_addr,
		    buf, sizeof(buf));
		snprintf(item, sizeof(item), "%s/%u", buf,
		    acl->acl_nets[i].ci_prefix);
		config_dump_item(&dl, item);
	}
	config_dump_end(&dl);
}

static void
config_dump_listen(const char *key, const struct share_config *sc, FILE *fp)
{
	struct config_dump_list	dl = { fp, key, 0 };
	char			name[ADDR_STR_MAX];
	size_t			i;

	for (i = 0; i < sc->sc_nlisten; i++) {
		addr_format((const struct sockaddr *)&sc->sc_listen[i].la_ss,
		    name, sizeof(name));
		config_dump_item(&dl, name);
	}
	config_dump_end(&dl);
}

/* Print the effective configuration (fdistd -t -v). */
void
config_dump(const struct config *cf, FILE *fp)
{
	static const char	*modes[] = { "auto", "journal", "stderr" };
	const struct share_config *sc;

	fprintf(fp, "[fdistd]\n");
	config_dump_limits(&cf->cf_limits, fp);
	fprintf(fp, "max_clients = %" PRIu32 "\n", cf->cf_max_clients);
	fprintf(fp, "shutdown_timeout = %" PRIu64 "ms\n",
	    cf->cf_shutdown_timeout_ms);
	fprintf(fp, "log = %s\n", modes[cf->cf_log]);
	if (cf->cf_workers == 0)
		fprintf(fp, "workers = auto\n");
	else
		fprintf(fp, "workers = %u\n", cf->cf_workers);
	config_dump_acl("allow", &cf->cf_allow, fp);
	config_dump_acl("deny", &cf->cf_deny, fp);
	config_proxy_dump(&cf->cf_proxy, fp);
	config_dump_listen("manifest", &cf->cf_manifest, fp);
	metrics_config_dump(&cf->cf_metrics, fp);
	TAILQ_FOREACH(sc, &cf->cf_shares, sc_entry) {
		fprintf(fp, "\n[%s]\n", sc->sc_name);
		config_dump_listen("listen", sc, fp);
		fprintf(fp, "file = %s\n", sc->sc_path);
		config_dump_limits(&sc->sc_limits, fp);
		if (sc->sc_max_clients != 0)
			fprintf(fp, "max_clients = %" PRIu32 "\n",
			    sc->sc_max_clients);
		config_dump_acl("allow", &sc->sc_allow, fp);
		config_dump_acl("deny", &sc->sc_deny, fp);
		config_proxy_dump(&sc->sc_proxy, fp);
	}
}
