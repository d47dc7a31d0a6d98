/*
 * fuzz.c: helpers of the fuzz targets: check failures, a UTF-8 decoder
 * written from the definition (code point ranges, not byte tables) and
 * the reader of escape_text()'s output.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

/* Report a broken property and abort, so libFuzzer keeps the input. */
void
fuzz_fail(const char *file, int line, const char *expr, const char *fmt,
    ...)
{
	va_list	ap;

	fprintf(stderr, "\n==FUZZ CHECK FAILED== %s:%d: %s\n  ", file, line,
	    expr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	abort();
}

/* Print bytes as a C string literal, for reports. */
void
fuzz_hexdump(const char *what, const void *p, size_t len)
{
	const unsigned char	*s = p;
	size_t			 i;

	fprintf(stderr, "  %s (%zu bytes): \"", what, len);
	for (i = 0; i < len && i < 512; i++) {
		if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\')
			fputc(s[i], stderr);
		else
			fprintf(stderr, "\\x%02x", s[i]);
	}
	fprintf(stderr, "\"%s\n", i < len ? "..." : "");
}

/*
 * Whether FUZZ_KNOWN (comma-separated) names this known, reported bug:
 * its check is skipped, so that a long run can look past it.
 */
bool
fuzz_known(const char *name)
{
	const char	*list = getenv("FUZZ_KNOWN"), *p;
	size_t		 len = strlen(name);

	for (p = list; p != NULL && *p != '\0'; p += strcspn(p, ",")) {
		p += strspn(p, ",");
		if (strncmp(p, name, len) == 0 && (p[len] == ',' ||
		    p[len] == '\0'))
			return (true);
	}
	return (false);
}

/*
 * Decode one well-formed UTF-8 sequence: its length, or 0 if s does not
 * start one.  Shortest form, no surrogates, nothing past U+10FFFF.
 */
size_t
fuzz_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp)
{
	static const uint32_t	 min[5] = { 0, 0, 0x80, 0x800, 0x10000 };
	uint32_t		 v;
	size_t			 n, i;

	if (len == 0)
		return (0);
	if (s[0] < 0x80) {
		*cp = s[0];
		return (1);
	}
	if ((s[0] & 0xe0) == 0xc0) {
		n = 2;
		v = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 3;
		v = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		n = 4;
		v = s[0] & 0x07;
	} else
		return (0);
	if (len < n)
		return (0);
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return (0);
		v = (v << 6) | (s[i] & 0x3f);
	}
	if (v < min[n] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return (0);
	*cp = v;
	return (n);
}

bool
fuzz_utf8_valid(const unsigned char *s, size_t len)
{
	size_t		i = 0, n;
	uint32_t	cp;

	while (i < len) {
		if ((n = fuzz_utf8_decode(s + i, len - i, &cp)) == 0)
			return (false);
		i += n;
	}
	return (true);
}

/*
 * Code points escape_text() promises never to pass through: controls,
 * DEL, C1 controls, U+2028..U+202E (line and paragraph separators,
 * bidirectional embeddings and overrides), U+2066..U+2069 (isolates),
 * and the invisible U+200B, U+200E, U+200F, U+061C and U+FEFF.
 */
bool
fuzz_codepoint_unsafe(uint32_t cp)
{
	return (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) ||
	    (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) ||
	    cp == 0x200b || cp == 0x200e || cp == 0x200f || cp == 0x061c ||
	    cp == 0xfeff);
}

static int
fuzz_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return (c - '0');
	if (c >= 'a' && c <= 'f')
		return (c - 'a' + 10);
	return (-1);
}

/*
 * The length of the escape unit at s: an escape (\\, \", \n, \r, \t,
 * \xNN), one UTF-8 sequence, or one ASCII byte; 0 if malformed.
 */
size_t
fuzz_escape_unit(const char *s, size_t len)
{
	const unsigned char	*u = (const unsigned char *)s;
	uint32_t		 cp;

	if (len == 0)
		return (0);
	if (s[0] == '\\') {
		if (len < 2)
			return (0);
		if (strchr("\\\"nrt", s[1]) != NULL && s[1] != '\0')
			return (2);
		if (s[1] == 'x' && len >= 4 && fuzz_hexval(s[2]) != -1 &&
		    fuzz_hexval(s[3]) != -1)
			return (4);
		return (0);
	}
	return (fuzz_utf8_decode(u, len, &cp));
}

/*
 * Undo escape_text(): src[0..len) to at most dstlen bytes at dst.  Also
 * checks that the text is canonical: a \xNN escape stands only for a
 * byte that has no shorter form, and nothing but escapes and safe
 * characters appears raw.  Returns the decoded length, or -1 with
 * *where set to the offset of the first problem.
 */
ssize_t
fuzz_unescape(const char *src, size_t len, unsigned char *dst,
    size_t dstlen, size_t *where)
{
	const unsigned char	*u = (const unsigned char *)src;
	size_t			 i = 0, o = 0, n;
	uint32_t		 cp;
	int			 c;

	while (i < len) {
		*where = i;
		if ((n = fuzz_escape_unit(src + i, len - i)) == 0)
			return (-1);
		if (src[i] == '\\') {
			switch (src[i + 1]) {
			case '\\':
				c = '\\';
				break;
			case '"':
				c = '"';
				break;
			case 'n':
				c = '\n';
				break;
			case 'r':
				c = '\r';
				break;
			case 't':
				c = '\t';
				break;
			default:
				c = fuzz_hexval(src[i + 2]) * 16 +
				    fuzz_hexval(src[i + 3]);
				/* Bytes with a short form never use \xNN. */
				if ((c >= 0x20 && c < 0x7f) || c == '\n' ||
				    c == '\r' || c == '\t')
					return (-1);
				break;
			}
			if (o == dstlen)
				return (-1);
			dst[o++] = (unsigned char)c;
			i += n;
			continue;
		}
		fuzz_utf8_decode(u + i, len - i, &cp);
		if (fuzz_codepoint_unsafe(cp) || cp == '"')
			return (-1);
		if (o + n > dstlen)
			return (-1);
		memcpy(dst + o, u + i, n);
		o += n;
		i += n;
	}
	return ((ssize_t)o);
}
