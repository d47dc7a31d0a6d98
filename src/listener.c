/*
 * listener.c: listening sockets.  A listener belongs to the share it is
 * attached to; a reload may move it to the new share of the same address
 * without closing it, so no connection is refused during a reload.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "fdistd.h"

static void
listener_on_readable(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	server_accept(arg);
}

/* Wrap a bound, listening socket. */
static struct listener *
listener_wrap(struct event_base *base, int fd, char *err, size_t errlen)
{
	struct listener	*ls;

	if ((ls = calloc(1, sizeof(*ls))) == NULL)
		goto fail;
	ls->ls_fd = fd;
	ls->ls_len = sizeof(ls->ls_ss);
	if (getsockname(fd, (struct sockaddr *)&ls->ls_ss, &ls->ls_len) == -1)
		goto fail;
	addr_format((struct sockaddr *)&ls->ls_ss, ls->ls_name,
	    sizeof(ls->ls_name));
	ls->ls_ev = event_new(base, fd, EV_READ | EV_PERSIST,
	    listener_on_readable, ls);
	ls->ls_look = evtimer_new(base, listener_on_readable, ls);
	if (ls->ls_ev == NULL || ls->ls_look == NULL)
		goto fail;
	return (ls);
fail:
	snprintf(err, errlen, "listener: %s", strerror(errno));
	if (ls != NULL && ls->ls_ev != NULL)
		event_free(ls->ls_ev);
	if (ls != NULL && ls->ls_look != NULL)
		event_free(ls->ls_look);
	free(ls);
	close(fd);
	return (NULL);
}

/*
 * Accepted sockets inherit TCP_CORK from the listener: segments go out
 * full, and the last one leaves with the FIN that shutdown() sends, so a
 * small file is one packet instead of two, at no cost per client.
 */
static void
listener_cork(int fd)
{
	int	on = 1;

	if (setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof(on)) == -1)
		log_warn("setsockopt TCP_CORK");
}

/*
 * A non-blocking socket bound to la, not yet listening (a share's
 * listener corks it first); -1 with errno set.  The metrics endpoint
 * binds its address the same way.
 */
int
listener_socket(const struct listen_addr *la)
{
	int	fd, on = 1, saved;

	fd = socket(la->la_ss.ss_family,
	    SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return (-1);
	/* "*" binds 0.0.0.0 and [::] apart: keep [::] to IPv6. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == -1 ||
	    (la->la_ss.ss_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6,
	    IPV6_V6ONLY, &on, sizeof(on)) == -1) ||
	    bind(fd, (const struct sockaddr *)&la->la_ss, la->la_len) == -1) {
		saved = errno;
		close(fd);
		errno = saved;
		return (-1);
	}
	return (fd);
}

/* Bind and listen on one configured address. */
struct listener *
listener_open(struct event_base *base, const struct listen_addr *la,
    char *err, size_t errlen)
{
	char	name[ADDR_STR_MAX];
	int	fd;

	addr_format((const struct sockaddr *)&la->la_ss, name, sizeof(name));
	if ((fd = listener_socket(la)) == -1)
		goto fail;
	listener_cork(fd);
	if (listen(fd, LISTEN_BACKLOG) == -1)
		goto fail;
	return (listener_wrap(base, fd, err, errlen));
fail:
	snprintf(err, errlen, "listen on %s: %s", name, strerror(errno));
	if (fd != -1)
		close(fd);
	return (NULL);
}

/* Check and wrap one socket passed by the service manager. */
static struct listener *
listener_adopt(struct event_base *base, int fd, const char *name, char *err,
    size_t errlen)
{
	struct listener	*ls;
	int		 flags;

	if (sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) <= 0) {
		snprintf(err, errlen, "socket %d (%s) passed by the service "
		    "manager is not a listening TCP socket", fd, name);
		close(fd);
		return (NULL);
	}
	/* Inherited sockets may be blocking: accept() must never block. */
	flags = fcntl(fd, F_GETFL);
	if (flags == -1 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) == -1 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) == -1) {
		snprintf(err, errlen, "socket %d (%s): %s", fd, name,
		    strerror(errno));
		close(fd);
		return (NULL);
	}
	listener_cork(fd);
	if ((ls = listener_wrap(base, fd, err, errlen)) == NULL)
		return (NULL);
	ls->ls_inherited = true;
	snprintf(ls->ls_fdname, sizeof(ls->ls_fdname), "%s", name);
	return (ls);
}

/*
 * Adopt the sockets of socket activation (LISTEN_FDS), appending them
 * to list.  Returns how many, or -1.
 */
int
listener_inherit(struct event_base *base, struct listener_list *list,
    char *err, size_t errlen)
{
	struct listener	 *ls;
	char		**names = NULL;
	int		  n, i, rv;

	n = sd_listen_fds_with_names(1, &names);
	if (n < 0) {
		snprintf(err, errlen, "socket activation: %s", strerror(-n));
		return (-1);
	}
	rv = n;
	for (i = 0; i < n; i++) {
		if (rv == -1) {
			close(SD_LISTEN_FDS_START + i);
			continue;
		}
		ls = listener_adopt(base, SD_LISTEN_FDS_START + i,
		    names != NULL && names[i] != NULL ? names[i] : "unknown",
		    err, errlen);
		if (ls == NULL)
			rv = -1;
		else
			TAILQ_INSERT_TAIL(list, ls, ls_entry);
	}
	for (i = 0; names != NULL && names[i] != NULL; i++)
		free(names[i]);
	free(names);
	return (rv);
}

/*
 * Serve share sh (a reference is taken) on this listener.  Accepted
 * sockets inherit its options:
 * - SO_RCVLOWAT = ack_max: a client that writes its ack and then closes
 *   wakes the daemon once, at the FIN, instead of once per segment; a
 *   FIN, a reset or ack_max bytes are always reported, and the ack
 *   deadline still reads whatever has come;
 * - SO_LINGER 0 until the whole file is queued (conn_send.c clears it before
 *   the FIN): if the daemon dies, killed by the watchdog, SIGKILL or the
 *   OOM killer, the kernel resets its clients' connections, so none
 *   takes the part it got for the whole file as an end-of-file would
 *   let it.  (A completed transfer never ends in a reset: it is cleared
 *   in time, and conn.c reads the ack before its close.)
 */
void
listener_attach(struct listener *ls, struct share *sh)
{
	struct linger	lg = { 1, 0 };
	int		lowat = (int)sh->sh_limits.lim_ack_max;

	share_ref(sh);
	share_unref(ls->ls_share);
	ls->ls_share = sh;
	if (setsockopt(ls->ls_fd, SOL_SOCKET, SO_RCVLOWAT, &lowat,
	    sizeof(lowat)) == -1)
		log_warn("setsockopt SO_RCVLOWAT");
	if (setsockopt(ls->ls_fd, SOL_SOCKET, SO_LINGER, &lg,
	    sizeof(lg)) == -1)
		log_warn("setsockopt SO_LINGER");
}

void
listener_enable(struct listener *ls)
{
	event_add(ls->ls_ev, NULL);
}

void
listener_disable(struct listener *ls)
{
	event_del(ls->ls_ev);
	event_del(ls->ls_look);
}

/*
 * Accept on the next turn of the loop as if readable, which an empty
 * queue never is: only an accept that finds nobody tells it is empty.
 * A timer of no time, not event_active(): that would run again before
 * the loop polls, and a listener kept busy would starve everything else.
 */
void
listener_look(struct listener *ls)
{
	static const struct timeval	now = { 0, 0 };

	evtimer_add(ls->ls_look, &now);
}

void
listener_close(struct listener *ls)
{
	if (ls == NULL)
		return;
	event_free(ls->ls_ev);
	event_free(ls->ls_look);
	close(ls->ls_fd);
	share_unref(ls->ls_share);
	free(ls);
}
