/* util.c — checked parsing, aborting allocators, clocks, whole-file I/O, base64. */
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "util.h"

int
util_parse_ll(const char *s, long long min, long long max, long long *out)
{
	char *end = NULL;
	long long v;

	if (s == NULL || *s == '\0')
		return STEP_EINVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return STEP_EINVAL;
	*out = v;
	return STEP_OK;
}

int
util_parse_size(const char *s, unsigned long long *out)
{
	char *end = NULL;
	unsigned long long v, mul = 1;

	if (s == NULL || *s < '0' || *s > '9')
		return STEP_EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || end == s)
		return STEP_EINVAL;
	switch (*end) {
	case '\0':
		break;
	case 'k':
	case 'K':
		mul = 1ULL << 10;
		break;
	case 'm':
	case 'M':
		mul = 1ULL << 20;
		break;
	case 'g':
	case 'G':
		mul = 1ULL << 30;
		break;
	default:
		return STEP_EINVAL;
	}
	if (*end != '\0') {
		end++;
		if (*end == 'i' || *end == 'I')
			end++;
		if (*end == 'b' || *end == 'B')
			end++;
		if (*end != '\0')
			return STEP_EINVAL;
	}
	if (v > ULLONG_MAX / mul)
		return STEP_EINVAL;
	*out = v * mul;
	return STEP_OK;
}

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		fatalx("out of memory allocating %zu bytes", n);
	return p;
}

void *
xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);

	if (p == NULL)
		fatalx("out of memory allocating %zu x %zu bytes", n, m);
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL)
		fatalx("out of memory allocating %zu bytes", n);
	return q;
}

char *
xstrdup(const char *s)
{
	char *p = strdup(s);

	if (p == NULL)
		fatalx("out of memory");
	return p;
}

uint64_t
util_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

double
util_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int
util_stop_pending(void)
{
	sigset_t p;

	if (sigpending(&p) != 0)
		return 0;
	return sigismember(&p, SIGTERM) == 1 || sigismember(&p, SIGINT) == 1;
}

int64_t
util_wall_s(void)
{
	return (int64_t)time(NULL);
}

int
util_write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t w = write(fd, c, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return STEP_ESYS;
		}
		c += w;
		n -= (size_t)w;
	}
	return STEP_OK;
}

int
util_read_file(const char *path, size_t max, char **outp, size_t *lenp)
{
	char *data = NULL;
	size_t len = 0, cap = 0;
	int fd, r = STEP_ESYS;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return STEP_ESYS;
	for (;;) {
		ssize_t n;

		if (cap - len < 4096) {
			char *nd;

			cap = cap ? cap * 2 : 8192;
			if ((nd = realloc(data, cap + 1)) == NULL) {
				r = STEP_ENOMEM;
				goto out;
			}
			data = nd;
		}
		n = read(fd, data + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max) {
			r = STEP_ETOOBIG;
			goto out;
		}
	}
	data[len] = '\0';
	*outp = data;
	data = NULL;
	if (lenp != NULL)
		*lenp = len;
	r = STEP_OK;
out:
	free(data);
	close(fd);
	return r;
}

int
util_write_file_atomic(const char *path, const void *p, size_t n, int mode)
{
	char tmp[PATH_MAX];
	int fd, r;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
		return STEP_EINVAL;
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)) < 0)
		return STEP_ESYS;
	r = util_write_all(fd, p, n);
	if (r == 0 && fsync(fd) != 0)
		r = STEP_ESYS;
	if (close(fd) != 0 && r == 0)
		r = STEP_ESYS;
	if (r == 0 && rename(tmp, path) != 0)
		r = STEP_ESYS;
	if (r != 0) {
		int saved = errno;

		unlink(tmp);
		errno = saved;
	}
	return r;
}

int
util_mkdirs(const char *path, int mode)
{
	char tmp[PATH_MAX];
	size_t len = strlen(path);
	char *s;

	if (len == 0 || len >= sizeof(tmp))
		return STEP_EINVAL;
	memcpy(tmp, path, len + 1);
	for (s = tmp + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(tmp, (mode_t)mode) != 0 && errno != EEXIST)
			return STEP_ESYS;
		*s = '/';
	}
	if (mkdir(tmp, (mode_t)mode) != 0 && errno != EEXIST)
		return STEP_ESYS;
	return STEP_OK;
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void
util_b64_encode(const void *p, size_t n, char *out)
{
	const uint8_t *s = p;
	size_t i, o = 0;

	for (i = 0; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];

		out[o++] = b64chars[v >> 18];
		out[o++] = b64chars[(v >> 12) & 63];
		out[o++] = b64chars[(v >> 6) & 63];
		out[o++] = b64chars[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);

		out[o++] = b64chars[v >> 18];
		out[o++] = b64chars[(v >> 12) & 63];
		out[o++] = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
}

static int
b64val(char c)
{
	const char *p;

	if (c == '\0' || (p = strchr(b64chars, c)) == NULL)
		return -1;
	return (int)(p - b64chars);
}

static int
hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int
util_hex_decode(const char *s, uint8_t *out, size_t n)
{
	size_t i;
	int hi, lo;

	for (i = 0; i < n; i++) {
		if ((hi = hex_digit(s[2 * i])) < 0 || (lo = hex_digit(s[2 * i + 1])) < 0)
			return STEP_EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int
util_b64_decode(const char *s, size_t len, uint8_t *out, size_t *outlen)
{
	size_t i, o = 0;

	if (len % 4 != 0)
		return STEP_EINVAL;
	for (i = 0; i < len; i += 4) {
		int a = b64val(s[i]), b = b64val(s[i + 1]);
		int c = s[i + 2] == '=' ? 0 : b64val(s[i + 2]);
		int d = s[i + 3] == '=' ? 0 : b64val(s[i + 3]);
		uint32_t v;

		if (a < 0 || b < 0 || c < 0 || d < 0)
			return STEP_EINVAL;
		if ((s[i + 2] == '=' || s[i + 3] == '=') && i + 4 != len)
			return STEP_EINVAL;
		if (s[i + 2] == '=' && s[i + 3] != '=')
			return STEP_EINVAL;
		v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
		out[o++] = (uint8_t)(v >> 16);
		if (s[i + 2] != '=')
			out[o++] = (uint8_t)(v >> 8);
		if (s[i + 3] != '=')
			out[o++] = (uint8_t)v;
	}
	*outlen = o;
	return STEP_OK;
}

char *
util_put_u64(char *p, uint64_t v)
{
	char tmp[20];
	size_t n = 0;

	do
		tmp[n++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	while (n > 0)
		*p++ = tmp[--n];
	return p;
}
