/*
 * server_id.h — which (server, user) a state database describes. The objects table is
 * a cache of what one server holds for one user; used against another one (a config
 * changed, a SIGHUP, --server on the command line), that cache would make sync skip
 * content the new server never received, and its snapshots would not restore. So the
 * state remembers its server, and forgets the cache when the server changes.
 */
#ifndef STEP_SERVER_ID_H
#define STEP_SERVER_ID_H

#include <stddef.h>
#include <stdint.h>

struct db;

/*
 * Records id ("user@host:port") as the state's server. When another id was recorded,
 * the objects known to be on the server are forgotten first (in the same transaction)
 * and *changedp is 1, else 0. A state that never recorded one takes id as it is.
 * The objects table must exist (files_migrate()). 0, STEP_EBUSY or STEP_EIO.
 */
int server_id_bind(struct db *db, const char *id, int *changedp);

/*
 * The store the objects cache was last confirmed against, for servers with stepd's
 * "objgen" extension: the store's id and the user's object generation (bumped by the
 * server whenever one of the user's objects is deleted). While both are what the server
 * says at login, no object the cache lists can have gone. get gives "" and 0 when none
 * was recorded. 0 or a STEP_E*.
 */
int server_id_store_get(struct db *db, char *store_id, size_t len, int64_t *genp);
int server_id_store_set(struct db *db, const char *store_id, int64_t gen);

#endif
