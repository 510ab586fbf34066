/*
 * ct_orphan: what happens to locks when their handle or process goes,
 * PERSISTENT locks and orphans, adoption with ORPHAN, and dlm_ls_purge.
 *
 * Closing a handle drops its ordinary locks; a PERSISTENT lock outlives
 * it as an orphan that keeps its mode. lvmlockd's adoption call,
 * dlm_ls_lockx(PERSISTENT|ORPHAN) with (void *)1 as AST, astarg and
 * blocking AST, returns at once: the orphan's lkid when the mode matches
 * (no AST is ever delivered), -1/EAGAIN for an orphan of another mode,
 * -1/ENOENT when there is none. dlm_ls_purge(nodeid 0, pid) removes the
 * orphans of one dead process, pid 0 all of them, and the caller's own
 * pid its own locks. Orphans come from real child processes that exit.
 */
#include <sys/wait.h>

#include "ct.h"

#define LS "ct_orphan"

static dlm_lshandle_t ls;

static int lw(struct ct_lock *l, int mode, uint32_t flags, const char *res)
{
	errno = 0;
	return dlm_ls_lock_wait(ls, mode, &l->lksb, flags, res, strlen(res), 0, l, NULL, NULL);
}

static int uw(struct ct_lock *l)
{
	errno = 0;
	return dlm_ls_unlock_wait(ls, l->lksb.sb_lkid, 0, &l->lksb);
}

/* An asynchronous lock on handle h, dispatched on h's fd by this thread. */
static const char *lock_on(dlm_lshandle_t h, struct ct_lock *l, int mode, uint32_t flags,
			   const char *res)
{
	int saved = ct_ast_thread, rv;
	const char *got;

	rv = dlm_ls_lock(h, mode, &l->lksb, flags, res, strlen(res), 0, ct_cast, l, NULL, NULL);
	if (rv != 0)
		return ct_what("dlm_ls_lock -1/%s", ct_errname(errno));
	ct_ast_thread = 0;
	ct_wait(h, l, 1);
	ct_ast_thread = saved;
	got = ct_take(l);
	return got;
}

/* Is res free for EX? A NOQUEUE probe through ls, unlocked again. */
static const char *probe(const char *res)
{
	struct ct_lock p;
	int rv, err;

	ct_lock_init(&p, "probe");
	rv = lw(&p, LKM_EXMODE, LKF_NOQUEUE, res);
	err = errno;
	if (p.lksb.sb_status == 0) {
		uw(&p);
		return "free";
	}
	if (p.lksb.sb_status == EAGAIN && (CT_THREADED ? rv == 0 : rv == -1 && err == EAGAIN))
		return "held";
	return ct_what("probe failed: %d/%s status %s", rv, ct_errname(err),
		       ct_errname(p.lksb.sb_status));
}

/*
 * A child process that takes EX|PERSISTENT on res through its own handle
 * and exits holding it, leaving an orphan. Returns the child's pid once it
 * has exited 0 (granted), or -1.
 */
static pid_t orphan_from_child(const char *res)
{
	int status;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		struct ct_lock c;
		dlm_lshandle_t h;

		ct_ast_thread = 0;
		alarm(30);
		h = dlm_open_lockspace(LS);
		if (!h)
			_exit(1);
		ct_lock_init(&c, "child");
		if (dlm_ls_lock(h, LKM_EXMODE, &c.lksb, LKF_PERSISTENT, res, strlen(res), 0, ct_cast,
				&c, NULL, NULL) != 0)
			_exit(1);
		if (ct_wait(h, &c, 1) != 0 || c.lksb.sb_status != 0)
			_exit(1);
		_exit(0);
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return -1;
	return pid;
}

static void closing(void)
{
	struct ct_lock a;
	dlm_lshandle_t h;

	ct_section("closing a handle");
	h = dlm_open_lockspace(LS);
	if (!h)
		ct_fatal("dlm_open_lockspace(" LS "): %s", ct_errname(errno));
	ct_lock_init(&a, "a");
	ct_eq_str("EX r1 through a second handle", lock_on(h, &a, LKM_EXMODE, 0, "r1"), "cast:0");
	ct_eq_str("r1 is held", probe("r1"), "held");
	ct_eq_str("EX|PERSISTENT r2 through the second handle",
		  lock_on(h, &a, LKM_EXMODE, LKF_PERSISTENT, "r2"), "cast:0");
	ct_call("dlm_close_lockspace(second handle)", dlm_close_lockspace(h), errno, 0);
	ct_eq_str("then r1 is free", probe("r1"), "free");
	ct_eq_str("and r2 is held by the orphan", probe("r2"), "held");
	errno = 0;
	ct_call("dlm_ls_purge(0, 0)", dlm_ls_purge(ls, 0, 0), errno, 0);
	ct_eq_str("then r2 is free", probe("r2"), "free");
}

static void adopt(void)
{
	struct ct_lock a;
	uint32_t lkid;
	int rv;

	ct_section("adopting an orphan of a process that exited (lvmlockd's call)");
	ct_true("a child exits holding EX|PERSISTENT on r3", orphan_from_child("r3") > 0);
	ct_eq_str("r3 is held by the orphan", probe("r3"), "held");
	ct_lock_init(&a, "a");
	errno = 0;
	rv = dlm_ls_lockx(ls, LKM_PRMODE, &a.lksb, LKF_PERSISTENT | LKF_ORPHAN, "r3", 2, 0,
			  (void (*)(void *))1, (void *)1, (void (*)(void *))1, NULL, NULL);
	ct_call("adopt r3 in PR (the orphan holds EX)", rv, errno, EAGAIN);
	errno = 0;
	rv = dlm_ls_lockx(ls, LKM_EXMODE, &a.lksb, LKF_PERSISTENT | LKF_ORPHAN, "nosuch", 6, 0,
			  (void (*)(void *))1, (void *)1, (void (*)(void *))1, NULL, NULL);
	ct_call("adopt a resource with no orphan", rv, errno, ENOENT);
	errno = 0;
	rv = dlm_ls_lockx(ls, LKM_EXMODE, &a.lksb, LKF_PERSISTENT | LKF_ORPHAN, "r3", 2, 0,
			  (void (*)(void *))1, (void *)1, (void (*)(void *))1, NULL, NULL);
	ct_call("adopt r3 in EX", rv, errno, 0);
	ct_true("the adopted lock's lkid is non-zero", a.lksb.sb_lkid != 0);
	ct_info("the adopted lock's status (no AST comes): %s", ct_errname(a.lksb.sb_status));
	lkid = a.lksb.sb_lkid;
	ct_eq_str("r3 is still held", probe("r3"), "held");
	/* A conversion replaces the (void *)1 callbacks before anything is delivered. */
	rv = lw(&a, LKM_NLMODE, LKF_CONVERT | LKF_PERSISTENT, "r3");
	ct_wait_result("the adopted lock converts EX->NL", rv, errno, &a.lksb, 0);
	ct_true("its lkid is unchanged", a.lksb.sb_lkid == lkid);
	ct_eq_str("then r3 is free", probe("r3"), "free");
	rv = uw(&a);
	ct_wait_result("unlock the adopted lock", rv, errno, &a.lksb, EUNLOCK);
	errno = 0;
	rv = dlm_ls_lockx(ls, LKM_EXMODE, &a.lksb, LKF_PERSISTENT | LKF_ORPHAN, "r3", 2, 0,
			  (void (*)(void *))1, (void *)1, (void (*)(void *))1, NULL, NULL);
	ct_call("adopt r3 again: no orphan left", rv, errno, ENOENT);
}

static void purge(void)
{
	struct ct_lock a, b;
	pid_t p1, p2;
	int rv;

	ct_section("dlm_ls_purge");
	p1 = orphan_from_child("r4");
	p2 = orphan_from_child("r5");
	ct_true("two children exit holding EX|PERSISTENT on r4 and r5", p1 > 0 && p2 > 0);
	ct_eq_str("r4 is held", probe("r4"), "held");
	ct_eq_str("r5 is held", probe("r5"), "held");
	errno = 0;
	ct_call("dlm_ls_purge(0, first child's pid)", dlm_ls_purge(ls, 0, p1), errno, 0);
	ct_eq_str("then r4 is free", probe("r4"), "free");
	ct_eq_str("and r5 is still held", probe("r5"), "held");
	errno = 0;
	ct_call("dlm_ls_purge(0, 0)", dlm_ls_purge(ls, 0, 0), errno, 0);
	ct_eq_str("then r5 is free", probe("r5"), "free");

	ct_lock_init(&a, "a");
	ct_lock_init(&b, "b");
	rv = lw(&a, LKM_EXMODE, 0, "r6");
	ct_wait_result("EX r6", rv, errno, &a.lksb, 0);
	rv = lw(&b, LKM_EXMODE, LKF_PERSISTENT, "r7");
	ct_wait_result("EX|PERSISTENT r7", rv, errno, &b.lksb, 0);
	errno = 0;
	ct_call("dlm_ls_purge(0, our own pid)", dlm_ls_purge(ls, 0, getpid()), errno, 0);
	ct_eq_str("then our r6 is gone", probe("r6"), "free");
	ct_eq_str("and our persistent r7 too", probe("r7"), "free");
	rv = uw(&a);
	ct_call("unlock of the purged lock", rv, errno, ENOENT);
}

int main(void)
{
	ct_begin("ct_orphan");
	ls = ct_create(LS);
#if CT_THREADED
	ct_start_ast_thread(ls);
#endif
	closing();
	adopt();
	purge();
	ct_release(LS, ls);
	return ct_end();
}
