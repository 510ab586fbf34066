/*
 * Debian's libdlm on the kernel DLM, for the guest benchmark table
 * (ci/kernel/bench.sh): create a lockspace, then time ITERATIONS pairs of
 * dlm_ls_lock_wait(EX) + dlm_ls_unlock_wait() on one resource.
 *
 * Built twice on the host against Debian's libdlm-dev:
 *   -DBENCH_THREADED -D_REENTRANT ... -ldlm -lpthread   threaded libdlm
 *   ...                           -ldlm_lt              libdlm_lt ("lite")
 * The threaded library needs dlm_ls_pthread_init(): its thread reads the
 * device and wakes the waiting caller; the lite one reads inline.
 *
 *   bench-libdlm[-lt] LABEL LOCKSPACE ITERATIONS
 *
 * Prints "BENCH LABEL ITERATIONS SECONDS" (the line bench.sh parses);
 * exits 1 on any failure.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include <libdlm.h>

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int lock_unlock(dlm_lshandle_t ls, const char *res, unsigned long i)
{
	struct dlm_lksb lksb;
	int rv;

	memset(&lksb, 0, sizeof(lksb));
	rv = dlm_ls_lock_wait(ls, LKM_EXMODE, &lksb, 0, res, strlen(res), 0,
			      NULL, NULL, NULL);
	if (rv != 0 || lksb.sb_status != 0) {
		fprintf(stderr, "bench-libdlm: lock %lu: rv %d errno %d status %d\n",
			i, rv, errno, lksb.sb_status);
		return -1;
	}
	rv = dlm_ls_unlock_wait(ls, lksb.sb_lkid, 0, &lksb);
	if (rv != 0 || lksb.sb_status != EUNLOCK) {
		fprintf(stderr, "bench-libdlm: unlock %lu: rv %d errno %d status %d\n",
			i, rv, errno, lksb.sb_status);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *label, *lsname, *res = "hot";
	unsigned long iters, i, warm;
	dlm_lshandle_t ls;
	double t0, secs;
	int failed = 0;

	if (argc != 4) {
		fprintf(stderr, "usage: %s LABEL LOCKSPACE ITERATIONS\n", argv[0]);
		return 2;
	}
	label = argv[1];
	lsname = argv[2];
	iters = strtoul(argv[3], NULL, 10);

	ls = dlm_create_lockspace(lsname, 0600);
	if (!ls) {
		fprintf(stderr, "bench-libdlm: dlm_create_lockspace(%s): %s\n",
			lsname, strerror(errno));
		return 1;
	}
#ifdef BENCH_THREADED
	if (dlm_ls_pthread_init(ls) != 0) {
		fprintf(stderr, "bench-libdlm: dlm_ls_pthread_init: %s\n",
			strerror(errno));
		dlm_release_lockspace(lsname, ls, 1);
		return 1;
	}
#endif
	/* A short warm-up, as every other row of the table has. */
	warm = iters / 100 + 1;
	for (i = 0; i < warm && !failed; i++)
		failed = lock_unlock(ls, res, i) != 0;

	t0 = now_s();
	for (i = 0; i < iters && !failed; i++)
		failed = lock_unlock(ls, res, i) != 0;
	secs = now_s() - t0;

	if (dlm_release_lockspace(lsname, ls, 1) != 0) {
		fprintf(stderr, "bench-libdlm: dlm_release_lockspace(%s): %s\n",
			lsname, strerror(errno));
		failed = 1;
	}
	if (failed)
		return 1;
	printf("BENCH %s %lu %.6f\n", label, iters, secs);
	return 0;
}
