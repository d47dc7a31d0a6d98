/*
 * sendfile-loop: the reference the benchmark cases are judged against.
 * The least a server can do to hand files to many clients over the
 * fdistd protocol: one epoll loop; per client accept4(2), sendfile(2)
 * until the socket is full or the file is sent, shutdown(SHUT_WR), read
 * the ack to EOF, close.  No limits, no timeouts, no log, no library.
 * It sets the socket options fdistd sets to save kernel work (TCP_CORK
 * and SO_RCVLOWAT on the listener, TCP_QUICKACK off before the FIN), so
 * that it differs from fdistd only in fdistd's own work.
 *
 * Its figures are about the floor of server CPU and the ceiling of
 * throughput on this kernel path: if it cannot beat nginx by a margin,
 * no sendfile server can, and the gap between it and fdistd is what
 * fdistd's own work costs.  A tool for bench/run, bound to 127.0.0.1
 * only; not installed.
 *
 * usage: sendfile-loop PORT FILE [PORT FILE ...]
 */
#include <sys/types.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_FILES	8
#define EVENTS		256
#define ACK_MAX		256	/* fdistd's default ack_max */

/* An epoll event points at one of these two; the first member tells which. */
struct served {
	int	 listener;	/* 1 */
	int	 lfd;
	int	 ffd;
	off_t	 size;
};

struct client {
	int		 listener;	/* 0 */
	int		 fd;
	struct served	*sv;
	off_t		 off;
	int		 sent;	/* the half-close is done: read the ack */
};

static int		epfd;
static struct served	served[MAX_FILES];

static void
client_end(struct client *cl)
{
	close(cl->fd);		/* close takes it out of the epoll set too */
	free(cl);
}

/* Send until the socket is full (wait for room) or the file is sent. */
static void
client_send(struct client *cl, int registered)
{
	struct epoll_event	ev = { .data.ptr = cl };
	ssize_t			n;
	int			off = 0;

	while (cl->off < cl->sv->size) {
		n = sendfile(cl->fd, cl->sv->ffd, &cl->off,
		    (size_t)(cl->sv->size - cl->off));
		if (n > 0)
			continue;
		if (n == -1 && errno == EAGAIN) {
			ev.events = EPOLLOUT;
			if (epoll_ctl(epfd, registered ? EPOLL_CTL_MOD :
			    EPOLL_CTL_ADD, cl->fd, &ev) == -1)
				client_end(cl);
			return;
		}
		client_end(cl);	/* gone, or the file shrank */
		return;
	}
	cl->sent = 1;
	ev.events = EPOLLIN | EPOLLRDHUP;
	/* One ACK then answers both the client's ack and its FIN. */
	setsockopt(cl->fd, IPPROTO_TCP, TCP_QUICKACK, &off, sizeof(off));
	if (shutdown(cl->fd, SHUT_WR) == -1 ||
	    epoll_ctl(epfd, registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD,
	    cl->fd, &ev) == -1)
		client_end(cl);
}

/* Read the ack; the client's EOF (or an error) ends it. */
static void
client_read(struct client *cl)
{
	char	ack[256];
	ssize_t	n;

	while ((n = read(cl->fd, ack, sizeof(ack))) > 0)
		;
	if (n == 0 || errno != EAGAIN)
		client_end(cl);
}

static void
accept_clients(struct served *sv)
{
	struct client	*cl;
	int		 fd;

	while ((fd = accept4(sv->lfd, NULL, NULL, SOCK_NONBLOCK)) != -1) {
		if ((cl = calloc(1, sizeof(*cl))) == NULL) {
			close(fd);
			continue;
		}
		cl->fd = fd;
		cl->sv = sv;
		client_send(cl, 0);
	}
}

static int
serve(const char *portstr, const char *path, struct served *sv)
{
	struct epoll_event	 ev = { .events = EPOLLIN, .data.ptr = sv };
	struct sockaddr_in	 sin;
	struct stat		 st;
	char			*end;
	long			 port;
	int			 on = 1, lowat = ACK_MAX;

	port = strtol(portstr, &end, 10);
	if (*portstr == '\0' || *end != '\0' || port < 1 || port > 65535) {
		fprintf(stderr, "sendfile-loop: %s: not a port\n", portstr);
		return (-1);
	}
	if ((sv->ffd = open(path, O_RDONLY)) == -1 ||
	    fstat(sv->ffd, &st) == -1) {
		fprintf(stderr, "sendfile-loop: %s: %s\n", path,
		    strerror(errno));
		return (-1);
	}
	sv->size = st.st_size;
	sv->listener = 1;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((sv->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)) ==
	    -1 ||
	    setsockopt(sv->lfd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) ==
	    -1 ||
	    bind(sv->lfd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    /* Inherited: data and FIN in one segment; woken once for the ack. */
	    setsockopt(sv->lfd, IPPROTO_TCP, TCP_CORK, &on, sizeof(on)) == -1 ||
	    setsockopt(sv->lfd, SOL_SOCKET, SO_RCVLOWAT, &lowat,
	    sizeof(lowat)) == -1 ||
	    listen(sv->lfd, SOMAXCONN) == -1 ||
	    epoll_ctl(epfd, EPOLL_CTL_ADD, sv->lfd, &ev) == -1) {
		fprintf(stderr, "sendfile-loop: 127.0.0.1:%ld: %s\n", port,
		    strerror(errno));
		return (-1);
	}
	return (0);
}

int
main(int argc, char *argv[])
{
	struct epoll_event	 events[EVENTS];
	struct client		*cl;
	int			 i, n;

	if (argc < 3 || argc % 2 == 0 || argc > 1 + 2 * MAX_FILES) {
		fprintf(stderr, "usage: sendfile-loop PORT FILE "
		    "[PORT FILE ...]\n");
		return (2);
	}
	signal(SIGPIPE, SIG_IGN);	/* a client that leaves is not fatal */
	if ((epfd = epoll_create1(0)) == -1) {
		perror("sendfile-loop: epoll_create1");
		return (1);
	}
	for (i = 1; i < argc; i += 2) {
		if (serve(argv[i], argv[i + 1], &served[i / 2]) == -1)
			return (1);
	}
	for (;;) {
		n = epoll_wait(epfd, events, EVENTS, -1);
		for (i = 0; i < n; i++) {
			if (*(int *)events[i].data.ptr) {
				accept_clients(events[i].data.ptr);
				continue;
			}
			cl = events[i].data.ptr;
			if (cl->sent)
				client_read(cl);
			else
				client_send(cl, 1);
		}
	}
}
