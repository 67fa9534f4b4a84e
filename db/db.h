/*
 * db.h — the agent's SQLite state database: open (WAL, busy timeout, foreign keys),
 * per-module schema migrations, transactions.
 *
 * Each module (uploads, files, snapshots, queue, ...) owns its tables and migrates them
 * itself with db_migrate(), so adding a module never means editing this file. The
 * version of every module lives in one table: schema_version(module PRIMARY KEY,
 * version). This module never prints; errors come back as STEP_E* codes and, where
 * useful, db_errmsg() holds SQLite's sentence.
 *
 * A struct db is not shared between threads: every thread opens its own (WAL lets them
 * read and write the same file; the busy timeout covers short write locks).
 */
#ifndef STEP_DB_H
#define STEP_DB_H

#include <stdint.h>
#include <sqlite3.h>

#define DB_BUSY_TIMEOUT_MS 10000 /* how long a statement waits for another writer */

struct db; /* opaque: a sqlite3 handle plus transaction depth */

/*
 * Opens (creating if needed, with its parent directories, mode 0700) the database at
 * path, switches it to WAL, sets the busy timeout and foreign_keys=ON, and creates the
 * schema_version table. path ":memory:" gives a private in-memory database (tests).
 * Returns 0 and a new handle in *outp (close with db_close()); STEP_ESYS when the
 * directory cannot be created; STEP_EIO when SQLite cannot open the file (errbuf, when
 * not NULL, holds "cannot open 'PATH': reason"); STEP_ENOMEM.
 */
int db_open(const char *path, struct db **outp, char *errbuf, size_t errlen);

/* Closes the database (rolling back an open transaction); db_close(NULL) does nothing. */
void db_close(struct db *db);

/* The underlying handle, borrowed: prepare statements on it, never close it. */
sqlite3 *db_handle(struct db *db);

/* SQLite's last error message for this handle (borrowed, valid until the next call). */
const char *db_errmsg(struct db *db);

/*
 * Runs one or more SQL statements without results. Returns 0, STEP_EBUSY when the
 * database stayed locked past the busy timeout, or STEP_EIO.
 */
int db_exec(struct db *db, const char *sql);

/*
 * Brings module's tables up to date. steps[i] is the SQL (one or more statements) that
 * moves the schema from version i to version i+1; the module's stored version says how
 * many steps already ran, and the missing ones run in one transaction together with the
 * version update. Steps are append-only: never edit a released step, add a new one.
 * Returns 0; STEP_EINVAL when the stored version is newer than nsteps (a downgrade);
 * STEP_EBUSY or STEP_EIO (nothing is changed then).
 */
int db_migrate(struct db *db, const char *module, const char *const *steps, int nsteps);

/* The module's schema version in *versionp (0 when never migrated); 0 or STEP_EIO. */
int db_schema_version(struct db *db, const char *module, int *versionp);

/*
 * Transactions. db_begin() starts one (BEGIN IMMEDIATE, so the write lock is taken up
 * front and busy waits happen here, not mid-way); nested calls only count depth and the
 * outermost db_commit() commits. db_rollback() rolls the whole transaction back,
 * whatever the depth. Each returns 0, STEP_EBUSY or STEP_EIO.
 */
int db_begin(struct db *db);
int db_commit(struct db *db);
int db_rollback(struct db *db);

/* Maps an SQLite result code to STEP_OK / STEP_EBUSY / STEP_ENOMEM / STEP_EIO. */
int db_err(int sqlite_rc);

#endif
