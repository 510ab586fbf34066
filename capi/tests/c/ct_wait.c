/*
 * ct_wait: the synchronous calls, dlm_ls_lock_wait and dlm_ls_unlock_wait.
 *
 * The lite library reads the lockspace fd inside the call until the
 * lksb's status leaves EINPROG and returns -1 with errno = status for a
 * failure (EAGAIN, EDEADLK, ...); the threaded one needs an AST thread
 * (dlm_ls_pthread_init, started here) to wake it and returns the write's
 * result (0), leaving the status in the lksb. Covers new locks,
 * NOQUEUE, conversions, conversion deadlock, EXPEDITE, ALTPR, a blocking
 * AST given to a _wait call, and ASTs of asynchronous locks delivered
 * while a _wait call reads (lite) or by the AST thread (threaded).
 *
 * The lite library's wait loop also ends on a blocking AST for the same
 * lock (the kernel copies a status into it): shown, not checked, as
 * "info" lines (lite only; the threaded call would wait for good).
 */
#include "ct.h"

#define LS "ct_wait"

static dlm_lshandle_t ls;

static int lw(struct ct_lock *l, int mode, uint32_t flags, const char *res, int bast, int *err)
{
	int rv;

	errno = 0;
	rv = dlm_ls_lock_wait(ls, mode, &l->lksb, flags, res, strlen(res), 0, l,
			      bast ? ct_bast : NULL, NULL);
	*err = errno;
	return rv;
}

static int uw(struct ct_lock *l, uint32_t flags, int *err)
{
	int rv;

	errno = 0;
	rv = dlm_ls_unlock_wait(ls, l->lksb.sb_lkid, flags, &l->lksb);
	*err = errno;
	return rv;
}

static int alk(struct ct_lock *l, int mode, uint32_t flags, const char *res)
{
	return dlm_ls_lock(ls, mode, &l->lksb, flags, res, strlen(res), 0, ct_cast, l, NULL, NULL);
}

#if !CT_THREADED
/* Dispatch on this thread until lksb's status leaves EINPROG (lite). */
static void wait_status(struct dlm_lksb *lksb)
{
	int fd = dlm_ls_get_fd(ls), i;

	for (i = 0; i < CT_WAIT_MS / 100 && lksb->sb_status == EINPROG; i++) {
		struct pollfd p = { .fd = fd, .events = POLLIN };

		if (poll(&p, 1, 100) > 0)
			dlm_dispatch(fd);
	}
}
#endif

static void simple(void)
{
	struct ct_lock a, b;
	int rv, err;

	ct_section("lock and unlock");
	ct_lock_init(&a, "a");
	ct_lock_init(&b, "b");
	rv = lw(&a, LKM_EXMODE, 0, "s", 0, &err);
	ct_wait_result("dlm_ls_lock_wait EX", rv, err, &a.lksb, 0);
	ct_true("lkid is non-zero", a.lksb.sb_lkid != 0);
	rv = uw(&a, 0, &err);
	ct_wait_result("dlm_ls_unlock_wait", rv, err, &a.lksb, EUNLOCK);
	rv = uw(&a, 0, &err);
	ct_call("dlm_ls_unlock_wait again (the lock is gone)", rv, err, ENOENT);

	ct_section("NOQUEUE");
	rv = lw(&a, LKM_EXMODE, 0, "nq", 0, &err);
	ct_wait_result("a EX", rv, err, &a.lksb, 0);
	rv = lw(&b, LKM_PRMODE, LKF_NOQUEUE, "nq", 0, &err);
	ct_wait_result("b PR|NOQUEUE", rv, err, &b.lksb, EAGAIN);

	ct_section("conversions");
	rv = lw(&a, LKM_NLMODE, LKF_CONVERT, "nq", 0, &err);
	ct_wait_result("a EX->NL", rv, err, &a.lksb, 0);
	rv = lw(&b, LKM_PRMODE, LKF_NOQUEUE, "nq", 0, &err);
	ct_wait_result("b PR|NOQUEUE now", rv, err, &b.lksb, 0);
	rv = lw(&a, LKM_EXMODE, LKF_CONVERT | LKF_NOQUEUE, "nq", 0, &err);
	ct_wait_result("a NL->EX|NOQUEUE", rv, err, &a.lksb, EAGAIN);
	rv = lw(&a, LKM_CRMODE, LKF_CONVERT | LKF_NOQUEUE, "nq", 0, &err);
	ct_wait_result("a is still NL and converts NL->CR|NOQUEUE", rv, err, &a.lksb, 0);
	rv = uw(&b, 0, &err);
	ct_wait_result("unlock b", rv, err, &b.lksb, EUNLOCK);
	rv = lw(&a, LKM_EXMODE, LKF_CONVERT, "nq", 0, &err);
	ct_wait_result("a CR->EX", rv, err, &a.lksb, 0);
	rv = uw(&a, 0, &err);
	ct_wait_result("unlock a", rv, err, &a.lksb, EUNLOCK);
}

static void deadlock(void)
{
	struct ct_lock a, b;
	int rv, err;

	ct_section("conversion deadlock through a _wait call");
	ct_lock_init(&a, "a");
	ct_lock_init(&b, "b");
	rv = lw(&a, LKM_PRMODE, 0, "dl", 0, &err);
	ct_wait_result("a PR", rv, err, &a.lksb, 0);
	rv = lw(&b, LKM_PRMODE, 0, "dl", 0, &err);
	ct_wait_result("b PR", rv, err, &b.lksb, 0);
	errno = 0;
	rv = alk(&a, LKM_EXMODE, LKF_CONVERT, "dl");
	ct_call("a PR->EX asynchronously (waits for b)", rv, errno, 0);
	rv = lw(&b, LKM_EXMODE, LKF_CONVERT, "dl", 0, &err);
	ct_wait_result("b PR->EX", rv, err, &b.lksb, EDEADLK);
	errno = 0;
	rv = dlm_ls_unlock(ls, a.lksb.sb_lkid, LKF_CANCEL, &a.lksb, &a);
	ct_call("cancel a's conversion", rv, errno, 0);
	ct_wait(ls, &a, 1);
	ct_eq_str("a's ASTs", ct_take(&a), "cast:ECANCEL");
	rv = uw(&b, 0, &err);
	ct_wait_result("unlock b", rv, err, &b.lksb, EUNLOCK);
	errno = 0;
	rv = dlm_ls_unlock(ls, a.lksb.sb_lkid, 0, &a.lksb, &a);
	ct_call("unlock a asynchronously", rv, errno, 0);
	ct_wait(ls, &a, 1);
	ct_eq_str("a's ASTs", ct_take(&a), "cast:EUNLOCK");
}

static void modes(void)
{
	struct ct_lock a, b, c;
	int rv, err;

	ct_section("EXPEDITE and ALTPR");
	ct_lock_init(&a, "a");
	ct_lock_init(&b, "b");
	ct_lock_init(&c, "c");
	rv = lw(&a, LKM_EXMODE, 0, "ex", 0, &err);
	ct_wait_result("a EX", rv, err, &a.lksb, 0);
	errno = 0;
	rv = alk(&b, LKM_PRMODE, 0, "ex");
	ct_call("b PR asynchronously (waits)", rv, errno, 0);
	errno = 0;
	rv = alk(&c, LKM_NLMODE, 0, "ex");
	ct_call("c NL asynchronously, behind b", rv, errno, 0);
	errno = 0;
	rv = dlm_ls_unlock(ls, c.lksb.sb_lkid, LKF_CANCEL, &c.lksb, &c);
	ct_call("cancel c", rv, errno, 0);
	ct_wait(ls, &c, 1);
	ct_eq_str("c was waiting", ct_take(&c), "cast:ECANCEL");
	rv = lw(&c, LKM_NLMODE, LKF_EXPEDITE, "ex", 0, &err);
	ct_wait_result("c NL|EXPEDITE is granted at once", rv, err, &c.lksb, 0);
	rv = uw(&c, 0, &err);
	ct_wait_result("unlock c", rv, err, &c.lksb, EUNLOCK);
	rv = uw(&a, 0, &err);
	ct_wait_result("unlock a", rv, err, &a.lksb, EUNLOCK);
	ct_wait(ls, &b, 1);
	ct_eq_str("b is granted (its AST ran during the _wait or in the AST thread)", ct_take(&b),
		  "cast:0");
	rv = lw(&a, LKM_CWMODE, LKF_NOQUEUE | LKF_ALTPR, "ex", 0, &err);
	ct_wait_result("a CW|ALTPR next to b's PR", rv, err, &a.lksb, 0);
	ct_eq_str("granted in the alternate mode", ct_sbflags(a.lksb.sb_flags), "ALTMODE");
	rv = lw(&c, LKM_CWMODE, LKF_NOQUEUE, "ex", 0, &err);
	ct_wait_result("c CW|NOQUEUE: a holds PR, not CW", rv, err, &c.lksb, EAGAIN);
	rv = uw(&a, 0, &err);
	ct_wait_result("unlock a", rv, err, &a.lksb, EUNLOCK);
	errno = 0;
	rv = dlm_ls_unlock(ls, b.lksb.sb_lkid, 0, &b.lksb, &b);
	ct_call("unlock b asynchronously", rv, errno, 0);
	ct_wait(ls, &b, 1);
	ct_eq_str("b's ASTs", ct_take(&b), "cast:EUNLOCK");
}

#if !CT_THREADED
/*
 * The lite library's wait loop ends on a blocking AST for the lock it
 * waits on, because libdlm copies the kernel's lksb (status 0) into it.
 * A replacement may wait for the real completion instead; then a
 * watchdog thread unlocks the blocker after WATCHDOG_S seconds so that
 * the call still returns. Which happened is printed ("info"), not
 * checked; the checks hold either way.
 */
#define WATCHDOG_S 3

static struct ct_lock wa, wb, wc;
static int wd_done, wd_fired;

static void *watchdog(void *arg)
{
	struct timespec abs;
	int rc = 0;

	(void)arg;
	clock_gettime(CLOCK_REALTIME, &abs);
	abs.tv_sec += WATCHDOG_S;
	pthread_mutex_lock(&ct_mu);
	while (!wd_done && rc == 0)
		rc = pthread_cond_timedwait(&ct_cv, &ct_mu, &abs);
	if (!wd_done)
		wd_fired = 1;
	pthread_mutex_unlock(&ct_mu);
	if (wd_fired)
		dlm_ls_unlock(ls, wb.lksb.sb_lkid, 0, &wb.lksb, &wb);
	return NULL;
}

static void lite_bast_ends_wait(void)
{
	pthread_t t;
	int rv, err, early;

	ct_section("lite: a blocking AST for the lock a _wait call converts");
	ct_lock_init(&wa, "a");
	ct_lock_init(&wb, "b");
	ct_lock_init(&wc, "c");
	rv = lw(&wa, LKM_PRMODE, 0, "be", 1, &err);
	ct_wait_result("a PR with a blocking AST", rv, err, &wa.lksb, 0);
	rv = lw(&wb, LKM_PRMODE, 0, "be", 0, &err);
	ct_wait_result("b PR", rv, err, &wb.lksb, 0);
	errno = 0;
	rv = alk(&wc, LKM_EXMODE, 0, "be");
	ct_call("c EX asynchronously (waits; a blocking AST for a is queued)", rv, errno, 0);
	wd_done = wd_fired = 0;
	if (pthread_create(&t, NULL, watchdog, NULL) != 0)
		ct_fatal("pthread_create failed");
	rv = lw(&wa, LKM_EXMODE, LKF_CONVERT, "be", 1, &err);
	pthread_mutex_lock(&ct_mu);
	wd_done = 1;
	pthread_cond_broadcast(&ct_cv);
	pthread_mutex_unlock(&ct_mu);
	pthread_join(t, NULL);
	early = !wd_fired;
	ct_call("a PR->EX (blocked by b) returns", rv, err, 0);
	ct_eq_err("with status", wa.lksb.sb_status, 0);
	ct_info("it returned before the conversion was granted: %s", early ? "yes" : "no");
	/* A library that waits for the grant also delivers c's second one. */
	ct_true("a's blocking AST ran during it", strncmp(ct_take(&wa), "bast", 4) == 0);
	if (early) {
		errno = 0;
		rv = dlm_ls_unlock(ls, wa.lksb.sb_lkid, LKF_CANCEL, &wa.lksb, &wa);
		ct_call("cancel a's conversion", rv, errno, 0);
		wait_status(&wa.lksb);
		ct_info("a's status after the cancel: %s", ct_errname(wa.lksb.sb_status));
		rv = uw(&wb, 0, &err);
		ct_wait_result("unlock b", rv, err, &wb.lksb, EUNLOCK);
	} else {
		/* b was locked by a _wait call: its unlock has no AST routine. */
		wait_status(&wb.lksb);
		ct_info("the watchdog unlocked b: %s", ct_errname(wb.lksb.sb_status));
	}
	rv = uw(&wa, 0, &err);
	ct_wait_result("unlock a", rv, err, &wa.lksb, EUNLOCK);
	ct_wait(ls, &wc, 1);
	ct_eq_str("c is granted", ct_take(&wc), "cast:0");
	errno = 0;
	rv = dlm_ls_unlock(ls, wc.lksb.sb_lkid, 0, &wc.lksb, &wc);
	ct_call("unlock c asynchronously", rv, errno, 0);
	ct_wait(ls, &wc, 1);
	ct_eq_str("c's ASTs", ct_take(&wc), "cast:EUNLOCK");
}
#endif

#if !CT_THREADED
/*
 * lite: a _wait call (o) reads a blocking AST for another lock of this
 * process (h), whose routine unlocks h with a nested dlm_ls_unlock_wait.
 * The nested call reads the fd itself (the outer one cannot until the
 * routine returns); h's unlock grants o.
 */
static struct ct_lock nh;
static int nested_rv = -2, nested_err, nested_status, nested_calls;

static void nested_bast(void *arg)
{
	struct ct_lock *l = arg;

	nested_calls++;
	nested_rv = uw(l, 0, &nested_err);
	nested_status = l->lksb.sb_status;
}

static void lite_nested_wait(void)
{
	struct ct_lock o;
	int rv, err;

	ct_section("lite: a _wait call from a blocking AST that a _wait call runs");
	ct_lock_init(&nh, "h");
	ct_lock_init(&o, "o");
	errno = 0;
	rv = dlm_ls_lock_wait(ls, LKM_EXMODE, &nh.lksb, 0, "nw", 2, 0, &nh, nested_bast, NULL);
	err = errno;
	ct_wait_result("h EX, with a blocking AST that unlocks it with a _wait call", rv, err,
		       &nh.lksb, 0);
	rv = lw(&o, LKM_EXMODE, 0, "nw", 0, &err);
	ct_wait_result("o EX (h's blocking AST runs during it)", rv, err, &o.lksb, 0);
	ct_eq("h's blocking AST ran", nested_calls, 1);
	ct_call("its unlock of h returns", nested_rv, nested_err, 0);
	ct_eq_err("h's status", nested_status, EUNLOCK);
	rv = uw(&o, 0, &err);
	ct_wait_result("unlock o", rv, err, &o.lksb, EUNLOCK);
}
#endif

static void blocking(void)
{
	struct ct_lock a, b;
	int rv, err;

	ct_section("a blocking AST given to dlm_ls_lock_wait");
	ct_lock_init(&a, "a");
	ct_lock_init(&b, "b");
	rv = lw(&a, LKM_EXMODE, 0, "bw", 1, &err);
	ct_wait_result("a EX with a blocking AST", rv, err, &a.lksb, 0);
	errno = 0;
	rv = alk(&b, LKM_EXMODE, 0, "bw");
	ct_call("b EX asynchronously", rv, errno, 0);
	ct_wait(ls, &a, 1);
	ct_eq_str("a's blocking AST, with the bastarg", ct_take(&a), "bast");
	rv = uw(&a, 0, &err);
	ct_wait_result("unlock a", rv, err, &a.lksb, EUNLOCK);
	ct_wait(ls, &b, 1);
	ct_eq_str("b is granted", ct_take(&b), "cast:0");
	errno = 0;
	rv = dlm_ls_unlock(ls, b.lksb.sb_lkid, 0, &b.lksb, &b);
	ct_call("unlock b asynchronously", rv, errno, 0);
	ct_wait(ls, &b, 1);
	ct_eq_str("b's ASTs", ct_take(&b), "cast:EUNLOCK");

#if !CT_THREADED
	lite_bast_ends_wait();
	lite_nested_wait();
#endif
}

int main(void)
{
	ct_begin("ct_wait");
	ls = ct_create(LS);
#if CT_THREADED
	ct_start_ast_thread(ls);
#endif
	simple();
	deadlock();
	modes();
	blocking();
	ct_release(LS, ls);
	return ct_end();
}
