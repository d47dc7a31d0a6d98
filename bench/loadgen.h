/*
 * fdist-loadgen: a load client for fdistd (and, for comparison, plain
 * HTTP servers).  Private header shared by loadgen.c (options and the
 * event loop), loadgen_conn.c (one client connection), loadgen_parse.c
 * (strict argument parsing) and loadgen_report.c (counters and report).
 */
#ifndef LOADGEN_H
#define LOADGEN_H

#include <sys/types.h>
#include <sys/socket.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LG_PROGNAME		"fdist-loadgen"
#define LG_EXIT_OK		0
#define LG_EXIT_FAIL		1	/* wrong bytes or unexpected errors */
#define LG_EXIT_USAGE		2

#define LG_TARGETS_MAX		64	/* --connect and --bind, each */
#define LG_ACK_MAX		4096
#define LG_PATH_MAX		2048
#define LG_SHA256_LEN		32
#define LG_NS			1000000000LL

/* What a client does with its connection; see --help. */
enum lg_behaviour {
	LG_NORMAL,
	LG_NEVER_ACK,
	LG_CLOSE_NO_ACK,
	LG_RESET,
	LG_STALL,
	LG_SLOW,
	LG_GARBAGE,
	LG_EARLY_ACK,
	LG_NBEHAVIOURS
};

enum lg_proto {
	LG_PROTO_FDIST,		/* stream, EOF, ack */
	LG_PROTO_HTTP		/* GET, response to EOF, no ack */
};

enum lg_verify {
	LG_VERIFY_SIZE,
	LG_VERIFY_SHA256,
	LG_VERIFY_DISCARD	/* size; the body is dropped in the kernel */
};

/* How a transfer ended. */
enum lg_outcome {
	LG_OK,
	LG_REFUSED,		/* reset or refused before any byte */
	LG_FAILED
};

/* Why a transfer failed; the report counts each. */
enum lg_fail {
	LG_FAIL_NONE,
	LG_FAIL_TIMEOUT,	/* hit --timeout */
	LG_FAIL_SIZE,		/* EOF at the wrong byte count */
	LG_FAIL_DIGEST,		/* right size, wrong SHA-256 */
	LG_FAIL_RESET,		/* the server reset after sending bytes */
	LG_FAIL_ACK_LOST,	/* the server reset in answer to the ack */
	LG_FAIL_REFUSED,	/* a refusal under --no-refusals */
	LG_FAIL_CONNECT,	/* connect(2) or bind(2) failed */
	LG_FAIL_HTTP,		/* not a 200 response, or no header end */
	LG_FAIL_IO,		/* any other socket error */
	LG_FAIL_LOCAL,		/* socket(2) failed: out of descriptors */
	LG_FAIL_INTERRUPTED,	/* a second SIGINT/SIGTERM */
	LG_NFAILS
};

/* An address to connect to or to bind to. */
struct lg_addr {
	struct sockaddr_storage	a_ss;
	socklen_t		a_len;
};

/* Everything the options decide; read-only once the run starts. */
struct lg_options {
	unsigned int		o_concurrency;
	uint64_t		o_count;	/* 0: until --duration */
	int64_t			o_duration_ns;	/* 0: until --count */
	uint64_t		o_rate;		/* starts per second; 0: as -c allows */
	struct lg_addr		o_connect[LG_TARGETS_MAX];
	size_t			o_nconnect;
	struct lg_addr		o_bind[LG_TARGETS_MAX];
	size_t			o_nbind;
	uint64_t		o_expect_size;
	bool			o_have_size;
	unsigned char		o_expect_sha256[LG_SHA256_LEN];
	bool			o_have_sha256;
	enum lg_verify		o_verify;
	unsigned int		o_mix[LG_NBEHAVIOURS];	/* percent */
	char			o_ack[LG_ACK_MAX];
	size_t			o_acklen;
	int64_t			o_hold_ns;
	uint64_t		o_slow_rate;	/* bytes per second */
	int64_t			o_timeout_ns;
	enum lg_proto		o_proto;
	char			o_path[LG_PATH_MAX];
	bool			o_no_refusals;
	bool			o_json;
	const char		*o_trace;	/* file, or NULL */
	uint64_t		o_seed;
};

/* loadgen.c */
extern struct lg_options	lg_opt;
int64_t		 lg_now(void);
uint64_t	 lg_random(void);

/* loadgen_parse.c: each returns 0, or -1 after a message on stderr. */
int	 lg_parse_count(const char *, const char *, uint64_t, uint64_t,
	    uint64_t *);
int	 lg_parse_size(const char *, const char *, uint64_t *);
int	 lg_parse_seconds(const char *, const char *, int64_t *);
int	 lg_parse_target(const char *, struct lg_addr *);
int	 lg_parse_bind(const char *, struct lg_addr *);
int	 lg_parse_sha256(const char *, unsigned char *);
int	 lg_parse_mix(const char *, unsigned int *);
int	 lg_parse_ack(const char *, char *, size_t, size_t *);
const char *lg_behaviour_name(enum lg_behaviour);

/* loadgen_conn.c */
int	 lg_conn_init(unsigned int);
void	 lg_conn_free_all(void);
int	 lg_conn_start(enum lg_behaviour, const struct lg_addr *,
	    const struct lg_addr *);
void	 lg_conn_event(uint64_t, uint32_t);
int64_t	 lg_conn_next_wake(void);
void	 lg_conn_expire(int64_t);
void	 lg_conn_abort_all(void);
unsigned int lg_conn_active(void);
extern int	lg_conn_epfd;

/* loadgen_report.c */
void	 lg_report_start(enum lg_behaviour);
void	 lg_report_end(enum lg_behaviour, enum lg_outcome, enum lg_fail,
	    uint64_t, int64_t);
void	 lg_report_print(int64_t, bool);
int	 lg_report_trace_open(const char *);
void	 lg_report_trace(int, enum lg_behaviour, enum lg_outcome,
	    enum lg_fail, uint64_t, int64_t);
void	 lg_report_trace_close(void);
bool	 lg_report_failed(void);

#endif
