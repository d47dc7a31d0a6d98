/*
 * fuzz.c: helpers of the fuzz targets: check failures and the reader of
 * escape_text()'s output, written from fdistd(8).
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
 * Whether escape_text() may pass this byte as it is: printable ASCII,
 * but for the backslash and the double quote (fdistd(8), Escaping).
 */
bool
fuzz_byte_passes(unsigned char c)
{
	return (c >= 0x20 && c <= 0x7e && c != '\\' && c != '"');
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
 * \xNN) or one byte that passes; 0 if malformed.
 */
size_t
fuzz_escape_unit(const char *s, size_t len)
{
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
	return (fuzz_byte_passes((unsigned char)s[0]) ? 1 : 0);
}

/*
 * Undo escape_text(): src[0..len) to at most dstlen bytes at dst.  Also
 * checks that the text is canonical: a \xNN escape stands only for a
 * byte that has no shorter form, and nothing but escapes and bytes that
 * pass appears raw.  Returns the decoded length, or -1 with
 * *where set to the offset of the first problem.
 */
ssize_t
fuzz_unescape(const char *src, size_t len, unsigned char *dst,
    size_t dstlen, size_t *where)
{
	size_t	i = 0, o = 0, n;
	int	c;

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
		if (o == dstlen)
			return (-1);
		dst[o++] = (unsigned char)src[i++];
	}
	return ((ssize_t)o);
}
