/*
 * ack.c: reading a client's acknowledgement.  The ack is the text up to
 * the first NUL or LF (a CR before the LF is dropped), at most ack_max
 * bytes; an ack that carries "sha256=<64 hex digits>" claims a digest
 * the daemon can check against its own, and one that starts with
 * "sha256-mismatch" rejects the file.
 */
#include <ctype.h>
#include <string.h>

#include "fdistd.h"

/*
 * Of n new bytes at buf, which follow *acklen bytes of ack text in the
 * same buffer, take those that belong to the ack.  Sets *done when a
 * terminator is found or ack_max is reached.
 */
void
ack_take(unsigned char *ack, uint32_t *acklen, size_t n, uint32_t ack_max,
    bool *done)
{
	unsigned char	*p = ack + *acklen;
	size_t		 i;

	for (i = 0; i < n; i++) {
		if (p[i] != '\0' && p[i] != '\n')
			continue;
		*acklen += (uint32_t)i;
		if (p[i] == '\n' && *acklen > 0 && ack[*acklen - 1] == '\r')
			(*acklen)--;
		*done = true;
		return;
	}
	*acklen += (uint32_t)n;
	if (*acklen >= ack_max)
		*done = true;
}

/*
 * Find "sha256=" followed by exactly 64 hex digits in the ack; copy the
 * digits, lowercased, to hex.  Returns whether there was such a claim.
 */
bool
ack_sha256_claim(const unsigned char *ack, size_t len, char hex[65])
{
	static const char	 key[] = "sha256=";
	const size_t		 klen = sizeof(key) - 1;
	size_t			 i, j;

	for (i = 0; i + klen + 64 <= len; i++) {
		if (memcmp(ack + i, key, klen) != 0 ||
		    (i > 0 && isalnum(ack[i - 1])))
			continue;	/* "xsha256=" is not the key */
		for (j = 0; j < 64; j++) {
			if (!isxdigit(ack[i + klen + j]))
				break;
			hex[j] = (char)tolower(ack[i + klen + j]);
		}
		if (j == 64 && (i + klen + 64 == len ||
		    !isxdigit(ack[i + klen + 64]))) {
			hex[64] = '\0';
			return (true);
		}
	}
	return (false);
}

/*
 * Whether the client says it rejected the file: its ack starts with
 * "sha256-mismatch" (what fdist-fetch sends when the data is not what
 * it expected), alone or followed by a blank.
 */
bool
ack_rejects(const unsigned char *ack, size_t len)
{
	static const char	 key[] = "sha256-mismatch";
	const size_t		 klen = sizeof(key) - 1;

	return (len >= klen && memcmp(ack, key, klen) == 0 &&
	    (len == klen || ack[klen] == ' ' || ack[klen] == '\t'));
}

/*
 * Find the client's "host=NAME" token: at the start of the ack or after
 * a blank, up to the next blank or the end, NAME 1 to ACK_HOST_MAX bytes
 * of [A-Za-z0-9._-]; copy NAME to host.  Only the first such token
 * counts, and if it breaks the rule there is no host id: a claim that
 * cannot be read whole is not guessed at.  cut says the ack was cut at
 * ack_max, so a token running to its end may have lost bytes: none
 * either.  Returns whether there was a host id.  It is what the client
 * says, not who it is.
 */
bool
ack_host_claim(const unsigned char *ack, size_t len, bool cut,
    char host[ACK_HOST_MAX + 1])
{
	static const char	 key[] = "host=";
	const size_t		 klen = sizeof(key) - 1;
	size_t			 i, j;
	unsigned char		 ch;

	for (i = 0; i + klen <= len; i++) {
		if (i > 0 && ack[i - 1] != ' ' && ack[i - 1] != '\t')
			continue;
		if (memcmp(ack + i, key, klen) != 0)
			continue;
		for (j = i + klen; j < len && ack[j] != ' ' && ack[j] != '\t';
		    j++) {
			ch = ack[j];
			/* ASCII whatever the locale: no escaping needed. */
			if (!((ch >= 'a' && ch <= 'z') ||
			    (ch >= 'A' && ch <= 'Z') ||
			    (ch >= '0' && ch <= '9') ||
			    ch == '.' || ch == '_' || ch == '-'))
				return (false);
		}
		if (j == i + klen || j - i - klen > ACK_HOST_MAX ||
		    (cut && j == len))
			return (false);
		memcpy(host, ack + i + klen, j - i - klen);
		host[j - i - klen] = '\0';
		return (true);
	}
	return (false);
}
