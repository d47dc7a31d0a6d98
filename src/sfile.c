/*
 * sfile.c: a served file.  It is opened once, when the configuration is
 * loaded, and shared by every client of its share; sendfile() with an
 * offset of the client's own never moves the file position, so one
 * descriptor serves them all.  A reload that opens a new file leaves
 * clients already sending on the old one.
 */
#include <sys/types.h>
#include <sys/stat.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fdistd.h"

/*
 * Name this version of the file once, for every record about it: what
 * sfile_same() compares, so the same unchanged file has the same name
 * after a restart too.  A time before 1970 shows as its two's complement.
 */
static void
sfile_version(struct sfile *sf)
{
	snprintf(sf->sf_version, sizeof(sf->sf_version), "%" PRIx64 "-%"
	    PRIx64 "-%" PRIx64 "-%" PRIx64, (uint64_t)sf->sf_dev,
	    (uint64_t)sf->sf_ino, sf->sf_size, (uint64_t)sf->sf_mtime_ns);
}

/* Take over an open descriptor; on failure it is closed. */
struct sfile *
sfile_adopt(int fd, const char *path)
{
	struct sfile	*sf;
	struct stat	 st;
	size_t		 len;

	if (fstat(fd, &st) == -1 || (sf = calloc(1, sizeof(*sf))) == NULL)
		goto fail;
	len = strlen(path);
	if ((sf->sf_path = strdup(path)) == NULL ||
	    (sf->sf_path_log = malloc(ESCAPE_BUFSIZE(len))) == NULL) {
		free(sf->sf_path);
		free(sf);
		goto fail;
	}
	escape_text(sf->sf_path_log, ESCAPE_BUFSIZE(len),
	    (const unsigned char *)path, len);
	sf->sf_fd = fd;
	sf->sf_size = (uint64_t)st.st_size;
	sf->sf_dev = st.st_dev;
	sf->sf_ino = st.st_ino;
	sf->sf_mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 +
	    st.st_mtim.tv_nsec;
	sfile_version(sf);
	sf->sf_refs = 1;
	watch_add(sf);
	return (sf);
fail:
	close(fd);
	return (NULL);
}

struct sfile *
sfile_ref(struct sfile *sf)
{
	sf->sf_refs++;
	return (sf);
}

void
sfile_unref(struct sfile *sf)
{
	if (sf == NULL || --sf->sf_refs > 0)
		return;
	watch_drop(sf);
	close(sf->sf_fd);
	free(sf->sf_path);
	free(sf->sf_path_log);
	free(sf);
}

/* Whether two opens are of the same, unchanged file. */
bool
sfile_same(const struct sfile *a, const struct sfile *b)
{
	return (a->sf_dev == b->sf_dev && a->sf_ino == b->sf_ino &&
	    a->sf_size == b->sf_size && a->sf_mtime_ns == b->sf_mtime_ns);
}
