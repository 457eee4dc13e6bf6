/*
 * Plays packetdrill against libmtcp_packetdrill.so: loads it the way packetdrill's
 * so_testing.c does (dlopen, dlsym "packetdrill_interface_init", init(flags, &ifc)), then
 * drives a passive open, a data exchange both ways and a close through the interface, with
 * IPv4/TCP packets built and checked here byte by byte.
 *
 * Usage: driver LIBRARY.so    Exit status 0 and "driver ok" on the last line when all passed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/*
 * Our own declaration of packetdrill's struct (gtests/net/packetdrill/packetdrill.h in
 * google/packetdrill): the same members, in the same order, with the same types.
 */
struct packetdrill_interface {
	void *userdata;
	void (*free)(void *userdata);
	int (*socket)(void *userdata, int domain, int type, int protocol);
	int (*bind)(void *userdata, int sockfd, const struct sockaddr *addr, socklen_t addrlen);
	int (*listen)(void *userdata, int sockfd, int backlog);
	int (*accept)(void *userdata, int sockfd, struct sockaddr *addr, socklen_t *addrlen);
	int (*connect)(void *userdata, int sockfd, const struct sockaddr *addr, socklen_t addrlen);
	ssize_t (*read)(void *userdata, int fd, void *buf, size_t count);
	ssize_t (*readv)(void *userdata, int fd, const struct iovec *iov, int iovcnt);
	ssize_t (*recv)(void *userdata, int sockfd, void *buf, size_t len, int flags);
	ssize_t (*recvfrom)(void *userdata, int sockfd, void *buf, size_t len, int flags,
			    struct sockaddr *src_addr, socklen_t *addrlen);
	ssize_t (*recvmsg)(void *userdata, int sockfd, struct msghdr *msg, int flags);
	ssize_t (*write)(void *userdata, int fd, const void *buf, size_t count);
	ssize_t (*writev)(void *userdata, int fd, const struct iovec *iov, int iovcnt);
	ssize_t (*send)(void *userdata, int sockfd, const void *buf, size_t len, int flags);
	ssize_t (*sendto)(void *userdata, int sockfd, const void *buf, size_t len, int flags,
			  const struct sockaddr *dest_addr, socklen_t addrlen);
	ssize_t (*sendmsg)(void *userdata, int sockfd, const struct msghdr *msg, int flags);
	int (*fcntl)(void *userdata, int fd, int cmd, ...);
	int (*ioctl)(void *userdata, int fd, unsigned long request, ...);
	int (*close)(void *userdata, int fd);
	int (*shutdown)(void *userdata, int sockfd, int how);
	int (*getsockopt)(void *userdata, int sockfd, int level, int optname, void *optval,
			  socklen_t *optlen);
	int (*setsockopt)(void *userdata, int sockfd, int level, int optname, const void *optval,
			  socklen_t optlen);
	int (*poll)(void *userdata, struct pollfd *fds, nfds_t nfds, int timeout);
	int (*netdev_send)(void *userdata, const void *buf, size_t count);
	int (*netdev_receive)(void *userdata, void *buf, size_t *count, long long *time_usecs);
	int (*usleep)(void *userdata, useconds_t usec);
	int (*gettimeofday)(void *userdata, struct timeval *tv, struct timezone *tz);
	int (*epoll_create)(void *userdata, int size);
	int (*epoll_ctl)(void *userdata, int epfd, int op, int fd, struct epoll_event *event);
	int (*epoll_wait)(void *userdata, int epfd, struct epoll_event *events, int maxevents,
			  int timeout);
	int (*pipe)(void *userdata, int pipefd[2]);
	int (*splice)(void *userdata, int fd_in, loff_t *off_in, int fd_out, loff_t *off_out,
		      size_t len, unsigned int flags);
};

typedef void (*packetdrill_interface_init_t)(const char *flags, struct packetdrill_interface *);

static struct packetdrill_interface ifc;
#define U ifc.userdata

#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_PSH 0x08
#define TH_ACK 0x10

static const char *LOCAL = "192.168.0.1";
static const char *REMOTE = "192.0.2.1";
static const uint16_t LPORT = 8080, RPORT = 47000;

#define CHECK(cond, ...)                                                      \
	do {                                                                  \
		if (!(cond)) {                                                \
			printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			printf(__VA_ARGS__);                                  \
			printf("\n");                                         \
			exit(1);                                              \
		}                                                             \
	} while (0)

/* -1 with errno `e`, as a system call reports it. */
#define CHECK_ERRNO(ret, e)                                                    \
	do {                                                                   \
		long r_ = (long)(ret);                                         \
		int e_ = errno;                                                \
		CHECK(r_ == -1 && e_ == (e), "returned %ld errno %d (%s), expected -1 %s", \
		      r_, e_, strerror(e_), #e);                               \
		printf("ok   %s -> -1 %s\n", #ret, #e);                        \
	} while (0)

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t s)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)p[i] << 8 | p[i + 1];
	if (n & 1)
		s += (uint32_t)p[n - 1] << 8;
	return s;
}

static uint16_t fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
static void put32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24; p[1] = (v >> 16) & 0xff; p[2] = (v >> 8) & 0xff; p[3] = v & 0xff;
}

/* The TCP checksum over the pseudo-header and the segment at ip (IPv4 header of ihl bytes). */
static uint16_t tcp_checksum(const uint8_t *ip, size_t total)
{
	size_t ihl = (size_t)(ip[0] & 0x0f) * 4;
	uint8_t pseudo[12];
	memcpy(pseudo, ip + 12, 8);
	pseudo[8] = 0;
	pseudo[9] = 6;
	put16(pseudo + 10, (uint16_t)(total - ihl));
	return fold(sum16(ip + ihl, total - ihl, sum16(pseudo, 12, 0)));
}

/* Builds an IPv4/TCP packet from REMOTE:RPORT to LOCAL:LPORT; returns its length. */
static size_t build(uint8_t *b, uint32_t seq, uint32_t ack, uint8_t flags, const uint8_t *opts,
		    size_t optlen, const char *payload)
{
	size_t plen = payload ? strlen(payload) : 0;
	size_t thl = 20 + optlen, total = 20 + thl + plen;
	memset(b, 0, total);
	b[0] = 0x45;
	put16(b + 2, (uint16_t)total);
	b[8] = 64;
	b[9] = 6;
	inet_pton(AF_INET, REMOTE, b + 12);
	inet_pton(AF_INET, LOCAL, b + 16);
	put16(b + 10, fold(sum16(b, 20, 0)));
	uint8_t *t = b + 20;
	put16(t, RPORT);
	put16(t + 2, LPORT);
	put32(t + 4, seq);
	put32(t + 8, ack);
	t[12] = (uint8_t)((thl / 4) << 4);
	t[13] = flags;
	put16(t + 14, 65535);
	memcpy(t + 20, opts, optlen);
	memcpy(t + thl, payload, plen);
	put16(t + 16, tcp_checksum(b, total));
	return total;
}

static void inject(const char *what, uint32_t seq, uint32_t ack, uint8_t flags,
		   const uint8_t *opts, size_t optlen, const char *payload)
{
	uint8_t b[1500];
	size_t n = build(b, seq, ack, flags, opts, optlen, payload);
	int r = ifc.netdev_send(U, b, n);
	CHECK(r == 0, "netdev_send(%s) returned %d errno %d", what, r, errno);
	printf("ok   < %s (%zu bytes)\n", what, n);
}

/* A packet the stack sent, parsed and checked. */
struct seg {
	uint8_t flags;
	uint32_t seq, ack;
	size_t len;
	const uint8_t *payload;
	long long t;
};

static uint8_t rxbuf[65536];

static struct seg receive(void)
{
	size_t n = sizeof(rxbuf);
	long long when = -1;
	int r = ifc.netdev_receive(U, rxbuf, &n, &when);
	CHECK(r == 0, "netdev_receive returned %d errno %d", r, errno);
	CHECK(n >= 40, "netdev_receive gave %zu bytes (nothing sent?)", n);
	const uint8_t *ip = rxbuf;
	size_t ihl = (size_t)(ip[0] & 0x0f) * 4;
	CHECK(ip[0] >> 4 == 4 && ihl >= 20, "not IPv4: first byte 0x%02x", ip[0]);
	CHECK(get16(ip + 2) == n, "IP total length %u, packet %zu bytes", get16(ip + 2), n);
	CHECK(ip[9] == 6, "protocol %u, not TCP", ip[9]);
	CHECK(fold(sum16(ip, ihl, 0)) == 0, "bad IP header checksum");
	CHECK(tcp_checksum(ip, n) == 0, "bad TCP checksum");
	char src[16], dst[16];
	inet_ntop(AF_INET, ip + 12, src, sizeof(src));
	inet_ntop(AF_INET, ip + 16, dst, sizeof(dst));
	CHECK(strcmp(src, LOCAL) == 0 && strcmp(dst, REMOTE) == 0, "addresses %s -> %s", src, dst);
	const uint8_t *t = ip + ihl;
	CHECK(get16(t) == LPORT && get16(t + 2) == RPORT, "ports %u -> %u", get16(t),
	      get16(t + 2));
	size_t thl = (size_t)(t[12] >> 4) * 4;
	struct seg s = {
		.flags = t[13],
		.seq = get32(t + 4),
		.ack = get32(t + 8),
		.len = n - ihl - thl,
		.payload = t + thl,
		.t = when,
	};
	return s;
}

static void describe(const char *what, const struct seg *s, uint32_t isn)
{
	printf("ok   > %s: flags 0x%02x seq isn+%u ack %u len %zu at %lld us\n", what, s->flags,
	       s->seq - isn, s->ack, s->len, s->t);
}

/* The next segment that is not a pure ACK (a delayed ACK may come first). */
static struct seg receive_skipping_acks(void)
{
	for (int i = 0; i < 8; i++) {
		struct seg s = receive();
		if (s.len > 0 || (s.flags & (TH_SYN | TH_FIN | TH_RST)))
			return s;
		printf("     (pure ACK %u skipped)\n", s.ack);
	}
	CHECK(0, "only pure ACKs");
	return receive();
}

static long long now_us(void)
{
	struct timeval tv;
	CHECK(ifc.gettimeofday(U, &tv, NULL) == 0, "gettimeofday failed");
	return (long long)tv.tv_sec * 1000000 + tv.tv_usec;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s LIBRARY.so\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);

	/* As packetdrill's so_instance_init. */
	void *handle = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE | RTLD_DEEPBIND);
	CHECK(handle != NULL, "dlopen: %s", dlerror());
	dlerror();
	packetdrill_interface_init_t init =
		(packetdrill_interface_init_t)dlsym(handle, "packetdrill_interface_init");
	const char *err = dlerror();
	CHECK(err == NULL && init != NULL, "dlsym: %s", err ? err : "NULL");
	memset(&ifc, 0, sizeof(ifc));
	init("local_ip=192.168.0.1,remote_ip=192.0.2.1", &ifc);
	void **slot = (void **)&ifc;
	for (size_t i = 0; i < sizeof(ifc) / sizeof(void *); i++)
		CHECK(slot[i] != NULL, "slot %zu of struct packetdrill_interface left NULL", i);
	printf("ok   init filled all %zu slots\n", sizeof(ifc) / sizeof(void *));

	long long t0 = now_us();
	CHECK(now_us() > t0, "the clock does not move when read");

	/* Passive open. */
	int lfd = ifc.socket(U, AF_INET, SOCK_STREAM, 0);
	CHECK(lfd == 3, "socket() = %d, expected 3", lfd);
	int one = 1;
	CHECK(ifc.setsockopt(U, lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0,
	      "setsockopt(SO_REUSEADDR)");
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(LPORT) };
	inet_pton(AF_INET, LOCAL, &sin.sin_addr);
	CHECK(ifc.bind(U, lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0, "bind: errno %d", errno);
	CHECK(ifc.listen(U, lfd, 1) == 0, "listen: errno %d", errno);
	printf("ok   socket/bind/listen -> fd %d\n", lfd);

	/* Non-blocking accept with nothing queued; the 2-argument fcntl form too. */
	CHECK(ifc.fcntl(U, lfd, F_SETFL, O_RDWR | O_NONBLOCK) == 0, "fcntl(F_SETFL)");
	CHECK(ifc.fcntl(U, lfd, F_GETFL) & O_NONBLOCK, "F_GETFL lacks O_NONBLOCK");
	CHECK_ERRNO(ifc.accept(U, lfd, NULL, NULL), EAGAIN);
	CHECK(ifc.fcntl(U, lfd, F_SETFL, O_RDWR) == 0, "fcntl(F_SETFL) back to blocking");
	struct pollfd pfd = { .fd = lfd, .events = POLLIN };
	CHECK(ifc.poll(U, &pfd, 1, 0) == 0, "poll on an empty listener is not 0");

	/* Handshake: SYN <mss 1460> in, SYN-ACK out, ACK in. */
	const uint32_t peer_isn = 1000;
	const uint8_t mss[4] = { 2, 4, 0x05, 0xb4 };
	inject("S 1000:1000(0) <mss 1460>", peer_isn, 0, TH_SYN, mss, sizeof(mss), NULL);
	struct seg synack = receive();
	uint32_t isn = synack.seq;
	describe("SYN-ACK", &synack, isn);
	CHECK(synack.flags == (TH_SYN | TH_ACK), "flags 0x%02x, expected SYN|ACK", synack.flags);
	CHECK(synack.ack == peer_isn + 1, "ack %u, expected %u", synack.ack, peer_isn + 1);
	CHECK(synack.len == 0, "payload on a SYN-ACK");
	CHECK(synack.t >= t0, "send time %lld before the start %lld", synack.t, t0);
	inject(". 1001:1001(0) ack isn+1", peer_isn + 1, isn + 1, TH_ACK, NULL, 0, NULL);
	CHECK(ifc.poll(U, &pfd, 1, 0) == 1 && (pfd.revents & POLLIN), "listener not readable");

	struct sockaddr_in peer;
	socklen_t plen = sizeof(peer);
	int fd = ifc.accept(U, lfd, (struct sockaddr *)&peer, &plen);
	char pname[16];
	inet_ntop(AF_INET, &peer.sin_addr, pname, sizeof(pname));
	CHECK(fd == 4, "accept() = %d errno %d, expected 4", fd, errno);
	CHECK(plen == sizeof(peer) && strcmp(pname, REMOTE) == 0 && ntohs(peer.sin_port) == RPORT,
	      "peer %s:%u", pname, ntohs(peer.sin_port));
	printf("ok   accept -> fd %d from %s:%u\n", fd, pname, ntohs(peer.sin_port));

	/* Data in: read returns it; then nothing left. */
	CHECK(ifc.usleep(U, 10000) == 0, "usleep");
	long long t1 = now_us();
	CHECK(t1 - t0 >= 10000, "usleep(10000) moved the clock only %lld us", t1 - t0);
	inject("P. 1001:1006(5) ack isn+1", peer_isn + 1, isn + 1, TH_PSH | TH_ACK, NULL, 0,
	       "hello");
	int avail = -1;
	CHECK(ifc.ioctl(U, fd, FIONREAD, &avail) == 0 && avail == 5, "FIONREAD = %d", avail);
	char buf[100];
	ssize_t n = ifc.read(U, fd, buf, sizeof(buf));
	CHECK(n == 5 && memcmp(buf, "hello", 5) == 0, "read() = %zd", n);
	printf("ok   read -> %zd \"%.5s\"\n", n, buf);
	CHECK(ifc.fcntl(U, fd, F_SETFL, O_RDWR | O_NONBLOCK) == 0, "fcntl(O_NONBLOCK)");
	CHECK_ERRNO(ifc.read(U, fd, buf, sizeof(buf)), EAGAIN);
	CHECK_ERRNO(ifc.recv(U, fd, buf, sizeof(buf), MSG_OOB), EOPNOTSUPP);

	/* Data out. */
	n = ifc.write(U, fd, "world!", 6);
	CHECK(n == 6, "write() = %zd errno %d", n, errno);
	struct seg data = receive_skipping_acks();
	describe("data", &data, isn);
	CHECK(data.flags & TH_ACK, "data without ACK");
	CHECK(data.seq == isn + 1, "seq isn+%u, expected isn+1", data.seq - isn);
	CHECK(data.ack == peer_isn + 6, "ack %u, expected %u", data.ack, peer_isn + 6);
	CHECK(data.len == 6 && memcmp(data.payload, "world!", 6) == 0, "payload of %zu bytes",
	      data.len);
	/* Unacknowledged, it is sent again when the RTO (at least 200 ms) expires: netdev_receive
	 * moves the virtual clock through the stack's timers. */
	struct seg again = receive_skipping_acks();
	describe("retransmission", &again, isn);
	CHECK(again.seq == data.seq && again.len == data.len, "not the same segment");
	CHECK(again.t - data.t >= 200000, "retransmitted after only %lld us", again.t - data.t);
	inject(". 1006:1006(0) ack isn+7", peer_isn + 6, isn + 7, TH_ACK, NULL, 0, NULL);

	/* Unsupported calls and bad descriptors. */
	CHECK_ERRNO(ifc.epoll_create(U, 1), ENOSYS);
	int pipefd[2];
	CHECK_ERRNO(ifc.pipe(U, pipefd), ENOSYS);
	CHECK_ERRNO(ifc.read(U, 42, buf, 1), EBADF);
	CHECK_ERRNO(ifc.socket(U, AF_INET6, SOCK_STREAM, 0), EAFNOSUPPORT);
	int v = 0;
	socklen_t vlen = sizeof(v);
	CHECK(ifc.getsockopt(U, fd, IPPROTO_TCP, 1 /* TCP_NODELAY */, &v, &vlen) == 0 && v == 0,
	      "getsockopt(TCP_NODELAY)");

	/* Close: FIN out, the peer's FIN in, its ACK out. */
	CHECK(ifc.close(U, fd) == 0, "close");
	struct seg fin = receive_skipping_acks();
	describe("FIN", &fin, isn);
	CHECK(fin.flags == (TH_FIN | TH_ACK), "flags 0x%02x, expected FIN|ACK", fin.flags);
	CHECK(fin.seq == isn + 7 && fin.ack == peer_isn + 6, "FIN seq isn+%u ack %u",
	      fin.seq - isn, fin.ack);
	inject("F. 1006:1006(0) ack isn+8", peer_isn + 6, isn + 8, TH_FIN | TH_ACK, NULL, 0, NULL);
	struct seg last = receive();
	describe("ACK of FIN", &last, isn);
	CHECK(last.flags == TH_ACK && last.ack == peer_isn + 7, "flags 0x%02x ack %u", last.flags,
	      last.ack);
	CHECK_ERRNO(ifc.close(U, fd), EBADF);

	CHECK(ifc.close(U, lfd) == 0, "close(listener)");
	ifc.free(U);
	printf("driver ok\n");
	return 0;
}
