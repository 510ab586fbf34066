/*
 * ct_lockspace: creating, joining, opening, closing and releasing
 * lockspaces, and dlm_ls_get_fd().
 *
 * Covers dlm_create_lockspace, dlm_new_lockspace (NEWEXCL; TIMEWARN,
 * which libdlm 4.2 masks off), dlm_open_lockspace (existing and missing),
 * dlm_close_lockspace, dlm_ls_get_fd, and dlm_release_lockspace with force
 * 0 and 1: a second create only counts up and its release only counts
 * down; release with force 0 while an orphan holds a lock leaves the
 * lockspace in place (the kernel says EBUSY, libdlm returns 0); force 1
 * removes it. Locks are taken asynchronously and dispatched through
 * poll(), so both libraries run this without an AST thread.
 */
#include "ct.h"

#define LS "ct_ls"
#define LS2 "ct_ls2"

/* Take lock l asynchronously (EX on res with flags) and wait for its AST. */
static const char *lock_ex(dlm_lshandle_t ls, struct ct_lock *l, const char *res, uint32_t flags)
{
	int rv = dlm_ls_lock(ls, LKM_EXMODE, &l->lksb, flags, res, strlen(res), 0, ct_cast, l,
			     NULL, NULL);

	if (rv != 0)
		return ct_what("dlm_ls_lock -1/%s", ct_errname(errno));
	ct_wait(ls, l, 1);
	return ct_take(l);
}

static const char *unlock(dlm_lshandle_t ls, struct ct_lock *l)
{
	int rv = dlm_ls_unlock(ls, l->lksb.sb_lkid, 0, &l->lksb, l);

	if (rv != 0)
		return ct_what("dlm_ls_unlock -1/%s", ct_errname(errno));
	ct_wait(ls, l, 1);
	return ct_take(l);
}

int main(void)
{
	dlm_lshandle_t h1, h2, h3, h4, h5, hx;
	struct ct_lock a, b;
	char longname[80];
	int rv, fd1;

	ct_begin("ct_lockspace");

	ct_section("open a lockspace that does not exist");
	errno = 0;
	hx = dlm_open_lockspace("ct_nosuch");
	ct_true("dlm_open_lockspace(ct_nosuch) is NULL", hx == NULL);
	ct_eq_err("dlm_open_lockspace(ct_nosuch) errno", errno, ENOENT);

	ct_section("create");
	h1 = dlm_create_lockspace(LS, 0600);
	ct_true("dlm_create_lockspace(" LS ") is not NULL", h1 != NULL);
	if (!h1)
		ct_fatal("cannot go on without " LS ": %s", ct_errname(errno));
	fd1 = dlm_ls_get_fd(h1);
	ct_true("dlm_ls_get_fd is >= 0", fd1 >= 0);

	errno = 0;
	hx = dlm_new_lockspace(LS, 0600, DLM_LSFL_NEWEXCL);
	ct_true("dlm_new_lockspace(" LS ", NEWEXCL) on an existing one is NULL", hx == NULL);
	ct_eq_err("dlm_new_lockspace(" LS ", NEWEXCL) errno", errno, EEXIST);

	ct_section("a name one byte too long, and the longest name");
	memset(longname, 'n', 65);
	longname[65] = 0;
	errno = 0;
	hx = dlm_create_lockspace(longname, 0600);
	ct_true("dlm_create_lockspace(65 chars) is NULL", hx == NULL);
	ct_eq_err("dlm_create_lockspace(65 chars) errno", errno, EINVAL);
	errno = 0;
	hx = dlm_new_lockspace(longname, 0600, 0);
	ct_true("dlm_new_lockspace(65 chars) is NULL", hx == NULL);
	ct_eq_err("dlm_new_lockspace(65 chars) errno", errno, EINVAL);
	longname[64] = 0;
	hx = dlm_create_lockspace(longname, 0600);
	ct_true("dlm_create_lockspace(64 chars) is not NULL", hx != NULL);
	if (hx) {
		ct_true("its fd is >= 0", dlm_ls_get_fd(hx) >= 0);
		ct_release("64 chars", hx);
		hx = dlm_open_lockspace(longname);
		ct_true("after the release dlm_open_lockspace(64 chars) is NULL", hx == NULL);
		if (hx)
			dlm_close_lockspace(hx);
	}

	ct_section("dlm_new_lockspace with TIMEWARN (masked off by libdlm 4.2)");
	errno = 0;
	h2 = dlm_new_lockspace(LS2, 0600, DLM_LSFL_NEWEXCL | DLM_LSFL_TIMEWARN);
	ct_true("dlm_new_lockspace(" LS2 ", NEWEXCL|TIMEWARN) is not NULL", h2 != NULL);
	if (h2) {
		rv = dlm_release_lockspace(LS2, h2, 0);
		ct_call("dlm_release_lockspace(" LS2 ", force 0) with no locks", rv, errno, 0);
		errno = 0;
		hx = dlm_open_lockspace(LS2);
		ct_true("after it, dlm_open_lockspace(" LS2 ") is NULL", hx == NULL);
		ct_eq_err("after it, dlm_open_lockspace(" LS2 ") errno", errno, ENOENT);
		if (hx)
			dlm_close_lockspace(hx);
	}

	ct_section("a second create joins the same lockspace");
	h2 = dlm_create_lockspace(LS, 0600);
	ct_true("dlm_create_lockspace(" LS ") again is not NULL", h2 != NULL);
	if (!h2)
		ct_fatal("second create failed: %s", ct_errname(errno));
	ct_true("its fd differs from the first handle's", dlm_ls_get_fd(h2) != fd1);
	h3 = dlm_open_lockspace(LS);
	ct_true("dlm_open_lockspace(" LS ") is not NULL", h3 != NULL);
	if (!h3)
		ct_fatal("open failed: %s", ct_errname(errno));

	ct_lock_init(&a, "a");
	ct_lock_init(&b, "b");
	ct_eq_str("EX r1 through the first handle", lock_ex(h1, &a, "r1", 0), "cast:0");
	ct_eq_str("EX|NOQUEUE r1 through the opened handle", lock_ex(h3, &b, "r1", LKF_NOQUEUE),
		  "cast:EAGAIN");
	rv = dlm_close_lockspace(h3);
	ct_call("dlm_close_lockspace(opened handle)", rv, errno, 0);

	ct_section("release of a lockspace created twice only counts down");
	rv = dlm_release_lockspace(LS, h2, 0);
	ct_call("dlm_release_lockspace(" LS ", second handle, force 0)", rv, errno, 0);
	h4 = dlm_open_lockspace(LS);
	ct_true("then dlm_open_lockspace(" LS ") still works", h4 != NULL);
	if (!h4)
		ct_fatal("the lockspace went away after one of two releases");
	ct_eq_str("the lock of the first handle is still held",
		  lock_ex(h4, &b, "r1", LKF_NOQUEUE), "cast:EAGAIN");
	ct_eq_str("unlock r1", unlock(h1, &a), "cast:EUNLOCK");

	ct_section("release with force 0 while an orphan holds a lock");
	ct_eq_str("EX|PERSISTENT r2 through the first handle",
		  lock_ex(h1, &a, "r2", LKF_PERSISTENT), "cast:0");
	rv = dlm_release_lockspace(LS, h1, 0);
	ct_call("dlm_release_lockspace(" LS ", first handle, force 0) returns 0 (kernel EBUSY ignored)",
		rv, errno, 0);
	h5 = dlm_open_lockspace(LS);
	ct_true("then dlm_open_lockspace(" LS ") still works", h5 != NULL);
	if (!h5)
		ct_fatal("the lockspace went away on a force-0 release with an orphan");
	ct_eq_str("the orphan still holds r2", lock_ex(h4, &b, "r2", LKF_NOQUEUE), "cast:EAGAIN");
	rv = dlm_close_lockspace(h4);
	ct_call("dlm_close_lockspace", rv, errno, 0);

	ct_section("release with force 1 removes it, orphan and all");
	rv = dlm_release_lockspace(LS, h5, 1);
	ct_call("dlm_release_lockspace(" LS ", force 1)", rv, errno, 0);
	errno = 0;
	hx = dlm_open_lockspace(LS);
	ct_true("then dlm_open_lockspace(" LS ") is NULL", hx == NULL);
	ct_eq_err("then dlm_open_lockspace(" LS ") errno", errno, ENOENT);
	if (hx)
		dlm_close_lockspace(hx);

	return ct_end();
}
