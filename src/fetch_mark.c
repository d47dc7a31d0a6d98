/*
 * fdist-fetch: the digest of a published FILE, kept with it in the
 * extended attribute user.fdist.sha256 so that --if-changed can tell,
 * without reading FILE, that it already holds a given version.  The
 * attribute is set on FILE.part before the rename publishes it: FILE
 * never has a name without its mark, nor a mark of other bytes.  It
 * names the size and modification time FILE had then; a FILE written
 * since (either changes) is no longer taken to hold that digest.
 */
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/xattr.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "fetch.h"

/* "sha256=HEX size=N mtime=SEC.NSEC": one format, written and compared. */
#define FETCH_MARK_MAX	160

static int
fetch_mark_format(char *buf, size_t len, const char *sha256,
    const struct stat *st)
{
	int	n;

	n = snprintf(buf, len, "sha256=%s size=%jd mtime=%jd.%09ld", sha256,
	    (intmax_t)st->st_size, (intmax_t)st->st_mtim.tv_sec,
	    st->st_mtim.tv_nsec);
	return (n < 0 || (size_t)n >= len ? -1 : n);
}

/*
 * Whether path is a regular file marked with this digest, at the size
 * and modification time it has now.  Any failure (no such file, no
 * mark, no extended attributes here) means no: it is fetched.
 */
int
fetch_mark_current(const char *path, const char *sha256)
{
	struct stat	st;
	char		want[FETCH_MARK_MAX], have[FETCH_MARK_MAX];
	ssize_t		n;
	int		wlen;

	if (stat(path, &st) == -1 || !S_ISREG(st.st_mode))
		return (0);
	if ((wlen = fetch_mark_format(want, sizeof(want), sha256, &st)) == -1)
		return (0);
	n = getxattr(path, FETCH_MARK_XATTR, have, sizeof(have));
	return (n == wlen && memcmp(have, want, (size_t)wlen) == 0);
}

/*
 * Mark the complete, synced file open on fd with its digest.  Returns -1
 * with errno set (ENOTSUP: this file system keeps no user attributes).
 */
int
fetch_mark_set(int fd, const char *sha256)
{
	struct stat	st;
	char		mark[FETCH_MARK_MAX];
	int		len;

	if (fstat(fd, &st) == -1)
		return (-1);
	if ((len = fetch_mark_format(mark, sizeof(mark), sha256, &st)) == -1) {
		errno = EOVERFLOW;
		return (-1);
	}
	return (fsetxattr(fd, FETCH_MARK_XATTR, mark, (size_t)len, 0));
}
