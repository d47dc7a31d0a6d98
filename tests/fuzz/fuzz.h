/*
 * fuzz.h: what the libFuzzer targets share: a failing check that says
 * why, and independent readers of the escaper's output (they must not
 * reuse src/escape.c's tables, or they would agree with its mistakes).
 */
#ifndef FUZZ_H
#define FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Abort (libFuzzer saves the input) with the failed condition and why. */
#define FUZZ_CHECK(cond, ...) do {					\
	if (!(cond))							\
		fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);	\
} while (0)

void	 fuzz_fail(const char *, int, const char *, const char *, ...)
	    __attribute__((format(printf, 4, 5), noreturn));
bool	 fuzz_byte_passes(unsigned char);
ssize_t	 fuzz_unescape(const char *, size_t, unsigned char *, size_t,
	    size_t *);
size_t	 fuzz_escape_unit(const char *, size_t);
void	 fuzz_hexdump(const char *, const void *, size_t);
bool	 fuzz_known(const char *);

int	 LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#endif /* FUZZ_H */
