/*
 * links.h — hard links as the backup sees them: the link group a file's tree entry carries
 * (tree.h's link) when its inode has several names, so that restore can make them one
 * inode again. Pure: no I/O.
 */
#ifndef STEP_LINKS_H
#define STEP_LINKS_H

#include <stdint.h>
#include <sys/stat.h>

/*
 * The link group of the file st describes: 0 for anything but a regular file with more
 * than one name, else a nonzero 64-bit mix of its device and inode numbers (the same in
 * every snapshot while the inode lives, so unchanged trees keep their ids).
 */
uint64_t links_group(const struct stat *st);

#endif
