/*
 * An mTCP application in C against mtcp-rs's headers and libmtcp: an epoll echo server in a
 * forked child and a client in the parent, two hosts on the shared-memory link shm:LINK.
 *
 *   usage: echo LINK DIR     (DIR: where the two TOML configurations are written)
 *
 * The client sends BYTES bytes of a pattern, checks the echo byte for byte, closes; both
 * processes exit 0 on success. Every mTCP call is checked, errno included where it fails.
 * Built and run by tests/c_echo.rs.
 */
#define _GNU_SOURCE
#include <mtcp_api.h>
#include <mtcp_epoll.h>

#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <netinet/tcp.h>
#include <unistd.h>

/* mTCP's layouts and values, checked at compile time. */
_Static_assert(sizeof(struct mtcp_epoll_event) == 12, "packed mtcp_epoll_event");
_Static_assert(offsetof(struct mtcp_epoll_event, data) == 4, "data after events");
_Static_assert(sizeof(mtcp_epoll_data_t) == 8, "epoll data union");
_Static_assert(sizeof(struct mtcp_conf) == 7 * sizeof(int), "mtcp_conf fields");
_Static_assert(offsetof(struct mtcp_context, cpu) == 0, "mtcp_context");
_Static_assert(MTCP_EPOLLIN == 0x001 && MTCP_EPOLLOUT == 0x004 && MTCP_EPOLLERR == 0x008 &&
                   MTCP_EPOLLHUP == 0x010 && MTCP_EPOLLRDHUP == 0x2000,
               "event bits");
_Static_assert(MTCP_EPOLL_CTL_ADD == 1 && MTCP_EPOLL_CTL_DEL == 2 && MTCP_EPOLL_CTL_MOD == 3,
               "epoll ops");
_Static_assert((int)MTCP_SOCK_STREAM == (int)SOCK_STREAM, "socket type");

#define PORT 8080
#define BYTES (512 * 1024)
#define MAX_EVENTS 64

static const char *who = "echo";

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s: %s:%d: check failed: %s (errno %d: %s)\n", who,       \
                    __FILE__, __LINE__, #cond, errno, strerror(errno));                \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

static unsigned char pattern(size_t i) { return (unsigned char)(i * 7 + i / 251 + 13); }

static void write_config(const char *path, const char *link, int me, int peer) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fprintf(f,
            "port = \"shm:%s\"\n"
            "pin_threads = false\n"
            "[interface]\n"
            "mac = \"02:00:00:00:00:%02x\"\n"
            "address = \"10.0.0.%d/24\"\n"
            "[[arp]]\n"
            "ip = \"10.0.0.%d\"\n"
            "mac = \"02:00:00:00:00:%02x\"\n"
            "[tcp]\n"
            "time_wait_ms = 100\n",
            link, me, me, peer, peer);
    CHECK(fclose(f) == 0);
}

static void start(const char *dir, const char *link, int me, int peer) {
    char path[4096];
    snprintf(path, sizeof path, "%s/host%d.toml", dir, me);
    write_config(path, link, me, peer);

    /* As epserver does: set the cores before mtcp_init, read them back. */
    struct mtcp_conf conf;
    CHECK(mtcp_getconf(&conf) == 0);
    conf.num_cores = 1;
    conf.rcvbuf_size = 32768;
    CHECK(mtcp_setconf(&conf) == 0);
    CHECK(mtcp_init(path) == 0);
    CHECK(mtcp_getconf(&conf) == 0);
    CHECK(conf.num_cores == 1 && conf.rcvbuf_size == 32768 && conf.tcp_timewait == 100);
    CHECK(mtcp_init(path) == -1 && errno == EEXIST);
}

/* ----- the server ----------------------------------------------------------------------- */

struct conn {
    int fd;
    char buf[16384];
    size_t off, len; /* echo still to write: buf[off..len] */
};

static void set_events(mctx_t mctx, int ep, struct conn *c, uint32_t events) {
    struct mtcp_epoll_event ev;
    ev.events = events;
    ev.data.sockid = c->fd;
    CHECK(mtcp_epoll_ctl(mctx, ep, MTCP_EPOLL_CTL_MOD, c->fd, &ev) == 0);
}

/* Echoes what is there; returns 1 once the peer closed and the connection is closed. */
static int serve(mctx_t mctx, int ep, struct conn *c) {
    for (;;) {
        while (c->off < c->len) {
            ssize_t w = mtcp_write(mctx, c->fd, c->buf + c->off, c->len - c->off);
            if (w < 0) {
                CHECK(errno == EAGAIN);
                set_events(mctx, ep, c, MTCP_EPOLLOUT);
                return 0;
            }
            c->off += (size_t)w;
        }
        ssize_t r = mtcp_read(mctx, c->fd, c->buf, sizeof c->buf);
        if (r < 0) {
            CHECK(errno == EAGAIN);
            set_events(mctx, ep, c, MTCP_EPOLLIN);
            return 0;
        }
        if (r == 0) {
            CHECK(mtcp_close(mctx, c->fd) == 0);
            return 1;
        }
        c->off = 0;
        c->len = (size_t)r;
    }
}

static int run_server(const char *dir, const char *link, int ready_fd) {
    who = "server";
    start(dir, link, 2, 1);
    mctx_t mctx = mtcp_create_context(0);
    CHECK(mctx != NULL && mctx->cpu == 0);
    CHECK(mtcp_create_context(0) == NULL && errno == EBUSY);

    /* Errors as mTCP reports them. */
    CHECK(mtcp_close(mctx, 4242) == -1 && errno == EBADF);
    CHECK(mtcp_socket(mctx, AF_INET6, SOCK_STREAM, 0) == -1 && errno == EAFNOSUPPORT);
    CHECK(mtcp_socket(NULL, AF_INET, SOCK_STREAM, 0) == -1 && errno == EINVAL);

    int l = mtcp_socket(mctx, AF_INET, SOCK_STREAM, 0);
    CHECK(l >= 0);
    CHECK(mtcp_setsock_nonblock(mctx, l) == 0);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = INADDR_ANY;
    addr.sin_port = htons(PORT);
    CHECK(mtcp_bind(mctx, l, (struct sockaddr *)&addr, sizeof addr) == 0);
    CHECK(mtcp_listen(mctx, l, 16) == 0);
    CHECK(mtcp_accept(mctx, l, NULL, NULL) == -1 && errno == EAGAIN);

    int ep = mtcp_epoll_create(mctx, MAX_EVENTS);
    CHECK(ep >= 0);
    struct mtcp_epoll_event ev;
    ev.events = MTCP_EPOLLIN;
    ev.data.sockid = l;
    CHECK(mtcp_epoll_ctl(mctx, ep, MTCP_EPOLL_CTL_ADD, l, &ev) == 0);
    CHECK(mtcp_epoll_ctl(mctx, ep, MTCP_EPOLL_CTL_ADD, l, &ev) == -1 && errno == EEXIST);

    CHECK(write(ready_fd, "r", 1) == 1);

    static struct conn conns[8];
    int nconns = 0, done = 0;
    struct mtcp_epoll_event events[MAX_EVENTS];
    while (!done) {
        int n = mtcp_epoll_wait(mctx, ep, events, MAX_EVENTS, -1);
        CHECK(n >= 0);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.sockid;
            if (fd == l) {
                for (;;) {
                    struct sockaddr_in peer;
                    socklen_t len = sizeof peer;
                    int c = mtcp_accept(mctx, l, (struct sockaddr *)&peer, &len);
                    if (c < 0) {
                        CHECK(errno == EAGAIN);
                        break;
                    }
                    CHECK(len == sizeof peer && peer.sin_addr.s_addr == inet_addr("10.0.0.1"));
                    CHECK(nconns < 8);
                    conns[nconns].fd = c;
                    struct mtcp_epoll_event cev;
                    cev.events = MTCP_EPOLLIN;
                    cev.data.sockid = c;
                    CHECK(mtcp_epoll_ctl(mctx, ep, MTCP_EPOLL_CTL_ADD, c, &cev) == 0);
                    nconns++;
                }
                continue;
            }
            for (int k = 0; k < nconns; k++) {
                if (conns[k].fd == fd && serve(mctx, ep, &conns[k])) {
                    done = 1;
                }
            }
        }
    }
    CHECK(mtcp_close(mctx, ep) == 0);
    CHECK(mtcp_close(mctx, l) == 0);
    mtcp_destroy_context(mctx);
    mtcp_destroy();
    return 0;
}

/* ----- the client ----------------------------------------------------------------------- */

static int wait_for(mctx_t mctx, int ep, int fd, uint32_t want) {
    struct mtcp_epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = mtcp_epoll_wait(mctx, ep, events, MAX_EVENTS, 1000);
        CHECK(n >= 0);
        for (int i = 0; i < n; i++) {
            if (events[i].data.sockid == fd && (events[i].events & want)) {
                return (int)events[i].events;
            }
        }
    }
}

static void sigint(int sig) { (void)sig; }

static int run_client(const char *dir, const char *link, pid_t server) {
    who = "client";
    start(dir, link, 1, 2);
    CHECK(mtcp_register_signal(SIGINT, sigint) == NULL);
    CHECK(mtcp_register_signal(SIGINT, NULL) == sigint);
    mctx_t mctx = mtcp_create_context(0);
    CHECK(mctx != NULL);
    CHECK(mtcp_init_rss(mctx, INADDR_ANY, 1, inet_addr("10.0.0.2"), htons(PORT)) == 0);

    /* A pipe inside the context. */
    int p[2];
    CHECK(mtcp_pipe(mctx, p) == 0);
    CHECK(mtcp_write(mctx, p[1], "xyz", 3) == 3);
    int avail = -1;
    CHECK(mtcp_socket_ioctl(mctx, p[0], FIONREAD, &avail) == 0 && avail == 3);
    char small[8];
    CHECK(mtcp_read(mctx, p[0], small, sizeof small) == 3 && memcmp(small, "xyz", 3) == 0);
    CHECK(mtcp_close(mctx, p[0]) == 0 && mtcp_close(mctx, p[1]) == 0);

    int s = mtcp_socket(mctx, AF_INET, SOCK_STREAM, 0);
    CHECK(s >= 0);
    int one = 1;
    CHECK(mtcp_setsockopt(mctx, s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
    int val = 0;
    socklen_t vlen = sizeof val;
    CHECK(mtcp_getsockopt(mctx, s, IPPROTO_TCP, TCP_NODELAY, &val, &vlen) == 0 && val == 1);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = inet_addr("10.0.0.2");
    addr.sin_port = htons(PORT);
    int r = mtcp_connect(mctx, s, (struct sockaddr *)&addr, sizeof addr);
    CHECK(r == 0 || errno == EINPROGRESS);

    int ep = mtcp_epoll_create1(mctx, 0);
    CHECK(ep >= 0);
    struct mtcp_epoll_event ev;
    ev.events = MTCP_EPOLLOUT;
    ev.data.sockid = s;
    CHECK(mtcp_epoll_ctl(mctx, ep, MTCP_EPOLL_CTL_ADD, s, &ev) == 0);
    int got = wait_for(mctx, ep, s, MTCP_EPOLLOUT | MTCP_EPOLLERR);
    CHECK(!(got & MTCP_EPOLLERR));
    int err = -1;
    vlen = sizeof err;
    CHECK(mtcp_getsockopt(mctx, s, SOL_SOCKET, SO_ERROR, &err, &vlen) == 0 && err == 0);

    struct sockaddr_in name;
    socklen_t nlen = sizeof name;
    CHECK(mtcp_getpeername(mctx, s, (struct sockaddr *)&name, &nlen) == 0);
    CHECK(name.sin_addr.s_addr == addr.sin_addr.s_addr && name.sin_port == htons(PORT));
    nlen = sizeof name;
    CHECK(mtcp_getsockname(mctx, s, (struct sockaddr *)&name, &nlen) == 0);
    CHECK(name.sin_port != 0);

    static unsigned char out[BYTES], in[BYTES];
    for (size_t i = 0; i < BYTES; i++) {
        out[i] = pattern(i);
    }
    size_t sent = 0, recvd = 0;
    ev.events = MTCP_EPOLLIN | MTCP_EPOLLOUT;
    CHECK(mtcp_epoll_ctl(mctx, ep, MTCP_EPOLL_CTL_MOD, s, &ev) == 0);
    int peeked = 0;
    while (recvd < BYTES) {
        wait_for(mctx, ep, s, MTCP_EPOLLIN | MTCP_EPOLLOUT);
        while (sent < BYTES) {
            /* Two halves of a chunk through writev. */
            size_t chunk = BYTES - sent < 3000 ? BYTES - sent : 3000;
            struct iovec iov[2] = {{out + sent, chunk / 2}, {out + sent + chunk / 2, chunk - chunk / 2}};
            int w = mtcp_writev(mctx, s, iov, 2);
            if (w < 0) {
                CHECK(errno == EAGAIN);
                break;
            }
            sent += (size_t)w;
        }
        if (sent == BYTES) {
            ev.events = MTCP_EPOLLIN;
            CHECK(mtcp_epoll_ctl(mctx, ep, MTCP_EPOLL_CTL_MOD, s, &ev) == 0);
        }
        while (recvd < BYTES) {
            if (!peeked) {
                char c;
                ssize_t pk = mtcp_recv(mctx, s, &c, 1, MSG_PEEK);
                if (pk == 1) {
                    CHECK((unsigned char)c == pattern(recvd));
                    peeked = 1;
                }
            }
            ssize_t n;
            if (recvd % 2 == 0) {
                n = mtcp_read(mctx, s, (char *)in + recvd, BYTES - recvd);
            } else {
                size_t left = BYTES - recvd;
                struct iovec iov[2] = {{in + recvd, left / 2}, {in + recvd + left / 2, left - left / 2}};
                n = mtcp_readv(mctx, s, iov, 2);
            }
            if (n < 0) {
                CHECK(errno == EAGAIN);
                break;
            }
            CHECK(n > 0);
            recvd += (size_t)n;
        }
    }
    CHECK(memcmp(in, out, BYTES) == 0);
    CHECK(mtcp_socket_ioctl(mctx, s, FIONREAD, &avail) == 0 && avail == 0);
    CHECK(mtcp_close(mctx, s) == 0);
    CHECK(mtcp_close(mctx, s) == -1 && errno == EBADF);

    int status = 0;
    CHECK(waitpid(server, &status, 0) == server);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(mtcp_close(mctx, ep) == 0);
    mtcp_destroy_context(mctx);
    mtcp_destroy();
    printf("echo ok: %d bytes echoed byte for byte\n", BYTES);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s LINK DIR\n", argv[0]);
        return 2;
    }
    alarm(60); /* a hang fails the test instead of blocking it */
    int ready[2];
    CHECK(pipe(ready) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        alarm(60); /* alarms are not inherited */
        close(ready[0]);
        return run_server(argv[2], argv[1], ready[1]);
    }
    close(ready[1]);
    char c;
    /* The server listens before the client starts. */
    if (read(ready[0], &c, 1) != 1) {
        fprintf(stderr, "client: the server did not start\n");
        waitpid(pid, NULL, 0);
        return 1;
    }
    return run_client(argv[2], argv[1], pid);
}
