/*
 * lock.h — keeps two sync/prune runs against the same state from overlapping.
 *
 * flock(2) on "<state>.lock": the kernel drops the lock when the holder dies, so a
 * crashed run never leaves a stale lock behind; the holder's pid is written into the
 * file only to name it in the refusal message.
 */
#ifndef STEP_LOCK_H
#define STEP_LOCK_H

#include <sys/types.h>

/*
 * Takes the lock for state_path without waiting. Returns 0 and the descriptor in *fdp
 * (release with lock_release()); STEP_EBUSY when another process holds it (*holderp
 * gets its pid when known, else 0); STEP_ESYS when the lock file cannot be created.
 */
int lock_acquire(const char *state_path, int *fdp, pid_t *holderp);

/* Releases the lock (closing the descriptor); lock_release(-1) does nothing. */
void lock_release(int fd);

#endif
