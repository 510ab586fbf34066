/*
 * ct_default: the default lockspace ("default", created 0600 on first
 * use): dlm_get_fd, dlm_lock, dlm_unlock, dlm_lock_wait, dlm_unlock_wait,
 * dispatched through poll() on dlm_get_fd() and dlm_dispatch().
 *
 * The library keeps the default lockspace's fd open for the life of the
 * process (the lite library has no call that closes it), and a release
 * waits for every fd to close. So the checks run in a child process; the
 * parent then releases "default" (force 1) once the child has exited.
 * The threaded build starts the default lockspace's AST thread with
 * dlm_pthread_init() for the _wait calls and stops it with
 * dlm_pthread_cleanup().
 */
#include <sys/wait.h>

#include "ct.h"

static void child(void)
{
	struct ct_lock a, b;
	int fd, rv, range = 0;

	fd = dlm_get_fd();
	ct_true("dlm_get_fd() opens or creates the default lockspace", fd >= 0);
	if (fd < 0)
		ct_fatal("no default lockspace: %s", ct_errname(errno));
	ct_true("dlm_get_fd() again gives the same fd", dlm_get_fd() == fd);

	ct_section("asynchronous calls on the default lockspace");
	ct_lock_init(&a, "a");
	ct_lock_init(&b, "b");
	errno = 0;
	rv = dlm_lock(LKM_EXMODE, &a.lksb, 0, "d1", 2, 0, ct_cast, &a, ct_bast, NULL);
	ct_call("dlm_lock EX", rv, errno, 0);
	ct_eq_err("status before dispatch", a.lksb.sb_status, EINPROG);
	ct_wait_fd(fd, &a, 1);
	ct_eq_str("a's ASTs", ct_take(&a), "cast:0");
	errno = 0;
	rv = dlm_lock(LKM_EXMODE, &b.lksb, LKF_NOQUEUE, "d1", 2, 0, ct_cast, &b, NULL, NULL);
	ct_call("dlm_lock EX|NOQUEUE", rv, errno, 0);
	ct_wait_fd(fd, &b, 1);
	ct_eq_str("b's ASTs", ct_take(&b), "cast:EAGAIN");
	errno = 0;
	rv = dlm_lock(LKM_EXMODE, &b.lksb, 0, "d1", 2, 0, ct_cast, &b, NULL, NULL);
	ct_call("dlm_lock EX (waits)", rv, errno, 0);
	ct_wait_fd(fd, &a, 1);
	ct_eq_str("a gets a blocking AST", ct_take(&a), "bast");
	errno = 0;
	rv = dlm_unlock(a.lksb.sb_lkid, 0, &a.lksb, &a);
	ct_call("dlm_unlock a", rv, errno, 0);
	ct_wait_fd(fd, &a, 1);
	ct_eq_str("a's ASTs", ct_take(&a), "cast:EUNLOCK");
	ct_wait_fd(fd, &b, 1);
	ct_eq_str("b is granted", ct_take(&b), "cast:0");
	errno = 0;
	rv = dlm_unlock(b.lksb.sb_lkid, 0, &b.lksb, &b);
	ct_call("dlm_unlock b", rv, errno, 0);
	ct_wait_fd(fd, &b, 1);
	ct_eq_str("b's ASTs", ct_take(&b), "cast:EUNLOCK");
	errno = 0;
	rv = dlm_lock(LKM_EXMODE, &b.lksb, 0, "d1", 2, 0, ct_cast, &b, NULL, &range);
	ct_call("dlm_lock with a range", rv, errno, ENOSYS);

	ct_section("_wait calls on the default lockspace");
#if CT_THREADED
	errno = 0;
	rv = dlm_pthread_init();
	ct_call("dlm_pthread_init", rv, errno, 0);
	ct_ast_thread = 1;
#endif
	ct_lock_init(&a, "a");
	ct_lock_init(&b, "b");
	errno = 0;
	rv = dlm_lock_wait(LKM_PRMODE, &a.lksb, 0, "d2", 2, 0, &a, ct_bast, NULL);
	ct_wait_result("dlm_lock_wait PR", rv, errno, &a.lksb, 0);
	errno = 0;
	rv = dlm_lock_wait(LKM_EXMODE, &b.lksb, LKF_NOQUEUE, "d2", 2, 0, &b, NULL, NULL);
	ct_wait_result("dlm_lock_wait EX|NOQUEUE", rv, errno, &b.lksb, EAGAIN);
	errno = 0;
	rv = dlm_lock_wait(LKM_EXMODE, &a.lksb, LKF_CONVERT, "d2", 2, 0, &a, ct_bast, NULL);
	ct_wait_result("dlm_lock_wait PR->EX", rv, errno, &a.lksb, 0);
	errno = 0;
	rv = dlm_lock_wait(LKM_EXMODE, &b.lksb, 0, "d2", 2, 0, &b, NULL, &range);
	ct_call("dlm_lock_wait with a range", rv, errno, ENOSYS);
	errno = 0;
	rv = dlm_unlock_wait(a.lksb.sb_lkid, 0, &a.lksb);
	ct_wait_result("dlm_unlock_wait", rv, errno, &a.lksb, EUNLOCK);
	errno = 0;
	rv = dlm_unlock_wait(a.lksb.sb_lkid, 0, &a.lksb);
	ct_call("dlm_unlock_wait again (the lock is gone)", rv, errno, ENOENT);
	ct_eq_str("no AST reached a's bastarg", ct_take(&a), "none");
#if CT_THREADED
	errno = 0;
	rv = dlm_pthread_cleanup();
	ct_call("dlm_pthread_cleanup", rv, errno, 0);
	ct_ast_thread = 0;
	errno = 0;
	rv = dlm_unlock(1, 0, &a.lksb, NULL);
	ct_call("after it, dlm_unlock has no default lockspace", rv, errno, ENOTCONN);
#endif
}

int main(void)
{
	dlm_lshandle_t h;
	int status;
	pid_t pid;

	ct_begin("ct_default");
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		ct_fatal("fork failed");
	if (pid == 0) {
		child();
		printf("child ");
		exit(ct_end());
	}
	if (waitpid(pid, &status, 0) != pid)
		ct_fatal("waitpid failed");
	ct_true("the child's checks passed", WIFEXITED(status) && WEXITSTATUS(status) == 0);

	ct_section("the parent releases the default lockspace");
	h = dlm_open_lockspace("default");
	ct_true("dlm_open_lockspace(default) is not NULL", h != NULL);
	if (h)
		ct_release("default", h);
	errno = 0;
	h = dlm_open_lockspace("default");
	ct_true("then dlm_open_lockspace(default) is NULL", h == NULL);
	ct_eq_err("then dlm_open_lockspace(default) errno", errno, ENOENT);
	return ct_end();
}
