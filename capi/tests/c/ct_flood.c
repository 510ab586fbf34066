/*
 * ct_flood: many requests outstanding at once, each unlocked from its own
 * completion AST.
 *
 *   ct_flood [N]     N requests a round (default 10000)
 *
 * Round 1: N asynchronous EX requests on N resources, all written before
 * any AST is dispatched. Round 2: N EX requests on one resource, so all
 * but the first wait in its queue and each unlock from an AST grants the
 * next. Every completion AST that sees status 0 calls dlm_ls_unlock from
 * inside the AST; the counts of grants and unlocks (and anything else)
 * are checked. The lite build dispatches with poll() + dlm_dispatch on
 * this thread, the threaded build lets the AST thread run the ASTs.
 * Elapsed time goes to stderr (not the transcript).
 */
#include "ct.h"

#define LS "ct_flood"

struct slot {
	struct dlm_lksb lksb;
	int unlocking;
};

static dlm_lshandle_t ls;
static struct slot *slots;
static long grants, unlocks, others, unlock_errors;
static struct ct_lock done;	/* gets one event when the round is over */
static long want;

static void flood_ast(void *arg)
{
	struct slot *s = arg;
	int finished = 0;

	/* Only this AST's thread touches the counters until "done". */
	if (s->lksb.sb_status == 0 && !s->unlocking) {
		grants++;
		s->unlocking = 1;
		if (dlm_ls_unlock(ls, s->lksb.sb_lkid, 0, &s->lksb, s) != 0)
			unlock_errors++;
	} else if (s->lksb.sb_status == EUNLOCK) {
		unlocks++;
	} else {
		others++;
	}
	if (unlocks + others + unlock_errors == want)
		finished = 1;
	if (finished)
		ct_record(&done, 'c');
}

/* Until the last AST ran, at most FLOOD_WAIT_S (no FAIL line meanwhile). */
#define FLOOD_WAIT_S 90

static int wait_done(void)
{
	struct timespec end, now;
	int fd = dlm_ls_get_fd(ls);

	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += FLOOD_WAIT_S;
	while (ct_count(&done) == 0) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > end.tv_sec)
			return 0;
		if (ct_ast_thread) {
			struct timespec abs;

			clock_gettime(CLOCK_REALTIME, &abs);
			abs.tv_sec += 1;
			pthread_mutex_lock(&ct_mu);
			if (done.nev == 0)
				pthread_cond_timedwait(&ct_cv, &ct_mu, &abs);
			pthread_mutex_unlock(&ct_mu);
		} else {
			struct pollfd p = { .fd = fd, .events = POLLIN };

			if (poll(&p, 1, 1000) > 0 && dlm_dispatch(fd) != 0)
				return 0;
		}
	}
	return 1;
}

static void round_of(const char *what, long n, int one_resource)
{
	struct timespec t0, t1;
	long i, write_errors = 0;
	int got;

	ct_section("%s", what);
	memset(slots, 0, sizeof(*slots) * (size_t)n);
	grants = unlocks = others = unlock_errors = 0;
	want = n;
	ct_lock_init(&done, "the last AST");
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < n; i++) {
		char name[32];
		int len;

		len = one_resource ? snprintf(name, sizeof(name), "hot")
				   : snprintf(name, sizeof(name), "res%ld", i);
		if (dlm_ls_lock(ls, LKM_EXMODE, &slots[i].lksb, 0, name, (unsigned)len, 0, flood_ast,
				&slots[i], NULL, NULL) != 0)
			write_errors++;
	}
	ct_eq("requests refused", write_errors, 0);
	if (write_errors)
		want -= write_errors;
	got = wait_done();
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ct_true("every request completed", got);
	pthread_mutex_lock(&ct_mu);
	ct_eq("grants, each unlocked from its AST", grants, n);
	ct_eq("unlock completions", unlocks, n);
	ct_eq("other completions", others, 0);
	ct_eq("unlocks refused", unlock_errors, 0);
	pthread_mutex_unlock(&ct_mu);
	fprintf(stderr, "ct_flood: %s: %ld requests in %.3f s\n", what, n,
		(double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? strtol(argv[1], NULL, 10) : 10000;

	ct_begin("ct_flood");
	if (n <= 0 || n > 1000000)
		ct_fatal("bad N %ld", n);
	slots = calloc((size_t)n, sizeof(*slots));
	if (!slots)
		ct_fatal("out of memory");
	ls = ct_create(LS);
#if CT_THREADED
	ct_start_ast_thread(ls);
#endif
	round_of(ct_what("%ld requests on %ld resources", n, n), n, 0);
	round_of(ct_what("%ld requests queued on one resource", n), n, 1);
	ct_release(LS, ls);
	free(slots);
	return ct_end();
}
