/*
 * ct.h: the shared test harness of the libdlm C test programs.
 *
 * Every program prints a transcript that is the same from run to run: one
 * line per check ("ok <what>" or "FAIL <what>: got X want Y"), "info"
 * lines for things observed but not checked, and a last line
 * "summary: N ok, M failed". It exits 0 when every check passed.
 * Nothing that varies between runs is printed: no pointers, pids, file
 * descriptors, timings, and lock ids only as "non-zero" or "the same as".
 *
 * Built twice where both libraries apply:
 *   cc ... -ldlm_lt                      the lite library (CT_THREADED 0)
 *   cc -D_REENTRANT ... -ldlm -lpthread  the threaded library (CT_THREADED 1)
 * Only what libdlm.h declares is used from the library, so the same source
 * compiles against Debian's header and against a replacement's.
 *
 * ASTs are recorded into a struct ct_lock (the astarg of every call): the
 * kind (completion or blocking), and the lksb's status and flags at the
 * moment the AST ran. They run either in the main thread (ct_wait() polls
 * the lockspace fd and calls dlm_dispatch()) or in the library's AST
 * thread (after ct_start_ast_thread(); ct_wait() then sleeps on a
 * condition variable). Either way only the main thread prints.
 *
 * Every wait is bounded (CT_WAIT_MS) so that a missing AST is a FAIL line,
 * not a hang, and ct_begin() arms alarm(CT_ALARM_S) against a hang inside
 * the library itself.
 */
#ifndef CT_H
#define CT_H

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <libdlm.h>

#ifdef _REENTRANT
#define CT_THREADED 1
#define CT_VARIANT "threaded"
#else
#define CT_THREADED 0
#define CT_VARIANT "lite"
#endif

#define CT_WAIT_MS 10000
#define CT_ALARM_S 120
#define CT_MAXEV 32

static int ct_nok;
static int ct_nfail;

/* Set once the library's AST thread delivers this process's ASTs. */
static int ct_ast_thread;

static pthread_mutex_t ct_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ct_cv = PTHREAD_COND_INITIALIZER;

/* The name of an errno value or a DLM status, for transcripts. */
static inline const char *ct_errname(int e)
{
	static char buf[4][24];
	static int next;
	char *b;

	switch (e) {
	case 0: return "0";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case EINTR: return "EINTR";
	case EBADF: return "EBADF";
	case EAGAIN: return "EAGAIN";
	case ENOMEM: return "ENOMEM";
	case EFAULT: return "EFAULT";
	case EBUSY: return "EBUSY";
	case EEXIST: return "EEXIST";
	case EINVAL: return "EINVAL";
	case ENOSYS: return "ENOSYS";
	case EDEADLK: return "EDEADLK";
	case ENOTCONN: return "ENOTCONN";
	case ETIMEDOUT: return "ETIMEDOUT";
	case EBADE: return "EBADE";
	case EUNATCH: return "EUNATCH";
	case ECANCEL: return "ECANCEL";
	case EUNLOCK: return "EUNLOCK";
	case EINPROG: return "EINPROG";
	}
	b = buf[next++ % 4];
	snprintf(b, sizeof(buf[0]), "%d", e);
	return b;
}

static inline void ct_vprint(const char *prefix, const char *fmt, va_list ap)
{
	fputs(prefix, stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	fflush(stdout);
}

/* An "info" line: observed, not checked. */
static inline void ct_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ct_vprint("info ", fmt, ap);
	va_end(ap);
}

/* A section heading. */
static inline void ct_section(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ct_vprint("== ", fmt, ap);
	va_end(ap);
}

static inline int ct_report(int good, const char *what, const char *got, const char *want)
{
	if (good) {
		ct_nok++;
		printf("ok %s\n", what);
	} else {
		ct_nfail++;
		printf("FAIL %s: got %s want %s\n", what, got, want);
	}
	fflush(stdout);
	return good;
}

/* Integers. */
static inline int ct_eq(const char *what, long long got, long long want)
{
	char g[32], w[32];

	snprintf(g, sizeof(g), "%lld", got);
	snprintf(w, sizeof(w), "%lld", want);
	return ct_report(got == want, what, g, w);
}

/* errno values and DLM statuses, printed by name. */
static inline int ct_eq_err(const char *what, int got, int want)
{
	return ct_report(got == want, what, ct_errname(got), ct_errname(want));
}

/* Strings. */
static inline int ct_eq_str(const char *what, const char *got, const char *want)
{
	return ct_report(strcmp(got, want) == 0, what, got, want);
}

/* A condition. */
static inline int ct_true(const char *what, int cond)
{
	return ct_report(cond != 0, what, cond ? "true" : "false", "true");
}

/* A call's return value and errno: want_err 0 means "returned 0". */
static inline int ct_call(const char *what, int rv, int err, int want_err)
{
	char g[48], w[48];

	if (rv == 0)
		snprintf(g, sizeof(g), "0");
	else
		snprintf(g, sizeof(g), "%d/%s", rv, ct_errname(err));
	if (want_err == 0)
		snprintf(w, sizeof(w), "0");
	else
		snprintf(w, sizeof(w), "-1/%s", ct_errname(want_err));
	return ct_report((want_err == 0 && rv == 0) || (want_err != 0 && rv == -1 && err == want_err),
			 what, g, w);
}

/* A "what" built with printf formatting (one of a few rotating buffers). */
static inline const char *ct_what(const char *fmt, ...)
{
	static char buf[4][160];
	static int next;
	char *b = buf[next++ % 4];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(b, sizeof(buf[0]), fmt, ap);
	va_end(ap);
	return b;
}

static inline void ct_begin(const char *prog)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	alarm(CT_ALARM_S);
	printf("# %s (%s)\n", prog, CT_VARIANT);
}

/* The last line and the exit status. */
static inline int ct_end(void)
{
	printf("summary: %d ok, %d failed\n", ct_nok, ct_nfail);
	fflush(stdout);
	return ct_nfail ? 1 : 0;
}

/* A failure that makes going on pointless: report it and exit 1. */
static inline __attribute__((noreturn)) void ct_fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ct_vprint("FAIL fatal: ", fmt, ap);
	va_end(ap);
	ct_nfail++;
	exit(ct_end());
}

/* ---- recorded ASTs --------------------------------------------------- */

struct ct_event {
	char kind;	/* 'c' completion, 'b' blocking */
	int status;	/* lksb.sb_status when the AST ran */
	int flags;	/* lksb.sb_flags when the AST ran */
};

/* One lock under test: its lksb, value block and the ASTs it received. */
struct ct_lock {
	const char *tag;
	struct dlm_lksb lksb;
	char lvb[DLM_LVB_LEN];
	int nev;
	int lost;	/* events beyond CT_MAXEV */
	struct ct_event ev[CT_MAXEV];
};

static inline void ct_lock_init(struct ct_lock *l, const char *tag)
{
	memset(l, 0, sizeof(*l));
	l->tag = tag;
	l->lksb.sb_lvbptr = l->lvb;
}

static inline void ct_record(struct ct_lock *l, char kind)
{
	pthread_mutex_lock(&ct_mu);
	if (l->nev < CT_MAXEV) {
		l->ev[l->nev].kind = kind;
		l->ev[l->nev].status = l->lksb.sb_status;
		l->ev[l->nev].flags = (unsigned char)l->lksb.sb_flags;
		l->nev++;
	} else {
		l->lost++;
	}
	pthread_cond_broadcast(&ct_cv);
	pthread_mutex_unlock(&ct_mu);
}

/* The completion AST: astarg is the struct ct_lock. */
static inline void ct_cast(void *arg)
{
	ct_record(arg, 'c');
}

/* The blocking AST: libdlm passes the same astarg. */
static inline void ct_bast(void *arg)
{
	ct_record(arg, 'b');
}

static inline const char *ct_sbflags(int f)
{
	static char buf[4][64];
	static int next;
	char *b = buf[next++ % 4];

	b[0] = 0;
	if (f & DLM_SBF_DEMOTED)
		strcat(b, "+DEMOTED");
	if (f & DLM_SBF_VALNOTVALID)
		strcat(b, "+VALNOTVALID");
	if (f & DLM_SBF_ALTMODE)
		strcat(b, "+ALTMODE");
	if (f & ~(DLM_SBF_DEMOTED | DLM_SBF_VALNOTVALID | DLM_SBF_ALTMODE))
		snprintf(b + strlen(b), 20, "+0x%x", f & ~7);
	return b[0] ? b + 1 : "";
}

/*
 * The events recorded since the last ct_take(), as text, and forget them:
 * "cast:0 bast cast:EUNLOCK", a completion's flags after a slash
 * ("cast:0/VALNOTVALID"), "none" for no event.
 */
static inline const char *ct_take(struct ct_lock *l)
{
	static char buf[4][512];
	static int next;
	char *b = buf[next++ % 4];
	size_t n = 0;
	int i;

	pthread_mutex_lock(&ct_mu);
	b[0] = 0;
	for (i = 0; i < l->nev && n < sizeof(buf[0]) - 64; i++) {
		struct ct_event *e = &l->ev[i];

		if (e->kind == 'b')
			n += snprintf(b + n, sizeof(buf[0]) - n, "%sbast", i ? " " : "");
		else if (e->flags)
			n += snprintf(b + n, sizeof(buf[0]) - n, "%scast:%s/%s", i ? " " : "",
				      ct_errname(e->status), ct_sbflags(e->flags));
		else
			n += snprintf(b + n, sizeof(buf[0]) - n, "%scast:%s", i ? " " : "",
				      ct_errname(e->status));
	}
	if (l->lost)
		snprintf(b + n, sizeof(buf[0]) - n, " +%d lost", l->lost);
	if (!b[0])
		strcpy(b, "none");
	l->nev = 0;
	l->lost = 0;
	pthread_mutex_unlock(&ct_mu);
	return b;
}

/* The lksb status seen by the last blocking AST since the last ct_take(). */
static inline int ct_last_bast_status(struct ct_lock *l)
{
	int i, s = -1;

	pthread_mutex_lock(&ct_mu);
	for (i = 0; i < l->nev; i++)
		if (l->ev[i].kind == 'b')
			s = l->ev[i].status;
	pthread_mutex_unlock(&ct_mu);
	return s;
}

static inline int ct_count(struct ct_lock *l)
{
	int n;

	pthread_mutex_lock(&ct_mu);
	n = l->nev + l->lost;
	pthread_mutex_unlock(&ct_mu);
	return n;
}

/*
 * Wait until lock l has received at least n ASTs since the last
 * ct_take(): dispatching fd on this thread (poll() + dlm_dispatch()), or,
 * with the library's AST thread, sleeping until it delivered them.
 * Returns 0, or -1 after a FAIL line when CT_WAIT_MS passed first.
 */
static inline int ct_wait_fd(int fd, struct ct_lock *l, int n)
{
	struct timespec end, now;

	clock_gettime(CLOCK_MONOTONIC, &end);
	end.tv_sec += CT_WAIT_MS / 1000;
	if (ct_ast_thread) {
		struct timespec abs;
		int rc = 0;

		clock_gettime(CLOCK_REALTIME, &abs);
		abs.tv_sec += CT_WAIT_MS / 1000;
		pthread_mutex_lock(&ct_mu);
		while (l->nev + l->lost < n && rc == 0)
			rc = pthread_cond_timedwait(&ct_cv, &ct_mu, &abs);
		pthread_mutex_unlock(&ct_mu);
		if (ct_count(l) >= n)
			return 0;
	} else {
		while (ct_count(l) < n) {
			struct pollfd p = { .fd = fd, .events = POLLIN };
			long left;
			int rc;

			clock_gettime(CLOCK_MONOTONIC, &now);
			left = (end.tv_sec - now.tv_sec) * 1000 + (end.tv_nsec - now.tv_nsec) / 1000000;
			if (left <= 0)
				break;
			rc = poll(&p, 1, (int)left);
			if (rc < 0 && errno != EINTR) {
				ct_nfail++;
				printf("FAIL poll on the lockspace fd: %s\n", strerror(errno));
				return -1;
			}
			if (rc > 0 && dlm_dispatch(fd) != 0) {
				ct_nfail++;
				printf("FAIL dlm_dispatch: returned -1/%s\n", ct_errname(errno));
				return -1;
			}
		}
		if (ct_count(l) >= n)
			return 0;
	}
	ct_nfail++;
	printf("FAIL waiting for %d AST(s) on %s: only %d after %d ms\n", n, l->tag, ct_count(l),
	       CT_WAIT_MS);
	fflush(stdout);
	return -1;
}

static inline int ct_wait(dlm_lshandle_t ls, struct ct_lock *l, int n)
{
	return ct_wait_fd(ct_ast_thread ? -1 : dlm_ls_get_fd(ls), l, n);
}

/* ---- lockspaces ------------------------------------------------------ */

/* Create (or join) lockspace name, mode 0600; fatal on failure. */
static inline dlm_lshandle_t ct_create(const char *name)
{
	dlm_lshandle_t ls = dlm_create_lockspace(name, 0600);

	if (!ls)
		ct_fatal("dlm_create_lockspace(%s): %s", name, ct_errname(errno));
	return ls;
}

#if CT_THREADED
/* Start the library's AST thread on ls; fatal on failure. */
static inline void ct_start_ast_thread(dlm_lshandle_t ls)
{
	int rv = dlm_ls_pthread_init(ls);

	if (rv != 0)
		ct_fatal("dlm_ls_pthread_init: %d/%s", rv, ct_errname(errno));
	ct_ast_thread = 1;
}
#endif

/* Release lockspace name through ls (force 1), checking the result. */
static inline void ct_release(const char *name, dlm_lshandle_t ls)
{
	int rv = dlm_release_lockspace(name, ls, 1);

	ct_call(ct_what("dlm_release_lockspace(%s, force 1)", name), rv, errno, 0);
	ct_ast_thread = 0;
}

/*
 * The result a *_wait call gives for an operation whose status is
 * want_status: the lite library returns -1 with errno = status unless the
 * status is 0 or EUNLOCK; the threaded one returns the write()'s result
 * (0) and leaves the status in the lksb. Checks both the return value and
 * the lksb.
 */
static inline void ct_wait_result(const char *what, int rv, int err, const struct dlm_lksb *lksb,
			   int want_status)
{
	int want_err = 0;

	if (!CT_THREADED && want_status != 0 && want_status != EUNLOCK)
		want_err = want_status;
	ct_call(ct_what("%s returns", what), rv, err, want_err);
	ct_eq_err(ct_what("%s status", what), lksb->sb_status, want_status);
}

#endif
