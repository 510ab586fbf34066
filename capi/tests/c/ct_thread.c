/*
 * ct_thread: the threaded library's own calls and its AST thread
 * (libdlm.so.3 only: dlm_ls_pthread_init, dlm_pthread_init,
 * dlm_pthread_cleanup, lock_resource, unlock_resource).
 *
 * dlm_ls_pthread_init twice -> EEXIST; several threads in _wait calls at
 * once, contending for one EX lock that guards a plain counter (mutual
 * exclusion is checked: no update is lost); a _wait call made from inside
 * an AST (in the AST thread, where libdlm reads the fd itself); waiting
 * calls in two threads while the AST thread delivers asynchronous
 * completions and blocking ASTs, whose routine unlocks; closing a
 * handle whose AST thread runs; the default lockspace's AST thread with
 * lock_resource / unlock_resource, and dlm_pthread_init twice -> EEXIST.
 */
#include <sched.h>

#include "ct.h"

#define LS "ct_thread"
#define NTHREADS 4
#define NPAIRS 200

static dlm_lshandle_t ls;

/* ---- several threads in _wait calls at once ---- */

static long counter;
static int thread_failures[NTHREADS];

static void *worker(void *arg)
{
	int id = (int)(long)arg, i;
	char own[16];

	snprintf(own, sizeof(own), "own%d", id);
	for (i = 0; i < NPAIRS; i++) {
		struct dlm_lksb hot, mine;
		long v;

		memset(&hot, 0, sizeof(hot));
		memset(&mine, 0, sizeof(mine));
		if (dlm_ls_lock_wait(ls, LKM_EXMODE, &hot, 0, "hot", 3, 0, NULL, NULL, NULL) != 0 ||
		    hot.sb_status != 0) {
			thread_failures[id]++;
			continue;
		}
		/* The EX lock is the only thing guarding counter. */
		v = counter;
		sched_yield();
		counter = v + 1;
		if (dlm_ls_lock_wait(ls, LKM_PRMODE, &mine, 0, own, strlen(own), 0, NULL, NULL,
				     NULL) != 0 || mine.sb_status != 0)
			thread_failures[id]++;
		else if (dlm_ls_unlock_wait(ls, mine.sb_lkid, 0, &mine) != 0 ||
			 mine.sb_status != EUNLOCK)
			thread_failures[id]++;
		if (dlm_ls_unlock_wait(ls, hot.sb_lkid, 0, &hot) != 0 || hot.sb_status != EUNLOCK)
			thread_failures[id]++;
	}
	return NULL;
}

static void many_waiters(void)
{
	pthread_t t[NTHREADS];
	int i, fails = 0, started = 0;

	ct_section("%d threads in _wait calls at once", NTHREADS);
	counter = 0;
	for (i = 0; i < NTHREADS; i++)
		if (pthread_create(&t[i], NULL, worker, (void *)(long)i) == 0)
			started++;
	ct_eq("threads started", started, NTHREADS);
	for (i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	for (i = 0; i < NTHREADS; i++)
		fails += thread_failures[i];
	ct_eq("failed calls", fails, 0);
	ct_eq("updates of the counter under EX (none lost)", counter, (long)started * NPAIRS);
}

/* ---- a _wait call from inside an AST ---- */

struct inner_result {
	int lock_rv, lock_status, unlock_rv, unlock_status;
	int in_ast_thread;
};

static struct inner_result inner;
static struct ct_lock outer;
static pthread_t main_thread;

static void outer_ast(void *arg)
{
	struct dlm_lksb lksb;

	memset(&lksb, 0, sizeof(lksb));
	inner.in_ast_thread = !pthread_equal(pthread_self(), main_thread);
	inner.lock_rv = dlm_ls_lock_wait(ls, LKM_EXMODE, &lksb, 0, "inner", 5, 0, NULL, NULL, NULL);
	inner.lock_status = lksb.sb_status;
	inner.unlock_rv = dlm_ls_unlock_wait(ls, lksb.sb_lkid, 0, &lksb);
	inner.unlock_status = lksb.sb_status;
	ct_cast(arg);
}

static void wait_in_ast(void)
{
	int rv;

	ct_section("a _wait call from inside an AST");
	ct_lock_init(&outer, "outer");
	main_thread = pthread_self();
	errno = 0;
	rv = dlm_ls_lock(ls, LKM_EXMODE, &outer.lksb, 0, "outer", 5, 0, outer_ast, &outer, NULL,
			 NULL);
	ct_call("dlm_ls_lock with an AST that calls dlm_ls_lock_wait", rv, errno, 0);
	ct_wait(ls, &outer, 1);
	ct_eq_str("the outer lock's AST", ct_take(&outer), "cast:0");
	ct_true("it ran in the AST thread", inner.in_ast_thread);
	ct_eq("dlm_ls_lock_wait inside it returns", inner.lock_rv, 0);
	ct_eq_err("with status", inner.lock_status, 0);
	ct_eq("dlm_ls_unlock_wait inside it returns", inner.unlock_rv, 0);
	ct_eq_err("with status", inner.unlock_status, EUNLOCK);
	errno = 0;
	rv = dlm_ls_unlock(ls, outer.lksb.sb_lkid, 0, &outer.lksb, &outer);
	ct_call("unlock the outer lock", rv, errno, 0);
	ct_wait(ls, &outer, 1);
	ct_eq_str("its AST", ct_take(&outer), "cast:EUNLOCK");
}

/* ---- waiting calls while the AST thread runs asynchronous ASTs ---- */

#define NMIXED 50
#define NMIXED_WAITERS 2

static volatile int mixed_stop;
static int mixed_fail[NMIXED_WAITERS];
static long mixed_pairs[NMIXED_WAITERS];
static struct ct_lock holder, taker;

static void *mixed_waiter(void *arg)
{
	int id = (int)(long)arg;
	char name[16];

	snprintf(name, sizeof(name), "mw%d", id);
	while (!mixed_stop) {
		struct dlm_lksb lksb;

		memset(&lksb, 0, sizeof(lksb));
		if (dlm_ls_lock_wait(ls, LKM_PRMODE, &lksb, 0, name, strlen(name), 0, NULL, NULL,
				     NULL) != 0 || lksb.sb_status != 0) {
			mixed_fail[id]++;
			continue;
		}
		if (dlm_ls_unlock_wait(ls, lksb.sb_lkid, 0, &lksb) != 0 ||
		    lksb.sb_status != EUNLOCK)
			mixed_fail[id]++;
		mixed_pairs[id]++;
	}
	return NULL;
}

/* The holder's blocking AST: give the lock up, asynchronously. */
static void holder_bast(void *arg)
{
	struct ct_lock *l = arg;

	ct_bast(arg);
	if (dlm_ls_unlock(ls, l->lksb.sb_lkid, 0, &l->lksb, l) != 0)
		mixed_fail[0]++;
}

static void mixed(void)
{
	pthread_t t[NMIXED_WAITERS];
	int i, started = 0, good = 0, fails = 0;
	long pairs = 0;

	ct_section("_wait calls in %d threads while the AST thread runs ASTs", NMIXED_WAITERS);
	mixed_stop = 0;
	for (i = 0; i < NMIXED_WAITERS; i++)
		if (pthread_create(&t[i], NULL, mixed_waiter, (void *)(long)i) == 0)
			started++;
	ct_eq("threads started", started, NMIXED_WAITERS);
	for (i = 0; i < NMIXED; i++) {
		const char *h, *k;

		ct_lock_init(&holder, "holder");
		ct_lock_init(&taker, "taker");
		if (dlm_ls_lock(ls, LKM_PRMODE, &holder.lksb, 0, "mixed", 5, 0, ct_cast, &holder,
				holder_bast, NULL) != 0 || ct_wait(ls, &holder, 1) != 0)
			break;
		h = ct_take(&holder);
		if (dlm_ls_lock(ls, LKM_EXMODE, &taker.lksb, 0, "mixed", 5, 0, ct_cast, &taker, NULL,
				NULL) != 0 || ct_wait(ls, &taker, 1) != 0 || ct_wait(ls, &holder, 2) != 0)
			break;
		k = ct_take(&taker);
		if (strcmp(h, "cast:0") || strcmp(k, "cast:0") ||
		    strcmp(ct_take(&holder), "bast cast:EUNLOCK"))
			continue;
		if (dlm_ls_unlock(ls, taker.lksb.sb_lkid, 0, &taker.lksb, &taker) != 0 ||
		    ct_wait(ls, &taker, 1) != 0)
			break;
		if (!strcmp(ct_take(&taker), "cast:EUNLOCK"))
			good++;
	}
	mixed_stop = 1;
	for (i = 0; i < started; i++)
		pthread_join(t[i], NULL);
	for (i = 0; i < NMIXED_WAITERS; i++) {
		fails += mixed_fail[i];
		pairs += mixed_pairs[i];
	}
	ct_eq("rounds of PR held, EX asked, blocking AST, unlock from it, EX granted", good,
	      NMIXED);
	ct_eq("failed calls", fails, 0);
	ct_true("the waiting threads made progress", pairs > 0);
}

/* ---- closing a handle whose AST thread runs ---- */

static void close_with_thread(void)
{
	struct dlm_lksb lksb;
	dlm_lshandle_t h;
	int rv;

	ct_section("a second handle with its own AST thread");
	h = dlm_open_lockspace(LS);
	ct_true("dlm_open_lockspace", h != NULL);
	if (!h)
		return;
	errno = 0;
	rv = dlm_ls_pthread_init(h);
	ct_call("dlm_ls_pthread_init(second handle)", rv, errno, 0);
	memset(&lksb, 0, sizeof(lksb));
	rv = dlm_ls_lock_wait(h, LKM_EXMODE, &lksb, 0, "second", 6, 0, NULL, NULL, NULL);
	ct_wait_result("dlm_ls_lock_wait on it", rv, errno, &lksb, 0);
	errno = 0;
	rv = dlm_close_lockspace(h);
	ct_call("dlm_close_lockspace stops its thread", rv, errno, 0);
	memset(&lksb, 0, sizeof(lksb));
	rv = dlm_ls_lock_wait(ls, LKM_EXMODE, &lksb, LKF_NOQUEUE, "second", 6, 0, NULL, NULL, NULL);
	ct_wait_result("its lock went with it", rv, errno, &lksb, 0);
	rv = dlm_ls_unlock_wait(ls, lksb.sb_lkid, 0, &lksb);
	ct_wait_result("unlock", rv, errno, &lksb, EUNLOCK);
}

/* ---- the default lockspace's thread, lock_resource, unlock_resource ---- */

static void default_thread(void)
{
	int rv, lkid = 0, lkid2 = 0, first;
	dlm_lshandle_t h;

	ct_section("dlm_pthread_init, lock_resource, unlock_resource");
	errno = 0;
	rv = dlm_pthread_init();
	ct_call("dlm_pthread_init", rv, errno, 0);
	errno = 0;
	rv = dlm_pthread_init();
	ct_call("dlm_pthread_init again", rv, errno, EEXIST);
	errno = 0;
	rv = lock_resource("lr", LKM_EXMODE, 0, &lkid);
	ct_call("lock_resource EX", rv, errno, 0);
	ct_true("its lkid is non-zero", lkid != 0);
	first = lkid;
	errno = 0;
	rv = lock_resource("lr", LKM_EXMODE, LKF_NOQUEUE, &lkid2);
	ct_call("lock_resource EX|NOQUEUE", rv, errno, EAGAIN);
	errno = 0;
	rv = lock_resource("lr", LKM_EXMODE, 0, NULL);
	ct_call("lock_resource with a NULL lockid", rv, errno, EINVAL);
	errno = 0;
	rv = lock_resource("lr", LKM_NLMODE, LKF_CONVERT, &lkid);
	ct_call("lock_resource CONVERT EX->NL", rv, errno, 0);
	ct_true("the lkid is unchanged", lkid == first);
	errno = 0;
	rv = lock_resource("lr", LKM_EXMODE, LKF_NOQUEUE, &lkid2);
	ct_call("lock_resource EX|NOQUEUE now", rv, errno, 0);
	errno = 0;
	rv = unlock_resource(lkid2);
	ct_call("unlock_resource", rv, errno, 0);
	errno = 0;
	rv = unlock_resource(lkid);
	ct_call("unlock_resource of the first", rv, errno, 0);
	errno = 0;
	rv = dlm_pthread_cleanup();
	ct_call("dlm_pthread_cleanup", rv, errno, 0);
	errno = 0;
	rv = unlock_resource(lkid);
	ct_eq("after it, unlock_resource returns", rv, -1);

	/* dlm_pthread_cleanup closed the library's fd: release "default". */
	h = dlm_open_lockspace("default");
	ct_true("dlm_open_lockspace(default)", h != NULL);
	if (h)
		ct_release("default", h);
}

int main(void)
{
	int rv;

	ct_begin("ct_thread");
	ls = ct_create(LS);

	ct_section("dlm_ls_pthread_init");
	errno = 0;
	rv = dlm_ls_pthread_init(ls);
	ct_call("dlm_ls_pthread_init", rv, errno, 0);
	ct_ast_thread = rv == 0;
	errno = 0;
	rv = dlm_ls_pthread_init(ls);
	ct_call("dlm_ls_pthread_init again", rv, errno, EEXIST);

	many_waiters();
	wait_in_ast();
	mixed();
	close_with_thread();
	ct_release(LS, ls);
	default_thread();
	return ct_end();
}
