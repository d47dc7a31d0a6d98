/*
 * share.c: the running form of a share.  Each loaded configuration makes
 * its own share objects; a client holds a reference to the share it
 * connected to, so a reload never changes the file or the limits of a
 * transfer in flight.
 */
#include <stdio.h>
#include <stdlib.h>

#include "fdistd.h"

/* A share of config sc serving sf (whose reference it takes over). */
struct share *
share_new(const struct share_config *sc, struct sfile *sf)
{
	struct share	*sh;

	if ((sh = calloc(1, sizeof(*sh))) == NULL)
		return (NULL);
	snprintf(sh->sh_name, sizeof(sh->sh_name), "%s", sc->sc_name);
	sh->sh_file = sf;
	sh->sh_limits = sc->sc_limits;
	sh->sh_refs = 1;
	return (sh);
}

struct share *
share_ref(struct share *sh)
{
	sh->sh_refs++;
	return (sh);
}

void
share_unref(struct share *sh)
{
	if (sh == NULL || --sh->sh_refs > 0)
		return;
	sfile_unref(sh->sh_file);
	free(sh);
}
