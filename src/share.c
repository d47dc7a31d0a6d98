/*
 * share.c: the running form of a share.  Each loaded configuration makes
 * its own share objects; a client holds a reference to the share it
 * connected to, so a reload never changes the file or the limits of a
 * transfer in flight.  The counts the limits are checked against, and
 * the share's rate bucket, are in a share_state found by name, so they
 * carry over a reload.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fdistd.h"

#define IP_BUCKETS	1024

/* How many clients of a share come from one address. */
struct ip_count {
	struct ip_count	*ic_next;
	uint8_t		 ic_addr[16];	/* IPv4 as IPv4-mapped IPv6 */
	uint32_t	 ic_clients;
};

static TAILQ_HEAD(, share_state) states = TAILQ_HEAD_INITIALIZER(states);

/* The state of the share called name, made if there is none yet. */
static struct share_state *
share_state_get(const char *name)
{
	struct share_state	*ss;

	TAILQ_FOREACH(ss, &states, ss_entry) {
		if (strcmp(ss->ss_name, name) == 0) {
			ss->ss_refs++;
			return (ss);
		}
	}
	if ((ss = calloc(1, sizeof(*ss))) == NULL)
		return (NULL);
	snprintf(ss->ss_name, sizeof(ss->ss_name), "%s", name);
	ss->ss_refs = 1;
	bucket_init(&ss->ss_bucket, 0);
	fair_init(&ss->ss_fair);
	TAILQ_INSERT_TAIL(&states, ss, ss_entry);
	return (ss);
}

static void
share_state_unref(struct share_state *ss)
{
	if (ss == NULL || --ss->ss_refs > 0)
		return;
	TAILQ_REMOVE(&states, ss, ss_entry);
	free(ss->ss_ips);	/* empty: every client was removed */
	fair_free(&ss->ss_fair);
	free(ss);
}

/* A share of config sc serving sf (whose reference it takes over). */
struct share *
share_new(const struct share_config *sc, struct sfile *sf)
{
	struct share	*sh;

	if ((sh = calloc(1, sizeof(*sh))) == NULL)
		return (NULL);
	if ((sh->sh_state = share_state_get(sc->sc_name)) == NULL) {
		free(sh);
		return (NULL);
	}
	snprintf(sh->sh_name, sizeof(sh->sh_name), "%s", sc->sc_name);
	sh->sh_file = sf;
	sh->sh_limits = sc->sc_limits;
	sh->sh_max_clients = sc->sc_max_clients;
	sh->sh_allow = sc->sc_allow;
	sh->sh_deny = sc->sc_deny;
	sh->sh_proxy = sc->sc_proxy;
	sh->sh_refs = 1;
	return (sh);
}

/*
 * The same share, serving sf instead (whose reference it takes over):
 * its file changed in place and the new content is served as a new
 * version, while clients in flight keep the share they connected to.
 */
struct share *
share_clone(const struct share *sh, struct sfile *sf)
{
	struct share	*nsh;

	if ((nsh = calloc(1, sizeof(*nsh))) == NULL)
		return (NULL);
	*nsh = *sh;
	nsh->sh_state->ss_refs++;
	nsh->sh_file = sf;
	nsh->sh_refs = 1;
	return (nsh);
}

/*
 * The share's configuration is the running one now: its share_rate_limit
 * becomes that of the state it shares with the clients in flight.  Not
 * in share_new(): a reload that fails after making its shares must leave
 * the running limits as they were.
 */
void
share_commit(struct share *sh)
{
	uint64_t	rate = sh->sh_limits.lim_share_rate;

	if (sh->sh_state->ss_bucket.bk_rate != rate) {
		bucket_set_rate(&sh->sh_state->ss_bucket, rate);
		fair_set_rate(&sh->sh_state->ss_fair, rate);
	}
}

struct share *
share_ref(struct share *sh)
{
	sh->sh_refs++;
	return (sh);
}

void
share_unref(struct share *sh)
{
	if (sh == NULL || --sh->sh_refs > 0)
		return;
	sfile_unref(sh->sh_file);
	share_state_unref(sh->sh_state);
	free(sh);
}

/* The peer's address as 16 bytes (IPv4 mapped), and its hash slot. */
static size_t
share_ip_key(const struct sockaddr *sa, uint8_t key[16])
{
	const struct sockaddr_in	*sin = (const struct sockaddr_in *)sa;
	uint32_t			 h = 2166136261u;
	size_t				 i;

	if (sa->sa_family == AF_INET) {
		memset(key, 0, 10);
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &sin->sin_addr, 4);
	} else
		memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	for (i = 0; i < 16; i++)
		h = (h ^ key[i]) * 16777619u;	/* FNV-1a */
	return (h % IP_BUCKETS);
}

static struct ip_count **
share_ip_find(struct share_state *ss, const struct sockaddr *sa,
    uint8_t key[16])
{
	struct ip_count	**icp;

	if (ss->ss_ips == NULL)
		return (NULL);
	for (icp = &ss->ss_ips[share_ip_key(sa, key)]; *icp != NULL;
	    icp = &(*icp)->ic_next) {
		if (memcmp((*icp)->ic_addr, key, 16) == 0)
			return (icp);
	}
	return (icp);
}

/* Clients of the share from this peer's address right now. */
uint32_t
share_ip_clients(struct share *sh, const struct sockaddr *sa)
{
	struct ip_count	**icp;
	uint8_t		  key[16];

	icp = share_ip_find(sh->sh_state, sa, key);
	return (icp != NULL && *icp != NULL ? (*icp)->ic_clients : 0);
}

/*
 * Count a new client and its address, always: a reload may bring in a
 * max_per_ip that must count the clients already connected.  -1: no memory.
 */
int
share_client_add(struct share *sh, const struct sockaddr *sa)
{
	struct share_state	 *ss = sh->sh_state;
	struct ip_count		**icp;
	uint8_t			  key[16];

	if (ss->ss_ips == NULL && (ss->ss_ips = calloc(IP_BUCKETS,
	    sizeof(*ss->ss_ips))) == NULL)
		return (-1);
	icp = share_ip_find(ss, sa, key);
	if (*icp == NULL) {
		if ((*icp = calloc(1, sizeof(**icp))) == NULL)
			return (-1);
		memcpy((*icp)->ic_addr, key, 16);
	}
	(*icp)->ic_clients++;
	ss->ss_active++;
	return (0);
}

void
share_client_remove(struct share *sh, const struct sockaddr *sa)
{
	struct share_state	 *ss = sh->sh_state;
	struct ip_count		**icp, *ic;
	uint8_t			  key[16];

	ss->ss_active--;
	icp = share_ip_find(ss, sa, key);
	if (icp == NULL || (ic = *icp) == NULL)
		return;
	if (--ic->ic_clients == 0) {
		*icp = ic->ic_next;
		free(ic);
	}
}
