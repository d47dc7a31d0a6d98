/*
 * manifest.c: what the server serves, as a small document a client reads
 * before it fetches: a line per share with its size, digest, version and
 * addresses (the format is in fdistd(8)).  It is served as a share of
 * its own: the text is put in a memfd sealed against change and sent by
 * conn_send.c with sendfile(2) like any file, so its clients get the same
 * limits, timeouts and records.  Its digest is computed here, at once (it
 * is tiny), so acks of it are verified.  A change makes a new document
 * and a new share; clients in flight keep the old one, as with a reload.
 */
#include <sys/types.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "fdistd.h"

#define MANIFEST_VERSION	1
/* Linux 6.3's; older headers lack it, older kernels refuse it (EINVAL). */
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL		0x0008U
#endif
/* A document that could not be made is tried again this much later. */
#define MANIFEST_RETRY_MS	1000

static struct share	*manifest;	/* the running one, or NULL */
static struct event	*retry_ev;

/*
 * An address as the listen= field has it.  addr_format() names an IPv6
 * scope by its interface, and an interface name may hold a ',' or any
 * byte but '/', ':' and blanks: then the scope is given by its number,
 * so the field never needs escaping.
 */
static void
manifest_addr(const struct sockaddr *sa, char *buf, size_t len)
{
	const struct sockaddr_in6	*sin6 = (const struct sockaddr_in6 *)sa;
	char				 host[INET6_ADDRSTRLEN];
	size_t				 n;

	addr_format(sa, buf, len);
	n = strlen(buf);
	if (strspn(buf, "0123456789abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ.:[]%_-") == n)
		return;
	inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
	snprintf(buf, len, "[%s%%%u]:%u", host, sin6->sin6_scope_id,
	    ntohs(sin6->sin6_port));
}

static const struct share_config *
manifest_share_config(const struct config *cf, const char *name)
{
	const struct share_config	*sc;

	TAILQ_FOREACH(sc, &cf->cf_shares, sc_entry) {
		if (strcmp(sc->sc_name, name) == 0)
			return (sc);
	}
	return (NULL);
}

static void
manifest_line(FILE *fp, const struct share *sh, const struct share_config *sc)
{
	const struct sfile	*sf = sh->sh_file;
	char			 addr[ADDR_STR_MAX];
	size_t			 i;

	/* A file being written in place has no digest until it settles. */
	fprintf(fp, "share %s size=%" PRIu64 " sha256=%s version=%s listen=",
	    sh->sh_name, sf->sf_size, sf->sf_changed ? "pending" :
	    sf->sf_digest == DIGEST_READY ? sf->sf_sha256 :
	    sf->sf_digest == DIGEST_FAILED ? "failed" : "pending",
	    sf->sf_version);
	for (i = 0; sc != NULL && i < sc->sc_nlisten; i++) {
		manifest_addr((const struct sockaddr *)&sc->sc_listen[i].la_ss,
		    addr, sizeof(addr));
		fprintf(fp, "%s%s", i > 0 ? "," : "", addr);
	}
	fputc('\n', fp);
}

/*
 * The document of shares as cf configures them: their addresses are the
 * configured ones, which are what the listeners are bound to.  NULL with
 * errno set if out of memory.
 */
static char *
manifest_text(const struct config *cf, const struct share_list *shares,
    size_t *len)
{
	const struct share	*sh;
	FILE			*fp;
	char			*buf = NULL;

	if ((fp = open_memstream(&buf, len)) == NULL)
		return (NULL);
	fprintf(fp, "fdist-manifest %d\n", MANIFEST_VERSION);
	TAILQ_FOREACH(sh, shares, sh_entry)
		manifest_line(fp, sh, manifest_share_config(cf, sh->sh_name));
	fprintf(fp, "end\n");
	if (ferror(fp)) {
		fclose(fp);
		free(buf);
		errno = ENOMEM;
		return (NULL);
	}
	if (fclose(fp) == EOF) {
		free(buf);
		return (NULL);
	}
	return (buf);
}

/* Whether sf already holds this text (a tiny file: read it back). */
static bool
manifest_same(const struct sfile *sf, const char *text, size_t len)
{
	char	*buf;
	bool	 same;

	if (sf->sf_size != len || (buf = malloc(len + 1)) == NULL)
		return (false);
	same = pread(sf->sf_fd, buf, len + 1, 0) == (ssize_t)len &&
	    memcmp(buf, text, len) == 0;
	free(buf);
	return (same);
}

static void
manifest_digest(struct sfile *sf, const char *text, size_t len)
{
	unsigned char	md[EVP_MAX_MD_SIZE];
	unsigned int	mdlen = 0, i;

	if (EVP_Digest(text, len, md, &mdlen, EVP_sha256(), NULL) != 1 ||
	    mdlen != 32) {
		sf->sf_digest = DIGEST_FAILED;
		return;
	}
	for (i = 0; i < mdlen; i++) {
		sf->sf_sha256[i * 2] = "0123456789abcdef"[md[i] >> 4];
		sf->sf_sha256[i * 2 + 1] = "0123456789abcdef"[md[i] & 0xf];
	}
	sf->sf_sha256[64] = '\0';
	sf->sf_digest = DIGEST_READY;
}

/*
 * The text as a served file: a memfd, sealed so that its size and bytes
 * can never change under a client being sent it, with its digest.
 */
static struct sfile *
manifest_file(const char *text, size_t len)
{
	struct sfile	*sf;
	size_t		 off = 0;
	ssize_t		 n;
	int		 fd, saved;

	/* Never executable: a host may refuse memfds that could be. */
	fd = memfd_create("fdist-manifest", MFD_CLOEXEC | MFD_ALLOW_SEALING |
	    MFD_NOEXEC_SEAL);
	if (fd == -1 && errno == EINVAL)
		fd = memfd_create("fdist-manifest", MFD_CLOEXEC |
		    MFD_ALLOW_SEALING);
	if (fd == -1)
		return (NULL);
	while (off < len) {
		if ((n = write(fd, text + off, len - off)) == -1) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		off += (size_t)n;
	}
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW |
	    F_SEAL_WRITE | F_SEAL_SEAL) == -1)
		goto fail;
	if ((sf = sfile_adopt(fd, MANIFEST_FILE)) == NULL)
		return (NULL);		/* fd is closed */
	manifest_digest(sf, text, len);
	return (sf);
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return (NULL);
}

static void
manifest_on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	server_manifest();
}

void
manifest_init(struct event_base *base)
{
	if ((retry_ev = evtimer_new(base, manifest_on_retry, NULL)) == NULL)
		fatalx("cannot make the manifest's timer");
}

/*
 * The manifest share of configuration cf serving shares, in *shp; NULL
 * if cf has no manifest.  The running manifest's file is kept if the
 * text is the same, so its version is too.  -1 with errno set on error.
 */
int
manifest_make(const struct config *cf, const struct share_list *shares,
    struct share **shp)
{
	struct sfile	*sf;
	char		*text;
	size_t		 len;

	*shp = NULL;
	if (cf->cf_manifest.sc_nlisten == 0)
		return (0);
	if ((text = manifest_text(cf, shares, &len)) == NULL)
		return (-1);
	if (manifest != NULL && manifest_same(manifest->sh_file, text, len))
		sf = sfile_ref(manifest->sh_file);
	else
		sf = manifest_file(text, len);
	free(text);
	if (sf == NULL)
		return (-1);
	if ((*shp = share_new(&cf->cf_manifest, sf)) == NULL) {
		sfile_unref(sf);
		return (-1);
	}
	return (0);
}

/*
 * sh (or none) is the running manifest now, with the reference
 * manifest_make() gave; its listeners are attached to it already.  A new
 * document gets a digest record, as a share's file does.
 */
void
manifest_commit(struct share *sh)
{
	struct share	*old = manifest;

	manifest = sh;
	if (sh != NULL) {
		share_commit(sh);
		if (old == NULL || old->sh_file != sh->sh_file)
			log_digest(sh->sh_name, sh->sh_file);
	}
	share_unref(old);
}

/*
 * Something the document shows may have changed (a digest became known
 * or failed, a file was written in place or settled): if the text differs, serve a new one on the running
 * manifest's listeners.  Should that fail, the old one stays and this is
 * tried again shortly: a stale document is refused by careful clients
 * (its digest is not the file's), never taken for the truth.
 */
void
manifest_refresh(const struct config *cf, const struct share_list *shares,
    struct listener_list *listeners)
{
	struct listener	*ls;
	struct share	*sh;
	struct sfile	*sf;
	char		*text;
	size_t		 len;

	if (manifest == NULL || server_stopping())
		return;
	if ((text = manifest_text(cf, shares, &len)) == NULL)
		goto retry;
	if (manifest_same(manifest->sh_file, text, len)) {
		free(text);
		return;
	}
	sf = manifest_file(text, len);
	free(text);
	if (sf == NULL)
		goto retry;
	if ((sh = share_new(&cf->cf_manifest, sf)) == NULL) {
		sfile_unref(sf);
		goto retry;
	}
	TAILQ_FOREACH(ls, listeners, ls_entry) {
		if (ls->ls_share == manifest)
			listener_attach(ls, sh);
	}
	manifest_commit(sh);
	return;
retry:
	if (!evtimer_pending(retry_ev, NULL)) {
		struct timeval	tv = { MANIFEST_RETRY_MS / 1000,
				    MANIFEST_RETRY_MS % 1000 * 1000 };

		log_warn("manifest: cannot make a new document (trying again "
		    "in %d ms)", MANIFEST_RETRY_MS);
		evtimer_add(retry_ev, &tv);
	}
}

void
manifest_free(void)
{
	share_unref(manifest);
	manifest = NULL;
	if (retry_ev != NULL)
		event_free(retry_ev);
	retry_ev = NULL;
}
