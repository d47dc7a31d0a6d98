/*
 * report_fold.c: what the records say of each host: the servers and the
 * versions they served (digest records), each transfer record folded
 * into its host's entry, and from those the host's state.
 */
#include <sys/types.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"

static int	report_fold_version(struct report *, int, const char *);
static uint64_t	report_fold_ack_time(const struct report_ack *);
static int	report_fold_is_target(const struct report *,
		    const struct report_ack *);
static void	report_fold_ack(struct report *, struct report_host *,
		    const char *, int, int, uint64_t, int);

/* The index of the entry's server, added if new. */
int
report_fold_server(struct report *r, const struct report_entry *e)
{
	static size_t		 last;
	struct report_server	*s, *ns;
	size_t			 i;

	if (last < r->r_nservers) {
		s = &r->r_servers[last];
		if (strcmp(s->rs_machine, e->re_machine) == 0 &&
		    strcmp(s->rs_hostname, e->re_hostname) == 0)
			return ((int)last);
	}
	for (i = 0; i < r->r_nservers; i++) {
		s = &r->r_servers[i];
		if (strcmp(s->rs_machine, e->re_machine) == 0 &&
		    strcmp(s->rs_hostname, e->re_hostname) == 0)
			return ((int)(last = i));
	}
	ns = reallocarray(r->r_servers, r->r_nservers + 1, sizeof(*ns));
	if (ns == NULL)
		return (REPORT_NOSERVER);
	r->r_servers = ns;
	s = &ns[r->r_nservers];
	memset(s, 0, sizeof(*s));
	snprintf(s->rs_hostname, sizeof(s->rs_hostname), "%s",
	    e->re_hostname[0] != '\0' ? e->re_hostname : "?");
	snprintf(s->rs_machine, sizeof(s->rs_machine), "%s", e->re_machine);
	s->rs_dversion = -1;
	/* Two servers of one name are told apart by their machine ids. */
	snprintf(s->rs_display, sizeof(s->rs_display), "%s", s->rs_hostname);
	for (i = 0; i < r->r_nservers; i++)
		if (strcmp(ns[i].rs_hostname, s->rs_hostname) == 0) {
			snprintf(s->rs_display, sizeof(s->rs_display),
			    "%s/%.8s", s->rs_hostname, s->rs_machine);
			snprintf(ns[i].rs_display, sizeof(ns[i].rs_display),
			    "%s/%.8s", ns[i].rs_hostname, ns[i].rs_machine);
		}
	last = r->r_nservers;
	return ((int)r->r_nservers++);
}

const char *
report_fold_server_name(const struct report *r, int server)
{
	if (server < 0 || (size_t)server >= r->r_nservers)
		return ("-");
	return (r->r_servers[server].rs_display);
}

/* The index of a server's version token, added (unresolved) if new. */
static int
report_fold_version(struct report *r, int server, const char *token)
{
	struct report_version	*nv, *v;
	size_t			 i;

	for (i = r->r_nversions; i-- > 0; )
		if (r->r_versions[i].rv_server == server &&
		    strcmp(r->r_versions[i].rv_token, token) == 0)
			return ((int)i);
	nv = reallocarray(r->r_versions, r->r_nversions + 1, sizeof(*nv));
	if (nv == NULL)
		return (-1);
	r->r_versions = nv;
	v = &nv[r->r_nversions];
	if ((v->rv_token = strdup(token)) == NULL)
		return (-1);
	v->rv_server = server;
	v->rv_sha[0] = '\0';
	return ((int)r->r_nversions++);
}

/* The digest of a version, "" while no digest record named it. */
const char *
report_fold_version_sha(const struct report *r, int version)
{
	if (version < 0 || (size_t)version >= r->r_nversions)
		return ("");
	return (r->r_versions[version].rv_sha);
}

/*
 * A digest record: what its server serves from then on, and the
 * version's digest if known.  The record a share gets when it starts
 * serving a version the daemon has still to hash says
 * FDIST_DIGEST=pending, one it could not hash failed; neither has a
 * digest, and each needs a version to name what is served.
 */
void
report_fold_digest(struct report *r, const struct report_entry *e,
    int server)
{
	struct report_server	*s = &r->r_servers[server];
	enum report_digest	 state;
	int			 v = -1;

	if (e->re_file_sha[0] != '\0')
		state = RD_KNOWN;
	else if (strcmp(e->re_digest, "pending") == 0)
		state = RD_PENDING;
	else if (strcmp(e->re_digest, "failed") == 0)
		state = RD_FAILED;
	else
		return;
	if (e->re_version[0] != '\0')
		v = report_fold_version(r, server, e->re_version);
	if (state == RD_KNOWN && v >= 0 &&
	    strcmp(r->r_versions[v].rv_sha, e->re_file_sha) != 0) {
		memcpy(r->r_versions[v].rv_sha, e->re_file_sha,
		    sizeof(e->re_file_sha));
		r->r_target_changed = 1;	/* acks may resolve now */
	}
	if (state != RD_KNOWN && v < 0)
		return;
	if (e->re_time <= r->r_until && e->re_time >= s->rs_dtime) {
		s->rs_dtime = e->re_time;
		s->rs_dstate = state;
		s->rs_dversion = v;
		memcpy(s->rs_dsha, e->re_file_sha, sizeof(e->re_file_sha));
	}
}

/* The newest ack of a version, verified or not. */
static uint64_t
report_fold_ack_time(const struct report_ack *a)
{
	return (a->ra_vtime > a->ra_utime ? a->ra_vtime : a->ra_utime);
}

/*
 * Whether an ack is of the version the report is on: of its digest, or
 * while that is pending (or failed), of the version the share serves.
 */
static int
report_fold_is_target(const struct report *r, const struct report_ack *a)
{
	const char	*sha;

	if (r->r_digest == RD_PENDING || r->r_digest == RD_FAILED)
		return (a->ra_version >= 0 && a->ra_version == r->r_version);
	sha = a->ra_sha[0] != '\0' ? a->ra_sha :
	    report_fold_version_sha(r, a->ra_version);
	return (r->r_sha[0] != '\0' && strcmp(sha, r->r_sha) == 0);
}

/*
 * Fold a version's ack into the host's (at most REPORT_ACKS) versions:
 * by its digest, or while the record has none by its version; either
 * way the newest ack's version is kept.  Past the limit a new version
 * replaces the one acked longest ago, but never the one the report is
 * on.
 */
static void
report_fold_ack(struct report *r, struct report_host *h, const char *sha,
    int version, int verified, uint64_t t, int server)
{
	struct report_ack	*a = NULL;
	int			 i, oldest = -1;

	for (i = 0; i < h->rh_nacks; i++) {
		a = &h->rh_acks[i];
		if (sha[0] != '\0' ? strcmp(a->ra_sha, sha) == 0 :
		    (a->ra_sha[0] == '\0' && a->ra_version == version))
			break;
		if (report_fold_is_target(r, a))
			continue;
		if (oldest == -1 || report_fold_ack_time(a) <
		    report_fold_ack_time(&h->rh_acks[oldest]))
			oldest = i;
	}
	if (i == h->rh_nacks) {
		if (h->rh_nacks < REPORT_ACKS)
			i = h->rh_nacks++;
		else
			i = oldest;
		a = &h->rh_acks[i];
		memset(a, 0, sizeof(*a));
		snprintf(a->ra_sha, sizeof(a->ra_sha), "%s", sha);
		a->ra_version = version;
	}
	if (version >= 0 && t >= report_fold_ack_time(a))
		a->ra_version = version;
	if (verified && t >= a->ra_vtime) {
		a->ra_vtime = t;
		a->ra_vserver = server;
	} else if (!verified && t >= a->ra_utime) {
		a->ra_utime = t;
		a->ra_userver = server;
	}
}

/* A transfer record: one attempt of one host. */
void
report_fold_transfer(struct report *r, const struct report_entry *e,
    int server)
{
	struct report_host	*h;
	char			 key[REPORT_NAME_MAX];
	const char		*sha, *fail = NULL;
	int			 version = -1;

	/* A load balancer's health check (PROXY protocol): no host's. */
	if (strcmp(e->re_status, "probe") == 0)
		return;
	if (report_hosts_key(r->r_match == MATCH_HOST_ID ? e->re_host_id :
	    e->re_peer, key, sizeof(key), r->r_match) == -1)
		return;			/* no peer, or no claimed id */
	r->r_records++;
	if ((h = report_hosts_find(r, key)) == NULL) {
		if (r->r_hosts_path != NULL) {
			r->r_unlisted++;
			return;
		}
		if ((h = report_hosts_add(r, key)) == NULL)
			return;
	}
	h->rh_attempts++;
	h->rh_dirty = 1;
	if (e->re_time >= h->rh_ack_time) {
		h->rh_ack_time = e->re_time;
		free(h->rh_ack);
		h->rh_ack = e->re_has_ack ? strdup(e->re_ack) : NULL;
	}
	/* An ack's version: what it is of while the digest is pending. */
	if (strcmp(e->re_status, "acked") == 0 && e->re_version[0] != '\0')
		version = report_fold_version(r, server, e->re_version);
	if (strcmp(e->re_status, "acked") != 0)
		fail = e->re_status;
	else if (strcmp(e->re_verified, "yes") == 0) {
		sha = e->re_sha[0] != '\0' ? e->re_sha : e->re_file_sha;
		report_fold_ack(r, h, sha, version, 1, e->re_time, server);
	} else if (strcmp(e->re_verified, "no") == 0)
		fail = "verified=no";
	else if (e->re_verified[0] != '\0') {
		/*
		 * "unknown": the daemon had no digest yet.  The client's
		 * claim names what it has, unless the digest known now
		 * (FDIST_FILE_SHA256) says otherwise.
		 */
		if (e->re_claim[0] == '\0' || (e->re_file_sha[0] != '\0' &&
		    strcmp(e->re_claim, e->re_file_sha) != 0))
			fail = "verified=no";
		else
			report_fold_ack(r, h, e->re_claim, version, 1,
			    e->re_time, server);
	} else {
		/* No digest claimed (nc, the textbook client). */
		report_fold_ack(r, h, e->re_file_sha, version, 0, e->re_time,
		    server);
	}
	if (fail != NULL) {
		h->rh_failures++;
		if (e->re_time >= h->rh_ftime) {
			h->rh_ftime = e->re_time;
			h->rh_fbytes = e->re_bytes;
			h->rh_fsize = e->re_size;
			h->rh_fserver = server;
			snprintf(h->rh_fstatus, sizeof(h->rh_fstatus), "%s",
			    fail[0] != '\0' ? fail : "?");
		}
	}
}

/*
 * Without --sha256, the version the share serves now: that of its
 * newest digest record (of the server that logged one last).  If that
 * record says the digest is pending or failed, the report is on that
 * version, unless an earlier record has its digest (a restart with the
 * file unchanged).
 */
int
report_fold_target(struct report *r)
{
	struct report_server	*s, *best = NULL;
	enum report_digest	 state;
	const char		*sha;
	size_t			 i;
	int			 warned = 0;

	if (r->r_sha_given) {
		r->r_digest = RD_GIVEN;
		return (0);
	}
	for (i = 0; i < r->r_nservers; i++) {
		s = &r->r_servers[i];
		if (s->rs_dtime > 0 && (best == NULL ||
		    s->rs_dtime > best->rs_dtime))
			best = s;
	}
	if (best == NULL) {
		if (r->r_wait)
			return (0);	/* the first digest record will do */
		report_warnx("no digest record of share %s in the journal: "
		    "give the version with --sha256", r->r_share);
		return (-1);
	}
	state = best->rs_dstate;
	sha = best->rs_dsha;
	if (state != RD_KNOWN &&
	    report_fold_version_sha(r, best->rs_dversion)[0] != '\0') {
		state = RD_KNOWN;
		sha = report_fold_version_sha(r, best->rs_dversion);
	}
	if (state == r->r_digest && best->rs_dversion == r->r_version &&
	    strcmp(r->r_sha, sha) == 0)
		return (0);
	snprintf(r->r_sha, sizeof(r->r_sha), "%s", sha);
	r->r_digest = state;
	r->r_version = best->rs_dversion;
	r->r_target_changed = 1;
	if (state == RD_FAILED)
		report_warnx("warning: %s could not compute the digest of the "
		    "version share %s serves (%s): hosts that acked it are "
		    "unverified; name the version with --sha256",
		    best->rs_display, r->r_share,
		    r->r_versions[r->r_version].rv_token);
	for (i = 0; i < r->r_nservers && state == RD_KNOWN; i++) {
		s = &r->r_servers[i];
		if (s->rs_dstate != RD_KNOWN ||
		    strcmp(s->rs_dsha, r->r_sha) == 0 || warned++ > 0)
			continue;
		report_warnx("warning: servers serve different versions of "
		    "%s (%s: %.12s, %s: %.12s); reporting the newest",
		    r->r_share, best->rs_display, r->r_sha, s->rs_display,
		    s->rs_dsha);
	}
	return (0);
}

/*
 * The state of a host for the version the report is on.  Having the
 * version wins over any failure after it: the file is there.  While the
 * version's digest is pending (or failed), nothing has checked an ack of
 * it against the digest: such a host is unverified, and done only once
 * the digest record lets its ack be checked.
 */
void
report_fold_eval(struct report *r, struct report_host *h)
{
	const struct report_ack	*a, *other = NULL;
	uint64_t		 vt = 0, ut = 0, ot = 0, t;
	int			 vs = REPORT_NOSERVER, us = REPORT_NOSERVER;
	int			 os = REPORT_NOSERVER, i, digest;

	digest = r->r_sha[0] != '\0';
	for (i = 0; i < h->rh_nacks; i++) {
		a = &h->rh_acks[i];
		t = report_fold_ack_time(a);
		if (!report_fold_is_target(r, a)) {
			if (t > ot) {
				ot = t;
				os = a->ra_vtime > a->ra_utime ?
				    a->ra_vserver : a->ra_userver;
				other = a;
			}
		} else if (!digest) {
			if (t > ut) {
				ut = t;
				us = a->ra_vtime > a->ra_utime ?
				    a->ra_vserver : a->ra_userver;
			}
		} else {
			if (a->ra_vtime > vt) {
				vt = a->ra_vtime;
				vs = a->ra_vserver;
			}
			if (a->ra_utime > ut) {
				ut = a->ra_utime;
				us = a->ra_userver;
			}
		}
	}
	h->rh_has[0] = '\0';
	h->rh_verified = 0;
	if (vt > 0) {
		h->rh_state = RS_DONE;
		h->rh_verified = 1;
		h->rh_when = vt;
		h->rh_server = vs;
	} else if (ut > 0) {
		h->rh_state = r->r_accept_unverified ? RS_DONE : RS_UNVERIFIED;
		h->rh_when = ut;
		h->rh_server = us;
	} else if (other != NULL) {
		h->rh_state = RS_OLD;
		h->rh_when = ot;
		h->rh_server = os;
		snprintf(h->rh_has, sizeof(h->rh_has), "%s",
		    other->ra_sha[0] != '\0' ? other->ra_sha :
		    report_fold_version_sha(r, other->ra_version));
	} else if (h->rh_failures > 0) {
		h->rh_state = RS_FAILED;
		h->rh_when = h->rh_ftime;
		h->rh_server = h->rh_fserver;
	} else {
		h->rh_state = RS_MISSING;
		h->rh_when = 0;
		h->rh_server = REPORT_NOSERVER;
	}
	h->rh_dirty = 0;
}
