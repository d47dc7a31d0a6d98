/*
 * fdist-report: which hosts have a share's file, from fdistd's journal
 * records.  Private header shared by report.c, report_read.c,
 * report_trust.c, report_fold.c, report_hosts.c and report_out.c.
 */
#ifndef REPORT_H
#define REPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <systemd/sd-journal.h>

#define REPORT_PROGNAME		"fdist-report"
#define REPORT_HEXLEN		64
#define REPORT_ACKS		4	/* versions kept per host */
#define REPORT_STATUS_MAX	24
#define REPORT_NAME_MAX		256
#define REPORT_ACK_MAX		1024	/* of an ack kept, escaped text */
#define REPORT_NOSERVER		(-1)
#define REPORT_REMAP_ENTRIES	10000	/* see report_read_remap() */

#define REPORT_MSGID_TRANSFER	"68da270df4994c348ba467a048bebbc3"
#define REPORT_UNIT		"fdistd.service"	/* see report_trust.c */
#define REPORT_UNIT_MAX		255	/* systemd's UNIT_NAME_MAX */

/* Exit codes; the man page and --help list them. */
enum report_exit {
	REPORT_OK = 0,		/* every expected host is done */
	REPORT_NOTDONE = 1,	/* some are not */
	REPORT_EUSAGE = 2	/* usage or read error */
};

/* A host's state, in the order the table shows them. */
enum report_state {
	RS_MISSING,		/* no record at all */
	RS_FAILED,		/* attempts only ended badly */
	RS_OLD,			/* acked another version */
	RS_UNVERIFIED,		/* acked the version, no digest claimed */
	RS_DONE,		/* acked the version, digest verified */
	RS_COUNT
};

/*
 * What the report knows of the version's digest: given (--sha256), known
 * (a digest record has it), pending or failed (the newest record of the
 * share names a version the daemon is still hashing, or could not hash).
 */
enum report_digest {
	RD_NONE,		/* no digest record yet */
	RD_GIVEN,
	RD_KNOWN,
	RD_PENDING,
	RD_FAILED
};

enum report_match {
	MATCH_ADDRESS,
	MATCH_HOST_ID
};

/* One version a host acked, newest verified and unverified ack of it. */
struct report_ack {
	char		 ra_sha[REPORT_HEXLEN + 1];	/* "" until resolved */
	int		 ra_version;	/* version table index, or -1 */
	uint64_t	 ra_vtime;	/* verified ack, 0 if none */
	uint64_t	 ra_utime;	/* unverified ack, 0 if none */
	int		 ra_vserver;
	int		 ra_userver;
};

struct report_host {
	char		*rh_name;	/* as listed, or the address/id seen */
	char		*rh_label;	/* NULL if none */
	int		 rh_line;	/* in the hosts file, 0 if seen */
	struct report_ack rh_acks[REPORT_ACKS];
	int		 rh_nacks;
	uint64_t	 rh_attempts;	/* records of this host */
	uint64_t	 rh_failures;
	uint64_t	 rh_ftime;	/* newest failure */
	uint64_t	 rh_fbytes;
	uint64_t	 rh_fsize;
	int		 rh_fserver;
	char		 rh_fstatus[REPORT_STATUS_MAX];
	char		*rh_ack;	/* of the newest record, escaped */
	uint64_t	 rh_ack_time;
	int		 rh_dirty;	/* changed since evaluated */

	/* report_eval() */
	enum report_state rh_state;
	int		 rh_verified;
	uint64_t	 rh_when;
	int		 rh_server;
	char		 rh_has[REPORT_HEXLEN + 1];	/* RS_OLD: "" unknown */
};

/* The fields of one record that the report uses. */
struct report_entry {
	char		 re_msgid[33];
	char		 re_peer[REPORT_NAME_MAX];
	char		 re_status[REPORT_STATUS_MAX];
	char		 re_verified[16];
	char		 re_sha[REPORT_HEXLEN + 1];
	char		 re_file_sha[REPORT_HEXLEN + 1];
	char		 re_digest[16];	/* FDIST_DIGEST: pending, failed */
	char		 re_version[REPORT_NAME_MAX];
	char		 re_host_id[REPORT_NAME_MAX];
	char		 re_hostname[REPORT_NAME_MAX];
	char		 re_machine[33];
	char		 re_uid[16];	/* _UID and _SYSTEMD_UNIT: journald's */
	char		 re_unit[REPORT_UNIT_MAX + 1];
	char		 re_claim[REPORT_HEXLEN + 1];	/* from FDIST_ACK */
	char		 re_ack[REPORT_ACK_MAX + 1];	/* cut */
	int		 re_has_ack;
	uint64_t	 re_bytes;
	uint64_t	 re_size;
	uint64_t	 re_time;
};

struct report_key {
	char			*rk_key;
	struct report_host	*rk_host;
	struct report_key	*rk_next;
};

/* A server: records are told apart by _HOSTNAME and _MACHINE_ID. */
struct report_server {
	char		 rs_hostname[REPORT_NAME_MAX];
	char		 rs_machine[33];
	char		 rs_display[REPORT_NAME_MAX + 16];
	uint64_t	 rs_dtime;	/* newest digest record in scope */
	char		 rs_dsha[REPORT_HEXLEN + 1];	/* "" unless known */
	enum report_digest rs_dstate;
	int		 rs_dversion;	/* its version, or -1 */
};

/* A served file version of one server, from a digest record. */
struct report_version {
	int		 rv_server;
	char		*rv_token;
	char		 rv_sha[REPORT_HEXLEN + 1];
};

struct report {
	/* options */
	const char	*r_dir;
	const char	**r_files;
	size_t		 r_nfiles;
	uint64_t	 r_since;	/* realtime usec, 0 if none */
	uint64_t	 r_until;	/* UINT64_MAX if none */
	const char	*r_share;
	char		 r_sha[REPORT_HEXLEN + 1];	/* the version */
	int		 r_sha_given;
	enum report_digest r_digest;	/* of the version */
	int		 r_version;	/* pending/failed: the version's index */
	const char	*r_hosts_path;
	enum report_match r_match;
	unsigned int	 r_only;	/* bit per state; 0: all */
	int		 r_json;
	int		 r_accept_unverified;
	int		 r_wait;
	uint64_t	 r_wait_ms;	/* 0: no limit */
	char		**r_units;	/* trusted units, names or patterns */
	size_t		 r_nunits;
	int		 r_unit_patterns;	/* some is a pattern */

	sd_journal	*r_j;
	int		 r_matching;	/* transfers too, not only digests */
	uint64_t	 r_records;	/* transfer records of the share */
	uint64_t	 r_unlisted;	/* ... of hosts not in --hosts */

	struct report_host **r_hosts;
	size_t		 r_nhosts;
	size_t		 r_hostcap;
	struct report_key **r_keys;
	size_t		 r_nkeys;
	size_t		 r_keycap;	/* buckets, a power of two */

	struct report_server *r_servers;
	size_t		 r_nservers;
	struct report_version *r_versions;
	size_t		 r_nversions;
	int		 r_target_changed;
};

/* report.c */
void	report_warn(const char *, ...)
	    __attribute__((format(printf, 1, 2)));
void	report_warnx(const char *, ...)
	    __attribute__((format(printf, 1, 2)));
void	report_line_clear(void);
extern int report_line_open;
const char *report_state_name(enum report_state);
int	report_is_done(const struct report_host *);
int	report_complete(const struct report *, size_t);

/* report_read.c */
int	report_read_open(struct report *);
int	report_read_share(struct report *, char **);
int	report_read_known(struct report *);
int	report_read_empty(struct report *);
int	report_read_digests(struct report *);
int	report_read_scan(struct report *);
int	report_read_process(struct report *);

/* report_trust.c */
int	report_trust_add_unit(struct report *, const char *);
void	report_trust_free(struct report *);
int	report_trust_match(struct report *);
int	report_trust_entry(const struct report *, const struct report_entry *);
void	report_trust_describe(const struct report *, char *, size_t);

/* report_fold.c */
int	report_fold_server(struct report *, const struct report_entry *);
const char *report_fold_server_name(const struct report *, int);
const char *report_fold_version_sha(const struct report *, int);
void	report_fold_digest(struct report *, const struct report_entry *, int);
void	report_fold_transfer(struct report *, const struct report_entry *,
	    int);
int	report_fold_target(struct report *);
void	report_fold_eval(struct report *, struct report_host *);

/* report_hosts.c */
int	report_hosts_load(struct report *, const char *);
struct report_host *report_hosts_find(struct report *, const char *);
struct report_host *report_hosts_add(struct report *, const char *);
int	report_hosts_key(const char *, char *, size_t, enum report_match);
void	report_hosts_free(struct report *);

/* report_out.c */
void	report_out_summary(FILE *, const struct report *, const size_t *);
void	report_out_table(FILE *, struct report *);
void	report_out_json(FILE *, struct report *);
void	report_out_time(uint64_t, char *, size_t, int);
void	report_out_progress(struct report *, const size_t *, double);
void	report_out_change(struct report *, struct report_host *);
void	report_out_counts(const struct report *, size_t *);

#endif
