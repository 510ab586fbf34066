/*
 * ct_crash: inputs that crash Debian's libdlm (or read out of bounds),
 * each run in its own child process. A replacement library must answer
 * them with an error instead, so this program's transcript is expected
 * to differ between the two on purpose (capi/tests/expected/ours/).
 *
 *   ct_crash            run every case, one child each, and print
 *                       "case NAME: killed by SIGSEGV" or
 *                       "case NAME: returned RV errno E"
 *   ct_crash NAME       run one case in this process
 *   ct_crash --list     the case names
 *
 * Exits 0 whatever the cases did (the transcript is the result), 1 if a
 * case could not be run or hung.
 */
#include <sys/wait.h>

#include "ct.h"

#define LS "ct_crash"

static dlm_lshandle_t ls;

struct result {
	long rv;	/* a call's result; a pointer as 0 (NULL) or 1 */
	int err;
	int is_ptr;
};

static struct result r_int(int rv)
{
	struct result r = { rv, errno, 0 };

	return r;
}

static struct result r_ptr(void *p)
{
	struct result r = { p != NULL, errno, 1 };

	return r;
}

static struct result c_get_fd_null(void)
{
	return r_int(dlm_ls_get_fd(NULL));
}

static struct result c_close_null(void)
{
	return r_int(dlm_close_lockspace(NULL));
}

static struct result c_release_null(void)
{
	return r_int(dlm_release_lockspace(LS, NULL, 1));
}

static struct result c_lock_null_handle(void)
{
	struct dlm_lksb lksb;

	memset(&lksb, 0, sizeof(lksb));
	return r_int(dlm_ls_lock(NULL, LKM_EXMODE, &lksb, 0, "r", 1, 0, ct_cast, NULL, NULL, NULL));
}

static struct result c_lock_wait_null_handle(void)
{
	struct dlm_lksb lksb;

	memset(&lksb, 0, sizeof(lksb));
	return r_int(dlm_ls_lock_wait(NULL, LKM_EXMODE, &lksb, 0, "r", 1, 0, NULL, NULL, NULL));
}

static struct result c_lock_null_lksb(void)
{
	return r_int(dlm_ls_lock(ls, LKM_EXMODE, NULL, 0, "r", 1, 0, ct_cast, NULL, NULL, NULL));
}

static struct result c_lock_wait_null_lksb(void)
{
	return r_int(dlm_ls_lock_wait(ls, LKM_EXMODE, NULL, 0, "r", 1, 0, NULL, NULL, NULL));
}

static struct result c_unlock_null_lksb(void)
{
	struct dlm_lksb lksb;

	memset(&lksb, 0, sizeof(lksb));
	if (dlm_ls_lock_wait(ls, LKM_EXMODE, &lksb, 0, "u", 1, 0, NULL, NULL, NULL) != 0)
		return r_int(-2);
	return r_int(dlm_ls_unlock(ls, lksb.sb_lkid, 0, NULL, NULL));
}

static struct result c_lock_null_name(void)
{
	struct dlm_lksb lksb;

	memset(&lksb, 0, sizeof(lksb));
	return r_int(dlm_ls_lock(ls, LKM_EXMODE, &lksb, 0, NULL, 5, 0, ct_cast, NULL, NULL, NULL));
}

static struct result c_convert_namelen_100(void)
{
	struct dlm_lksb lksb;
	char name[100];

	memset(&lksb, 0, sizeof(lksb));
	memset(name, 'c', sizeof(name));
	if (dlm_ls_lock_wait(ls, LKM_EXMODE, &lksb, 0, "c", 1, 0, NULL, NULL, NULL) != 0)
		return r_int(-2);
	return r_int(dlm_ls_lock_wait(ls, LKM_NLMODE, &lksb, LKF_CONVERT, name, sizeof(name), 0, NULL,
				      NULL, NULL));
}

static struct result c_create_null(void)
{
	return r_ptr(dlm_create_lockspace(NULL, 0600));
}

static struct result c_open_null(void)
{
	return r_ptr(dlm_open_lockspace(NULL));
}

static struct result c_kernel_version_null(void)
{
	return r_int(dlm_kernel_version(NULL, NULL, NULL));
}

#if CT_THREADED
static struct result c_pthread_init_null(void)
{
	return r_int(dlm_ls_pthread_init(NULL));
}
#endif

static const struct {
	const char *name;
	struct result (*fn)(void);
	int needs_ls;
} cases[] = {
	{ "dlm_ls_get_fd(NULL)", c_get_fd_null, 0 },
	{ "dlm_close_lockspace(NULL)", c_close_null, 0 },
	{ "dlm_release_lockspace(name, NULL, 1)", c_release_null, 0 },
	{ "dlm_ls_lock(NULL handle)", c_lock_null_handle, 0 },
	{ "dlm_ls_lock_wait(NULL handle)", c_lock_wait_null_handle, 0 },
	{ "dlm_ls_lock(NULL lksb)", c_lock_null_lksb, 1 },
	{ "dlm_ls_lock_wait(NULL lksb)", c_lock_wait_null_lksb, 1 },
	{ "dlm_ls_unlock(NULL lksb)", c_unlock_null_lksb, 1 },
	{ "dlm_ls_lock(NULL name, namelen 5)", c_lock_null_name, 1 },
	{ "convert with namelen 100", c_convert_namelen_100, 1 },
	{ "dlm_create_lockspace(NULL)", c_create_null, 0 },
	{ "dlm_open_lockspace(NULL)", c_open_null, 0 },
	{ "dlm_kernel_version(NULL, NULL, NULL)", c_kernel_version_null, 0 },
#if CT_THREADED
	{ "dlm_ls_pthread_init(NULL)", c_pthread_init_null, 0 },
#endif
};

#define NCASES ((int)(sizeof(cases) / sizeof(cases[0])))

static const char *signame(int s)
{
	switch (s) {
	case SIGSEGV: return "SIGSEGV";
	case SIGBUS: return "SIGBUS";
	case SIGABRT: return "SIGABRT";
	case SIGALRM: return "SIGALRM (hung)";
	case SIGKILL: return "SIGKILL";
	}
	return ct_what("signal %d", s);
}

/* Run case i in a child; the child writes its result to a pipe. */
static int run_case(int i)
{
	struct result r;
	int p[2], status;
	ssize_t n;
	pid_t pid;

	if (pipe(p) != 0)
		return -1;
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		close(p[0]);
		alarm(20);
#if CT_THREADED
		/* The inherited handle gets an AST thread for the _wait calls. */
		if (cases[i].needs_ls && dlm_ls_pthread_init(ls) != 0)
			_exit(4);
#endif
		r = cases[i].fn();
		if (write(p[1], &r, sizeof(r)) != (ssize_t)sizeof(r))
			_exit(3);
		_exit(0);
	}
	close(p[1]);
	n = read(p[0], &r, sizeof(r));
	close(p[0]);
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	if (WIFSIGNALED(status)) {
		printf("case %s: killed by %s\n", cases[i].name, signame(WTERMSIG(status)));
		return WTERMSIG(status) == SIGALRM ? -1 : 0;
	}
	if (n == (ssize_t)sizeof(r)) {
		if (r.is_ptr)
			printf("case %s: returned %s errno %s\n", cases[i].name,
			       r.rv ? "a handle" : "NULL", r.rv ? "-" : ct_errname(r.err));
		else if (r.rv == 0)
			printf("case %s: returned 0\n", cases[i].name);
		else
			printf("case %s: returned %ld errno %s\n", cases[i].name, r.rv,
			       ct_errname(r.err));
		return 0;
	}
	printf("case %s: exited %d without a result\n", cases[i].name,
	       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	return 0;
}

int main(int argc, char **argv)
{
	int i, bad = 0;

	if (argc == 2 && strcmp(argv[1], "--list") == 0) {
		for (i = 0; i < NCASES; i++)
			printf("%s\n", cases[i].name);
		return 0;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 2) {
		for (i = 0; i < NCASES; i++)
			if (strcmp(argv[1], cases[i].name) == 0) {
				struct result r;

				if (cases[i].needs_ls)
					ls = ct_create(LS);
				r = cases[i].fn();
				printf("returned %ld errno %s\n", r.rv, ct_errname(r.err));
				if (ls)
					dlm_release_lockspace(LS, ls, 1);
				return 0;
			}
		fprintf(stderr, "ct_crash: no case %s (see --list)\n", argv[1]);
		return 2;
	}
	printf("# ct_crash (%s)\n", CT_VARIANT);
	ls = ct_create(LS);
	for (i = 0; i < NCASES; i++)
		if (run_case(i) != 0) {
			printf("FAIL case %s could not be run, or hung\n", cases[i].name);
			bad = 1;
		}
	dlm_release_lockspace(LS, ls, 1);
	printf("summary: %d cases run\n", NCASES);
	return bad;
}
