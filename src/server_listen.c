/*
 * server_listen.c: which listeners serve which share.  At start and at
 * each reload the server keeps every running listener whose address (or,
 * under socket activation, whose socket's name) a share of the new
 * configuration still has, opens the missing ones, and closes the rest.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <stdio.h>
#include <string.h>

#include "fdistd.h"

/* The listener already bound to this address, if any. */
static struct listener *
server_listen_find(struct listener_list *list, const struct listen_addr *la)
{
	struct listener	*ls;

	TAILQ_FOREACH(ls, list, ls_entry) {
		if (addr_equal((struct sockaddr *)&ls->ls_ss,
		    (const struct sockaddr *)&la->la_ss))
			return (ls);
	}
	return (NULL);
}

/*
 * Whether a listener serves share sc: by the socket's name (socket
 * activation's FileDescriptorName=) if that names a share of cf, else by
 * its bound address.
 */
static bool
server_listen_serves(const struct listener *ls,
    const struct share_config *sc, const struct config *cf)
{
	const struct share_config	*other;
	size_t				 i;

	if (ls->ls_inherited) {
		CONFIG_FOREACH_LISTENING(other, cf) {
			if (strcmp(other->sc_name, ls->ls_fdname) == 0)
				return (other == sc);
		}
	}
	for (i = 0; i < sc->sc_nlisten; i++) {
		if (addr_equal((const struct sockaddr *)&ls->ls_ss,
		    (const struct sockaddr *)&sc->sc_listen[i].la_ss))
			return (true);
	}
	return (false);
}

/*
 * Socket activation: the daemon binds nothing itself.  Every share must
 * get a socket and every socket a share, or cf is refused whole.
 */
static int
server_listen_check_inherited(const struct config *cf,
    struct listener_list *running, char *err, size_t errlen)
{
	const struct share_config	*sc;
	const struct listener		*ls;
	bool				 found;

	CONFIG_FOREACH_LISTENING(sc, cf) {
		found = false;
		TAILQ_FOREACH(ls, running, ls_entry)
			found = found || server_listen_serves(ls, sc, cf);
		if (!found) {
			snprintf(err, errlen, "share [%s] has no socket: none "
			    "passed by the service manager is bound to its "
			    "listen addresses or named '%s'", sc->sc_name,
			    sc->sc_name);
			return (-1);
		}
	}
	TAILQ_FOREACH(ls, running, ls_entry) {
		found = false;
		CONFIG_FOREACH_LISTENING(sc, cf)
			found = found || server_listen_serves(ls, sc, cf);
		if (!found) {
			snprintf(err, errlen, "socket '%s' on %s passed by the "
			    "service manager matches no share (bind it to a "
			    "share's listen address, or set "
			    "FileDescriptorName= to a share's name)",
			    ls->ls_fdname, ls->ls_name);
			return (-1);
		}
	}
	return (0);
}

/*
 * Open into fresh the listeners cf needs that are not already running.
 * All or nothing: on failure the new ones are closed and -1 returned.
 * With activated, the daemon opens none: the running ones (the sockets
 * passed) must match cf's shares one to one, or -1 says they do not.
 */
int
server_listen_open(struct event_base *base, const struct config *cf,
    struct listener_list *running, bool activated,
    struct listener_list *fresh, char *err, size_t errlen)
{
	const struct share_config *sc;
	struct listener		*ls;
	size_t			 i;

	if (activated)
		return (server_listen_check_inherited(cf, running, err,
		    errlen));
	CONFIG_FOREACH_LISTENING(sc, cf) {
		for (i = 0; i < sc->sc_nlisten; i++) {
			if (server_listen_find(running, &sc->sc_listen[i]) !=
			    NULL)
				continue;
			ls = listener_open(base, &sc->sc_listen[i], err,
			    errlen);
			if (ls == NULL)
				goto fail;
			TAILQ_INSERT_TAIL(fresh, ls, ls_entry);
		}
	}
	return (0);
fail:
	while ((ls = TAILQ_FIRST(fresh)) != NULL) {
		TAILQ_REMOVE(fresh, ls, ls_entry);
		listener_close(ls);
	}
	return (-1);
}

/*
 * Move the listeners serving sc, of cf, from running (or fresh, which
 * server_listen_open() filled) to kept, attached to sh.
 */
void
server_listen_take(const struct config *cf, const struct share_config *sc,
    struct share *sh, bool activated, struct listener_list *running,
    struct listener_list *fresh, struct listener_list *kept)
{
	struct listener	*ls, *next;
	size_t		 i;

	if (activated) {
		for (ls = TAILQ_FIRST(running); ls != NULL; ls = next) {
			next = TAILQ_NEXT(ls, ls_entry);
			if (!server_listen_serves(ls, sc, cf))
				continue;
			TAILQ_REMOVE(running, ls, ls_entry);
			listener_attach(ls, sh);
			TAILQ_INSERT_TAIL(kept, ls, ls_entry);
		}
		return;
	}
	for (i = 0; i < sc->sc_nlisten; i++) {
		if ((ls = server_listen_find(running, &sc->sc_listen[i])) !=
		    NULL)
			TAILQ_REMOVE(running, ls, ls_entry);
		else {
			ls = server_listen_find(fresh, &sc->sc_listen[i]);
			TAILQ_REMOVE(fresh, ls, ls_entry);
		}
		listener_attach(ls, sh);
		TAILQ_INSERT_TAIL(kept, ls, ls_entry);
	}
}
