/*
 * sendfile-loop: the reference the large-file case is judged against.
 * The least a server can do to hand one file to many clients over the
 * fdistd protocol: a thread per client, one blocking sendfile(2) of the
 * whole file, shutdown(SHUT_WR), read the ack until EOF, close.  No
 * limits, no timeouts, no log, no event loop.
 *
 * What it reaches is the ceiling of any server on the same kernel path:
 * if it cannot beat nginx by a margin, neither can fdistd, and the gap
 * between it and fdistd is what fdistd's own work costs.  A tool for
 * bench/run, bound to 127.0.0.1 only; not installed.
 *
 * usage: sendfile-loop PORT FILE
 */
#include <sys/types.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int	file_fd;
static off_t	file_size;

/* Send the file, half-close, read the ack to EOF, close. */
static void *
serve_client(void *arg)
{
	int	fd = (int)(intptr_t)arg;
	off_t	off = 0;
	ssize_t	n;
	char	ack[256];

	while (off < file_size) {
		n = sendfile(fd, file_fd, &off, (size_t)(file_size - off));
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
	}
	if (off == file_size && shutdown(fd, SHUT_WR) == 0) {
		while ((n = read(fd, ack, sizeof(ack))) > 0 ||
		    (n == -1 && errno == EINTR))
			;
	}
	close(fd);
	return (NULL);
}

static int
listen_loopback(const char *portstr)
{
	struct sockaddr_in	sin;
	char			*end;
	long			port;
	int			fd, on = 1;

	port = strtol(portstr, &end, 10);
	if (*portstr == '\0' || *end != '\0' || port < 1 || port > 65535) {
		fprintf(stderr, "sendfile-loop: %s: not a port\n", portstr);
		return (-1);
	}
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == -1 ||
	    bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    listen(fd, SOMAXCONN) == -1) {
		fprintf(stderr, "sendfile-loop: 127.0.0.1:%ld: %s\n", port,
		    strerror(errno));
		return (-1);
	}
	return (fd);
}

int
main(int argc, char *argv[])
{
	pthread_attr_t	attr;
	pthread_t	thread;
	struct stat	st;
	int		lfd, fd;

	if (argc != 3) {
		fprintf(stderr, "usage: sendfile-loop PORT FILE\n");
		return (2);
	}
	/* A client that leaves mid-file ends its thread, not the server. */
	signal(SIGPIPE, SIG_IGN);
	if ((file_fd = open(argv[2], O_RDONLY)) == -1 ||
	    fstat(file_fd, &st) == -1) {
		fprintf(stderr, "sendfile-loop: %s: %s\n", argv[2],
		    strerror(errno));
		return (1);
	}
	file_size = st.st_size;
	if ((lfd = listen_loopback(argv[1])) == -1)
		return (1);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	for (;;) {
		if ((fd = accept(lfd, NULL, NULL)) == -1) {
			if (errno == EMFILE || errno == ENFILE)
				usleep(10000);	/* not a busy loop */
			continue;
		}
		if (pthread_create(&thread, &attr, serve_client,
		    (void *)(intptr_t)fd) != 0)
			close(fd);
	}
}
