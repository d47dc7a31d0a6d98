/*
 * fuzz_escape.c: escape_text() against an escaper written here from its
 * description, and the properties a log reader relies on: NUL-terminated
 * within dstlen, nothing but printable ASCII, no bare quote, nothing lost
 * when dst has ESCAPE_BUFSIZE(len) bytes, and no escape cut in half when
 * it has less.
 *
 * Input: all of it is escaped with the full buffer; then the bytes after
 * the first are escaped again into a buffer of data[0] bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "fdistd.h"
#include "fuzz.h"

int	fdistd_verbose;

/*
 * The reference: the escaped text of src, and in ends[] the offset at
 * which each unit (one escape or one byte that passes) ends.
 */
static size_t
ref_escape(const unsigned char *src, size_t len, char *out, size_t *ends,
    size_t *nunits)
{
	static const char	 hex[] = "0123456789abcdef";
	size_t			 i, o = 0;
	unsigned char		 c;

	*nunits = 0;
	for (i = 0; i < len; i++) {
		c = src[i];
		if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"')
			out[o++] = (char)c;
		else if (c == '\\' || c == '"' || c == '\n' || c == '\r' ||
		    c == '\t') {
			out[o++] = '\\';
			out[o++] = c == '\n' ? 'n' : c == '\r' ? 'r' :
			    c == '\t' ? 't' : (char)c;
		} else {
			/* A control, DEL, or any byte past ASCII. */
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 0xf];
		}
		ends[(*nunits)++] = o;
	}
	out[o] = '\0';
	return (o);
}

/* What every output must be, whole or cut. */
static void
check_text(const unsigned char *src, size_t len, const char *dst,
    size_t dstlen, size_t ret, unsigned char *back, size_t *backlen)
{
	const unsigned char	*u = (const unsigned char *)dst;
	ssize_t			 n;
	size_t			 i, bs = 0, where = 0;

	FUZZ_CHECK(ret < dstlen, "returned %zu for dstlen %zu", ret, dstlen);
	FUZZ_CHECK(memchr(dst, '\0', dstlen) == dst + ret,
	    "not NUL-terminated at the returned length %zu", ret);
	for (i = 0; i < ret; i++) {
		FUZZ_CHECK(u[i] >= 0x20 && u[i] <= 0x7e,
		    "raw byte 0x%02x at %zu", u[i], i);
		if (dst[i] == '"')
			FUZZ_CHECK(bs % 2 == 1, "unescaped '\"' at %zu", i);
		bs = dst[i] == '\\' ? bs + 1 : 0;
	}
	FUZZ_CHECK(bs % 2 == 0, "ends in a lone backslash");
	n = fuzz_unescape(dst, ret, back, len, &where);
	if (n == -1) {
		fuzz_hexdump("src", src, len);
		fuzz_hexdump("dst", dst, ret);
	}
	FUZZ_CHECK(n != -1, "output does not read back (at offset %zu)",
	    where);
	FUZZ_CHECK(memcmp(back, src, (size_t)n) == 0,
	    "output reads back to other bytes than the input");
	*backlen = (size_t)n;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char	*src, *back;
	char		*dst, *ref;
	size_t		*ends, dstlen, len, ret, reflen, nunits, backlen, u, cut;

	/* Exact-size heap copies: ASan sees any byte read or written past. */
	src = malloc(size ? size : 1);
	memcpy(src, data, size);
	back = malloc(size ? size : 1);
	ref = malloc(ESCAPE_BUFSIZE(size));
	ends = malloc((size ? size : 1) * sizeof(*ends));
	dstlen = ESCAPE_BUFSIZE(size);
	dst = malloc(dstlen);

	/* The whole input, with room for the worst case. */
	ret = escape_text(dst, dstlen, src, size);
	reflen = ref_escape(src, size, ref, ends, &nunits);
	check_text(src, size, dst, dstlen, ret, back, &backlen);
	if (ret != reflen || memcmp(dst, ref, ret) != 0) {
		fuzz_hexdump("src", src, size);
		fuzz_hexdump("escape_text", dst, ret);
		fuzz_hexdump("expected", ref, reflen);
	}
	FUZZ_CHECK(ret == reflen && memcmp(dst, ref, ret) == 0,
	    "escape_text differs from the reference escaper");
	FUZZ_CHECK(backlen == size, "truncated with ESCAPE_BUFSIZE(%zu): read "
	    "back %zu bytes", size, backlen);
	free(dst);

	/* The rest, into a buffer of data[0] bytes (0 included). */
	if (size >= 1) {
		dstlen = data[0];
		len = size - 1;
		memmove(src, src + 1, len);
		dst = malloc(dstlen);
		ret = escape_text(dst, dstlen, src, len);
		if (dstlen == 0)
			FUZZ_CHECK(ret == 0, "dstlen 0 returned %zu", ret);
		else {
			check_text(src, len, dst, dstlen, ret, back, &backlen);
			reflen = ref_escape(src, len, ref, ends, &nunits);
			/* The longest run of whole units that fits. */
			cut = 0;
			for (u = 0; u < nunits && ends[u] + 1 <= dstlen; u++)
				cut = ends[u];
			if (ret != cut || memcmp(dst, ref, ret) != 0) {
				fuzz_hexdump("src", src, len);
				fuzz_hexdump("escape_text", dst, ret);
				fuzz_hexdump("expected", ref, cut);
			}
			FUZZ_CHECK(ret == cut && memcmp(dst, ref, ret) == 0,
			    "dstlen %zu: wrote %zu bytes, expected the %zu of "
			    "the whole units that fit", dstlen, ret, cut);
		}
		free(dst);
	}
	free(ends);
	free(ref);
	free(back);
	free(src);
	return (0);
}
