/*
 * fdist-fetch: the safe client for fdistd shares.
 * Private header shared by fetch.c, fetch_net.c and fetch_out.c.
 */
#ifndef FETCH_H
#define FETCH_H

#include <sys/types.h>

#include <stddef.h>
#include <stdint.h>

struct addrinfo;

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
	char	fs_target[80];		/* HOST:PORT to fetch it from */
	char	fs_sha256[65];		/* what the server announced */
};
int	fetch_manifest(const char *, const char *, const char *, int,
	    struct fetch_share *);

/* fetch_mark.c: the digest kept with FILE, for --if-changed. */
#define FETCH_MARK_XATTR	"user.fdist.sha256"
int	fetch_mark_current(const char *, const char *);
int	fetch_mark_set(int, const char *);

/* fetch_out.c */
struct fetch_out;
void	fetch_out_signals(void);
int	fetch_out_open(const char *, struct fetch_out **);
int	fetch_out_write(struct fetch_out *, const void *, size_t);
int	fetch_out_commit(struct fetch_out *, const char *, int *);
void	fetch_out_free(struct fetch_out *);
const char *fetch_out_name(struct fetch_out *);

#endif
