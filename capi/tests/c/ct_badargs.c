/*
 * ct_badargs: bad arguments that Debian's libdlm survives, each answered
 * with -1 and an errno (from libdlm itself or from the kernel's write()).
 *
 * libdlm: no default lockspace or a NULL handle for unlock, deadlock
 * cancel and purge -> ENOTCONN (but ENOSYS from deadlock cancel and purge
 * while the process has not yet opened the control device: the kernel
 * version is checked first and is still unknown); lkid 0 -> EINVAL; a
 * range -> ENOSYS; VALBLK without sb_lvbptr -> EINVAL; a name over 64
 * bytes -> EINVAL. The kernel: a bad mode, EXPEDITE with another mode
 * than NL, QUECVT or CONVDEADLK without CONVERT, CANCEL in a lock call,
 * CONVDEADLK with NOQUEUE, no AST routine -> EINVAL; an unknown lkid,
 * and CONVERT of lkid 0, -> ENOENT; converting a lock that is still
 * waiting -> EBUSY; bad unlock flags -> EINVAL. Also binary resource
 * names (a NUL inside is part of the name) and dlm_dispatch on a bad fd.
 * Inputs that crash libdlm are in ct_crash.
 *
 * Nothing here opens the default lockspace.
 */
#include "ct.h"

#define LS "ct_badargs"

static dlm_lshandle_t ls;

static void lock_err(const char *what, int mode, uint32_t flags, const char *name, unsigned namelen,
		     int with_ast, int want)
{
	struct ct_lock l;
	int rv;

	ct_lock_init(&l, "l");
	errno = 0;
	rv = dlm_ls_lock(ls, mode, &l.lksb, flags, name, namelen, 0, with_ast ? ct_cast : NULL, &l,
			 NULL, NULL);
	ct_call(what, rv, errno, want);
}

static void no_default(void)
{
	struct dlm_lksb lksb;
	int rv;

	ct_section("no default lockspace");
	memset(&lksb, 0, sizeof(lksb));
	errno = 0;
	rv = dlm_unlock(1, 0, &lksb, NULL);
	ct_call("dlm_unlock", rv, errno, ENOTCONN);
	errno = 0;
	rv = dlm_unlock_wait(1, 0, &lksb);
	ct_call("dlm_unlock_wait", rv, errno, ENOTCONN);
#if CT_THREADED
	errno = 0;
	rv = unlock_resource(1);
	ct_eq("unlock_resource returns", rv, -1);
	ct_info("unlock_resource's errno: %d", errno);
#endif
}

/*
 * libdlm checks the kernel's version before the handle in these two, and
 * knows the version only once this process opened the control device.
 */
static void null_handle_first(void)
{
	int rv;

	ct_section("a NULL handle before the control device was opened");
	errno = 0;
	rv = dlm_ls_deadlock_cancel(NULL, 1, 0);
	ct_call("dlm_ls_deadlock_cancel", rv, errno, ENOSYS);
	errno = 0;
	rv = dlm_ls_purge(NULL, 0, 0);
	ct_call("dlm_ls_purge", rv, errno, ENOSYS);
}

static void null_handle(void)
{
	struct dlm_lksb lksb;
	int rv;

	ct_section("a NULL lockspace handle");
	memset(&lksb, 0, sizeof(lksb));
	errno = 0;
	rv = dlm_ls_unlock(NULL, 1, 0, &lksb, NULL);
	ct_call("dlm_ls_unlock", rv, errno, ENOTCONN);
	errno = 0;
	rv = dlm_ls_unlock_wait(NULL, 1, 0, &lksb);
	ct_call("dlm_ls_unlock_wait", rv, errno, ENOTCONN);
	errno = 0;
	rv = dlm_ls_deadlock_cancel(NULL, 1, 0);
	ct_call("dlm_ls_deadlock_cancel", rv, errno, ENOTCONN);
	errno = 0;
	rv = dlm_ls_purge(NULL, 0, 0);
	ct_call("dlm_ls_purge", rv, errno, ENOTCONN);
}

static void library_checks(void)
{
	struct ct_lock l;
	char name[80];
	int rv, range = 0;

	ct_section("checks in the library");
	ct_lock_init(&l, "l");
	errno = 0;
	rv = dlm_ls_unlock(ls, 0, 0, &l.lksb, NULL);
	ct_call("dlm_ls_unlock lkid 0", rv, errno, EINVAL);
	errno = 0;
	rv = dlm_ls_unlock_wait(ls, 0, 0, &l.lksb);
	ct_call("dlm_ls_unlock_wait lkid 0", rv, errno, EINVAL);
	errno = 0;
	rv = dlm_ls_deadlock_cancel(ls, 0, 0);
	ct_call("dlm_ls_deadlock_cancel lkid 0", rv, errno, EINVAL);
	errno = 0;
	rv = dlm_ls_lock(ls, LKM_EXMODE, &l.lksb, 0, "r", 1, 0, ct_cast, &l, NULL, &range);
	ct_call("dlm_ls_lock with a range", rv, errno, ENOSYS);
	errno = 0;
	rv = dlm_ls_lock_wait(ls, LKM_EXMODE, &l.lksb, 0, "r", 1, 0, &l, NULL, &range);
	ct_call("dlm_ls_lock_wait with a range", rv, errno, ENOSYS);
	l.lksb.sb_lvbptr = NULL;
	errno = 0;
	rv = dlm_ls_lock(ls, LKM_EXMODE, &l.lksb, LKF_VALBLK, "r", 1, 0, ct_cast, &l, NULL, NULL);
	ct_call("dlm_ls_lock VALBLK with a NULL sb_lvbptr", rv, errno, EINVAL);
	errno = 0;
	rv = dlm_ls_lock_wait(ls, LKM_EXMODE, &l.lksb, LKF_VALBLK, "r", 1, 0, &l, NULL, NULL);
	ct_call("dlm_ls_lock_wait VALBLK with a NULL sb_lvbptr", rv, errno, EINVAL);
	memset(name, 'x', sizeof(name));
	lock_err("dlm_ls_lock with a 65-byte name", LKM_EXMODE, 0, name, 65, 1, EINVAL);
	errno = 0;
	rv = dlm_ls_lock_wait(ls, LKM_EXMODE, &l.lksb, 0, name, 65, 0, &l, NULL, NULL);
	ct_call("dlm_ls_lock_wait with a 65-byte name", rv, errno, EINVAL);
	errno = 0;
	rv = dlm_dispatch(-1);
	ct_call("dlm_dispatch(-1)", rv, errno, EBADF);
}

static void kernel_checks(void)
{
	struct ct_lock a, b;
	char name[80];
	int rv;

	ct_section("checks in the kernel");
	lock_err("mode 6", 6, 0, "r", 1, 1, EINVAL);
	lock_err("EXPEDITE with PR", LKM_PRMODE, LKF_EXPEDITE, "r", 1, 1, EINVAL);
	lock_err("QUECVT without CONVERT", LKM_PRMODE, LKF_QUECVT, "r", 1, 1, EINVAL);
	lock_err("CONVDEADLK without CONVERT", LKM_PRMODE, LKF_CONVDEADLK, "r", 1, 1, EINVAL);
	lock_err("CANCEL in a lock call", LKM_PRMODE, LKF_CANCEL, "r", 1, 1, EINVAL);
	lock_err("no AST routine", LKM_PRMODE, 0, "r", 1, 0, EINVAL);
	lock_err("CONVERT of lkid 0", LKM_PRMODE, LKF_CONVERT, "r", 1, 1, ENOENT);

	ct_lock_init(&a, "a");
	ct_lock_init(&b, "b");
	a.lksb.sb_lkid = 0x7fff0000;
	errno = 0;
	rv = dlm_ls_lock(ls, LKM_PRMODE, &a.lksb, LKF_CONVERT, "r", 1, 0, ct_cast, &a, NULL, NULL);
	ct_call("CONVERT of an unknown lkid", rv, errno, ENOENT);
	ct_info("the lksb's status after a failed call: %s", ct_errname(a.lksb.sb_status));
	errno = 0;
	rv = dlm_ls_unlock(ls, 0x7fff0000, 0, &a.lksb, &a);
	ct_call("unlock of an unknown lkid", rv, errno, ENOENT);

	ct_lock_init(&a, "a");
	errno = 0;
	rv = dlm_ls_lock(ls, LKM_EXMODE, &a.lksb, 0, "k", 1, 0, ct_cast, &a, NULL, NULL);
	ct_call("a EX", rv, errno, 0);
	ct_wait(ls, &a, 1);
	ct_eq_str("a's ASTs", ct_take(&a), "cast:0");
	errno = 0;
	rv = dlm_ls_lock(ls, LKM_EXMODE, &b.lksb, 0, "k", 1, 0, ct_cast, &b, NULL, NULL);
	ct_call("b EX waits", rv, errno, 0);
	errno = 0;
	rv = dlm_ls_lock(ls, LKM_NLMODE, &b.lksb, LKF_CONVERT, "k", 1, 0, ct_cast, &b, NULL, NULL);
	ct_call("converting the waiting b", rv, errno, EBUSY);
	errno = 0;
	rv = dlm_ls_lock(ls, LKM_NLMODE, &a.lksb, LKF_CONVERT | LKF_CONVDEADLK | LKF_NOQUEUE, "k", 1,
			 0, ct_cast, &a, NULL, NULL);
	ct_call("CONVERT with CONVDEADLK|NOQUEUE", rv, errno, EINVAL);
	errno = 0;
	rv = dlm_ls_unlock(ls, a.lksb.sb_lkid, LKF_NOQUEUE, &a.lksb, &a);
	ct_call("unlock with NOQUEUE", rv, errno, EINVAL);
	errno = 0;
	rv = dlm_ls_unlock(ls, a.lksb.sb_lkid, LKF_CANCEL | LKF_FORCEUNLOCK, &a.lksb, &a);
	ct_call("unlock with CANCEL|FORCEUNLOCK", rv, errno, EINVAL);
	errno = 0;
	rv = dlm_ls_unlock(ls, a.lksb.sb_lkid, 0, &a.lksb, &a);
	ct_call("unlock a", rv, errno, 0);
	ct_wait(ls, &a, 1);
	ct_eq_str("a's ASTs", ct_take(&a), "cast:EUNLOCK");
	ct_wait(ls, &b, 1);
	ct_eq_str("b is granted", ct_take(&b), "cast:0");
	errno = 0;
	rv = dlm_ls_unlock(ls, b.lksb.sb_lkid, 0, &b.lksb, &b);
	ct_call("unlock b", rv, errno, 0);
	ct_wait(ls, &b, 1);
	ct_eq_str("b's ASTs", ct_take(&b), "cast:EUNLOCK");

	ct_section("resource names are binary");
	ct_lock_init(&a, "a");
	ct_lock_init(&b, "b");
	errno = 0;
	rv = dlm_ls_lock(ls, LKM_EXMODE, &a.lksb, 0, "n\0a", 3, 0, ct_cast, &a, NULL, NULL);
	ct_call("EX on \"n\\0a\"", rv, errno, 0);
	ct_wait(ls, &a, 1);
	ct_eq_str("a's ASTs", ct_take(&a), "cast:0");
	errno = 0;
	rv = dlm_ls_lock(ls, LKM_EXMODE, &b.lksb, LKF_NOQUEUE, "n\0b", 3, 0, ct_cast, &b, NULL, NULL);
	ct_call("EX|NOQUEUE on \"n\\0b\"", rv, errno, 0);
	ct_wait(ls, &b, 1);
	ct_eq_str("is another resource", ct_take(&b), "cast:0");
	errno = 0;
	rv = dlm_ls_lock(ls, LKM_EXMODE, &b.lksb, LKF_NOQUEUE, "n", 1, 0, ct_cast, &b, NULL, NULL);
	ct_call("EX|NOQUEUE on \"n\"", rv, errno, 0);
	ct_wait(ls, &b, 1);
	ct_eq_str("is another resource too", ct_take(&b), "cast:0");
	memset(name, 'y', sizeof(name));
	errno = 0;
	rv = dlm_ls_lock(ls, LKM_EXMODE, &b.lksb, LKF_NOQUEUE, name, 64, 0, ct_cast, &b, NULL, NULL);
	ct_call("EX|NOQUEUE on a 64-byte name", rv, errno, 0);
	ct_wait(ls, &b, 1);
	ct_eq_str("it is granted", ct_take(&b), "cast:0");
	errno = 0;
	rv = dlm_ls_lock(ls, LKM_EXMODE, &a.lksb, LKF_NOQUEUE, name, 64, 0, ct_cast, &a, NULL, NULL);
	ct_call("EX|NOQUEUE on the same 64 bytes", rv, errno, 0);
	ct_wait(ls, &a, 1);
	ct_eq_str("it is held", ct_take(&a), "cast:EAGAIN");
}

static void lockspace_names(void)
{
	dlm_lshandle_t h;

	ct_section("lockspace names");
	errno = 0;
	h = dlm_create_lockspace("", 0600);
	ct_true("dlm_create_lockspace(\"\") is NULL", h == NULL);
	ct_eq_err("dlm_create_lockspace(\"\") errno", errno, EINVAL);
	errno = 0;
	h = dlm_open_lockspace("");
	ct_true("dlm_open_lockspace(\"\") is NULL", h == NULL);
	ct_eq_err("dlm_open_lockspace(\"\") errno", errno, ENOENT);
}

int main(void)
{
	ct_begin("ct_badargs");
	no_default();
	null_handle_first();
	ls = ct_create(LS);
	null_handle();
	library_checks();
	kernel_checks();
	lockspace_names();
	ct_release(LS, ls);
	return ct_end();
}
