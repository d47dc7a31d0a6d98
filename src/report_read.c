/*
 * report_read.c: reading fdistd's records through sd-journal.  Only the
 * entries the field indexes select are read (MESSAGE_ID, FDIST_SHARE
 * and the writer, report_trust.c); report_fold.c folds each into its
 * host's entry, and it is forgotten.
 */
#include <sys/types.h>
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fdistd.h"		/* MSGID_DIGEST */
#include "report.h"

static const char report_access_hint[] =
    "run as root or as a member of the systemd-journal or adm group";

#define REPORT_LIST_MAX		64	/* shares listed in a message */

/* report_read_probe() */
#define PROBE_DIGESTS		0x1	/* digest records too */
#define PROBE_FOREIGN		0x2	/* records fdistd did not write */

static int	report_read_access_dir(const char *, int, size_t *, size_t *,
		    char *, size_t);
static int	report_read_access(struct report *);
static void	report_read_copy(char *, size_t, const char *, size_t);
static void	report_read_claim(char *, const char *, size_t);
static int	report_read_entry(struct report *, struct report_entry *);
static int	report_read_hex(const char *);
static int	report_read_journal(struct report *);
static int	report_read_match(struct report *, int);
static int	report_read_remap(struct report *);
static int	report_read_probe(struct report *, const char *, int);
static int	report_read_unique(struct report *, char ***, size_t *);
static int	report_read_shares(struct report *, int, char ***, size_t *);
static void	report_read_free(char **, size_t);
static void	report_read_list(char **, size_t);
static void	report_read_foreign(const struct report *, const char *);

/*
 * Count journal files under dir (and its subdirectories, one level: the
 * machine ids of /var/log/journal) and those we may not read.
 */
static int
report_read_access_dir(const char *dir, int depth, size_t *files,
    size_t *denied, char *first, size_t firstlen)
{
	DIR		*d;
	struct dirent	*de;
	char		 path[4096];
	size_t		 n;
	struct stat	 st;

	if ((d = opendir(dir)) == NULL) {
		if (errno == ENOENT && depth > 0)
			return (0);
		if (errno == EACCES) {
			(*denied)++;
			if (*first == '\0')
				snprintf(first, firstlen, "%s", dir);
			return (0);
		}
		if (errno == ENOENT)
			return (0);
		report_warn("%s", dir);
		return (-1);
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		n = strlen(de->d_name);
		if ((n > 8 && strcmp(de->d_name + n - 8, ".journal") == 0) ||
		    (n > 9 && strcmp(de->d_name + n - 9, ".journal~") == 0)) {
			(*files)++;
			if (access(path, R_OK) == -1) {
				(*denied)++;
				if (*first == '\0')
					snprintf(first, firstlen, "%s", path);
			}
		} else if (depth == 0 && stat(path, &st) == 0 &&
		    S_ISDIR(st.st_mode))
			report_read_access_dir(path, 1, files, denied, first,
			    firstlen);
	}
	closedir(d);
	return (0);
}

/*
 * sd-journal skips the files it may not read, which would make a
 * report of nothing: refuse instead, and say what would help.
 */
static int
report_read_access(struct report *r)
{
	static const char *const local[] = { "/run/log/journal",
	    "/var/log/journal", NULL };
	const char *const	*dirs = local;
	const char		*one[2] = { r->r_dir, NULL };
	char			 first[4096] = "";
	size_t			 files = 0, denied = 0, i;

	if (r->r_nfiles > 0) {
		for (i = 0; i < r->r_nfiles; i++)
			if (access(r->r_files[i], R_OK) == -1) {
				report_warn("%s", r->r_files[i]);
				if (errno == EACCES)
					report_warnx("%s", report_access_hint);
				return (-1);
			}
		return (0);
	}
	if (r->r_dir != NULL)
		dirs = one;
	for (i = 0; dirs[i] != NULL; i++)
		if (report_read_access_dir(dirs[i], 0, &files, &denied,
		    first, sizeof(first)) == -1)
			return (-1);
	if (denied > 0) {
		/* A directory not listed counts too: its files are unknown. */
		report_warnx("%s: permission denied (%zu of the journal's "
		    "files and directories unreadable); %s", first, denied,
		    report_access_hint);
		return (-1);
	}
	if (files == 0) {
		if (r->r_dir != NULL)
			report_warnx("%s: no journal files", r->r_dir);
		else
			report_warnx("no journal files in /run/log/journal or "
			    "/var/log/journal");
		return (-1);
	}
	return (0);
}

/* Open the journal the options name, after checking it is readable. */
int
report_read_open(struct report *r)
{
	if (report_read_access(r) == -1)
		return (-1);
	return (report_read_journal(r));
}

static int
report_read_journal(struct report *r)
{
	int	e;

	if (r->r_nfiles > 0)
		e = sd_journal_open_files(&r->r_j, r->r_files, 0);
	else if (r->r_dir != NULL)
		e = sd_journal_open_directory(&r->r_j, r->r_dir, 0);
	else
		e = sd_journal_open(&r->r_j, SD_JOURNAL_LOCAL_ONLY);
	if (e < 0) {
		report_warnx("cannot open the journal: %s", strerror(-e));
		return (-1);
	}
	return (0);
}

/* Seek to --since; 0, or -1 after a message. */
static int
report_read_seek(struct report *r)
{
	int	e;

	e = r->r_since > 0 ? sd_journal_seek_realtime_usec(r->r_j, r->r_since)
	    : sd_journal_seek_head(r->r_j);
	if (e < 0) {
		report_warnx("cannot seek in the journal: %s", strerror(-e));
		return (-1);
	}
	return (0);
}

/*
 * Whether the share has a record of fdistd's in the time range: a
 * transfer record, or with PROBE_DIGESTS a digest record too; with
 * PROBE_FOREIGN, a record of another writer instead.  1 or 0, -1 after a
 * message.
 */
static int
report_read_probe(struct report *r, const char *share, int flags)
{
	struct report_entry	 e;
	char			 m[REPORT_NAME_MAX + 16];
	int			 rv;

	snprintf(m, sizeof(m), "FDIST_SHARE=%s", share);
	sd_journal_flush_matches(r->r_j);
	if (sd_journal_add_match(r->r_j, "MESSAGE_ID=" REPORT_MSGID_TRANSFER,
	    0) < 0 || ((flags & PROBE_DIGESTS) && sd_journal_add_match(r->r_j,
	    "MESSAGE_ID=" MSGID_DIGEST, 0) < 0) ||
	    sd_journal_add_match(r->r_j, m, 0) < 0 ||
	    (!(flags & PROBE_FOREIGN) && report_trust_match(r) < 0)) {
		report_warnx("cannot match the journal's records");
		return (-1);
	}
	if (report_read_seek(r) == -1)
		return (-1);
	while ((rv = sd_journal_next(r->r_j)) > 0) {
		if (report_read_entry(r, &e) < 0)
			continue;
		if (e.re_time > r->r_until)
			break;
		if (report_trust_entry(r, &e) == !(flags & PROBE_FOREIGN))
			return (1);
	}
	if (rv < 0) {
		report_warnx("cannot read the journal: %s", strerror(-rv));
		return (-1);
	}
	return (0);
}

static int
report_read_strcmp(const void *a, const void *b)
{
	return (strcmp(*(char *const *)a, *(char *const *)b));
}

static void
report_read_free(char **names, size_t n)
{
	while (n > 0)
		free(names[--n]);
	free(names);
}

/*
 * Every value of FDIST_SHARE in the journal: sd_journal_query_unique()
 * lists those of all entries, whoever wrote them, matches or not.
 */
static int
report_read_unique(struct report *r, char ***names, size_t *n)
{
	const void	 *d;
	size_t		  l, cap = 0;
	char		**nn;

	*names = NULL;
	*n = 0;
	if (sd_journal_query_unique(r->r_j, "FDIST_SHARE") < 0) {
		report_warnx("cannot list the shares in the journal");
		return (-1);
	}
	SD_JOURNAL_FOREACH_UNIQUE(r->r_j, d, l) {
		if (*n == cap) {
			cap = cap > 0 ? cap * 2 : 16;
			if ((nn = reallocarray(*names, cap,
			    sizeof(*nn))) == NULL)
				goto fail;
			*names = nn;
		}
		if (((*names)[*n] = malloc(REPORT_NAME_MAX)) == NULL)
			goto fail;
		report_read_copy((*names)[(*n)++], REPORT_NAME_MAX,
		    (const char *)d + 12, l - 12);
	}
	return (0);
fail:
	report_warn("out of memory");
	report_read_free(*names, *n);
	*names = NULL;
	*n = 0;
	return (-1);
}

/*
 * The shares with records of fdistd's (report_read_probe() with flags),
 * sorted.  Each value is probed: another writer's share is none.
 */
static int
report_read_shares(struct report *r, int flags, char ***names, size_t *n)
{
	size_t	i, all;
	int	e;

	if (report_read_unique(r, names, &all) == -1)
		return (-1);
	for (i = *n = 0; i < all; i++) {
		if ((e = report_read_probe(r, (*names)[i], flags)) == -1) {
			report_read_free(*names, all);
			return (-1);
		}
		if (e == 1)
			(*names)[(*n)++] = (*names)[i];
		else
			free((*names)[i]);
	}
	qsort(*names, *n, sizeof(**names), report_read_strcmp);
	return (0);
}

/* The shares of a message, one a line, unless more than would help. */
static void
report_read_list(char **names, size_t n)
{
	size_t	i;

	for (i = 0; i < n && n <= REPORT_LIST_MAX; i++)
		fprintf(stderr, "  %s\n", names[i]);
}

/* Say that records of others were left out (share NULL: of any share). */
static void
report_read_foreign(const struct report *r, const char *share)
{
	char	units[1024];

	report_trust_describe(r, units, sizeof(units));
	if (share != NULL)
		report_warnx("share %s has records that neither root nor %s "
		    "wrote: they do not count (see --unit)", share, units);
	else
		report_warnx("the journal has records that neither root nor "
		    "%s wrote: they do not count (see --unit)", units);
}

/*
 * Without --share, the one share with transfer records in the time
 * range; an error listing them if there are several.
 */
int
report_read_share(struct report *r, char **share)
{
	char	**names;
	size_t	  n, i;
	int	  e = 0;

	if (report_read_shares(r, 0, &names, &n) == -1)
		return (-1);
	if (n == 0) {
		report_warnx("no fdistd transfer records in the journal%s",
		    r->r_since > 0 || r->r_until != UINT64_MAX ?
		    " in that time range" : "");
		free(names);
		/* Any share's records of another writer, to say why. */
		if (report_read_unique(r, &names, &n) == -1)
			return (-1);
		for (i = 0; i < n && e == 0; i++)
			if ((e = report_read_probe(r, names[i],
			    PROBE_DIGESTS | PROBE_FOREIGN)) == 1)
				report_read_foreign(r, NULL);
		report_read_free(names, n);
		return (-1);
	}
	if (n > 1) {
		report_warnx("records of %zu shares; choose one with --share%s",
		    n, n <= REPORT_LIST_MAX ? ":" : "");
		report_read_list(names, n);
		report_read_free(names, n);
		return (-1);
	}
	*share = names[0];
	free(names);
	r->r_share = *share;
	return (0);
}

/*
 * A share of no digest record: whether it has transfer records in the
 * time range (1).  If not (0), that is said, with the shares that have
 * records, and why records of it do not count if they do not.
 */
int
report_read_known(struct report *r)
{
	char		**names;
	const char	 *range;
	size_t		  n;
	int		  e;

	if ((e = report_read_probe(r, r->r_share, 0)) != 0)
		return (e);
	if (report_read_shares(r, PROBE_DIGESTS, &names, &n) == -1)
		return (-1);
	range = r->r_since > 0 || r->r_until != UINT64_MAX ?
	    " in that time range" : "";
	if (n == 0)
		report_warnx("no records of share \"%s\"%s, nor of any other "
		    "share", r->r_share, range);
	else if (n > REPORT_LIST_MAX)
		report_warnx("no records of share \"%s\"%s; the journal has "
		    "records of %zu shares", r->r_share, range, n);
	else
		report_warnx("no records of share \"%s\"%s; the journal has "
		    "records of these shares:", r->r_share, range);
	report_read_list(names, n);
	report_read_free(names, n);
	if ((e = report_read_probe(r, r->r_share,
	    PROBE_DIGESTS | PROBE_FOREIGN)) == -1)
		return (-1);
	if (e == 1)
		report_read_foreign(r, r->r_share);
	return (0);
}

/*
 * A share without transfer records in range: said, and why records of
 * it do not count if there are some of another writer.
 */
int
report_read_empty(struct report *r)
{
	int	e;

	report_warnx("no transfer records of share %s%s", r->r_share,
	    r->r_since > 0 || r->r_until != UINT64_MAX ?
	    " in that time range" : "");
	if ((e = report_read_probe(r, r->r_share, PROBE_FOREIGN)) == 1)
		report_read_foreign(r, r->r_share);
	return (e == -1 ? -1 : 0);
}

/* value (of len bytes, not terminated) into dst, cut to fit. */
static void
report_read_copy(char *dst, size_t size, const char *value, size_t len)
{
	if (len >= size)
		len = size - 1;
	memcpy(dst, value, len);
	dst[len] = '\0';
}

/* Whether s is 64 hex digits (lowercase: as the daemon writes them). */
static int
report_read_hex(const char *s)
{
	size_t	i;

	for (i = 0; i < REPORT_HEXLEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
		    (s[i] >= 'a' && s[i] <= 'f')))
			return (0);
	return (s[i] == '\0');
}

/*
 * The digest an (escaped) ack claims: "sha256=" and 64 hex digits, as
 * the daemon finds it (ack.c); "" if none.
 */
static void
report_read_claim(char *claim, const char *ack, size_t len)
{
	static const char	 key[] = "sha256=";
	const size_t		 klen = sizeof(key) - 1;
	size_t			 i, j;
	char			 c;

	claim[0] = '\0';
	for (i = 0; i + klen + REPORT_HEXLEN <= len; i++) {
		if (memcmp(ack + i, key, klen) != 0)
			continue;
		for (j = 0; j < REPORT_HEXLEN; j++) {
			c = ack[i + klen + j];
			if (c >= 'A' && c <= 'F')
				c = (char)(c - 'A' + 'a');
			if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
				break;
			claim[j] = c;
		}
		if (j == REPORT_HEXLEN) {
			claim[j] = '\0';
			return;
		}
	}
	claim[0] = '\0';
}

#define REPORT_FIELD(name, d, l) \
	((l) > sizeof(name) && memcmp((d), name "=", sizeof(name)) == 0)
#define REPORT_VALUE(name, d) ((const char *)(d) + sizeof(name))
#define REPORT_VLEN(name, l) ((l) - sizeof(name))

/* The fields of the current entry, in one pass over its data. */
static int
report_read_entry(struct report *r, struct report_entry *e)
{
	const void	*d;
	size_t		 l;
	char		 num[32];
	int		 rv;

	/* Not a memset: a million records would clear 3 GB. */
	e->re_msgid[0] = e->re_peer[0] = e->re_status[0] = '\0';
	e->re_verified[0] = e->re_sha[0] = e->re_file_sha[0] = '\0';
	e->re_version[0] = e->re_host_id[0] = e->re_hostname[0] = '\0';
	e->re_machine[0] = e->re_claim[0] = e->re_ack[0] = '\0';
	e->re_digest[0] = e->re_uid[0] = e->re_unit[0] = '\0';
	e->re_has_ack = 0;
	e->re_bytes = e->re_size = 0;
	if ((rv = sd_journal_get_realtime_usec(r->r_j, &e->re_time)) < 0)
		return (rv);
	sd_journal_restart_data(r->r_j);
	while ((rv = sd_journal_enumerate_data(r->r_j, &d, &l)) != 0) {
		if (rv < 0)
			continue;	/* a damaged field: skip it */
#define COPY(name, dst) \
		if (REPORT_FIELD(name, d, l)) { \
			report_read_copy(dst, sizeof(dst), \
			    REPORT_VALUE(name, d), REPORT_VLEN(name, l)); \
			continue; \
		}
		COPY("MESSAGE_ID", e->re_msgid)
		COPY("FDIST_PEER", e->re_peer)
		COPY("FDIST_STATUS", e->re_status)
		COPY("FDIST_VERIFIED", e->re_verified)
		COPY("FDIST_SHA256", e->re_sha)
		COPY("FDIST_FILE_SHA256", e->re_file_sha)
		COPY("FDIST_DIGEST", e->re_digest)
		COPY("FDIST_VERSION", e->re_version)
		COPY("FDIST_HOST_ID", e->re_host_id)
		COPY("_HOSTNAME", e->re_hostname)
		COPY("_MACHINE_ID", e->re_machine)
		COPY("_UID", e->re_uid)
		COPY("_SYSTEMD_UNIT", e->re_unit)
#undef COPY
		if (REPORT_FIELD("FDIST_BYTES", d, l)) {
			report_read_copy(num, sizeof(num),
			    REPORT_VALUE("FDIST_BYTES", d),
			    REPORT_VLEN("FDIST_BYTES", l));
			e->re_bytes = strtoull(num, NULL, 10);
		} else if (REPORT_FIELD("FDIST_SIZE", d, l)) {
			report_read_copy(num, sizeof(num),
			    REPORT_VALUE("FDIST_SIZE", d),
			    REPORT_VLEN("FDIST_SIZE", l));
			e->re_size = strtoull(num, NULL, 10);
		} else if (REPORT_FIELD("FDIST_ACK", d, l)) {
			/* d is valid only until the next field: copy. */
			report_read_claim(e->re_claim,
			    REPORT_VALUE("FDIST_ACK", d),
			    REPORT_VLEN("FDIST_ACK", l));
			report_read_copy(e->re_ack, sizeof(e->re_ack),
			    REPORT_VALUE("FDIST_ACK", d),
			    REPORT_VLEN("FDIST_ACK", l));
			e->re_has_ack = 1;
		}
	}
	if (!report_read_hex(e->re_sha))
		e->re_sha[0] = '\0';
	if (!report_read_hex(e->re_file_sha))
		e->re_file_sha[0] = '\0';
	return (0);
}

/*
 * sd-journal keeps the windows it mapped of the journal files until it
 * has many, which over a long history makes hundreds of megabytes of
 * resident (if shared) memory.  Every REPORT_REMAP_ENTRIES entries the
 * journal is closed and opened again at the same cursor, which unmaps
 * them: a few milliseconds each time.
 */
static int
report_read_remap(struct report *r)
{
	char	*cursor = NULL;
	int	 e;

	if ((e = sd_journal_get_cursor(r->r_j, &cursor)) < 0) {
		report_warnx("cannot read the journal's cursor: %s",
		    strerror(-e));
		return (-1);
	}
	sd_journal_close(r->r_j);
	r->r_j = NULL;
	e = -1;
	if (report_read_journal(r) == -1 ||
	    report_read_match(r, r->r_matching) == -1)
		goto out;
	if ((e = sd_journal_seek_cursor(r->r_j, cursor)) < 0 ||
	    (e = sd_journal_next(r->r_j)) < 0) {
		report_warnx("cannot find the journal's cursor again: %s",
		    strerror(-e));
		e = -1;
		goto out;
	}
	e = 0;
out:
	free(cursor);
	return (e);
}

/* Fold the entries from the current position on; -1 on a read error. */
int
report_read_process(struct report *r)
{
	struct report_entry	e;
	int			rv, server;
	unsigned int		n = 0;

	while ((rv = sd_journal_next(r->r_j)) > 0) {
		if (++n % REPORT_REMAP_ENTRIES == 0 &&
		    report_read_remap(r) == -1)
			return (-1);
		if (report_read_entry(r, &e) < 0)
			continue;
		if (e.re_time > r->r_until)
			break;
		if (!report_trust_entry(r, &e))
			continue;	/* a --unit pattern: no match did */
		if ((server = report_fold_server(r, &e)) == REPORT_NOSERVER) {
			report_warn("out of memory");
			return (-1);
		}
		if (strcmp(e.re_msgid, MSGID_DIGEST) == 0)
			report_fold_digest(r, &e, server);
		else if (strcmp(e.re_msgid, REPORT_MSGID_TRANSFER) == 0)
			report_fold_transfer(r, &e, server);
	}
	if (rv < 0) {
		report_warnx("cannot read the journal: %s", strerror(-rv));
		return (-1);
	}
	return (0);
}

/*
 * Match the share's digest records, and with transfers its transfers, of
 * fdistd's only.
 */
static int
report_read_match(struct report *r, int transfers)
{
	char	m[REPORT_NAME_MAX + 16];

	r->r_matching = transfers;
	sd_journal_flush_matches(r->r_j);
	snprintf(m, sizeof(m), "FDIST_SHARE=%s", r->r_share);
	if (sd_journal_add_match(r->r_j, "MESSAGE_ID=" MSGID_DIGEST, 0) < 0 ||
	    (transfers && sd_journal_add_match(r->r_j,
	    "MESSAGE_ID=" REPORT_MSGID_TRANSFER, 0) < 0) ||
	    sd_journal_add_match(r->r_j, m, 0) < 0 ||
	    report_trust_match(r) < 0) {
		report_warnx("cannot match the journal's records");
		return (-1);
	}
	return (0);
}

/*
 * Every digest record of the share, also those before --since: the
 * version served then may still be the one served now.
 */
int
report_read_digests(struct report *r)
{
	if (report_read_match(r, 0) == -1 ||
	    sd_journal_seek_head(r->r_j) < 0)
		return (-1);
	return (report_read_process(r));
}

/* The transfer records in range; the journal stays open to follow. */
int
report_read_scan(struct report *r)
{
	if (report_read_match(r, 1) == -1 || report_read_seek(r) == -1)
		return (-1);
	return (report_read_process(r));
}
