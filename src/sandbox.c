/*
 * sandbox.c: will the service be able to open the files it is to serve?
 *
 * fdistd.service runs the daemon as a dynamic user (DynamicUser=yes),
 * which owns no file and is in no group, and with its own empty /tmp and
 * /var/tmp (PrivateTmp=yes, implied by DynamicUser=yes); /home, /root
 * and /run/user stay visible, read-only (ProtectHome=read-only).  Root
 * checking a file with -t opens whatever it likes, so -t looks at the
 * permission bits instead; the daemon under the unit, whose open() is the
 * truth, says why it failed.
 */
#include <sys/stat.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fdistd.h"

/* systemd's range of dynamic users (DynamicUser=, systemd.exec(5)). */
#define DYNAMIC_UID_MIN		61184
#define DYNAMIC_UID_MAX		65519

#define SANDBOX_HOW_GROUP	"or add the service to its group with a " \
	"drop-in (SupplementaryGroups=, see fdistd.service)"
#define SANDBOX_HOW_TMP		"put served files elsewhere, e.g. under " \
	"/srv"

/* Are we the service itself, running as its dynamic user? */
static bool
sandbox_dynamic_user(void)
{
	uid_t	uid = geteuid();

	return (uid >= DYNAMIC_UID_MIN && uid <= DYNAMIC_UID_MAX);
}

/* Under the /tmp or /var/tmp that PrivateTmp= replaces? */
static bool
sandbox_private_tmp(const char *path)
{
	return (strncmp(path, "/tmp/", 5) == 0 ||
	    strncmp(path, "/var/tmp/", 9) == 0);
}

/*
 * The first directory on path that "others" cannot search, or the file
 * itself if they cannot read it; false if none.
 */
static bool
sandbox_others_blocked(const char *path, char *what, size_t len,
    mode_t *mode, bool *is_dir)
{
	char		 buf[PATH_MAX];
	struct stat	 st;
	char		*p;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return (false);
	for (p = buf; (p = strchr(p + 1, '/')) != NULL; ) {
		*p = '\0';
		if (stat(buf[0] == '\0' ? "/" : buf, &st) == 0 &&
		    S_ISDIR(st.st_mode) && (st.st_mode & S_IXOTH) == 0) {
			snprintf(what, len, "%s", buf[0] == '\0' ? "/" : buf);
			*mode = st.st_mode & 07777;
			*is_dir = true;
			return (true);
		}
		*p = '/';
	}
	if (stat(path, &st) == 0 && (st.st_mode & S_IROTH) == 0) {
		snprintf(what, len, "%s", path);
		*mode = st.st_mode & 07777;
		*is_dir = false;
		return (true);
	}
	return (false);
}

/*
 * Why the service cannot open path, as a warning of -t; false if it
 * can, as far as permission bits and the unit's sandbox tell.
 */
static bool
sandbox_check(const char *path, char *msg, size_t len)
{
	char	real[PATH_MAX], what[PATH_MAX];
	mode_t	mode;
	bool	is_dir;

	if (realpath(path, real) == NULL)
		return (false);	/* it was just opened: nothing to add */
	if (sandbox_private_tmp(real)) {
		snprintf(msg, len, "%s is hidden from the service: "
		    "fdistd.service has its own empty /tmp and /var/tmp "
		    "(PrivateTmp=yes); %s", real, SANDBOX_HOW_TMP);
		return (true);
	}
	/* Both the path as written and the one its links lead to. */
	if (!sandbox_others_blocked(path, what, sizeof(what), &mode,
	    &is_dir) && !sandbox_others_blocked(real, what, sizeof(what),
	    &mode, &is_dir))
		return (false);
	snprintf(msg, len, "%s %s (mode %04o) is not %s by others, and the "
	    "service runs as a dynamic user (DynamicUser=yes), neither its "
	    "owner nor in its group: make it %s (chmod o+%s), %s",
	    is_dir ? "directory" : "file", what, (unsigned int)mode,
	    is_dir ? "searchable" : "readable",
	    is_dir ? "searchable" : "world-readable", is_dir ? "x" : "r",
	    SANDBOX_HOW_GROUP);
	return (true);
}

/*
 * -t: warn of each share's file that the service would fail to open.
 * Skipped when running as the service's dynamic user (the unit's own
 * check before a reload): there the files were opened for real.
 */
void
sandbox_warn(const struct config *cf, FILE *fp)
{
	const struct share_config	*sc;
	char				 msg[PATH_MAX * 2 + 512];
	char				 out[ESCAPE_BUFSIZE(sizeof(msg))];
	char				 conf[ESCAPE_BUFSIZE(PATH_MAX)];
	char				 file[ESCAPE_BUFSIZE(PATH_MAX)];

	if (sandbox_dynamic_user())
		return;
	/* ExecReload= runs -t: its lines are in the journal too. */
	escape_text(conf, sizeof(conf), (const unsigned char *)cf->cf_path,
	    strlen(cf->cf_path));
	TAILQ_FOREACH(sc, &cf->cf_shares, sc_entry) {
		if (!sandbox_check(sc->sc_path, msg, sizeof(msg)))
			continue;
		escape_text(out, sizeof(out), (const unsigned char *)msg,
		    strlen(msg));
		escape_text(file, sizeof(file),
		    (const unsigned char *)sc->sc_path, strlen(sc->sc_path));
		fprintf(fp, "fdistd: warning: %s:%d: share [%s]: file %s: "
		    "the service cannot read it: %s\n", conf,
		    sc->sc_path_line, sc->sc_name, file, out);
	}
}

/*
 * The daemon as the service could not open path (errnum): why, and what
 * to do, as " (...)" to append to the error; empty when not the service.
 */
void
sandbox_explain(const char *path, int errnum, char *buf, size_t len)
{
	char	what[PATH_MAX], *p;

	buf[0] = '\0';
	if (!sandbox_dynamic_user())
		return;
	if (errnum == ENOENT && sandbox_private_tmp(path)) {
		snprintf(buf, len, " (the service has its own empty /tmp and "
		    "/var/tmp, PrivateTmp=yes: %s)", SANDBOX_HOW_TMP);
		return;
	}
	if (errnum == ENOENT && (strncmp(path, "/home/", 6) == 0 ||
	    strncmp(path, "/root/", 6) == 0 ||
	    strncmp(path, "/run/user/", 10) == 0)) {
		snprintf(buf, len, " (the shipped unit's ProtectHome=read-only "
		    "shows /home, /root and /run/user; a drop-in's "
		    "ProtectHome=tmpfs or yes hides them: %s)",
		    SANDBOX_HOW_TMP);
		return;
	}
	if (errnum != EACCES)
		return;
	/* Name the first directory on the path we may not search. */
	snprintf(what, sizeof(what), "%s", path);
	for (p = what; (p = strchr(p + 1, '/')) != NULL; ) {
		*p = '\0';
		if (access(what, X_OK) == -1 && errno == EACCES)
			break;
		*p = '/';
	}
	if (p == NULL)
		snprintf(what, sizeof(what), "%s", path);
	snprintf(buf, len, " (the service's dynamic user (DynamicUser=yes) "
	    "is neither owner nor in the group of %s %s: make it %s by "
	    "others (chmod o+%s), %s)", p == NULL ? "file" : "directory", what,
	    p == NULL ? "readable" : "searchable", p == NULL ? "r" : "x",
	    SANDBOX_HOW_GROUP);
}
