/*
 * ct_lock: the asynchronous calls, dispatched through poll() on
 * dlm_ls_get_fd() and dlm_dispatch() (no AST thread, in both libraries).
 *
 * Covers dlm_ls_lock, dlm_ls_lockx (xid, and a timeout pointer that
 * libdlm 4.2 ignores), dlm_ls_unlock, dlm_ls_deadlock_cancel,
 * dlm_dispatch, dlm_ls_get_fd: EINPROG until the AST, completion and
 * blocking ASTs with their astarg, NOQUEUE and NOQUEUEBAST, conversions up
 * and down, QUECVT (queues behind a waiting conversion; refused for a down
 * conversion), conversion deadlock (EDEADLK, and CONVDEADLK demoting),
 * cancel of a waiting request, of a waiting conversion and of a granted
 * lock (no AST), deadlock cancel, and where the completion of an unlock
 * goes (the lock's AST routine, with the unlock's astarg and lksb).
 *
 * Cross-lock order of ASTs is not part of the transcript, only each
 * lock's own sequence (the kernel queues callbacks per lock).
 */
#include "ct.h"

#define LS "ct_lock"

static dlm_lshandle_t ls;

/* A new lock request; returns the call's result, errno in *err. */
static int lk(struct ct_lock *l, int mode, uint32_t flags, const char *res, int bast, int *err)
{
	int rv;

	errno = 0;
	rv = dlm_ls_lock(ls, mode, &l->lksb, flags, res, strlen(res), 0, ct_cast, l,
			 bast ? ct_bast : NULL, NULL);
	*err = errno;
	return rv;
}

/* A conversion of lock l; the name is passed as callers do, and ignored. */
static int cv(struct ct_lock *l, int mode, uint32_t flags, const char *res, int bast, int *err)
{
	return lk(l, mode, flags | LKF_CONVERT, res, bast, err);
}

static int ul(struct ct_lock *l, uint32_t flags, int *err)
{
	int rv;

	errno = 0;
	rv = dlm_ls_unlock(ls, l->lksb.sb_lkid, flags, &l->lksb, l);
	*err = errno;
	return rv;
}

/* A call that must succeed, then n ASTs on l, compared with want. */
static void expect(const char *what, int rv, int err, struct ct_lock *l, int n, const char *want)
{
	if (!ct_call(ct_what("%s: call", what), rv, err, 0))
		return;
	if (n > 0)
		ct_wait(ls, l, n);
	ct_eq_str(ct_what("%s: ASTs", what), ct_take(l), want);
}

/* Unlock l and expect its EUNLOCK completion. */
static void unlock_ok(const char *what, struct ct_lock *l)
{
	int err, rv = ul(l, 0, &err);

	expect(what, rv, err, l, 1, "cast:EUNLOCK");
}

static void basics(void)
{
	struct ct_lock a, x;
	uint32_t lkid;
	int rv, err;

	ct_section("lock and unlock, dispatched through poll()");
	ct_lock_init(&a, "a");
	rv = lk(&a, LKM_EXMODE, 0, "basic", 1, &err);
	ct_call("dlm_ls_lock EX", rv, err, 0);
	ct_eq_err("status before dispatch", a.lksb.sb_status, EINPROG);
	ct_true("lkid is set at once and non-zero", a.lksb.sb_lkid != 0);
	lkid = a.lksb.sb_lkid;
	ct_wait(ls, &a, 1);
	ct_eq_str("the completion AST, with the lock's astarg", ct_take(&a), "cast:0");
	ct_true("lkid unchanged by the AST", a.lksb.sb_lkid == lkid);
	rv = ul(&a, 0, &err);
	ct_call("dlm_ls_unlock", rv, err, 0);
	ct_eq_err("status before dispatch", a.lksb.sb_status, EINPROG);
	ct_wait(ls, &a, 1);
	ct_eq_str("the unlock's completion", ct_take(&a), "cast:EUNLOCK");

	ct_section("dlm_ls_lockx with an xid and a timeout pointer");
	{
		uint64_t xid = 42, timeout = 1;

		ct_lock_init(&a, "a");
		errno = 0;
		rv = dlm_ls_lockx(ls, LKM_PRMODE, &a.lksb, 0, "lockx", 5, 0, ct_cast, &a, NULL,
				  &xid, &timeout);
		expect("dlm_ls_lockx PR", rv, errno, &a, 1, "cast:0");
		ct_eq("the xid is not written back", (long long)xid, 42);
		ct_eq("the timeout is not written back", (long long)timeout, 1);
		errno = 0;
		rv = dlm_ls_lockx(ls, LKM_PRMODE, &a.lksb, LKF_CONVERT, "lockx", 5, 0, ct_cast, &a,
				  NULL, NULL, NULL);
		expect("dlm_ls_lockx convert with NULL xid and timeout", rv, errno, &a, 1, "cast:0");
		unlock_ok("unlock", &a);
	}

	ct_section("the completion of an unlock goes to the lock's AST routine");
	ct_lock_init(&a, "a");
	ct_lock_init(&x, "x");
	rv = lk(&a, LKM_EXMODE, 0, "unlockast", 0, &err);
	expect("EX", rv, err, &a, 1, "cast:0");
	errno = 0;
	rv = dlm_ls_unlock(ls, a.lksb.sb_lkid, 0, &x.lksb, &x);
	ct_call("dlm_ls_unlock with another lksb and astarg", rv, errno, 0);
	ct_wait(ls, &x, 1);
	ct_eq_str("the completion went to the unlock's astarg", ct_take(&x), "cast:EUNLOCK");
	ct_eq_err("and its lksb", x.lksb.sb_status, EUNLOCK);
	ct_eq_str("nothing for the lock's own astarg", ct_take(&a), "none");
	rv = lk(&a, LKM_EXMODE, 0, "unlockast", 0, &err);
	expect("EX again", rv, err, &a, 1, "cast:0");
	errno = 0;
	rv = dlm_ls_unlock(ls, a.lksb.sb_lkid, 0, &a.lksb, NULL);
	ct_call("dlm_ls_unlock with a NULL astarg", rv, errno, 0);
	ct_wait(ls, &a, 1);
	ct_eq_str("the completion went to the lock's astarg", ct_take(&a), "cast:EUNLOCK");
}

static void noqueue(void)
{
	struct ct_lock a, b;
	int rv, err;

	ct_section("NOQUEUE and NOQUEUEBAST");
	ct_lock_init(&a, "a");
	ct_lock_init(&b, "b");
	rv = lk(&a, LKM_EXMODE, 0, "nq", 1, &err);
	expect("a EX", rv, err, &a, 1, "cast:0");
	rv = lk(&b, LKM_EXMODE, LKF_NOQUEUE, "nq", 1, &err);
	ct_call("b EX|NOQUEUE: call", rv, err, 0);
	ct_true("b's lkid is non-zero", b.lksb.sb_lkid != 0);
	ct_true("b's lkid differs from a's", b.lksb.sb_lkid != a.lksb.sb_lkid);
	ct_wait(ls, &b, 1);
	ct_eq_str("b EX|NOQUEUE: ASTs", ct_take(&b), "cast:EAGAIN");
	rv = lk(&b, LKM_PRMODE, LKF_NOQUEUE | LKF_NOQUEUEBAST, "nq", 1, &err);
	expect("b PR|NOQUEUE|NOQUEUEBAST", rv, err, &b, 1, "cast:EAGAIN");
	ct_wait(ls, &a, 1);
	ct_eq_str("a got a blocking AST for it (none for plain NOQUEUE)", ct_take(&a), "bast");
	errno = 0;
	rv = dlm_ls_unlock(ls, b.lksb.sb_lkid, 0, &b.lksb, &b);
	ct_call("unlock of the failed request (gone)", rv, errno, ENOENT);
	unlock_ok("unlock a", &a);
}

static void blocking(void)
{
	struct ct_lock a, b;
	int rv, err;

	ct_section("blocking ASTs and down/up conversions");
	ct_lock_init(&a, "a");
	ct_lock_init(&b, "b");
	rv = lk(&a, LKM_EXMODE, 0, "bast", 1, &err);
	expect("a EX", rv, err, &a, 1, "cast:0");
	rv = lk(&b, LKM_EXMODE, 0, "bast", 1, &err);
	expect("b EX waits; a gets a blocking AST", rv, err, &a, 1, "bast");
	ct_info("the blocking AST left a's lksb status %s (libdlm copies the kernel's)",
		ct_errname(a.lksb.sb_status));
	rv = cv(&a, LKM_NLMODE, 0, "bast", 1, &err);
	expect("a down-converts EX->NL", rv, err, &a, 1, "cast:0");
	ct_wait(ls, &b, 1);
	ct_eq_str("b is granted", ct_take(&b), "cast:0");
	rv = cv(&a, LKM_EXMODE, 0, "bast", 1, &err);
	expect("a converts NL->EX and waits; b gets a blocking AST", rv, err, &b, 1, "bast");
	rv = ul(&b, 0, &err);
	expect("unlock b", rv, err, &b, 1, "cast:EUNLOCK");
	ct_wait(ls, &a, 1);
	ct_eq_str("a's conversion is granted", ct_take(&a), "cast:0");
	rv = cv(&a, LKM_CRMODE, 0, "bast", 1, &err);
	expect("a down-converts EX->CR", rv, err, &a, 1, "cast:0");
	rv = cv(&a, LKM_PWMODE, 0, "bast", 1, &err);
	expect("a up-converts CR->PW in place", rv, err, &a, 1, "cast:0");
	unlock_ok("unlock a", &a);
}

static void quecvt(void)
{
	struct ct_lock a, b, c;
	int rv, err;

	ct_section("QUECVT");
	ct_lock_init(&a, "a");
	ct_lock_init(&b, "b");
	ct_lock_init(&c, "c");
	rv = lk(&a, LKM_PRMODE, 0, "qc", 0, &err);
	expect("a PR", rv, err, &a, 1, "cast:0");
	rv = lk(&b, LKM_PRMODE, 0, "qc", 0, &err);
	expect("b PR", rv, err, &b, 1, "cast:0");
	rv = lk(&c, LKM_NLMODE, 0, "qc", 0, &err);
	expect("c NL", rv, err, &c, 1, "cast:0");
	rv = cv(&a, LKM_EXMODE, 0, "qc", 0, &err);
	expect("a PR->EX waits for b", rv, err, &a, 0, "none");
	rv = cv(&c, LKM_CRMODE, LKF_QUECVT, "qc", 0, &err);
	expect("c NL->CR|QUECVT queues behind a", rv, err, &c, 0, "none");
	rv = ul(&c, LKF_CANCEL, &err);
	expect("cancel c's conversion (it was waiting)", rv, err, &c, 1, "cast:ECANCEL");
	rv = cv(&c, LKM_CRMODE, 0, "qc", 0, &err);
	expect("c NL->CR without QUECVT is granted in place", rv, err, &c, 1, "cast:0");
	unlock_ok("unlock b", &b);
	unlock_ok("unlock c", &c);
	ct_wait(ls, &a, 1);
	ct_eq_str("a's conversion is granted", ct_take(&a), "cast:0");
	rv = cv(&a, LKM_NLMODE, LKF_QUECVT, "qc", 0, &err);
	ct_call("a EX->NL|QUECVT (a down conversion) is refused", rv, err, EINVAL);
	ct_eq_str("no AST for it", ct_take(&a), "none");
	unlock_ok("unlock a", &a);
}

static void convdeadlk(void)
{
	struct ct_lock a, b;
	int rv, err;

	ct_section("conversion deadlock");
	ct_lock_init(&a, "a");
	ct_lock_init(&b, "b");
	rv = lk(&a, LKM_PRMODE, 0, "cd", 0, &err);
	expect("a PR", rv, err, &a, 1, "cast:0");
	rv = lk(&b, LKM_PRMODE, 0, "cd", 0, &err);
	expect("b PR", rv, err, &b, 1, "cast:0");
	rv = cv(&a, LKM_EXMODE, 0, "cd", 0, &err);
	expect("a PR->EX waits for b", rv, err, &a, 0, "none");
	rv = cv(&b, LKM_EXMODE, 0, "cd", 0, &err);
	expect("b PR->EX is a conversion deadlock", rv, err, &b, 1, "cast:EDEADLK");
	rv = cv(&b, LKM_EXMODE, LKF_CONVDEADLK, "cd", 0, &err);
	expect("b PR->EX|CONVDEADLK: b is demoted to NL, a is granted", rv, err, &a, 1, "cast:0");
	unlock_ok("unlock a", &a);
	ct_wait(ls, &b, 1);
	ct_eq_str("then b is granted EX, marked DEMOTED", ct_take(&b), "cast:0/DEMOTED");
	unlock_ok("unlock b", &b);
}

static void cancel(void)
{
	struct ct_lock a, b, c;
	int rv, err;

	ct_section("cancel");
	ct_lock_init(&a, "a");
	ct_lock_init(&b, "b");
	ct_lock_init(&c, "c");
	rv = lk(&a, LKM_EXMODE, 0, "cn", 0, &err);
	expect("a EX", rv, err, &a, 1, "cast:0");
	rv = lk(&b, LKM_EXMODE, 0, "cn", 0, &err);
	expect("b EX waits", rv, err, &b, 0, "none");
	rv = ul(&b, LKF_CANCEL, &err);
	ct_call("cancel b: call", rv, err, 0);
	ct_eq_err("status before dispatch", b.lksb.sb_status, EINPROG);
	ct_wait(ls, &b, 1);
	ct_eq_str("cancel b: ASTs", ct_take(&b), "cast:ECANCEL");
	rv = ul(&b, 0, &err);
	ct_call("a cancelled request is gone: unlock", rv, err, ENOENT);

	rv = ul(&a, LKF_CANCEL, &err);
	ct_call("cancel of the granted a returns 0", rv, err, 0);
	rv = ul(&a, 0, &err);
	expect("then unlock a: the next AST is the unlock's (no cancel AST)", rv, err, &a, 1,
	       "cast:EUNLOCK");

	ct_lock_init(&a, "a");
	ct_lock_init(&b, "b");
	rv = lk(&a, LKM_PRMODE, 0, "cc", 0, &err);
	expect("a PR", rv, err, &a, 1, "cast:0");
	rv = lk(&b, LKM_PRMODE, 0, "cc", 0, &err);
	expect("b PR", rv, err, &b, 1, "cast:0");
	rv = cv(&a, LKM_EXMODE, 0, "cc", 0, &err);
	expect("a PR->EX waits", rv, err, &a, 0, "none");
	rv = ul(&a, LKF_CANCEL, &err);
	expect("cancel a's conversion", rv, err, &a, 1, "cast:ECANCEL");
	unlock_ok("unlock b", &b);
	rv = lk(&c, LKM_PWMODE, LKF_NOQUEUE, "cc", 0, &err);
	expect("c PW|NOQUEUE fails: a still holds PR", rv, err, &c, 1, "cast:EAGAIN");
	rv = lk(&c, LKM_CRMODE, LKF_NOQUEUE, "cc", 0, &err);
	expect("c CR|NOQUEUE is granted: a is not EX", rv, err, &c, 1, "cast:0");
	unlock_ok("unlock c", &c);
	unlock_ok("unlock a", &a);
}

static void deadlock_cancel(void)
{
	struct ct_lock a, b;
	int rv, err;

	ct_section("dlm_ls_deadlock_cancel");
	ct_lock_init(&a, "a");
	ct_lock_init(&b, "b");
	rv = lk(&a, LKM_EXMODE, 0, "dc", 0, &err);
	expect("a EX", rv, err, &a, 1, "cast:0");
	rv = lk(&b, LKM_EXMODE, 0, "dc", 0, &err);
	expect("b EX waits", rv, err, &b, 0, "none");
	errno = 0;
	rv = dlm_ls_deadlock_cancel(ls, b.lksb.sb_lkid, 0);
	ct_call("dlm_ls_deadlock_cancel(b)", rv, errno, 0);
	ct_wait(ls, &b, 1);
	ct_eq_str("b completes with EDEADLK", ct_take(&b), "cast:EDEADLK");
	rv = ul(&b, 0, &err);
	ct_call("then b is gone: unlock", rv, err, ENOENT);
	errno = 0;
	rv = dlm_ls_deadlock_cancel(ls, 0x7fff0000, 0);
	ct_call("dlm_ls_deadlock_cancel(an unknown lkid)", rv, errno, ENOENT);
	unlock_ok("unlock a", &a);
}

int main(void)
{
	ct_begin("ct_lock");
	ls = ct_create(LS);
	basics();
	noqueue();
	blocking();
	quecvt();
	convdeadlk();
	cancel();
	deadlock_cancel();
	ct_release(LS, ls);
	return ct_end();
}
