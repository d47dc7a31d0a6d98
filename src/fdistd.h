/*
 * fdistd.h: private interfaces of fdistd, grouped by the file that
 * implements them.
 */
#ifndef FDISTD_H
#define FDISTD_H

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <syslog.h>

#include <event2/event.h>

#include "addr.h"
#include "parse.h"

#define SHARE_NAME_MAX		64	/* bytes, including the NUL */
#define SHARE_LISTEN_MAX	16	/* addresses per share */
#define ACK_MAX_LIMIT		(64 * 1024)
#define ERR_MAX			512	/* config error messages */
#define CONFIG_KEYS_MAX		32	/* a bit each in *_keys_set */
#define PLURAL(n)		((n) == 1 ? "" : "s")

struct sfile;

/* How and where the daemon logs. */
enum log_mode {
	LOG_AUTO,		/* the journal if stderr is the journal stream */
	LOG_JOURNAL,
	LOG_STDERR,
};

/* Settings a share may override; the [fdistd] section sets the default. */
struct limits {
	uint64_t	lim_ack_timeout_ms;
	uint64_t	lim_send_timeout_ms;
	uint32_t	lim_ack_max;
	uint32_t	lim_max_per_ip;		/* 0: no limit */
	uint64_t	lim_rate;		/* bytes/s per client, 0: none */
	uint64_t	lim_share_rate;		/* bytes/s for the share */
};

/* An address or network of an allow or deny list. */
struct cidr {
	sa_family_t	ci_family;
	uint8_t		ci_addr[16];
	uint8_t		ci_prefix;
};

#define ACL_MAX		64	/* networks per list */
struct acl {
	struct cidr	acl_nets[ACL_MAX];
	size_t		acl_n;
};

/* The PROXY protocol on a share (config_proxy.c); the line of each key. */
struct proxy_config {
	bool		pc_on;
	struct acl	pc_from;	/* who may send the header */
	uint64_t	pc_timeout_ms;	/* for the whole header */
	int		pc_on_line;	/* 0: not set here */
	int		pc_from_line;
	int		pc_timeout_line;
};

/* One address a share listens on. */
struct listen_addr {
	struct sockaddr_storage	la_ss;
	socklen_t		la_len;
	int			la_line;	/* where it was configured */
};

/* One share section of the configuration. */
struct share_config {
	TAILQ_ENTRY(share_config) sc_entry;
	char			 sc_name[SHARE_NAME_MAX];
	int			 sc_line;	/* of the [name] header */
	char			*sc_path;
	int			 sc_path_line;
	int			 sc_fd;		/* opened by config_load, or -1 */
	struct listen_addr	 sc_listen[SHARE_LISTEN_MAX];
	size_t			 sc_nlisten;
	struct limits		 sc_limits;
	uint32_t		 sc_max_clients;	/* 0: only the global */
	struct acl		 sc_allow;
	struct acl		 sc_deny;
	struct proxy_config	 sc_proxy;
	unsigned int		 sc_keys_set;	/* bit per key table entry */
	int			 sc_key_line[CONFIG_KEYS_MAX];
};
TAILQ_HEAD(share_config_list, share_config);

/* The metrics endpoint (metrics.c); mc_line 0: not configured. */
struct metrics_config {
	struct listen_addr	 mc_addr;
	int			 mc_line;
	struct acl		 mc_allow;	/* empty: loopback only */
	int			 mc_allow_line;
};

/* A whole configuration file, loaded and validated. */
struct config {
	char			*cf_path;
	struct limits		 cf_limits;
	uint32_t		 cf_max_clients;
	struct acl		 cf_allow;
	struct acl		 cf_deny;
	struct proxy_config	 cf_proxy;
	uint64_t		 cf_shutdown_timeout_ms;
	enum log_mode		 cf_log;
	unsigned int		 cf_workers;	/* 0: auto */
	struct metrics_config	 cf_metrics;
	unsigned int		 cf_keys_set;
	int			 cf_key_line[CONFIG_KEYS_MAX];
	int			 cf_global_line;	/* of [fdistd], or 0 */
	struct share_config_list cf_shares;
	size_t			 cf_nshares;
	struct share_config	 cf_manifest;	/* sc_nlisten 0: none */
};

/* config.c */
struct config	*config_load(const char *, bool, char *, size_t, bool *);
struct config	*config_load_stream(FILE *, const char *, bool, char *,
		    size_t, bool *);
void		 config_free(struct config *);
int		 config_share_key_line(const struct share_config *,
		    const char *);
const struct share_config *config_next_listening(const struct config *,
		    const struct share_config *);
/* Each share's config, then the manifest's if it listens. */
#define CONFIG_FOREACH_LISTENING(sc, cf)				\
	for ((sc) = TAILQ_FIRST(&(cf)->cf_shares); (sc) != NULL;	\
	    (sc) = config_next_listening((cf), (sc)))

/* config.c, config_set.c, config_dump.c: private to the loader. */
#define INIH_LINE_MAX	200	/* Debian's INI_MAX_LINE */

/* The state of one load. */
struct config_parse {
	struct config		*cp_cf;
	FILE			*cp_fp;
	char			*cp_line;
	size_t			 cp_linecap;
	int			 cp_lineno;
	bool			 cp_in_section;
	struct share_config	*cp_share;	/* NULL in [fdistd] */
	bool			 cp_system;	/* open files, resolve names */
	bool			 cp_failed;
	bool			 cp_retry;	/* the resolver failed for now */
	char			*cp_err;
	size_t			 cp_errlen;
};

enum key_scope {
	KEY_GLOBAL = 1,
	KEY_SHARE = 2,
	KEY_BOTH = 3,
	KEY_REPEAT = 4,		/* each line adds to a list */
};

struct config_key {
	const char	*k_name;
	enum key_scope	 k_scope;
	int		(*k_set)(struct config_parse *, const char *, char *,
			    size_t);
};

enum key_index {
	KEY_ACK_TIMEOUT,
	KEY_SEND_TIMEOUT,
	KEY_ACK_MAX,
	KEY_MAX_PER_IP,
	KEY_RATE_LIMIT,
	KEY_SHARE_RATE_LIMIT,
	KEY_MAX_CLIENTS,
	KEY_SHUTDOWN_TIMEOUT,
	KEY_LOG,
	KEY_LISTEN,
	KEY_FILE,
	KEY_ALLOW,
	KEY_DENY,
	KEY_PROXY,
	KEY_PROXY_FROM,
	KEY_PROXY_TIMEOUT,
	KEY_MANIFEST,
	KEY_METRICS,
	KEY_METRICS_ALLOW,
	KEY_WORKERS,
	NKEYS
};

#define KEY_IS_SET(set, k)	(((set) & (1U << (k))) != 0)

/* config_set.c: the keys, in enum key_index order. */
extern const struct config_key config_set_keys[NKEYS];

/* config_dump.c */
void		 config_dump(const struct config *, FILE *);

/* config_proxy.c: the proxy_* keys; the setters return 0 or -1. */
void		 config_proxy_defaults(struct proxy_config *);
int		 config_proxy_set_on(struct proxy_config *, const char *, int,
		    char *, size_t);
int		 config_proxy_set_from(struct proxy_config *, const char *, int,
		    char *, size_t);
int		 config_proxy_set_timeout(struct proxy_config *, const char *,
		    int, char *, size_t);
int		 config_proxy_check(struct proxy_config *,
		    const struct proxy_config *, const char *, int *, char *,
		    size_t);
void		 config_proxy_dump(const struct proxy_config *, FILE *);

/* proxy.c: the PROXY protocol header, version 1 and 2. */
#define PROXY_HEADER_MAX	2048	/* bytes; a longer one is refused */
enum proxy_result {
	PROXY_MORE,		/* not complete yet: every byte is header */
	PROXY_OK,
	PROXY_MALFORMED,
	PROXY_OVERSIZED,
};
struct proxy_header {
	size_t			ph_len;		/* with PROXY_OK */
	int			ph_version;	/* 1 or 2, once known */
	bool			ph_local;	/* the connection's peer is it */
	bool			ph_check;	/* version 2 LOCAL command */
	struct sockaddr_storage	ph_src;		/* unless ph_local */
	socklen_t		ph_srclen;
	struct sockaddr_storage	ph_dst;
};
enum proxy_result proxy_parse(const unsigned char *, size_t,
		    struct proxy_header *);

/*
 * parse.c: strict value parsers; each returns 0 or -1 with a message.
 * parse_listen() returns PARSE_LISTEN_RETRY instead when the resolver
 * failed for now (no answer in time, a temporary failure): a later try
 * may succeed, where a name that does not exist will not.
 */
#define PARSE_LISTEN_RETRY	(-2)
int	 parse_listen(const char *, struct listen_addr *, size_t, size_t *,
	    bool, char *, size_t);
int	 parse_share_name(const char *, char *, size_t);
int	 parse_acl(const char *, struct acl *, char *, size_t);

/* acl.c */
bool	 acl_match(const struct acl *, const struct sockaddr *);
bool	 acl_allows(const struct acl *, const struct acl *,
	    const struct acl *, const struct sockaddr *);

/* addr.c: see addr.h */
bool	 addr_overlaps(const struct sockaddr *, const struct sockaddr *);

/* ack.c */
void	 ack_take(unsigned char *, uint32_t *, size_t, uint32_t, bool *);
bool	 ack_sha256_claim(const unsigned char *, size_t, char [65]);
bool	 ack_rejects(const unsigned char *, size_t);
#define ACK_HOST_MAX	64	/* bytes of a host id */
bool	 ack_host_claim(const unsigned char *, size_t, bool,
	    char [ACK_HOST_MAX + 1]);

/* digest.c: SHA-256 of served files, off the event loop. */
void	 digest_init(struct event_base *);
void	 digest_start(struct sfile *);
void	 digest_prune(void);
void	 digest_cancel(struct sfile *);
void	 digest_free(void);

/* escape.c */
size_t	 escape_text(char *, size_t, const unsigned char *, size_t);
#define ESCAPE_BUFSIZE(n)	((n) * 4 + 1)

/* log.c */
/* How a transfer ended: the status of its record, listed in fdistd(8). */
enum outcome {
	OUTCOME_ACKED,
	OUTCOME_ACK_MISMATCH,
	OUTCOME_NO_ACK,
	OUTCOME_ACK_TIMEOUT,
	OUTCOME_ABORTED,
	OUTCOME_SEND_TIMEOUT,
	OUTCOME_FILE_CHANGED,
	OUTCOME_SHUTDOWN,
	OUTCOME_DENIED,
	OUTCOME_BUSY,
	OUTCOME_PROXY_ERROR,
	OUTCOME_PROBE
};
#define NOUTCOMES	(OUTCOME_PROBE + 1)
struct transfer_record {
	const char	*tr_share;
	const char	*tr_file;	/* escaped already (sf_path_log) */
	const char	*tr_peer;
	const char	*tr_proxy;	/* the balancer (PROXY), or NULL */
	uint64_t	 tr_bytes;
	uint64_t	 tr_size;
	uint64_t	 tr_duration_usec;
	enum outcome	 tr_status;
	const unsigned char *tr_ack;
	size_t		 tr_acklen;
	uint64_t	 tr_ack_bytes;	/* everything the client sent */
	const char	*tr_verified;	/* yes, no, unknown; NULL: no claim */
	const char	*tr_sha256;	/* the daemon's, with tr_verified */
	const char	*tr_reason;	/* why a refused client was refused */
	const char	*tr_version;	/* sf_version of the file served */
	const char	*tr_file_sha256; /* its digest; NULL: not known */
	const char	*tr_host_id;	/* the client's host= claim, or NULL */
};
void	 log_init(enum log_mode, int);
void	 log_flush(void);
void	 log_set_mode(enum log_mode);
void	 log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 fatal(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));
void	 fatalx(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));
void	 log_event(int, const char *, const char *, ...)
	    __attribute__((format(printf, 3, 4)));
/* Messages without a catalog entry. */
#define log_warnx(...)	log_event(LOG_WARNING, NULL, __VA_ARGS__)
#define log_info(...)	log_event(LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...)	log_event(LOG_DEBUG, NULL, __VA_ARGS__)
void	 log_transfer(const struct transfer_record *);
void	 log_refusals(const char *, enum outcome, const char *, uint64_t,
	    unsigned int);
void	 log_digest(const char *, const struct sfile *);
const char *log_outcome_name(enum outcome);
/* Catalog entries (systemd/fdistd.catalog) of daemon events. */
#define MSGID_READY		"819de2ce009b464d91664758b897bac1"
#define MSGID_RELOAD_FAILED	"a5ec91e7b0144300bb78128c936fcf5b"
#define MSGID_REFUSALS		"7bb3f058988248d99412e299d3580d60"
#define MSGID_DIGEST		"20aedb80c2af4366ad3a62a516409ae1"

/* sfile.c: a served file, opened once and shared by its clients. */
enum digest_state {
	DIGEST_NONE,
	DIGEST_PENDING,		/* a worker is hashing it */
	DIGEST_READY,
	DIGEST_FAILED,
};
struct sfile {
	int		 sf_fd;
	char		*sf_path;
	char		*sf_path_log;	/* escaped once, for every log line */
	uint64_t	 sf_size;
	dev_t		 sf_dev;
	ino_t		 sf_ino;
	int64_t		 sf_mtime_ns;
	unsigned int	 sf_refs;
	enum digest_state sf_digest;
	char		 sf_sha256[65];	/* lowercase hex, when READY */
	/* "dev-ino-size-mtime_ns" in hex: FDIST_VERSION of its records. */
	char		 sf_version[4 * 16 + 4];
	bool		 sf_changed;	/* written in place: not this version */
	/* Transfers ended as file-changed that watch.c has not logged. */
	unsigned int	 sf_changed_ended;
	struct watch	*sf_watch;	/* watch.c's */
};
struct sfile	*sfile_adopt(int, const char *);
struct sfile	*sfile_ref(struct sfile *);
void		 sfile_unref(struct sfile *);
bool		 sfile_same(const struct sfile *, const struct sfile *);

/* bucket.c */
struct bucket {
	uint64_t	bk_rate;	/* bytes/s; 0: no limit */
	uint64_t	bk_burst;
	int64_t		bk_tokens;
	struct timespec	bk_last;
};
void		 bucket_init(struct bucket *, uint64_t);
void		 bucket_set_rate(struct bucket *, uint64_t);
uint64_t	 bucket_available(struct bucket *, const struct timespec *);
void		 bucket_take(struct bucket *, uint64_t);
uint64_t	 bucket_wait_usec(const struct bucket *);
uint64_t	 bucket_burst(uint64_t);

/* fair.c: a share's rate divided among the clients it is sending to. */
struct fair_client {
	uint64_t	 fc_seen;	/* the share's clock when last credited */
	uint64_t	 fc_tokens;
	uint64_t	 fc_due;	/* asleep: the clock value to wake at */
	size_t		 fc_slot;	/* in fr_heap while asleep */
	struct event	*fc_wake;	/* made active then */
};
struct fair {
	uint64_t	 fr_rate;	/* share_rate_limit; 0: none */
	uint32_t	 fr_clients;	/* being sent to */
	uint64_t	 fr_clock;	/* bytes each of them has earned */
	uint64_t	 fr_frac;	/* and a part of fr_clients * 10^6 */
	struct timespec	 fr_last;	/* the clock's time */
	struct fair_client **fr_heap;	/* asleep, by fc_due */
	size_t		 fr_waiting;
	size_t		 fr_room;	/* of fr_heap: one per client */
	struct event	*fr_timer;	/* for fr_heap[0] */
};
void		 fair_init(struct fair *);
void		 fair_free(struct fair *);
void		 fair_set_rate(struct fair *, uint64_t);
int		 fair_join(struct fair *, struct fair_client *, struct event *);
void		 fair_leave(struct fair *, struct fair_client *);
uint64_t	 fair_available(struct fair *, struct fair_client *,
		    const struct timespec *);
void		 fair_take(struct fair_client *, uint64_t);
bool		 fair_wait(struct fair *, struct fair_client *, uint64_t);

/*
 * share.c: the running form of a share.  What must outlive a reload --
 * the clients counted against its limits, its rate bucket -- is in a
 * share_state kept by name.
 */
struct ip_count;
#define CONN_NSTATES		3	/* conn.h's enum conn_state */
#define SHARE_REASONS_MAX	24	/* server.c's refusal reasons */
struct share_state {
	TAILQ_ENTRY(share_state) ss_entry;
	char		  ss_name[SHARE_NAME_MAX];
	unsigned int	  ss_refs;
	uint32_t	  ss_active;
	struct ip_count	**ss_ips;	/* hash table, made on first use */
	struct bucket	  ss_bucket;	/* share_rate_limit, all together */
	struct fair	  ss_fair;	/* and each client's part of it */
	/* For the metrics: what its records said, and who is connected. */
	uint64_t	  ss_ended[NOUTCOMES];
	uint64_t	  ss_bytes[NOUTCOMES];	/* delivered */
	uint64_t	  ss_refused[SHARE_REASONS_MAX];
	uint32_t	  ss_clients[CONN_NSTATES];
};
struct share {
	TAILQ_ENTRY(share) sh_entry;
	char		 sh_name[SHARE_NAME_MAX];
	struct sfile	*sh_file;
	struct limits	 sh_limits;
	uint32_t	 sh_max_clients;
	struct acl	 sh_allow;
	struct acl	 sh_deny;
	struct proxy_config sh_proxy;
	struct share_state *sh_state;
	unsigned int	 sh_refs;	/* the server's, and one per client */
};
TAILQ_HEAD(share_list, share);
struct share	*share_new(const struct share_config *, struct sfile *);
struct share	*share_clone(const struct share *, struct sfile *);
void		 share_commit(struct share *);
struct share	*share_ref(struct share *);
void		 share_unref(struct share *);
uint32_t	 share_ip_clients(struct share *, const struct sockaddr *);
int		 share_client_add(struct share *, const struct sockaddr *);
void		 share_client_remove(struct share *, const struct sockaddr *);

/* listener.c */
/* Deep enough for a fleet connecting at once; the kernel caps it. */
#define LISTEN_BACKLOG	4096
struct listener {
	TAILQ_ENTRY(listener) ls_entry;
	int		 ls_fd;
	struct sockaddr_storage ls_ss;
	socklen_t	 ls_len;
	char		 ls_name[ADDR_STR_MAX];
	struct share	*ls_share;
	struct event	*ls_ev;
	struct event	*ls_look;	/* an accept on the next turn */
	bool		 ls_inherited;	/* passed by the service manager */
	bool		 ls_short;	/* its accept ran short; queue not empty */
	char		 ls_fdname[256]; /* its FileDescriptorName= */
};
TAILQ_HEAD(listener_list, listener);
int		 listener_socket(const struct listen_addr *);
struct listener	*listener_open(struct event_base *, const struct listen_addr *,
		    char *, size_t);
int		 listener_inherit(struct event_base *, struct listener_list *,
		    char *, size_t);
void		 listener_attach(struct listener *, struct share *);
void		 listener_enable(struct listener *);
void		 listener_disable(struct listener *);
void		 listener_look(struct listener *);
void		 listener_close(struct listener *);

/* server.c: the set of shares and listeners, accepting and limits. */
struct server_stats {
	uint64_t	st_accepted;
	uint64_t	st_acked;
	uint64_t	st_failed;
	uint64_t	st_refused;
	uint64_t	st_reloads_ok;
	uint64_t	st_reloads_failed;
	struct timespec	st_loaded;	/* CLOCK_REALTIME of the last good load */
};
int		 server_start(struct event_base *, struct config *, char *,
		    size_t);
int		 server_apply(struct config *, char *, size_t);
void		 server_stop(bool);
bool		 server_stopping(void);
bool		 server_mismatch(void);
void		 server_free(void);
void		 server_accept(struct listener *);
void		 server_admit(int, const struct sockaddr *, socklen_t,
		    const struct sockaddr *, struct share *);
/* Why a connection to a PROXY protocol share gets no file. */
enum proxy_refusal {
	PROXY_REFUSED_MALFORMED,
	PROXY_REFUSED_OVERSIZED,
	PROXY_REFUSED_TRUNCATED,
	PROXY_REFUSED_TIMEOUT,
	PROXY_REFUSED_PROBE,		/* closed before any byte */
	PROXY_REFUSED_LOCAL_PROBE,	/* the balancer's own, closed */
	PROXY_REFUSED_SHUTDOWN,
};
void		 server_refuse_proxy(int, const struct sockaddr *,
		    const struct share *, enum proxy_refusal);
void		 server_conn_released(void);
void		 server_count_outcome(bool);
int		 server_file_replace(struct sfile *, struct sfile *);
const struct server_stats *server_stats(void);
void		 server_count_reload(bool);
const struct share_list *server_shares(void);
bool		 server_refusal_reason(size_t, const char **,
		    enum outcome *);
size_t		 server_nshares(void);
void		 server_digest_known(const struct sfile *);
void		 server_serves(const struct share *);
void		 server_manifest(void);

/* server*.c: private to the server. */
/* Why a client was turned away; each reason belongs to one status. */
enum refusal_reason {
	REASON_NOT_ALLOWED,
	REASON_MAX_CLIENTS,
	REASON_SHARE_MAX_CLIENTS,
	REASON_MAX_PER_IP,
	REASON_NO_DESCRIPTORS,
	REASON_NO_MEMORY,
	REASON_FILE_CHANGING,
	REASON_NOT_PROXY_FROM,
	REASON_PROXY_MALFORMED,
	REASON_PROXY_OVERSIZED,
	REASON_PROXY_TRUNCATED,
	REASON_PROXY_TIMEOUT,
	REASON_PROXY_PROBE,
	REASON_PROXY_LOCAL_PROBE,
	REASON_PROXY_SHUTDOWN,
	NREASONS
};
void		 server_timer_add(struct event *, uint64_t);
void		 server_count_refused(void);
void		 server_count_accepted(void);
struct listener_list *server_listeners(void);

/* server_accept.c: taking clients off the listeners; shortages. */
int		 server_accept_init(struct event_base *);
void		 server_accept_free(void);
void		 server_accept_drain(struct listener *);
void		 server_accept_rearm(void);
void		 server_accept_freed(void);

/* server_listen.c: which listeners serve which share. */
int		 server_listen_open(struct event_base *, const struct config *,
		    struct listener_list *, bool, struct listener_list *,
		    char *, size_t);
void		 server_listen_take(const struct config *,
		    const struct share_config *, struct share *, bool,
		    struct listener_list *, struct listener_list *,
		    struct listener_list *);

/* server_refuse.c: refusals, with rate-limited records. */
int		 server_refuse_init(struct event_base *);
void		 server_refuse_free(void);
void		 server_refuse(int, const struct sockaddr *,
		    const struct sockaddr *, const struct share *,
		    enum refusal_reason);

/*
 * manifest.c: what the server serves, as a document served like a share
 * under a name no share can have ('@' is not allowed in share names).
 */
#define MANIFEST_SHARE	"@manifest"
#define MANIFEST_FILE	"memfd:fdist-manifest"
void		 manifest_init(struct event_base *);
int		 manifest_make(const struct config *, const struct share_list *,
		    struct share **);
void		 manifest_commit(struct share *);
void		 manifest_refresh(const struct config *,
		    const struct share_list *, struct listener_list *);
void		 manifest_free(void);

/* conn.c: one client connection. */
int		 conn_new(struct event_base *, int, const struct sockaddr *,
		    socklen_t, const struct sockaddr *, struct share *);
void		 conn_close_all(enum outcome);
void		 conn_digest_known(struct sfile *);
void		 conn_file_changed(struct sfile *);
size_t		 conn_count(void);
const char	*conn_state_name(int);

/* conn_proxy.c: a connection awaiting its PROXY header. */
int		 conn_proxy_new(struct event_base *, int,
		    const struct sockaddr *, socklen_t, struct share *);
size_t		 conn_proxy_count(void);
void		 conn_proxy_close_all(void);

/* notify.c: the service manager (sd_notify) and the watchdog. */
void	 notify_init(struct event_base *);
void	 notify_ready(void);
void	 notify_reloading(void);
void	 notify_stopping(void);
void	 notify_status(void);
void	 notify_free(void);
void	 notify_reload_result(bool, const char *);
void	 notify_failure(const char *);

/* reload_result.c: a reload's result, for ExecReload= (fdistd -r). */
#define RELOAD_WAIT_S	60	/* under systemd's default TimeoutStartSec */
void	 reload_result_begin(void);
void	 reload_result_report(bool, const char *);
int	 reload_result_client(const char *);

/* sandbox.c: what the unit's sandbox and dynamic user can open. */
void	 sandbox_explain(const char *, int, char *, size_t);
void	 sandbox_warn(const struct config *, FILE *);

/* reload.c: SIGHUP's load of the file, in a worker thread. */
typedef void	(*reload_done_cb)(struct config *, const char *);
void		 reload_init(struct event_base *, const char *,
		    reload_done_cb);
void		 reload_start(void);
bool		 reload_running(void);
void		 reload_free(void);

/* watch.c: served files changed in place (inotify). */
void	 watch_init(struct event_base *);
void	 watch_add(struct sfile *);
void	 watch_drop(struct sfile *);
bool	 watch_changed(struct sfile *);
bool	 watch_changed_now(struct sfile *);
void	 watch_free(void);

/* metrics_config.c: the metrics keys; metrics.c: the Prometheus endpoint. */
#define METRICS_LOOPBACK	"127.0.0.0/8, ::1"	/* metrics_allow default */
int		 metrics_config_addr(struct metrics_config *, const char *, int,
		    bool, char *, size_t);
int		 metrics_config_allow(struct metrics_config *, const char *, int,
		    char *, size_t);
int		 metrics_config_check(const struct config *, int *, char *,
		    size_t);
void		 metrics_config_dump(const struct metrics_config *, FILE *);
void		 metrics_init(struct event_base *);
/* metrics_format.c */
enum metrics_refusal {
	METRICS_NOT_ALLOWED,
	METRICS_TOO_MANY,
	METRICS_NREFUSALS
};
struct evbuffer;
void		 metrics_format_init(void);
void		 metrics_format(struct evbuffer *,
		    const uint64_t [METRICS_NREFUSALS]);
int		 metrics_prepare(const struct config *, char *, size_t);
void		 metrics_abort(void);
void		 metrics_commit(const struct config *);
void		 metrics_free(void);

/* fdistd.c */
extern int	 fdistd_verbose;

#endif /* FDISTD_H */
