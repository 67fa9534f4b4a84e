/*
 * server_id.c — the (server, user) a state database describes; see server_id.h.
 */
#include <sqlite3.h>
#include <string.h>

#include "db.h"
#include "err.h"
#include "server_id.h"

static const char *const server_id_steps[] = {
	"CREATE TABLE server_id(one INTEGER PRIMARY KEY CHECK (one = 1), id TEXT NOT NULL)",
	"CREATE TABLE server_store(one INTEGER PRIMARY KEY CHECK (one = 1),"
	" store_id TEXT NOT NULL, gen INTEGER NOT NULL)",
};
#define NSTEPS ((int)(sizeof(server_id_steps) / sizeof(server_id_steps[0])))

/* The recorded id copied into out ("" when none); 0 or a STEP_E* code. */
static int
recorded(struct db *db, char *out, size_t outlen)
{
	sqlite3_stmt *st = NULL;
	int rc;

	out[0] = '\0';
	rc = sqlite3_prepare_v2(db_handle(db), "SELECT id FROM server_id", -1, &st, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *s = sqlite3_column_text(st, 0);

		if (s != NULL && strlen((const char *)s) < outlen)
			memcpy(out, s, strlen((const char *)s) + 1);
		rc = SQLITE_DONE;
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? STEP_OK : db_err(rc);
}

int
server_id_bind(struct db *db, const char *id, int *changedp)
{
	char old[1024];
	sqlite3_stmt *st = NULL;
	int r, rc;

	*changedp = 0;
	if ((r = db_migrate(db, "server_id", server_id_steps, NSTEPS)) != 0)
		return r;
	if ((r = recorded(db, old, sizeof(old))) != 0)
		return r;
	if (strcmp(old, id) == 0)
		return STEP_OK;
	if ((r = db_begin(db)) != 0)
		return r;
	if (old[0] != '\0') {
		if ((r = db_exec(db, "DELETE FROM objects")) != 0)
			goto fail;
		*changedp = 1;
	}
	rc = sqlite3_prepare_v2(db_handle(db),
	    "INSERT OR REPLACE INTO server_id(one, id) VALUES (1, ?)", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		r = db_err(rc);
		goto fail;
	}
	return db_commit(db);
fail:
	*changedp = 0;
	db_rollback(db);
	return r;
}

int
server_id_store_get(struct db *db, char *store_id, size_t len, int64_t *genp)
{
	sqlite3_stmt *st = NULL;
	int r, rc;

	store_id[0] = '\0';
	*genp = 0;
	if ((r = db_migrate(db, "server_id", server_id_steps, NSTEPS)) != 0)
		return r;
	rc = sqlite3_prepare_v2(
	    db_handle(db), "SELECT store_id, gen FROM server_store", -1, &st, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const unsigned char *s = sqlite3_column_text(st, 0);

		if (s != NULL && strlen((const char *)s) < len)
			memcpy(store_id, s, strlen((const char *)s) + 1);
		*genp = sqlite3_column_int64(st, 1);
		rc = SQLITE_DONE;
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? STEP_OK : db_err(rc);
}

int
server_id_store_set(struct db *db, const char *store_id, int64_t gen)
{
	sqlite3_stmt *st = NULL;
	int r, rc;

	if ((r = db_migrate(db, "server_id", server_id_steps, NSTEPS)) != 0)
		return r;
	rc = sqlite3_prepare_v2(db_handle(db),
	    "INSERT OR REPLACE INTO server_store(one, store_id, gen) VALUES (1, ?, ?)", -1, &st,
	    NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, store_id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, gen);
		rc = sqlite3_step(st);
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? STEP_OK : db_err(rc);
}
