/*
 * escape.c: make client bytes safe for a log.  Printable ASCII and valid
 * UTF-8 pass; control bytes, DEL, invalid or overlong UTF-8, C1 controls
 * and the Unicode line separators, bidirectional controls and invisible
 * characters (which could fake or hide log lines) become backslash
 * escapes.  The result
 * can be put inside double quotes unambiguously.
 */
#include <stdio.h>
#include <string.h>

#include "fdistd.h"

/* Length of a valid UTF-8 sequence at s, or 0 if it is not one. */
static size_t
escape_utf8_len(const unsigned char *s, size_t len)
{
	unsigned char	lo = 0x80, hi = 0xbf;
	size_t		need, i;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		need = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		need = 3;
		if (s[0] == 0xe0)
			lo = 0xa0;	/* overlong */
		else if (s[0] == 0xed)
			hi = 0x9f;	/* UTF-16 surrogates */
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		need = 4;
		if (s[0] == 0xf0)
			lo = 0x90;	/* overlong */
		else if (s[0] == 0xf4)
			hi = 0x8f;	/* beyond U+10FFFF */
	} else
		return (0);
	if (len < need || s[1] < lo || s[1] > hi)
		return (0);
	for (i = 2; i < need; i++) {
		if (s[i] < 0x80 || s[i] > 0xbf)
			return (0);
	}
	return (need);
}

/* Valid UTF-8 that a log reader could still be fooled by. */
static bool
escape_utf8_unsafe(const unsigned char *s, size_t n)
{
	if (n == 2 && s[0] == 0xc2 && s[1] <= 0x9f)
		return (true);			/* C1 controls */
	if (n == 3 && s[0] == 0xe2 && s[1] == 0x80 &&
	    s[2] >= 0xa8 && s[2] <= 0xae)
		return (true);			/* U+2028..U+202E */
	if (n == 3 && s[0] == 0xe2 && s[1] == 0x81 &&
	    s[2] >= 0xa6 && s[2] <= 0xa9)
		return (true);			/* U+2066..U+2069 */
	if (n == 3 && s[0] == 0xe2 && s[1] == 0x80 &&
	    (s[2] == 0x8b || s[2] == 0x8e || s[2] == 0x8f))
		return (true);			/* U+200B, U+200E, U+200F */
	if (n == 2 && s[0] == 0xd8 && s[1] == 0x9c)
		return (true);			/* U+061C */
	if (n == 3 && s[0] == 0xef && s[1] == 0xbb && s[2] == 0xbf)
		return (true);			/* U+FEFF */
	return (false);
}

/* The escape for one byte that may not pass as it is. */
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
	size_t	 o = 0, i = 0, n, k;
	int	 w;

	if (dstlen == 0)
		return (0);
	while (i < len) {
		if (src[i] >= 0x20 && src[i] < 0x7f && src[i] != '\\' &&
		    src[i] != '"') {
			if (o + 1 >= dstlen)
				break;
			dst[o++] = (char)src[i++];
			continue;
		}
		n = src[i] >= 0x80 ? escape_utf8_len(src + i, len - i) : 0;
		if (n > 0 && !escape_utf8_unsafe(src + i, n)) {
			if (o + n >= dstlen)
				break;
			memcpy(dst + o, src + i, n);
			o += n;
			i += n;
			continue;
		}
		if (n == 0)
			n = 1;
		for (k = 0; k < n; k++) {
			w = escape_byte(tmp, src[i + k]);
			if (o + (size_t)w >= dstlen)
				goto out;
			memcpy(dst + o, tmp, (size_t)w);
			o += (size_t)w;
		}
		i += n;
	}
out:
	dst[o] = '\0';
	return (o);
}
