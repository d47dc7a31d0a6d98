/*
 * sendfile-threads: the plainest server over the fdistd protocol, a
 * reference for bench/run next to sendfile-loop.  A thread per client:
 * one blocking sendfile(2) call after another until the file is sent,
 * shutdown(SHUT_WR), read the ack to EOF, close.  No socket options, no
 * limits, no timeouts, no log.  Unlike the epoll loop it spreads over
 * every core the kernel gives its threads, so it is the figure a
 * multi-core fdistd is judged against.  A tool for bench/run, bound to
 * 127.0.0.1 only; not installed.
 *
 * usage: sendfile-threads PORT FILE [PORT FILE ...]
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

#define MAX_FILES	8

struct served {
	int	 lfd;
	int	 ffd;
	off_t	 size;
};

struct client {
	int		 fd;
	struct served	*sv;
};

static struct served	served[MAX_FILES];

/* One client from accept to close; short sends are normal, so loop. */
static void *
client_run(void *arg)
{
	struct client	*cl = arg;
	off_t		 off = 0;
	ssize_t		 n;
	char		 ack[256];

	while (off < cl->sv->size) {
		n = sendfile(cl->fd, cl->sv->ffd, &off,
		    (size_t)(cl->sv->size - off));
		if (n <= 0 && !(n == -1 && errno == EINTR))
			break;	/* gone, or the file shrank */
	}
	if (off == cl->sv->size && shutdown(cl->fd, SHUT_WR) == 0)
		while ((n = read(cl->fd, ack, sizeof(ack))) > 0 ||
		    (n == -1 && errno == EINTR))
			;
	close(cl->fd);
	free(cl);
	return (NULL);
}

/* Each listener has a thread that starts a thread per client. */
static void *
accept_run(void *arg)
{
	struct served	*sv = arg;
	struct client	*cl;
	pthread_attr_t	 attr;
	pthread_t	 t;
	int		 fd;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	/* A client needs little stack; 10,000 of them must fit. */
	pthread_attr_setstacksize(&attr, 64 * 1024);
	for (;;) {
		if ((fd = accept(sv->lfd, NULL, NULL)) == -1) {
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM)
				usleep(10000);	/* wait for clients to end */
			else if (errno != EINTR && errno != ECONNABORTED) {
				perror("sendfile-threads: accept");
				exit(1);
			}
			continue;
		}
		if ((cl = malloc(sizeof(*cl))) == NULL) {
			close(fd);
			continue;
		}
		cl->fd = fd;
		cl->sv = sv;
		if (pthread_create(&t, &attr, client_run, cl) != 0) {
			close(fd);
			free(cl);
		}
	}
	return (NULL);
}

static int
serve(const char *portstr, const char *path, struct served *sv)
{
	struct sockaddr_in	 sin;
	struct stat		 st;
	char			*end;
	long			 port;
	int			 on = 1;

	port = strtol(portstr, &end, 10);
	if (*portstr == '\0' || *end != '\0' || port < 1 || port > 65535) {
		fprintf(stderr, "sendfile-threads: %s: not a port\n", portstr);
		return (-1);
	}
	if ((sv->ffd = open(path, O_RDONLY)) == -1 ||
	    fstat(sv->ffd, &st) == -1) {
		fprintf(stderr, "sendfile-threads: %s: %s\n", path,
		    strerror(errno));
		return (-1);
	}
	sv->size = st.st_size;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((sv->lfd = socket(AF_INET, SOCK_STREAM, 0)) == -1 ||
	    setsockopt(sv->lfd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) ==
	    -1 ||
	    bind(sv->lfd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    listen(sv->lfd, SOMAXCONN) == -1) {
		fprintf(stderr, "sendfile-threads: 127.0.0.1:%ld: %s\n", port,
		    strerror(errno));
		return (-1);
	}
	return (0);
}

int
main(int argc, char *argv[])
{
	pthread_t	t;
	int		i;

	if (argc < 3 || argc % 2 == 0 || argc > 1 + 2 * MAX_FILES) {
		fprintf(stderr, "usage: sendfile-threads PORT FILE "
		    "[PORT FILE ...]\n");
		return (2);
	}
	signal(SIGPIPE, SIG_IGN);	/* a client that leaves is not fatal */
	for (i = 1; i < argc; i += 2)
		if (serve(argv[i], argv[i + 1], &served[i / 2]) == -1)
			return (1);
	for (i = 1; i + 2 < argc; i += 2)
		if (pthread_create(&t, NULL, accept_run, &served[i / 2]) != 0) {
			fprintf(stderr, "sendfile-threads: no thread\n");
			return (1);
		}
	accept_run(&served[(argc - 3) / 2]);
	return (0);
}
