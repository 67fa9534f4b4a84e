/*
 * progress.c — progress line on stderr for terminals; never prints when disabled.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "progress.h"
#include "util.h"

struct progress {
	pthread_mutex_t mu;
	int enabled;
	int pending;   /* a line is on screen without its newline */
	char key[128]; /* file the line is about */
	double start;  /* when that file started (progress_run(): the run) */
	double drawn;  /* last redraw */
	int run;       /* progress_run() has started its line */
};

int
progress_new(int enabled, struct progress **outp)
{
	struct progress *p;

	if ((p = calloc(1, sizeof(*p))) == NULL)
		return STEP_ENOMEM;
	pthread_mutex_init(&p->mu, NULL);
	p->enabled = enabled;
	*outp = p;
	return STEP_OK;
}

void
progress_free(struct progress *p)
{
	if (p == NULL)
		return;
	if (p->pending)
		fputc('\n', stderr);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

void
progress_fmt_bytes(uint64_t n, char *out, size_t outlen)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	int u = 0;

	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, outlen, "%llu B", (unsigned long long)n);
	else
		snprintf(out, outlen, "%.1f %s", v, units[u]);
}

/* The first 40 bytes of key with control characters as \xNN (the line is on a terminal:
 * a name must not move the cursor). */
static void
key_shown(const char *key, char *out, size_t outlen)
{
	const unsigned char *k = (const unsigned char *)key;
	size_t o = 0, i;

	for (i = 0; i < 40 && k[i] != '\0' && o + 5 < outlen; i++) {
		if (k[i] < 0x20 || k[i] == 0x7f)
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", k[i]);
		else
			out[o++] = (char)k[i];
	}
	out[o] = '\0';
}

void
progress_update(void *arg, const char *key, uint64_t done, uint64_t total)
{
	struct progress *p = arg;
	char a[32], b[32], r[32], eta[32], shown[4 * 40 + 1];
	double now, rate;
	int fin = done >= total;

	if (p == NULL || !p->enabled)
		return;
	pthread_mutex_lock(&p->mu);
	now = util_now_s();
	if (strncmp(p->key, key, sizeof(p->key) - 1) != 0) {
		if (p->pending)
			fputc('\n', stderr);
		snprintf(p->key, sizeof(p->key), "%s", key);
		p->start = now;
		p->drawn = 0;
	}
	if (!fin && now - p->drawn < 0.1) {
		pthread_mutex_unlock(&p->mu);
		return;
	}
	p->drawn = now;
	rate = now > p->start ? (double)done / (now - p->start) : 0;
	progress_fmt_bytes(done, a, sizeof(a));
	progress_fmt_bytes(total, b, sizeof(b));
	progress_fmt_bytes((uint64_t)rate, r, sizeof(r));
	if (rate > 0 && !fin) {
		unsigned long long s = (unsigned long long)((double)(total - done) / rate);

		snprintf(eta, sizeof(eta), "ETA %llu:%02llu", s / 60, s % 60);
	} else {
		snprintf(eta, sizeof(eta), "%s", fin ? "done" : "");
	}
	key_shown(key, shown, sizeof(shown));
	fprintf(stderr, "\r%s  %s / %s  %s/s  %s\033[K", shown, a, b, r, eta);
	p->pending = !fin;
	if (fin)
		fputc('\n', stderr);
	fflush(stderr);
	pthread_mutex_unlock(&p->mu);
}

void
progress_run(struct progress *p, uint64_t files_done, uint64_t files_total, uint64_t bytes_done,
    uint64_t bytes_total)
{
	char a[32], b[32], r[32], eta[32];
	double now, rate;
	int fin = files_done >= files_total && bytes_done >= bytes_total;

	if (p == NULL || !p->enabled)
		return;
	pthread_mutex_lock(&p->mu);
	now = util_now_s();
	if (!p->run) {
		p->run = 1;
		p->start = now;
		p->drawn = 0;
	}
	if (!fin && now - p->drawn < 0.1) {
		pthread_mutex_unlock(&p->mu);
		return;
	}
	p->drawn = now;
	rate = now > p->start ? (double)bytes_done / (now - p->start) : 0;
	progress_fmt_bytes(bytes_done, a, sizeof(a));
	progress_fmt_bytes(bytes_total, b, sizeof(b));
	progress_fmt_bytes((uint64_t)rate, r, sizeof(r));
	if (rate > 0 && !fin && bytes_total > bytes_done) {
		unsigned long long sec =
		    (unsigned long long)((double)(bytes_total - bytes_done) / rate);

		snprintf(eta, sizeof(eta), "ETA %llu:%02llu", sec / 60, sec % 60);
	} else {
		snprintf(eta, sizeof(eta), "%s", fin ? "done" : "");
	}
	fprintf(stderr, "\r%llu/%llu %s  %s / %s  %s/s  %s\033[K", (unsigned long long)files_done,
	    (unsigned long long)files_total, files_total == 1 ? "file" : "files", a, b, r, eta);
	p->pending = !fin;
	if (fin) {
		fputc('\n', stderr);
		p->run = 0;
	}
	fflush(stderr);
	pthread_mutex_unlock(&p->mu);
}
