/*
 * fuzz_ack.c: the client's acknowledgement as conn_ack.c reads it: bytes
 * arrive in reads of any size, each at most the room left in an ack_max
 * buffer, and ack_take() keeps the ack; then ack_sha256_claim() looks for
 * a digest in it, ack_host_claim() for a host id (cut when the ack filled
 * ack_max, as conn.c says), and escape_text() makes it loggable.
 *
 * Input: data[0] picks ack_max, data[1] the sizes of the reads, the rest
 * is what the client sends.  The expected ack is worked out here from
 * fdistd(8): up to the first NUL or LF (a CR before the LF dropped), at
 * most ack_max bytes.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "fdistd.h"
#include "fuzz.h"

int	fdistd_verbose;

static uint32_t
pick_ack_max(uint8_t b)
{
	switch (b >> 6) {
	case 0:
		return (1 + (b & 63));
	case 1:
		return (64 + (b & 63) * 4);
	case 2:
		return (256);		/* the default */
	default:
		return (ACK_MAX_LIMIT);
	}
}

/* "sha256=" and exactly 64 hex digits, the first such; lowercased. */
static bool
ref_claim(const unsigned char *s, size_t len, char hex[65])
{
	size_t	i, j;

	for (i = 0; i + 7 <= len; i++) {
		if (memcmp(s + i, "sha256=", 7) != 0 ||
		    (i > 0 && isalnum(s[i - 1])))	/* not inside a word */
			continue;
		for (j = 0; i + 7 + j < len && isxdigit(s[i + 7 + j]); j++)
			;
		if (j != 64)
			continue;
		for (j = 0; j < 64; j++)
			hex[j] = (char)tolower(s[i + 7 + j]);
		hex[64] = '\0';
		return (true);
	}
	return (false);
}

static void
check_claim(const unsigned char *s, size_t len)
{
	char	got[65], want[65];
	bool	g, w;

	memset(got, 'X', sizeof(got));
	g = ack_sha256_claim(s, len, got);
	w = ref_claim(s, len, want);
	FUZZ_CHECK(g == w, "ack_sha256_claim says %d, expected %d", g, w);
	if (g)
		FUZZ_CHECK(memcmp(got, want, sizeof(got)) == 0,
		    "claimed digest %.65s, expected %s", got, want);
}

/*
 * The host id by fdistd(8)'s words, token by token: the first blank-
 * separated token that starts with "host="; its rest must be 1 to 64
 * bytes of [A-Za-z0-9._-], and not end a cut ack.
 */
static bool
ref_host(const unsigned char *s, size_t len, bool cut, char host[65])
{
	size_t	start = 0, end, k;

	while (start < len) {
		if (s[start] == ' ' || s[start] == '\t') {
			start++;
			continue;
		}
		for (end = start; end < len && s[end] != ' ' && s[end] != '\t';
		    end++)
			;
		if (end - start >= 5 && memcmp(s + start, "host=", 5) == 0) {
			if (end - start - 5 < 1 || end - start - 5 > 64 ||
			    (cut && end == len))
				return (false);
			for (k = start + 5; k < end; k++) {
				if (strchr("abcdefghijklmnopqrstuvwxyz"
				    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
				    s[k]) == NULL || s[k] == '\0')
					return (false);
			}
			memcpy(host, s + start + 5, end - start - 5);
			host[end - start - 5] = '\0';
			return (true);
		}
		start = end;
	}
	return (false);
}

static void
check_host(const unsigned char *s, size_t len, bool cut)
{
	char	got[ACK_HOST_MAX + 1], want[65];
	bool	g, w;

	memset(got, 'X', sizeof(got));
	g = ack_host_claim(s, len, cut, got);
	w = ref_host(s, len, cut, want);
	FUZZ_CHECK(g == w, "ack_host_claim (cut %d) says %d, expected %d", cut,
	    g, w);
	if (g)
		FUZZ_CHECK(strcmp(got, want) == 0, "host id %.65s, expected %s",
		    got, want);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const unsigned char	*in;
	unsigned char		*ack, *back;
	char			*esc;
	size_t			 len, pos = 0, n, want, t, k = 0, where;
	uint32_t		 ack_max, acklen = 0;
	bool			 done = false, wdone;
	ssize_t			 blen;

	if (size < 2)
		return (0);
	ack_max = pick_ack_max(data[0]);
	in = data + 2;
	len = size - 2;
	ack = malloc(ack_max);		/* c_ack[]: exactly ack_max bytes */

	while (pos < len) {
		n = 1 + (size_t)((data[1] * (k++ + 1)) % 61);
		if (data[1] == 0)
			n = len;
		if (n > len - pos)
			n = len - pos;
		if (done) {			/* drained, never kept */
			pos += n;
			continue;
		}
		FUZZ_CHECK(acklen < ack_max, "not done with a full buffer "
		    "(%u of %u)", acklen, ack_max);
		if (n > ack_max - acklen)
			n = ack_max - acklen;
		memcpy(ack + acklen, in + pos, n);
		ack_take(ack, &acklen, n, ack_max, &done);
		FUZZ_CHECK(acklen <= ack_max, "acklen %u > ack_max %u", acklen,
		    ack_max);
		pos += n;
	}

	/* The reference. */
	want = len < ack_max ? len : ack_max;
	wdone = len >= ack_max;
	for (t = 0; t < want; t++) {
		if (in[t] == '\0' || in[t] == '\n')
			break;
	}
	if (t < want) {
		wdone = true;
		want = t > 0 && in[t] == '\n' && in[t - 1] == '\r' ? t - 1 : t;
	}
	if (acklen != want || memcmp(ack, in, want) != 0) {
		fuzz_hexdump("sent", in, len);
		fuzz_hexdump("ack", ack, acklen);
	}
	FUZZ_CHECK(acklen == want && memcmp(ack, in, want) == 0,
	    "ack_max %u: kept %u bytes, expected %zu", ack_max, acklen, want);
	FUZZ_CHECK(done == wdone, "done %d, expected %d", done, wdone);

	check_claim(ack, acklen);
	check_claim(in, len);
	check_host(ack, acklen, acklen >= ack_max);
	check_host(in, len, false);
	check_host(in, len, true);

	/* As log_transfer() does it (its buffer is larger), and back. */
	esc = malloc(ESCAPE_BUFSIZE(acklen));
	back = malloc(acklen ? acklen : 1);
	n = escape_text(esc, ESCAPE_BUFSIZE(acklen), ack, acklen);
	blen = fuzz_unescape(esc, n, back, acklen, &where);
	FUZZ_CHECK(blen == (ssize_t)acklen && memcmp(back, ack, acklen) == 0,
	    "the logged ack does not read back (at %zu)", where);
	free(back);
	free(esc);
	free(ack);
	return (0);
}
