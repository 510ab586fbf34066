/*
 * ct_timeout: dlm_ls_lockx() with LKF_TIMEOUT and a timeout (in
 * centiseconds). libdlm 4.2 does not pass the timeout on, and the kernel
 * dropped LKF_TIMEOUT in 6.2, so on Debian's libdlm a blocked request just
 * waits; dlm-rs honours the timeout in user space: the request (or
 * conversion) still in progress when it expires is cancelled and completes
 * with ETIMEDOUT. The transcripts differ on purpose (expected/ours/).
 *
 * A request blocked by an EX holder, with a 0.3 s timeout; a conversion
 * blocked the same way; a timed request that is granted at once (its
 * timer must do nothing later); then the held lock is released. The
 * threaded variant runs with the AST thread.
 */
#include "ct.h"

#define LS "ct_timeout"

/* Let ms milliseconds of ASTs come: dispatching ls here, or, with the
 * AST thread, sleeping while it delivers them. */
static void dispatch_for(dlm_lshandle_t ls, int ms)
{
	int fd = dlm_ls_get_fd(ls);
	struct timespec end, now;

	if (ct_ast_thread) {
		struct timespec d = { ms / 1000, (long)(ms % 1000) * 1000000L };

		while (nanosleep(&d, &d) != 0 && errno == EINTR)
			;
		return;
	}

	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_nsec += (long)ms * 1000000L;
	end.tv_sec += end.tv_nsec / 1000000000L;
	end.tv_nsec %= 1000000000L;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		long left;

		clock_gettime(CLOCK_MONOTONIC, &now);
		left = (end.tv_sec - now.tv_sec) * 1000 + (end.tv_nsec - now.tv_nsec) / 1000000;
		if (left <= 0)
			return;
		if (poll(&p, 1, (int)left) > 0)
			dlm_dispatch(fd);
	}
}

/* If the operation is still in progress (libdlm ignored the timeout),
 * cancel it and take its ECANCEL. */
static void cancel_if_waiting(dlm_lshandle_t ls, struct ct_lock *l)
{
	int rv;

	if (l->lksb.sb_status != EINPROG)
		return;
	ct_info("%s still waits: the timeout was ignored; cancelled", l->tag);
	rv = dlm_ls_unlock(ls, l->lksb.sb_lkid, LKF_CANCEL, &l->lksb, l);
	if (rv == 0 && ct_wait(ls, l, 1) == 0)
		ct_info("%s: %s", l->tag, ct_take(l));
}

int main(void)
{
	struct dlm_lksb held;
	struct ct_lock req, conv, quick;
	uint64_t xid = 7, timeout = 30;
	dlm_lshandle_t ls;
	int rv;

	ct_begin("ct_timeout");
	ls = ct_create(LS);
#if CT_THREADED
	/* The threaded library's _wait needs an AST thread (libdlm 4.2). */
	ct_start_ast_thread(ls);
#endif

	memset(&held, 0, sizeof(held));
	rv = dlm_ls_lock_wait(ls, LKM_EXMODE, &held, 0, "held", 4, 0, NULL, NULL, NULL);
	ct_wait_result("EX on held", rv, errno, &held, 0);

	ct_section("a request blocked by EX, LKF_TIMEOUT 30 cs");
	ct_lock_init(&req, "req");
	errno = 0;
	rv = dlm_ls_lockx(ls, LKM_PRMODE, &req.lksb, LKF_TIMEOUT, "held", 4, 0, ct_cast, &req,
			  NULL, &xid, &timeout);
	ct_call("dlm_ls_lockx PR, LKF_TIMEOUT", rv, errno, 0);
	dispatch_for(ls, 1500);
	ct_info("its ASTs after 1.5 s: %s", ct_take(&req));
	cancel_if_waiting(ls, &req);

	ct_section("a conversion blocked by EX, LKF_TIMEOUT 30 cs");
	ct_lock_init(&conv, "conv");
	errno = 0;
	rv = dlm_ls_lock(ls, LKM_NLMODE, &conv.lksb, 0, "held", 4, 0, ct_cast, &conv, NULL, NULL);
	ct_call("dlm_ls_lock NL", rv, errno, 0);
	if (ct_wait(ls, &conv, 1) == 0)
		ct_eq_str("its AST", ct_take(&conv), "cast:0");
	errno = 0;
	rv = dlm_ls_lockx(ls, LKM_EXMODE, &conv.lksb, LKF_CONVERT | LKF_TIMEOUT, NULL, 0, 0,
			  ct_cast, &conv, NULL, &xid, &timeout);
	ct_call("dlm_ls_lockx CONVERT NL->EX, LKF_TIMEOUT", rv, errno, 0);
	dispatch_for(ls, 1500);
	ct_info("its ASTs after 1.5 s: %s", ct_take(&conv));
	cancel_if_waiting(ls, &conv);
	errno = 0;
	rv = dlm_ls_unlock(ls, conv.lksb.sb_lkid, 0, &conv.lksb, &conv);
	ct_call("unlock the NL lock", rv, errno, 0);
	if (ct_wait(ls, &conv, 1) == 0)
		ct_eq_str("its AST", ct_take(&conv), "cast:EUNLOCK");

	ct_section("a timed request granted at once");
	ct_lock_init(&quick, "quick");
	timeout = 20;
	errno = 0;
	rv = dlm_ls_lockx(ls, LKM_EXMODE, &quick.lksb, LKF_TIMEOUT, "free", 4, 0, ct_cast, &quick,
			  NULL, &xid, &timeout);
	ct_call("dlm_ls_lockx EX, LKF_TIMEOUT", rv, errno, 0);
	if (ct_wait(ls, &quick, 1) == 0)
		ct_eq_str("its AST", ct_take(&quick), "cast:0");
	dispatch_for(ls, 600);
	ct_eq_str("after its timeout passed, no more ASTs", ct_take(&quick), "none");
	errno = 0;
	rv = dlm_ls_unlock(ls, quick.lksb.sb_lkid, 0, &quick.lksb, &quick);
	ct_call("unlock it", rv, errno, 0);
	if (ct_wait(ls, &quick, 1) == 0)
		ct_eq_str("its AST", ct_take(&quick), "cast:EUNLOCK");

	rv = dlm_ls_unlock_wait(ls, held.sb_lkid, 0, &held);
	ct_wait_result("unlock held", rv, errno, &held, EUNLOCK);
	ct_release(LS, ls);
	return ct_end();
}
