/*
 * acl.c: who may fetch a share.  deny wins; an allow list, if there is
 * one, lets in only what it names.  A peer's IPv4-mapped IPv6 address
 * (::ffff:192.0.2.7) is matched as the IPv4 address it is.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <string.h>

#include "fdistd.h"

/* The peer's family and address bytes, unmapping IPv4-mapped IPv6. */
static sa_family_t
acl_peer(const struct sockaddr *sa, const uint8_t **addr)
{
	const struct sockaddr_in6	*sin6 = (const struct sockaddr_in6 *)sa;

	if (sa->sa_family == AF_INET) {
		*addr = (const uint8_t *)
		    &((const struct sockaddr_in *)sa)->sin_addr;
		return (AF_INET);
	}
	if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
		*addr = &sin6->sin6_addr.s6_addr[12];
		return (AF_INET);
	}
	*addr = sin6->sin6_addr.s6_addr;
	return (AF_INET6);
}

static bool
acl_cidr_match(const struct cidr *ci, sa_family_t family, const uint8_t *a)
{
	int	full = ci->ci_prefix / 8, rest = ci->ci_prefix % 8;

	if (ci->ci_family != family)
		return (false);
	if (memcmp(ci->ci_addr, a, (size_t)full) != 0)
		return (false);
	if (rest == 0)
		return (true);
	return ((a[full] & (uint8_t)(0xff << (8 - rest))) == ci->ci_addr[full]);
}

/* Whether the peer is in one of the list's networks. */
bool
acl_match(const struct acl *acl, const struct sockaddr *peer)
{
	const uint8_t	*a;
	sa_family_t	 family = acl_peer(peer, &a);
	size_t		 i;

	for (i = 0; i < acl->acl_n; i++) {
		if (acl_cidr_match(&acl->acl_nets[i], family, a))
			return (true);
	}
	return (false);
}

/*
 * The rule: refused if either deny list matches; else, if there is an
 * allow list, admitted only if it matches; else admitted.
 */
bool
acl_allows(const struct acl *allow, const struct acl *deny,
    const struct acl *global_deny, const struct sockaddr *peer)
{
	if (acl_match(global_deny, peer) || acl_match(deny, peer))
		return (false);
	return (allow->acl_n == 0 || acl_match(allow, peer));
}
