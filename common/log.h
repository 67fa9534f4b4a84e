/*
 * log.h — the one logger: levels, to stderr (journald adds timestamps) or syslog.
 * Never log passwords, tokens or file contents.
 */
#ifndef STEP_LOG_H
#define STEP_LOG_H

#include <stdbool.h>

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* ident: program name; level: messages above it are dropped; use_syslog: else stderr. */
void log_init(const char *ident, int level, bool use_syslog);
void log_set_level(int level);
int log_get_level(void);

void log_emit(int level, int with_errno, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void fatal_emit(int with_errno, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

#define LOG_AT(lvl, e, ...)                                                                        \
	do {                                                                                       \
		if ((lvl) <= log_get_level())                                                      \
			log_emit((lvl), (e), __func__, __VA_ARGS__);                               \
	} while (0)

#define log_debug(...) LOG_AT(LOG_LVL_DEBUG, 0, __VA_ARGS__)
#define log_info(...)  LOG_AT(LOG_LVL_INFO, 0, __VA_ARGS__)
#define log_warn(...)  LOG_AT(LOG_LVL_WARN, 1, __VA_ARGS__) /* appends strerror(errno) */
#define log_warnx(...) LOG_AT(LOG_LVL_WARN, 0, __VA_ARGS__)
#define log_error(...) LOG_AT(LOG_LVL_ERROR, 0, __VA_ARGS__)
#define fatal(...)     fatal_emit(1, __func__, __VA_ARGS__)
#define fatalx(...)    fatal_emit(0, __func__, __VA_ARGS__)

#endif
