/* log.c — leveled logging to stderr or syslog; thread-safe (one write per line). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "log.h"

static const char *log_ident = "step";
static int log_level = LOG_LVL_INFO;
static bool log_syslog;

void
log_init(const char *ident, int level, bool use_syslog)
{
	log_ident = ident;
	log_level = level;
	log_syslog = use_syslog;
	if (use_syslog)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void
log_set_level(int level)
{
	log_level = level;
}

int
log_get_level(void)
{
	return log_level;
}

static void __attribute__((format(printf, 4, 0)))
log_vemit(int level, int with_errno, const char *func, const char *fmt, va_list ap)
{
	static const char *names[] = { "error", "warning", "info", "debug" };
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char msg[1024];
	char line[1200];
	int saved = errno;
	int n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (with_errno) {
		size_t len = strlen(msg);
		snprintf(msg + len, sizeof(msg) - len, ": %s", strerror(saved));
	}
	if (level < 0)
		level = 0;
	if (level > LOG_LVL_DEBUG)
		level = LOG_LVL_DEBUG;
	if (log_syslog) {
		syslog(prio[level], "%s", msg);
		return;
	}
	if (log_level >= LOG_LVL_DEBUG)
		n = snprintf(
		    line, sizeof(line), "%s: %s: %s: %s\n", log_ident, names[level], func, msg);
	else
		n = snprintf(line, sizeof(line), "%s: %s: %s\n", log_ident, names[level], msg);
	if (n > 0) {
		size_t len = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;
		ssize_t w = write(STDERR_FILENO, line, len);
		(void)w;
	}
	errno = saved;
}

void
log_emit(int level, int with_errno, const char *func, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vemit(level, with_errno, func, fmt, ap);
	va_end(ap);
}

void
fatal_emit(int with_errno, const char *func, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vemit(LOG_LVL_ERROR, with_errno, func, fmt, ap);
	va_end(ap);
	exit(1);
}
