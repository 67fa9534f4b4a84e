/*
 * meta.h — opens ROOT/meta.db (SQLite, WAL, busy timeout) and creates stepd's schema:
 * objects, uploads, data records, users, info (name/value: the store_id) and obj_gen (per
 * user: how many times a complete object of that user was removed). One connection per caller;
 * callers never share a connection between threads without their own lock.
 */
#ifndef STEPD_META_H
#define STEPD_META_H

#include <sqlite3.h>

/* Returns 0 and *out (close with sqlite3_close), or STEP_EIO. */
int meta_open(const char *root, sqlite3 **out);
/* Runs one statement without results; 0 or STEP_EIO. */
int meta_exec(sqlite3 *db, const char *sql);

#endif
