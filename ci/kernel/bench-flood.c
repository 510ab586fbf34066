/*
 * The async flood row of the guest benchmark table (ci/kernel/bench.sh,
 * ci/kernel/icount.sh): ITERATIONS asynchronous EX requests on ITERATIONS
 * distinct resources ("f0", "f1", ...), all written before any AST runs;
 * each completion AST that sees status 0 calls dlm_ls_unlock() from
 * inside the AST, and each unlock AST (EUNLOCK) is counted. The run is
 * over when every unlock AST has come. Counts are checked: every request
 * granted once, every unlock completed once, nothing else; exit 1 if not.
 *
 * Built twice on the host against Debian's libdlm-dev, as bench-libdlm.c:
 *   -DBENCH_THREADED -D_REENTRANT ... -ldlm -lpthread   threaded: the AST
 *        thread (dlm_ls_pthread_init) runs the ASTs, main sleeps on a
 *        condition variable until the last one
 *   ...                           -ldlm_lt              lite: main runs
 *        poll() + dlm_dispatch() on dlm_ls_get_fd()'s fd
 * and run once with Debian's libraries and once with dlm-rs's
 * (LD_LIBRARY_PATH), the same binary.
 *
 *   bench-flood[-lt] LABEL LOCKSPACE ITERATIONS
 *
 * Prints "BENCH LABEL ITERATIONS SECONDS" (seconds from the first request
 * to the last unlock AST); 1% of ITERATIONS (at least one) run first as a
 * warm-up round, as in every other row.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#ifdef BENCH_THREADED
#include <pthread.h>
#endif

#include <libdlm.h>

struct slot {
	struct dlm_lksb lksb;
	int granted;
	int unlocked;
};

static dlm_lshandle_t ls;
static struct slot *slots;
/* Touched only by the thread that runs the ASTs until the round is over. */
static unsigned long grants, unlocks, others, unlock_errors, dups;
static unsigned long want;
static volatile int done;
#ifdef BENCH_THREADED
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
#endif

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void finish(void)
{
#ifdef BENCH_THREADED
	pthread_mutex_lock(&mu);
	done = 1;
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&mu);
#else
	done = 1;
#endif
}

static void flood_ast(void *arg)
{
	struct slot *s = arg;

	if (s->lksb.sb_status == 0 && !s->granted) {
		grants++;
		s->granted = 1;
		if (dlm_ls_unlock(ls, s->lksb.sb_lkid, 0, &s->lksb, s) != 0)
			unlock_errors++;
	} else if (s->lksb.sb_status == EUNLOCK) {
		if (s->unlocked)
			dups++;
		s->unlocked = 1;
		unlocks++;
	} else {
		others++;
	}
	if (unlocks + others + unlock_errors >= want)
		finish();
}

/* Until the last AST, at most 600 s; 0 on a timeout or dispatch error. */
static int wait_done(void)
{
	double end = now_s() + 600;
#ifdef BENCH_THREADED
	pthread_mutex_lock(&mu);
	while (!done && now_s() < end) {
		struct timespec abs;

		clock_gettime(CLOCK_REALTIME, &abs);
		abs.tv_sec += 1;
		pthread_cond_timedwait(&cv, &mu, &abs);
	}
	pthread_mutex_unlock(&mu);
#else
	struct pollfd p = { .fd = dlm_ls_get_fd(ls), .events = POLLIN };

	while (!done && now_s() < end) {
		if (poll(&p, 1, 1000) > 0 && dlm_dispatch(p.fd) != 0) {
			fprintf(stderr, "bench-flood: dlm_dispatch: %s\n", strerror(errno));
			return 0;
		}
	}
#endif
	return done;
}

/* One round of n requests; 0 if it went as it should. */
static int round_of(unsigned long n, double *secs)
{
	unsigned long i, refused = 0;
	double t0;
	int ok;

	memset(slots, 0, sizeof(*slots) * n);
	grants = unlocks = others = unlock_errors = dups = 0;
	want = n;
	done = 0;
	t0 = now_s();
	for (i = 0; i < n; i++) {
		char name[32];
		int len = snprintf(name, sizeof(name), "f%lu", i);

		if (dlm_ls_lock(ls, LKM_EXMODE, &slots[i].lksb, 0, name, (unsigned)len, 0,
				flood_ast, &slots[i], NULL, NULL) != 0) {
			if (!refused)
				fprintf(stderr, "bench-flood: request %lu: %s\n", i, strerror(errno));
			refused++;
		}
	}
	if (refused) {
		/* Wait for what was written, then fail. */
#ifdef BENCH_THREADED
		pthread_mutex_lock(&mu);
		want -= refused;
		pthread_mutex_unlock(&mu);
#else
		want -= refused;
#endif
	}
	ok = wait_done();
	*secs = now_s() - t0;
#ifdef BENCH_THREADED
	pthread_mutex_lock(&mu);
#endif
	if (!ok || refused || grants != n || unlocks != n || others || unlock_errors || dups) {
		fprintf(stderr,
			"bench-flood: round of %lu: %s; refused %lu, grants %lu, unlocks %lu, "
			"other ASTs %lu, unlocks refused %lu, duplicate unlock ASTs %lu\n",
			n, ok ? "done" : "timed out", refused, grants, unlocks, others,
			unlock_errors, dups);
		ok = 0;
	}
#ifdef BENCH_THREADED
	pthread_mutex_unlock(&mu);
#endif
	return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
	const char *label, *lsname;
	unsigned long iters;
	double secs;
	int failed;

	if (argc != 4) {
		fprintf(stderr, "usage: %s LABEL LOCKSPACE ITERATIONS\n", argv[0]);
		return 2;
	}
	label = argv[1];
	lsname = argv[2];
	iters = strtoul(argv[3], NULL, 10);
	if (iters == 0 || iters > 10000000) {
		fprintf(stderr, "bench-flood: bad ITERATIONS %s\n", argv[3]);
		return 2;
	}
	slots = calloc(iters, sizeof(*slots));
	if (!slots) {
		fprintf(stderr, "bench-flood: out of memory\n");
		return 1;
	}
	ls = dlm_create_lockspace(lsname, 0600);
	if (!ls) {
		fprintf(stderr, "bench-flood: dlm_create_lockspace(%s): %s\n", lsname,
			strerror(errno));
		return 1;
	}
#ifdef BENCH_THREADED
	if (dlm_ls_pthread_init(ls) != 0) {
		fprintf(stderr, "bench-flood: dlm_ls_pthread_init: %s\n", strerror(errno));
		dlm_release_lockspace(lsname, ls, 1);
		return 1;
	}
#endif
	failed = round_of(iters / 100 + 1, &secs) != 0;
	if (!failed)
		failed = round_of(iters, &secs) != 0;
	if (dlm_release_lockspace(lsname, ls, 1) != 0) {
		fprintf(stderr, "bench-flood: dlm_release_lockspace(%s): %s\n", lsname,
			strerror(errno));
		failed = 1;
	}
	free(slots);
	if (failed)
		return 1;
	printf("BENCH %s %lu %.6f\n", label, iters, secs);
	return 0;
}
