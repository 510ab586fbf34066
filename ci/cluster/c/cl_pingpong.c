/*
 * cl_pingpong: cross-node handoff of one EX lock, for its latency and to
 * check that the value block goes from node to node. Two copies run, on
 * two nodes, on the same resource:
 *
 *   cl_pingpong LOCKSPACE RESOURCE N first|second SAMPLES-FILE
 *
 * Each takes an NL lock with VALBLK and converts it to EX. The first
 * (started first; it prints HOLDING once it has EX) gets EX at once; the
 * second's conversion waits, which sends the holder a blocking callback.
 * The holder then converts down to NL, writing the value block, and at
 * once asks for EX again; so the two alternate, each grant a handoff.
 * A sample is one handoff as the requester sees it: from its NL->EX
 * conversion request to the grant, through the other node's blocking
 * callback and down-conversion, in nanoseconds (CLOCK_MONOTONIC), one a
 * line in SAMPLES-FILE. Each side is granted EX N times after its first
 * (the first side's first grant is not a handoff and is not counted).
 *
 * The value block carries a counter: a holder writes the value it read
 * at its grant plus one, so at every grant a side must read what it
 * wrote last time plus one (the other side's increment). Any other
 * value, or VALNOTVALID, counts as an LVB error.
 *
 * Prints, at the end:
 *   PINGPONG side=S grants=G samples=K median_us=M p99_us=P max_us=X lvb_errors=E lvb_last=V secs=T
 * and exits 0 if all N grants came and E is 0; 1 otherwise (also when
 * nothing happens for 30 s).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cl.h"

enum phase { P_NEW, P_UP, P_HELD, P_DOWN, P_UNLOCK, P_DONE };

static dlm_lshandle_t ls;
static struct dlm_lksb lksb;
static char lvb[DLM_LVB_LEN];
static const char *res;
static enum phase phase = P_NEW;
static int first, uncounted, failed, bast_pending;
static unsigned long want, grants, lvb_errors;
static unsigned long long last_written, last_read;
static int wrote_any;
static uint64_t t_request, *samples;
static unsigned long nsamples;

static void ast(void *arg);
static void bast(void *arg);

static int request(int mode, uint32_t flags)
{
	int rv = dlm_ls_lock(ls, (uint32_t)mode, &lksb, flags | LKF_VALBLK, res,
			     (unsigned int)strlen(res), 0, ast, NULL, bast, NULL);

	if (rv != 0) {
		fprintf(stderr, "cl_pingpong: request %s: %s\n", cl_mode_name(mode), strerror(errno));
		failed = 1;
	}
	return rv;
}

static void go_up(void)
{
	phase = P_UP;
	t_request = cl_mono_ns();
	request(LKM_EXMODE, LKF_CONVERT);
}

static void go_down(void)
{
	unsigned long long v = last_read + 1;

	memset(lvb, 0, sizeof(lvb));
	snprintf(lvb, sizeof(lvb), "%llu", v);
	last_written = v;
	wrote_any = 1;
	phase = P_DOWN;
	request(LKM_NLMODE, LKF_CONVERT);
}

static void unlock_now(void)
{
	phase = P_UNLOCK;
	if (dlm_ls_unlock(ls, lksb.sb_lkid, 0, &lksb, NULL) != 0) {
		fprintf(stderr, "cl_pingpong: unlock: %s\n", strerror(errno));
		failed = 1;
		phase = P_DONE;
	}
}

static void ast(void *arg)
{
	(void)arg;
	if (phase == P_UNLOCK) {
		if (lksb.sb_status != EUNLOCK) {
			fprintf(stderr, "cl_pingpong: unlock status %d\n", lksb.sb_status);
			failed = 1;
		}
		phase = P_DONE;
		return;
	}
	if (lksb.sb_status != 0) {
		fprintf(stderr, "cl_pingpong: status %d in phase %d\n", lksb.sb_status, phase);
		failed = 1;
		phase = P_DONE;
		return;
	}
	switch (phase) {
	case P_NEW:		/* NL granted */
		go_up();
		break;
	case P_UP: {		/* EX granted: a handoff, unless the first's first */
		uint64_t now = cl_mono_ns();
		char *end;
		unsigned long long v = strtoull(lvb, &end, 10);
		if (lksb.sb_flags & DLM_SBF_VALNOTVALID)
			lvb_errors++;
		if (wrote_any && (end == lvb || v != last_written + 1))
			lvb_errors++;
		last_read = (end == lvb) ? 0 : v;
		if (uncounted) {
			uncounted = 0;
			printf("HOLDING lvb=%s\n", lvb[0] ? lvb : "<zero>");
			fflush(stdout);
		} else {
			samples[nsamples++] = now - t_request;
			grants++;
		}
		phase = P_HELD;
		if (grants >= want && first) {
			/* The first side's last grant is the run's last one. */
			go_down();
		} else if (bast_pending) {
			bast_pending = 0;
			go_down();
		}
		break;
	}
	case P_DOWN:		/* NL granted after a hold */
		if (grants >= want)
			unlock_now();
		else
			go_up();
		break;
	default:
		break;
	}
}

static void bast(void *arg)
{
	(void)arg;
	if (phase == P_HELD)
		go_down();
	else
		bast_pending = 1;	/* the grant's callback comes next */
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	const char *side, *path;
	int created, fd;
	uint64_t t0, last_event;
	FILE *out;
	unsigned long i;

	if (argc != 6 || (strcmp(argv[4], "first") && strcmp(argv[4], "second"))) {
		fprintf(stderr, "usage: cl_pingpong LOCKSPACE RESOURCE N first|second SAMPLES-FILE\n");
		return 2;
	}
	res = argv[2];
	want = strtoul(argv[3], NULL, 10);
	side = argv[4];
	path = argv[5];
	first = strcmp(side, "first") == 0;
	uncounted = first;	/* the first side's first grant is no handoff */
	if (want == 0 || want > 10000000 || strlen(res) > 64) {
		fprintf(stderr, "cl_pingpong: N must be 1..10000000, the name at most 64 bytes\n");
		return 2;
	}
	samples = calloc(want + 1, sizeof(*samples));
	if (!samples)
		return 1;
	ls = cl_lockspace(argv[1], &created);
	if (!ls) {
		fprintf(stderr, "cl_pingpong: lockspace %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	fd = dlm_ls_get_fd(ls);
	memset(&lksb, 0, sizeof(lksb));
	lksb.sb_lvbptr = lvb;
	t0 = cl_mono_ns();
	if (request(LKM_NLMODE, 0) != 0)
		return 1;
	last_event = cl_mono_ns();
	while (phase != P_DONE && !failed) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = poll(&p, 1, 1000);

		if (r < 0 && errno != EINTR) {
			perror("cl_pingpong: poll");
			return 1;
		}
		if (r > 0) {
			dlm_dispatch(fd);
			last_event = cl_mono_ns();
		} else if (cl_mono_ns() - last_event > 30000000000ull) {
			fprintf(stderr, "cl_pingpong: nothing happened for 30 s (phase %d, %lu grants)\n",
				phase, grants);
			failed = 1;
		}
	}
	out = fopen(path, "w");
	if (!out) {
		perror(path);
		return 1;
	}
	for (i = 0; i < nsamples; i++)
		fprintf(out, "%" PRIu64 "\n", samples[i]);
	fclose(out);
	qsort(samples, nsamples, sizeof(*samples), cmp_u64);
	printf("PINGPONG side=%s grants=%lu samples=%lu median_us=%.1f p99_us=%.1f max_us=%.1f "
	       "lvb_errors=%lu lvb_last=%llu secs=%.3f\n", side, grants, nsamples,
	       nsamples ? samples[nsamples / 2] / 1e3 : 0.0,
	       nsamples ? samples[(nsamples * 99) / 100 < nsamples ? (nsamples * 99) / 100 : nsamples - 1] / 1e3 : 0.0,
	       nsamples ? samples[nsamples - 1] / 1e3 : 0.0, lvb_errors,
	       wrote_any ? last_written : last_read, (cl_mono_ns() - t0) / 1e9);
	return (failed || grants < want || lvb_errors) ? 1 : 0;
}
