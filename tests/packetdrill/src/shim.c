/*
 * packetdrill's fcntl and ioctl slots are C-variadic (`int (*fcntl)(void *, int, int, ...)`),
 * which stable Rust can call but not define. These two functions read the optional argument
 * for the commands that take one (reading an argument the caller did not pass would be
 * undefined behaviour) and forward to non-variadic functions in src/ffi.rs.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/ioctl.h>

int mtcp_pd_fcntl_fixed(void *userdata, int fd, int cmd, int arg);
int mtcp_pd_ioctl_fixed(void *userdata, int fd, unsigned long request, void *argp);

int mtcp_pd_fcntl(void *userdata, int fd, int cmd, ...)
{
	int arg = 0;

	switch (cmd) {
	case F_SETFL:
	case F_SETFD:
	case F_DUPFD: {
		va_list ap;

		va_start(ap, cmd);
		arg = va_arg(ap, int);
		va_end(ap);
		break;
	}
	default:
		break;
	}
	return mtcp_pd_fcntl_fixed(userdata, fd, cmd, arg);
}

int mtcp_pd_ioctl(void *userdata, int fd, unsigned long request, ...)
{
	void *argp = NULL;

	switch (request) {
	case FIONREAD: /* also SIOCINQ */
	case TIOCOUTQ: /* also SIOCOUTQ */
	case FIONBIO: {
		va_list ap;

		va_start(ap, request);
		argp = va_arg(ap, void *);
		va_end(ap);
		break;
	}
	default:
		break;
	}
	return mtcp_pd_ioctl_fixed(userdata, fd, request, argp);
}
