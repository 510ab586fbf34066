/*
 * cl_pairs: lock+unlock pairs per second on one resource, through
 * libdlm's synchronous calls: N times dlm_ls_lock_wait(EX) then
 * dlm_ls_unlock_wait(). Where the resource is mastered decides the cost:
 * on this node every pair stays local; on another node each request and
 * each unlock is a message to it and back. The harness arranges the
 * master (another process keeps an NL lock, so the resource stays where
 * it was first taken) and reads it from debugfs.
 *
 *   cl_pairs LOCKSPACE RESOURCE N
 *
 * After 10 pairs of warm-up, prints
 *   PAIRS res=RESOURCE n=N secs=S per_s=R
 * and exits 0; 1 on any failure (naming it).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl.h"

static int pair(dlm_lshandle_t ls, const char *res, unsigned long i)
{
	struct dlm_lksb lksb;

	memset(&lksb, 0, sizeof(lksb));
	if (dlm_ls_lock_wait(ls, LKM_EXMODE, &lksb, 0, res, (unsigned int)strlen(res), 0, NULL,
			     NULL, NULL) != 0 || lksb.sb_status != 0) {
		fprintf(stderr, "cl_pairs: lock %lu: errno %d status %d\n", i, errno, lksb.sb_status);
		return -1;
	}
	if (dlm_ls_unlock_wait(ls, lksb.sb_lkid, 0, &lksb) != 0 || lksb.sb_status != EUNLOCK) {
		fprintf(stderr, "cl_pairs: unlock %lu: errno %d status %d\n", i, errno, lksb.sb_status);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	dlm_lshandle_t ls;
	unsigned long n, i;
	int created;
	uint64_t t0;
	double secs;

	if (argc != 4) {
		fprintf(stderr, "usage: cl_pairs LOCKSPACE RESOURCE N\n");
		return 2;
	}
	n = strtoul(argv[3], NULL, 10);
	if (n == 0 || n > 100000000 || strlen(argv[2]) > 64) {
		fprintf(stderr, "cl_pairs: N must be 1..100000000, the name at most 64 bytes\n");
		return 2;
	}
	ls = cl_lockspace(argv[1], &created);
	if (!ls) {
		fprintf(stderr, "cl_pairs: lockspace %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	for (i = 0; i < 10; i++)
		if (pair(ls, argv[2], i) != 0)
			return 1;
	t0 = cl_mono_ns();
	for (i = 0; i < n; i++)
		if (pair(ls, argv[2], i) != 0)
			return 1;
	secs = (cl_mono_ns() - t0) / 1e9;
	printf("PAIRS res=%s n=%lu secs=%.3f per_s=%.0f\n", argv[2], n, secs, n / secs);
	return 0;
}
