/*
 * fuzz_proxy.c: the PROXY protocol header parser as conn_proxy.c drives
 * it: on every prefix of what the balancer sent, until an answer other
 * than PROXY_MORE.  Checked: an answer, once given, never changes as
 * bytes arrive (so taking the bytes of a PROXY_MORE off the socket never
 * eats anything past the header); a header is never longer than the
 * bytes seen nor the limits (107 for version 1, PROXY_HEADER_MAX); a
 * version 1 TCP4 line is exactly the canonical text of what was parsed;
 * a version 2 header is exactly 16 bytes and its announced length.
 *
 * Input: data[0] bit 0 set builds a version 2 header around the rest
 * (the fuzzer picks command, family, addresses and TLVs) and requires
 * it to parse; otherwise the rest is fed as it is.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fdistd.h"
#include "fuzz.h"

int	fdistd_verbose;

static void
same(const struct proxy_header *a, const struct proxy_header *b, size_t k)
{
	FUZZ_CHECK(a->ph_len == b->ph_len && a->ph_local == b->ph_local &&
	    a->ph_check == b->ph_check && a->ph_srclen == b->ph_srclen &&
	    memcmp(&a->ph_src, &b->ph_src, sizeof(a->ph_src)) == 0,
	    "the header parsed differently with %zu bytes", k);
}

static void
check_ok(const unsigned char *buf, size_t len, const struct proxy_header *ph)
{
	const struct sockaddr_in	*s4, *d4;
	char				 a[INET_ADDRSTRLEN], b[INET_ADDRSTRLEN];
	char				 line[128];
	int				 n;

	FUZZ_CHECK(ph->ph_len > 0 && ph->ph_len <= len &&
	    ph->ph_len <= PROXY_HEADER_MAX, "ph_len %zu of %zu", ph->ph_len,
	    len);
	if (ph->ph_version == 2) {
		FUZZ_CHECK(ph->ph_len == 16 + ((size_t)buf[14] << 8 | buf[15]),
		    "v2 length %zu", ph->ph_len);
	} else {
		FUZZ_CHECK(ph->ph_version == 1, "version %d", ph->ph_version);
		FUZZ_CHECK(ph->ph_len <= 107 && buf[ph->ph_len - 2] == '\r' &&
		    buf[ph->ph_len - 1] == '\n', "v1 line of %zu", ph->ph_len);
		FUZZ_CHECK(memchr(buf, '\n', ph->ph_len - 1) == NULL,
		    "v1 line with an LF inside");
	}
	if (ph->ph_local)
		return;
	FUZZ_CHECK((ph->ph_src.ss_family == AF_INET &&
	    ph->ph_srclen == sizeof(struct sockaddr_in)) ||
	    (ph->ph_src.ss_family == AF_INET6 &&
	    ph->ph_srclen == sizeof(struct sockaddr_in6)),
	    "family %d, length %u", ph->ph_src.ss_family,
	    (unsigned)ph->ph_srclen);
	FUZZ_CHECK(ph->ph_dst.ss_family == ph->ph_src.ss_family,
	    "source and destination families differ");
	if (ph->ph_version != 1 || ph->ph_src.ss_family != AF_INET)
		return;
	/* A TCP4 line is canonical: printing it again gives it back. */
	s4 = (const struct sockaddr_in *)&ph->ph_src;
	d4 = (const struct sockaddr_in *)&ph->ph_dst;
	inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a));
	inet_ntop(AF_INET, &d4->sin_addr, b, sizeof(b));
	n = snprintf(line, sizeof(line), "PROXY TCP4 %s %s %u %u\r\n", a, b,
	    ntohs(s4->sin_port), ntohs(d4->sin_port));
	FUZZ_CHECK((size_t)n == ph->ph_len &&
	    memcmp(line, buf, ph->ph_len) == 0,
	    "TCP4 line is not canonical: %s", line);
}

/* Feed prefixes as a socket would deliver them; returns the answer. */
static enum proxy_result
feed(const unsigned char *buf, size_t len, struct proxy_header *out)
{
	struct proxy_header	ph, first;
	enum proxy_result	r, answer = PROXY_MORE;
	size_t			k, step;

	for (k = 1; k <= len; k += step) {
		r = proxy_parse(buf, k, &ph);
		if (answer == PROXY_MORE && r != PROXY_MORE) {
			answer = r;
			first = ph;
			if (r == PROXY_OK)
				check_ok(buf, k, &first);
		} else if (answer != PROXY_MORE) {
			FUZZ_CHECK(r == answer, "answer %d at %zu bytes, %d "
			    "before", r, k, answer);
			if (r == PROXY_OK)
				same(&first, &ph, k);
		}
		/* Every length near the start, then strides. */
		step = k < 160 ? 1 : 1 + k % 53;
		if (k < len && k + step > len)
			step = len - k;		/* and the whole of it */
	}
	if (answer == PROXY_OK) {
		r = proxy_parse(buf, first.ph_len, &ph);
		FUZZ_CHECK(r == PROXY_OK, "not complete at its own length");
		same(&first, &ph, first.ph_len);
		if (first.ph_len > 1) {
			r = proxy_parse(buf, first.ph_len - 1, &ph);
			FUZZ_CHECK(r == PROXY_MORE, "complete a byte short");
		}
		*out = first;
	}
	return (answer);
}

/* A version 2 header made of the fuzzer's bytes: it must parse. */
static void
build_v2(const uint8_t *d, size_t n)
{
	static const unsigned char sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00,
	    0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };
	static const unsigned char fams[] = { 0x00, 0x11, 0x12, 0x21, 0x22,
	    0x31, 0x32, 0x10, 0x20 };
	static const size_t alens[] = { 0, 12, 12, 36, 36, 216, 216, 12, 36 };
	unsigned char		 buf[PROXY_HEADER_MAX + 64];
	struct proxy_header	 ph;
	const struct sockaddr_in *s4;
	const struct sockaddr_in6 *s6;
	size_t			 f, alen, len;

	if (n < 2)
		return;
	f = d[0] % sizeof(fams);
	alen = alens[f] + (n - 2 < PROXY_HEADER_MAX - 16 - alens[f] ?
	    n - 2 : PROXY_HEADER_MAX - 16 - alens[f]);
	memcpy(buf, sig, 12);
	buf[12] = 0x20 | (d[1] & 1);
	buf[13] = fams[f];
	buf[14] = (unsigned char)(alen >> 8);
	buf[15] = (unsigned char)alen;
	memset(buf + 16, 0, alen);
	memcpy(buf + 16, d + 2, alen < n - 2 ? alen : n - 2);
	len = 16 + alen;
	FUZZ_CHECK(feed(buf, len, &ph) == PROXY_OK, "a valid v2 header "
	    "(family %02x, %zu bytes) is refused", fams[f], len);
	FUZZ_CHECK(ph.ph_len == len, "v2 length %zu, built %zu", ph.ph_len,
	    len);
	FUZZ_CHECK(ph.ph_local == ((d[1] & 1) == 0 || (fams[f] != 0x11 &&
	    fams[f] != 0x21)), "LOCAL or no TCP address, but not local");
	s4 = (const struct sockaddr_in *)&ph.ph_src;
	s6 = (const struct sockaddr_in6 *)&ph.ph_src;
	if (!ph.ph_local && fams[f] == 0x11)
		FUZZ_CHECK(memcmp(&s4->sin_addr, buf + 16, 4) == 0,
		    "wrong IPv4 source");
	if (!ph.ph_local && fams[f] == 0x21)
		FUZZ_CHECK(memcmp(&s6->sin6_addr, buf + 16, 16) == 0,
		    "wrong IPv6 source");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_header	ph;
	size_t			len;

	if (size < 1)
		return (0);
	if (data[0] & 1) {
		build_v2(data + 1, size - 1);
		return (0);
	}
	len = size - 1 < 2 * PROXY_HEADER_MAX ? size - 1 : 2 * PROXY_HEADER_MAX;
	(void)feed(data + 1, len, &ph);
	return (0);
}
