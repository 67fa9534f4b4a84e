/*
 * lock.c — a run lock next to the state database, flock(2)-based so it dies with its
 * holder. Never blocks: a second run is refused at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "err.h"
#include "lock.h"
#include "util.h"

int
lock_acquire(const char *state_path, int *fdp, pid_t *holderp)
{
	char path[4200], buf[32], *slash;
	long long pid = 0;
	ssize_t n;
	int fd;

	*holderp = 0;
	if (snprintf(path, sizeof(path), "%s.lock", state_path) >= (int)sizeof(path)) {
		errno = ENAMETOOLONG;
		return STEP_ESYS;
	}
	if ((slash = strrchr(path, '/')) != NULL && slash != path) {
		*slash = '\0';
		if (util_mkdirs(path, 0700) != 0)
			return STEP_ESYS;
		*slash = '/';
	}
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0)
		return STEP_ESYS;
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno == EWOULDBLOCK) {
			n = pread(fd, buf, sizeof(buf) - 1, 0);
			if (n > 0) {
				buf[n] = '\0';
				buf[strcspn(buf, "\n")] = '\0';
				if (util_parse_ll(buf, 1, 1 << 30, &pid) == 0)
					*holderp = (pid_t)pid;
			}
			close(fd);
			return STEP_EBUSY;
		}
		close(fd);
		return STEP_ESYS;
	}
	n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
		/* The pid is informational only; the lock itself holds. */
	}
	*fdp = fd;
	return 0;
}

void
lock_release(int fd)
{
	if (fd < 0)
		return;
	/* Empty the pid before unlocking so a reader never names a finished run. */
	if (ftruncate(fd, 0) != 0) {
		/* informational only */
	}
	flock(fd, LOCK_UN);
	close(fd);
}
