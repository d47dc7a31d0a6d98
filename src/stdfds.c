/*
 * stdfds.c: a program started with standard input, output or error
 * closed would hand that number to the next descriptor it opens, a
 * socket say, and then write its messages, or a file, into it.  Hold each
 * closed one with /dev/null before anything else is opened.
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "stdfds.h"

/*
 * Returns which were closed (bit n for descriptor n), or -1 if /dev/null
 * could not be opened.
 */
int
stdfds_hold(void)
{
	int	fd, closed = 0;

	for (fd = STDIN_FILENO; fd <= STDERR_FILENO; fd++) {
		if (fcntl(fd, F_GETFD) != -1 || errno != EBADF)
			continue;
		/* The lowest free number: this one, as those below are open. */
		if (open("/dev/null", fd == STDIN_FILENO ? O_RDONLY :
		    O_WRONLY) != fd)
			return (-1);
		closed |= 1 << fd;
	}
	return (closed);
}
