/*
 * escape.c: make client bytes safe for a log.  Printable ASCII (0x20 to
 * 0x7e) passes but for backslash and double quote; every other byte
 * becomes a backslash escape.  The result is printable ASCII that can be
 * put inside double quotes unambiguously.
 *
 * Why not let valid UTF-8 through, less the characters that could fake
 * or hide a log line: no such list stays right.  Invisible characters
 * are spread over the general categories (Cf, Mn such as U+034F, Lo such
 * as the Hangul fillers, So such as U+2800), new ones come with each
 * Unicode version, and letters that look like ASCII ones (Cyrillic
 * U+0430, U+0435, U+0455) show text that is no digest claim exactly like
 * one.  Raw UTF-8 also holds bytes 0x80 to 0x9f, C1 controls to a
 * terminal that is not in UTF-8 mode.  Bytes are what the client sent;
 * the log shows them, not what some font makes of them.
 */
#include <stdio.h>
#include <string.h>

#include "fdistd.h"

/* The escape for one byte that may not pass as it is: 2 or 4 bytes. */
static int
escape_byte(char *out, unsigned char c)
{
	switch (c) {
	case '\\':
		return (snprintf(out, 5, "\\\\"));
	case '"':
		return (snprintf(out, 5, "\\\""));
	case '\n':
		return (snprintf(out, 5, "\\n"));
	case '\r':
		return (snprintf(out, 5, "\\r"));
	case '\t':
		return (snprintf(out, 5, "\\t"));
	default:
		return (snprintf(out, 5, "\\x%02x", c));
	}
}

/*
 * Escape len bytes of src into dst (of size dstlen, which should be
 * ESCAPE_BUFSIZE(len)); always NUL-terminates and never cuts an escape
 * in half.  Returns the length written.
 */
size_t
escape_text(char *dst, size_t dstlen, const unsigned char *src, size_t len)
{
	char	 tmp[5];
	size_t	 o = 0, i;
	int	 w;

	if (dstlen == 0)
		return (0);
	for (i = 0; i < len; i++) {
		if (src[i] >= 0x20 && src[i] < 0x7f && src[i] != '\\' &&
		    src[i] != '"') {
			if (o + 1 >= dstlen)
				break;
			dst[o++] = (char)src[i];
			continue;
		}
		w = escape_byte(tmp, src[i]);
		if (o + (size_t)w >= dstlen)
			break;
		memcpy(dst + o, tmp, (size_t)w);
		o += (size_t)w;
	}
	dst[o] = '\0';
	return (o);
}
