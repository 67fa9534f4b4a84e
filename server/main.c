/*
 * main.c — stepd: options, user administration, then store + auth + event loop.
 * Parses options and dispatches; the one piece of work of its own is the start-up order
 * (bind, drop privileges, then open the root), which belongs to nobody else.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <pwd.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "auth.h"
#include "err.h"
#include "log.h"
#include "loop.h"
#include "step.h"
#include "stepd_conf.h"
#include "store.h"
#include "util.h"

#define STEPD_DEFAULT_BLOCK 20480 /* what deployed clients cut blocks at (protocol §8) */

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: stepd --root DIR [options]\n"
	    "       stepd --root DIR init             (create a new, empty root)\n"
	    "       stepd --root DIR user add NAME   (password read from stdin, one line)\n"
	    "       stepd --root DIR user del NAME     (its tokens stop working at once)\n"
	    "       stepd --root DIR user passwd NAME  (new password from stdin; old tokens end)\n"
	    "       stepd --root DIR user list\n"
	    "\n"
	    "options:\n"
	    "  --config FILE          read settings from FILE: 'key = value' lines (optionally\n"
	    "                         under [stepd]), keys are the long options below;\n"
	    "                         flags on the command line override the file\n"
	    "  --bind ADDR            address to listen on (default 0.0.0.0)\n"
	    "  --port N               TCP port (default %d; 0 picks a free port)\n"
	    "  --port-file FILE       write the chosen port to FILE (atomically)\n"
	    "  --tls-port N           also listen for STEP over TLS (1.2 or newer) on port N\n"
	    "                         (0 picks a free port); needs --tls-cert and --tls-key\n"
	    "  --tls-cert FILE        PEM certificate chain for the TLS port (leaf first)\n"
	    "  --tls-key FILE         PEM private key of that certificate\n"
	    "  --tls-port-file FILE   write the chosen TLS port to FILE (before --port-file)\n"
	    "  --no-plain             with --tls-port: serve TLS only (no plain port)\n"
	    "  --root DIR             storage root (objects, uploads, metadata, secret);\n"
	    "                         it must exist (a mistyped path is an error)\n"
	    "  --init                 create the root if it does not exist\n"
	    "  --auth users|open      user database (default) or the course rule\n"
	    "                         password == md5(username)\n"
	    "  --block-size BYTES     block size of new upload plans and of download plans\n"
	    "                         (default 20480, the deployed clients' value; clients\n"
	    "                         that know big_blocks/any_block ask for more)\n"
	    "  --max-block-size BYTES largest block a client may ask for (big_blocks\n"
	    "                         extension; default 1M, at most --block-size: off)\n"
	    "  --max-object-size BYTES  largest accepted object (default 64G)\n"
	    "  --max-uploads-per-user N  uploads in progress per user; one more SAVE gets\n"
	    "                         429 (default %d; 0: no limit)\n"
	    "  --token-ttl SECONDS    token lifetime (default 86400)\n"
	    "  --upload-ttl SECONDS   drop uploads idle this long (default 604800)\n"
	    "  --idle-timeout SECONDS close idle connections (default 300)\n"
	    "  --max-connections N    refuse connections beyond N with 503 (default 4096)\n"
	    "  --max-per-source N     connections per client address (IPv6: per /64)\n"
	    "                         (default %d; 0: no limit)\n"
	    "  --max-unauth-per-source N  of those, not yet authenticated (default %d;\n"
	    "                         0: no limit)\n"
	    "  --login-timeout SECONDS  a connection must log in (or show a valid token)\n"
	    "                         within this time or is closed (default %d)\n"
	    "  --threads N            event-loop workers (default: one per CPU)\n"
	    "  --login-fail-limit N   failed logins for one user name from one client\n"
	    "                         address (x%d for an address, whatever the names)\n"
	    "                         before each further one makes it wait: 1 s, then\n"
	    "                         doubling up to the window (default %d; 0: off); a\n"
	    "                         waiting client gets 429 \"too many failed logins;\n"
	    "                         retry in N s\"; a name is never locked for everyone\n"
	    "  --login-fail-window SECONDS  failures are forgotten this long after the last\n"
	    "                         one; also the longest wait (default %d)\n"
	    "  --login-fail-delay SECONDS  the first wait (default 1)\n"
	    "  --setuid USER          after binding the ports and reading the TLS key,\n"
	    "                         switch to USER's uid and gid (start as root), then\n"
	    "                         open or create the root as that user; also for 'user'\n"
	    "  -v, -q                 more / less logging\n"
	    "  --help                 this text\n"
	    "  --version              the version\n"
	    "\n"
	    "Test-only: STEP_FAULT=write:N[,fsync:M][,eio] makes the N-th block write (M-th\n"
	    "commit sync) fail with ENOSPC (or EIO).\n",
	    STEP_DEFAULT_PORT, STORE_MAX_UPLOADS, LOOP_MAX_PER_SOURCE, LOOP_MAX_UNAUTH_PER_SOURCE,
	    LOOP_LOGIN_TIMEOUT, AUTH_ADDR_FACTOR, AUTH_FAIL_LIMIT, AUTH_FAIL_WINDOW);
}

struct opts {
	const char *bind, *port_file, *root, *auth;
	const char *tls_cert, *tls_key, *tls_port_file;
	long long tls_port; /* -1: no TLS listener */
	long long port, block_size, token_ttl, upload_ttl, idle_timeout, max_conns, threads;
	unsigned long long max_object;
	int verbosity;
	long long fail_limit, fail_window; /* failed-login throttle: count, seconds */
	const char *setuid;                /* NULL: keep the starting user */
	uid_t uid;                         /* of setuid, looked up before binding */
	gid_t gid;
	long long max_block; /* --max-block-size (default STORE_BIG_BLOCK_MAX) */
	long long login_timeout, max_per_source, max_unauth; /* loop_opts */
	long long fail_delay;                                /* seconds, first throttle wait */
	long long max_uploads;                               /* per user */
	int no_plain;
	int init; /* --init or `init`: create a missing root */
};

/*
 * Looks up the --setuid user: 0 with o->uid/o->gid, or -1 after printing why (no such
 * user, not started as root, or the user is root itself).
 */
static int
setuid_lookup(struct opts *o)
{
	struct passwd *pw;

	errno = 0;
	if ((pw = getpwnam(o->setuid)) == NULL) {
		fprintf(stderr, "stepd: --setuid: no user '%s'%s%s\n", o->setuid,
		    errno != 0 ? ": " : "", errno != 0 ? strerror(errno) : "");
		return -1;
	}
	if (pw->pw_uid == 0) {
		fprintf(stderr, "stepd: --setuid: '%s' is root; name an unprivileged user\n",
		    o->setuid);
		return -1;
	}
	if (geteuid() != 0) {
		fprintf(
		    stderr, "stepd: --setuid %s needs stepd to be started as root\n", o->setuid);
		return -1;
	}
	o->uid = pw->pw_uid;
	o->gid = pw->pw_gid;
	return 0;
}

/*
 * Becomes o->uid/o->gid for good (real, effective and saved IDs; the only supplementary
 * group is gid), then checks that root cannot be regained. 0, or -1 with errbuf filled.
 * Call before any thread exists.
 */
static int
drop_privileges(const struct opts *o, char *errbuf, size_t errlen)
{
	uid_t ru, eu, su;
	gid_t rg, eg, sg, groups[2];

	if (setgroups(1, &o->gid) != 0 || setresgid(o->gid, o->gid, o->gid) != 0 ||
	    setresuid(o->uid, o->uid, o->uid) != 0) {
		snprintf(
		    errbuf, errlen, "cannot switch to user '%s': %s", o->setuid, strerror(errno));
		return -1;
	}
	if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0 || getresuid(&ru, &eu, &su) != 0 ||
	    getresgid(&rg, &eg, &sg) != 0 || ru != o->uid || eu != o->uid || su != o->uid ||
	    rg != o->gid || eg != o->gid || sg != o->gid || getgroups(2, groups) != 1 ||
	    groups[0] != o->gid) {
		snprintf(errbuf, errlen, "privileges not dropped to '%s'", o->setuid);
		return -1;
	}
	log_info("running as user '%s' (uid %ld, gid %ld)", o->setuid, (long)o->uid, (long)o->gid);
	return 0;
}

/* Takes group and other permissions (and set-id, sticky bits) away from the directory fd
 * (or its entry name, not followed, when it exists); never adds one: a 0555 root stays
 * read-only for its owner. */
static void
tighten_dir(int dirfd, const char *name, const char *path)
{
	struct stat sb;
	int fd = name == NULL
	    ? dirfd
	    : openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	if (fd < 0)
		return; /* absent (created 0700 later), or a symlink the store will refuse */
	if (fstat(fd, &sb) == 0 && (sb.st_mode & 07077) != 0) {
		mode_t m = sb.st_mode & 0700;

		if (fchmod(fd, m) != 0)
			log_warn("cannot set '%s%s%s' to mode %04o", path, name ? "/" : "",
			    name ? name : "", (unsigned)m);
		else
			log_info("'%s%s%s' was mode %04o, now %04o", path, name ? "/" : "",
			    name ? name : "", (unsigned)(sb.st_mode & 07777), (unsigned)m);
	}
	if (fd != dirfd)
		close(fd);
}

/*
 * Creates the root if it is missing and --init was given (0700; without it a missing root,
 * most often a mistyped path, is an error) and writes its real path (symlinks in the given path
 * resolved: the root itself may be a symlink, nothing inside it may) to out. The root,
 * obj/ and tmp/ of ours with group or other permissions are tightened to 0700. 0, or -1
 * after printing why.
 */
static int
prepare_root(const struct opts *o, char *out)
{
	struct stat sb;
	int fd;

	if (!o->init && stat(o->root, &sb) != 0 && errno == ENOENT) {
		fprintf(stderr,
		    "stepd: the root '%s' does not exist; create it with 'stepd --root %s init' "
		    "(or start with --init)\n",
		    o->root, o->root);
		return -1;
	}
	if (util_mkdirs(o->root, 0700) != 0 || realpath(o->root, out) == NULL) {
		fprintf(stderr, "stepd: cannot create '%s': %s\n", o->root, strerror(errno));
		return -1;
	}
	if (stat(out, &sb) == 0 && sb.st_uid != geteuid()) {
		fprintf(stderr, "stepd: the root '%s' belongs to uid %ld, not to %s (uid %ld)\n",
		    out, (long)sb.st_uid, o->setuid != NULL ? o->setuid : "this user",
		    (long)geteuid());
		return -1;
	}
	if ((fd = open(out, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
		fprintf(stderr, "stepd: cannot open '%s': %s\n", out, strerror(errno));
		return -1;
	}
	tighten_dir(fd, NULL, out);
	tighten_dir(fd, "obj", out);
	tighten_dir(fd, "tmp", out);
	close(fd);
	return 0;
}

/*
 * Takes ROOT/stepd.lock (flock, held for the life of the process) and writes our PID in
 * it, so that a second stepd on the same root (SQLite metadata shared without a cluster
 * backend) refuses to start, naming the first one. 0, or -1 after printing why.
 */
static int
lock_root(const char *root)
{
	char path[PATH_MAX], pid[32] = "";
	ssize_t n;
	int fd;

	if (snprintf(path, sizeof(path), "%s/stepd.lock", root) >= (int)sizeof(path) ||
	    (fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600)) < 0) {
		fprintf(stderr, "stepd: cannot open '%s/stepd.lock': %s\n", root, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		if ((n = pread(fd, pid, sizeof(pid) - 1, 0)) > 0)
			pid[strcspn(pid, "\n")] = '\0';
		fprintf(stderr, "stepd: another stepd (PID %s) is serving '%s'\n",
		    pid[0] != '\0' ? pid : "unknown", root);
		close(fd);
		return -1;
	}
	n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n)
		log_warn("cannot write our PID to '%s'", path);
	return 0; /* fd stays open: the lock lasts as long as the process */
}

static int
num_opt(const char *name, const char *s, long long min, long long max, long long *out)
{
	if (util_parse_ll(s, min, max, out) != 0) {
		fprintf(
		    stderr, "stepd: invalid value '%s' for --%s (%lld..%lld)\n", s, name, min, max);
		return -1;
	}
	return 0;
}

static int
print_user(void *arg, const char *name)
{
	printf("%s\n", name);
	return 0;
}

static int
cmd_user(const struct opts *o, int argc, char **argv)
{
	char root[PATH_MAX], err[512];
	int r;

	if (o->setuid != NULL && drop_privileges(o, err, sizeof(err)) != 0) {
		fprintf(stderr, "stepd: %s\n", err);
		return 1;
	}
	if (prepare_root(o, root) != 0)
		return 1;
	if (argc == 2 && strcmp(argv[1], "list") == 0) {
		r = auth_user_list(root, print_user, NULL);
	} else if (argc == 3 && (strcmp(argv[1], "add") == 0 || strcmp(argv[1], "passwd") == 0)) {
		char line[1024];
		size_t n;

		if (fgets(line, sizeof(line), stdin) == NULL) {
			fprintf(stderr, "stepd: no password on stdin\n");
			return 1;
		}
		n = strcspn(line, "\r\n");
		line[n] = '\0';
		if (n == 0) {
			fprintf(stderr, "stepd: empty password\n");
			return 1;
		}
		r = strcmp(argv[1], "add") == 0 ? auth_user_add(root, argv[2], line)
		                                : auth_user_passwd(root, argv[2], line);
		OPENSSL_cleanse(line, sizeof(line));
	} else if (argc == 3 && strcmp(argv[1], "del") == 0) {
		r = auth_user_del(root, argv[2]);
	} else {
		usage(stderr);
		return 2;
	}
	if (r == STEP_EEXIST)
		fprintf(stderr, "stepd: user '%s' already exists\n", argv[2]);
	else if (r == STEP_ENOENT)
		fprintf(stderr, "stepd: no user '%s'\n", argv[2]);
	else if (r == STEP_EINVAL)
		fprintf(stderr,
		    "stepd: invalid user name '%s' (1-%d letters, digits and . _ @ + -, starting "
		    "with a letter, a digit or _)\n",
		    argv[2], AUTH_MAX_NEW_USER);
	else if (r != 0)
		fprintf(stderr, "stepd: user database error in '%s'\n", root);
	return r == 0 ? 0 : 1;
}

static void
raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			log_warn("cannot raise the open-file limit");
	}
}

/* Opens the authenticator and the store over the root (already prepared). */
static int
open_backend(const struct opts *o, const char *root, struct auth **au, struct store **st, char *err,
    size_t errlen)
{
	struct store_opts so = { 0 };

	if (auth_open(root, strcmp(o->auth, "open") == 0 ? AUTH_OPEN : AUTH_USERS, o->token_ttl, au,
	        err, errlen) != 0)
		return -1;
	if (auth_set_throttle(*au, (unsigned)o->fail_limit, (unsigned)o->fail_window) != 0 ||
	    auth_set_throttle_delay(*au, (unsigned)o->fail_delay) != 0) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	so.root = root;
	so.block_size = (uint32_t)o->block_size;
	so.max_object_size = o->max_object;
	so.upload_ttl = o->upload_ttl;
	if (store_open(&so, st, err, errlen) != 0)
		return -1;
	store_set_max_block_size(*st, (uint32_t)o->max_block);
	store_set_max_uploads(*st, (int)o->max_uploads);
	return 0;
}

static int
serve(const struct opts *o)
{
	struct loop_opts lo = { 0 };
	struct store *st = NULL;
	struct auth *au = NULL;
	struct loop *l = NULL;
	char err[512] = "", root[PATH_MAX];
	sigset_t sigs;
	int r = 1;

	/* Block the stop signals before any thread exists: only loop_run's sigwait gets them. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	raise_nofile();
	/* Without --setuid the root is opened first, so a bad root fails before listening.
	 * With it, the ports are bound and the TLS key read as root, then the root is opened
	 * (and created) only as the unprivileged user. */
	if (o->setuid == NULL &&
	    (prepare_root(o, root) != 0 || lock_root(root) != 0 ||
	        open_backend(o, root, &au, &st, err, sizeof(err)) != 0))
		goto out;
	lo.bind = o->bind;
	lo.port = (int)o->port;
	lo.port_file = o->port_file;
	if (o->tls_port >= 0) {
		lo.tls_cert = o->tls_cert;
		lo.tls_key = o->tls_key;
		lo.tls_port = (int)o->tls_port;
		lo.tls_port_file = o->tls_port_file;
	}
	lo.threads = (int)o->threads;
	lo.idle_timeout = (int)o->idle_timeout;
	lo.max_connections = (int)o->max_conns;
	lo.login_timeout = (int)o->login_timeout;
	lo.max_per_source = (int)o->max_per_source;
	lo.max_unauth_per_source = (int)o->max_unauth;
	lo.no_plain = o->no_plain;
	/* Binary parts up to the big_blocks extension's blocks (store_file_save_bs). */
	lo.max_bin = (uint32_t)(o->block_size > o->max_block ? o->block_size : o->max_block);
	if (lo.max_bin < STEP_SPEC_MAX_BLOCK)
		lo.max_bin = STEP_SPEC_MAX_BLOCK;
	if (loop_new(&lo, st, au, &l, err, sizeof(err)) != 0)
		goto out;
	if (o->setuid != NULL) {
		if (drop_privileges(o, err, sizeof(err)) != 0 || prepare_root(o, root) != 0 ||
		    lock_root(root) != 0 || open_backend(o, root, &au, &st, err, sizeof(err)) != 0)
			goto out;
		loop_set_backend(l, st, au);
	}
	/* PBKDF2 of LOGINs runs on these, never on an event-loop worker. */
	if (auth_start_threads(au, 2) != 0) {
		snprintf(err, sizeof(err), "cannot start the password threads");
		goto out;
	}
	r = loop_run(l) == 0 ? 0 : 1;
out:
	if (err[0] != '\0')
		fprintf(stderr, "stepd: %s\n", err);
	store_free(st);        /* finishes queued commits before the loop's memory goes */
	auth_stop_threads(au); /* answers queued LOGINs into the loop's queues */
	loop_free(l);
	auth_free(au);
	if (r == 0)
		log_info("stopped");
	return r;
}

enum {
	O_BIND = 256,
	O_PORT,
	O_PORTFILE,
	O_ROOT,
	O_AUTH,
	O_BS,
	O_MAXBS,
	O_TTTL,
	O_UTTL,
	O_IDLE,
	O_MAXC,
	O_THR,
	O_MAXO,
	O_TLSPORT,
	O_TLSCERT,
	O_TLSKEY,
	O_TLSPORTFILE,
	O_FAILLIMIT,
	O_FAILWINDOW,
	O_SETUID,
	O_LOGINTO,
	O_MAXSRC,
	O_MAXUNAUTH,
	O_NOPLAIN,
	O_FAILDELAY,
	O_MAXUP,
	O_INIT,
	O_HELP,
	O_VERSION
};

static const struct option lopts[] = { { "bind", required_argument, NULL, O_BIND },
	{ "port", required_argument, NULL, O_PORT },
	{ "port-file", required_argument, NULL, O_PORTFILE },
	{ "root", required_argument, NULL, O_ROOT }, { "auth", required_argument, NULL, O_AUTH },
	{ "block-size", required_argument, NULL, O_BS },
	{ "max-block-size", required_argument, NULL, O_MAXBS },
	{ "token-ttl", required_argument, NULL, O_TTTL },
	{ "upload-ttl", required_argument, NULL, O_UTTL },
	{ "idle-timeout", required_argument, NULL, O_IDLE },
	{ "max-connections", required_argument, NULL, O_MAXC },
	{ "threads", required_argument, NULL, O_THR },
	{ "max-object-size", required_argument, NULL, O_MAXO },
	{ "tls-port", required_argument, NULL, O_TLSPORT },
	{ "tls-cert", required_argument, NULL, O_TLSCERT },
	{ "tls-key", required_argument, NULL, O_TLSKEY },
	{ "tls-port-file", required_argument, NULL, O_TLSPORTFILE },
	{ "login-fail-limit", required_argument, NULL, O_FAILLIMIT },
	{ "login-fail-window", required_argument, NULL, O_FAILWINDOW },
	{ "setuid", required_argument, NULL, O_SETUID },
	{ "login-timeout", required_argument, NULL, O_LOGINTO },
	{ "max-per-source", required_argument, NULL, O_MAXSRC },
	{ "max-unauth-per-source", required_argument, NULL, O_MAXUNAUTH },
	{ "no-plain", no_argument, NULL, O_NOPLAIN },
	{ "login-fail-delay", required_argument, NULL, O_FAILDELAY },
	{ "max-uploads-per-user", required_argument, NULL, O_MAXUP },
	{ "init", no_argument, NULL, O_INIT }, { "help", no_argument, NULL, O_HELP },
	{ "version", no_argument, NULL, O_VERSION }, { NULL, 0, NULL, 0 } };

/* The integer options: where each goes and its range. */
static const struct num_opt_def {
	int code;
	size_t off; /* of the long long in struct opts */
	long long min, max;
} num_opts[] = {
	{ O_PORT, offsetof(struct opts, port), 0, 65535 },
	{ O_TLSPORT, offsetof(struct opts, tls_port), 0, 65535 },
	{ O_TTTL, offsetof(struct opts, token_ttl), 1, 10LL * 365 * 86400 },
	{ O_UTTL, offsetof(struct opts, upload_ttl), 1, 10LL * 365 * 86400 },
	{ O_IDLE, offsetof(struct opts, idle_timeout), 1, 86400 * 30 },
	{ O_MAXC, offsetof(struct opts, max_conns), 1, 1000000 },
	{ O_THR, offsetof(struct opts, threads), 1, 256 },
	{ O_FAILLIMIT, offsetof(struct opts, fail_limit), 0, 1000000 },
	{ O_FAILWINDOW, offsetof(struct opts, fail_window), 1, 86400 * 30 },
	{ O_LOGINTO, offsetof(struct opts, login_timeout), 1, 86400 },
	{ O_MAXSRC, offsetof(struct opts, max_per_source), 0, 1000000 },
	{ O_MAXUNAUTH, offsetof(struct opts, max_unauth), 0, 1000000 },
	{ O_MAXUP, offsetof(struct opts, max_uploads), 0, 100000000 },
	{ O_FAILDELAY, offsetof(struct opts, fail_delay), 1, 86400 },
};

/* A size option (--block-size, --max-block-size): 1..16M. */
static int
size_opt(const char *name, const char *arg, long long *out)
{
	unsigned long long sz;

	if (util_parse_size(arg, &sz) != 0 || sz < 1 || sz > (16u << 20)) {
		fprintf(stderr, "stepd: invalid --%s '%s' (1..16M)\n", name, arg);
		return -1;
	}
	*out = (long long)sz;
	return 0;
}

/* Applies one parsed option other than --help and --version. 0, or -1 after saying why. */
static int
apply_opt(struct opts *o, int c, const char *arg)
{
	const struct option *lo;
	size_t i;

	for (i = 0; i < sizeof(num_opts) / sizeof(num_opts[0]); i++)
		if (num_opts[i].code == c) {
			for (lo = lopts; lo->val != c; lo++)
				;
			return num_opt(lo->name, arg, num_opts[i].min, num_opts[i].max,
			    (long long *)(void *)((char *)o + num_opts[i].off));
		}
	switch (c) {
	case O_BIND:
		o->bind = arg;
		return 0;
	case O_PORTFILE:
		o->port_file = arg;
		return 0;
	case O_TLSCERT:
		o->tls_cert = arg;
		return 0;
	case O_TLSKEY:
		o->tls_key = arg;
		return 0;
	case O_TLSPORTFILE:
		o->tls_port_file = arg;
		return 0;
	case O_ROOT:
		o->root = arg;
		return 0;
	case O_SETUID:
		o->setuid = arg;
		return 0;
	case O_NOPLAIN:
		o->no_plain = 1;
		return 0;
	case O_INIT:
		o->init = 1;
		return 0;
	case O_AUTH:
		o->auth = arg;
		if (strcmp(arg, "users") == 0 || strcmp(arg, "open") == 0)
			return 0;
		fprintf(stderr, "stepd: --auth must be 'users' or 'open'\n");
		return -1;
	case O_BS:
		return size_opt("block-size", arg, &o->block_size);
	case O_MAXBS:
		return size_opt("max-block-size", arg, &o->max_block);
	case O_MAXO:
		if (util_parse_size(arg, &o->max_object) == 0)
			return 0;
		fprintf(stderr, "stepd: invalid --max-object-size '%s'\n", arg);
		return -1;
	case 'v':
		o->verbosity++;
		return 0;
	case 'q':
		o->verbosity--;
		return 0;
	default:
		usage(stderr);
		return -1;
	}
}

/* Checks the options that only make sense together. 0, or 2 after saying why. */
static int
check_opts(const struct opts *o)
{
	if (o->root == NULL) {
		fprintf(stderr, "stepd: --root DIR is required\n");
		usage(stderr);
		return 2;
	}
	if (o->tls_port >= 0 && (o->tls_cert == NULL || o->tls_key == NULL)) {
		fprintf(stderr, "stepd: --tls-port needs --tls-cert FILE and --tls-key FILE\n");
		return 2;
	}
	if (o->tls_port < 0 && (o->tls_cert != NULL || o->tls_key != NULL || o->tls_port_file)) {
		fprintf(
		    stderr, "stepd: --tls-cert, --tls-key and --tls-port-file need --tls-port\n");
		return 2;
	}
	if (o->no_plain && o->tls_port < 0) {
		fprintf(stderr, "stepd: --no-plain needs --tls-port (TLS only)\n");
		return 2;
	}
	return 0;
}

/* `stepd --root DIR init`: creates the root (and nothing else yet). */
static int
cmd_init(struct opts *o)
{
	char root[PATH_MAX], err[512];

	if (o->setuid != NULL && drop_privileges(o, err, sizeof(err)) != 0) {
		fprintf(stderr, "stepd: %s\n", err);
		return 1;
	}
	o->init = 1;
	if (prepare_root(o, root) != 0)
		return 1;
	printf("stepd: root '%s' ready\n", root);
	return 0;
}

int
main(int argc, char **argv)
{
	struct opts o = { "0.0.0.0", NULL, NULL, "users", NULL, NULL, NULL, -1, STEP_DEFAULT_PORT,
		STEPD_DEFAULT_BLOCK, 86400, 7 * 86400, 300, 4096, 0, 64ull << 30, 0,
		AUTH_FAIL_LIMIT, AUTH_FAIL_WINDOW, NULL, 0, 0, STORE_BIG_BLOCK_MAX,
		LOOP_LOGIN_TIMEOUT, LOOP_MAX_PER_SOURCE, LOOP_MAX_UNAUTH_PER_SOURCE, 1,
		STORE_MAX_UPLOADS, 0, 0 };
	static const char *const conf_keys[] = { "bind", "port", "port-file", "root", "auth",
		"block-size", "max-block-size", "token-ttl", "upload-ttl", "idle-timeout",
		"max-connections", "threads", "max-object-size", "tls-port", "tls-cert", "tls-key",
		"tls-port-file", "login-fail-limit", "login-fail-window", "setuid", "login-timeout",
		"max-per-source", "max-unauth-per-source", "login-fail-delay",
		"max-uploads-per-user", NULL };
	char cerr[512];
	int c, r;

	umask(077);
#ifdef __GLIBC__
	/* Requests of a few MiB (PUTMANY's binary parts, big blocks) come and go all the time:
	 * glibc kept mapping and unmapping their buffers, and faulting them in again was 7%
	 * of stepd's CPU on a sync of many small files. Up to 32 MiB freed stays with the
	 * process instead. */
	mallopt(M_MMAP_THRESHOLD, 8 << 20);
	mallopt(M_TRIM_THRESHOLD, 32 << 20);
#endif
	atexit(stepd_conf_free);
	if (stepd_conf_expand(&argc, &argv, conf_keys, cerr, sizeof(cerr)) != 0) {
		fprintf(stderr, "stepd: %s\n", cerr);
		return 2;
	}
	while ((c = getopt_long(argc, argv, "+vq", lopts, NULL)) != -1) {
		if (c == O_HELP) {
			usage(stdout);
			return 0;
		}
		if (c == O_VERSION) {
			printf("stepd %s\n", STEPD_VERSION);
			return 0;
		}
		if (apply_opt(&o, c, optarg) != 0)
			return 2;
	}
	log_init("stepd", LOG_LVL_INFO + o.verbosity < 0 ? 0 : LOG_LVL_INFO + o.verbosity, false);
	if ((r = check_opts(&o)) != 0)
		return r;
	if (o.setuid != NULL && setuid_lookup(&o) != 0)
		return 1;
	if (optind < argc && strcmp(argv[optind], "user") == 0)
		return cmd_user(&o, argc - optind, argv + optind);
	if (optind + 1 == argc && strcmp(argv[optind], "init") == 0)
		return cmd_init(&o);
	if (optind < argc) {
		fprintf(stderr, "stepd: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	return serve(&o);
}
