/*
 * addr.h: socket addresses as the logs show them; shared by fdistd,
 * fdist-fetch and the load client, so a client's trace joins the
 * daemon's peer= field.
 */
#ifndef ADDR_H
#define ADDR_H

#include <sys/types.h>
#include <sys/socket.h>

#include <stdbool.h>
#include <stddef.h>

#define ADDR_STR_MAX		64	/* "[v6%ifname]:port" and NUL */

void	 addr_format(const struct sockaddr *, char *, size_t);
bool	 addr_equal(const struct sockaddr *, const struct sockaddr *);

#endif /* ADDR_H */
