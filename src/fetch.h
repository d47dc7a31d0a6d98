/*
 * fdist-fetch: the safe client for fdistd shares.
 * Private header shared by the fetch*.c files.
 */
#ifndef FETCH_H
#define FETCH_H

#include <sys/types.h>

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

struct addrinfo;
struct fetch_out;

/* Exit codes; the man page and --help list them, keep all three in step. */
enum fetch_exit {
	FETCH_OK = 0,		/* FILE complete, digest checked */
	FETCH_EUSAGE = 1,	/* bad arguments or internal error */
	FETCH_ECONNECT = 2,	/* could not resolve or connect */
	FETCH_ERESET = 3,	/* server refused or connection lost */
	FETCH_ETIMEOUT = 4,	/* no progress for the timeout */
	FETCH_EDIGEST = 5,	/* --expect-sha256 did not match */
	FETCH_ELOCAL = 6,	/* could not write the output */
	FETCH_EBUSY = 7,	/* another run is writing FILE.part */
	FETCH_CURRENT = 8,	/* --if-changed: FILE holds it already */
	FETCH_EPENDING = 9,	/* the manifest has no digest yet */
	FETCH_EMANIFEST = 10	/* the manifest cannot say how to fetch */
};

#define FETCH_PROGNAME	"fdist-fetch"

/* Large reads keep system calls and digest calls per byte low. */
#define FETCH_BUFSIZE		(1024 * 1024)
#define FETCH_ACK_MAX		200
#define FETCH_TIMEOUT_DEFAULT	(30 * 1000)
#define FETCH_TIMEOUT_MAX	(24 * 3600 * 1000)
#define FETCH_PROGRESS_MS	100
#define FETCH_HEXLEN		64
#define FETCH_HOST_MAX		64	/* fdistd's ACK_HOST_MAX */

/* fetch.c */
void	fetch_warn(const char *, ...)
	    __attribute__((format(printf, 1, 2)));
void	fetch_warnx(const char *, ...)
	    __attribute__((format(printf, 1, 2)));
int64_t	fetch_now(void);

/* fetch_net.c */
int	fetch_net_resolve(const char *, struct addrinfo **);
int	fetch_net_connect(struct addrinfo *, int, int *);
ssize_t	fetch_net_read(int, void *, size_t, int);
int	fetch_net_write_all(int, const void *, size_t, int);
int	fetch_net_finish(int, int);

/* fetch_manifest.c */
struct fetch_share {
	char		fs_target[80];	/* HOST:PORT to fetch it from */
	char		fs_sha256[65];	/* what the server announced */
	uint64_t	fs_size;	/* its size, announced too */
};
int	fetch_manifest(const char *, const char *, const char *, int,
	    struct fetch_share *);

/* One run: the options, then the transfer. */
struct fetch {
	const char		*f_target;	/* HOST:PORT as given */
	const char		*f_manifest;	/* --manifest HOST:PORT */
	const char		*f_share;	/* SHARE, with --manifest */
	struct fetch_share	 f_fs;		/* what the manifest says */
	int			 f_if_changed;
	const char		*f_output;	/* "-" for stdout */
	const char		*f_ack;		/* --ack words or NULL */
	const char		*f_timeout_arg;	/* --timeout as given */
	int			 f_timeout;	/* ms without progress */
	int			 f_quiet;
	int			 f_progress;	/* redraw a status line */
	char			 f_expect[FETCH_HEXLEN + 1];	/* "" if none */
	uint64_t		 f_max;		/* bytes at most: --max-size */
	int			 f_max_manifest;	/* f_max is the manifest's */
	char			 f_host[FETCH_HOST_MAX + 1];	/* "" if none */
	int			 f_host_set;	/* by --host-id */
	char			 f_got[FETCH_HEXLEN + 1];

	int			 f_sock;
	struct fetch_out	*f_out;
	EVP_MD_CTX		*f_md;
	unsigned char		*f_buf;
	uint64_t		 f_bytes;
	int64_t			 f_start;	/* monotonic ms */
	int64_t			 f_drawn;	/* last progress redraw */
};

/* fetch_opts.c */
int	fetch_options(struct fetch *, int, char **);

/* fetch_mark.c: the digest kept with FILE, for --if-changed. */
#define FETCH_MARK_XATTR	"user.fdist.sha256"
int	fetch_mark_current(const char *, const char *);
int	fetch_mark_set(int, const char *);

/* fetch_out.c */
void	fetch_out_signals(void);
int	fetch_out_open(const char *, struct fetch_out **);
int	fetch_out_write(struct fetch_out *, const void *, size_t);
int	fetch_out_commit(struct fetch_out *, const char *, int *);
void	fetch_out_free(struct fetch_out *);
const char *fetch_out_name(struct fetch_out *);

#endif
