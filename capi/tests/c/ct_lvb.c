/*
 * ct_lvb: the lock value block, both ways.
 *
 * A grant in a read-type conversion copies the resource's value block
 * into sb_lvbptr (zeros while the resource has none); a down-conversion
 * from EX with VALBLK writes the caller's block to the resource; a lock
 * without VALBLK leaves sb_lvbptr alone; IVVALBLK, and a process that
 * dies holding EX, mark the block not valid (DLM_SBF_VALNOTVALID on later
 * grants) until the next write; the block goes when the last lock on the
 * resource does. Uses the _wait calls (the threaded build starts an AST
 * thread), one asynchronous read, and one real child process.
 *
 * What the unlock of an EX lock writes to the value block is shown, not
 * checked: libdlm 4.2 sends uninitialised stack bytes as the unlock's
 * value block (libdlm-abi.md 1.4), and a replacement sends sb_lvbptr's.
 */
#include <sys/wait.h>

#include "ct.h"

#define LS "ct_lvb"
#define RES "vb"

static dlm_lshandle_t ls;

/* A value block as text: "all 0xNN", or its bytes up to trailing zeros. */
static const char *lvb_str(const char *b)
{
	static char buf[4][DLM_LVB_LEN * 4 + 32];
	static int next;
	char *s = buf[next++ % 4];
	int i, end, same = 1;
	size_t n = 0;

	for (i = 1; i < DLM_LVB_LEN; i++)
		if (b[i] != b[0])
			same = 0;
	if (same) {
		snprintf(s, sizeof(buf[0]), "all 0x%02x", (unsigned char)b[0]);
		return s;
	}
	for (end = DLM_LVB_LEN; end > 0 && b[end - 1] == 0; end--)
		;
	s[n++] = '"';
	for (i = 0; i < end; i++) {
		unsigned char c = (unsigned char)b[i];

		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
			s[n++] = (char)c;
		else
			n += (size_t)snprintf(s + n, sizeof(buf[0]) - n, "\\x%02x", c);
	}
	s[n++] = '"';
	s[n] = 0;
	if (end < DLM_LVB_LEN)
		snprintf(s + n, sizeof(buf[0]) - n, " + %d zeros", DLM_LVB_LEN - end);
	return s;
}

static void fill(struct ct_lock *l, const char *text)
{
	memset(l->lvb, 0, sizeof(l->lvb));
	strncpy(l->lvb, text, sizeof(l->lvb) - 1);
}

static void poison(struct ct_lock *l)
{
	memset(l->lvb, 0xaa, sizeof(l->lvb));
}

/* A _wait lock or conversion of l; checks the result (status 0). */
static void lw(const char *what, struct ct_lock *l, int mode, uint32_t flags)
{
	int rv;

	errno = 0;
	rv = dlm_ls_lock_wait(ls, mode, &l->lksb, flags, RES, strlen(RES), 0, l, NULL, NULL);
	ct_wait_result(what, rv, errno, &l->lksb, 0);
}

static void uw(const char *what, struct ct_lock *l, uint32_t flags)
{
	int rv;

	errno = 0;
	rv = dlm_ls_unlock_wait(ls, l->lksb.sb_lkid, flags, &l->lksb);
	ct_wait_result(what, rv, errno, &l->lksb, EUNLOCK);
}

static void check(const char *what, struct ct_lock *l, const char *want_lvb, const char *want_flags)
{
	ct_eq_str(ct_what("%s: value block", what), lvb_str(l->lvb), want_lvb);
	ct_eq_str(ct_what("%s: sb_flags", what), ct_sbflags(l->lksb.sb_flags), want_flags);
}

/*
 * A child process that opens the lockspace, takes EX with VALBLK on RES
 * and exits holding it. Exits 0 once granted, 1 otherwise.
 */
static void child_dies_holding_ex(void)
{
	struct ct_lock c;
	dlm_lshandle_t h;

	ct_ast_thread = 0;
	alarm(30);
	h = dlm_open_lockspace(LS);
	if (!h)
		_exit(1);
	ct_lock_init(&c, "child");
	fill(&c, "from the child");
	if (dlm_ls_lock(h, LKM_EXMODE, &c.lksb, LKF_VALBLK, RES, strlen(RES), 0, ct_cast, &c,
			NULL, NULL) != 0)
		_exit(1);
	if (ct_wait(h, &c, 1) != 0 || c.lksb.sb_status != 0)
		_exit(1);
	_exit(0);
}

int main(void)
{
	struct ct_lock a, b, c;
	int status, rv;
	pid_t pid;

	ct_begin("ct_lvb");
	ls = ct_create(LS);
#if CT_THREADED
	ct_start_ast_thread(ls);
#endif
	ct_lock_init(&a, "a");
	ct_lock_init(&b, "b");
	ct_lock_init(&c, "c");

	ct_section("a new resource has no value block");
	poison(&a);
	lw("a NL|VALBLK", &a, LKM_NLMODE, LKF_VALBLK);
	check("a NL|VALBLK", &a, "all 0x00", "");
	/* The resource still has no block: this grant returns none (6.1). */
	poison(&a);
	lw("a NL->EX|VALBLK", &a, LKM_EXMODE, LKF_CONVERT | LKF_VALBLK);
	check("a NL->EX|VALBLK returns no block", &a, "all 0xaa", "");

	ct_section("a down-conversion from EX writes it, a grant reads it");
	fill(&a, "value-1");
	lw("a EX->NL|VALBLK", &a, LKM_NLMODE, LKF_CONVERT | LKF_VALBLK);
	check("a EX->NL|VALBLK leaves a's block", &a, "\"value-1\" + 25 zeros", "");
	poison(&b);
	lw("b PR|VALBLK", &b, LKM_PRMODE, LKF_VALBLK);
	check("b PR|VALBLK", &b, "\"value-1\" + 25 zeros", "");
	poison(&c);
	lw("c PR without VALBLK", &c, LKM_PRMODE, 0);
	check("c PR without VALBLK leaves its buffer", &c, "all 0xaa", "");
	uw("unlock c", &c, 0);
	lw("b PR->NL", &b, LKM_NLMODE, LKF_CONVERT);

	ct_section("an asynchronous grant reads it too");
	poison(&c);
	errno = 0;
	rv = dlm_ls_lock(ls, LKM_CRMODE, &c.lksb, LKF_VALBLK, RES, strlen(RES), 0, ct_cast, &c,
			 NULL, NULL);
	ct_call("c CR|VALBLK asynchronously", rv, errno, 0);
	ct_wait(ls, &c, 1);
	ct_eq_str("c's ASTs", ct_take(&c), "cast:0");
	check("c CR|VALBLK", &c, "\"value-1\" + 25 zeros", "");
	errno = 0;
	rv = dlm_ls_unlock(ls, c.lksb.sb_lkid, 0, &c.lksb, &c);
	ct_call("unlock c asynchronously", rv, errno, 0);
	ct_wait(ls, &c, 1);
	ct_eq_str("c's ASTs", ct_take(&c), "cast:EUNLOCK");

	ct_section("IVVALBLK marks it not valid, the next write makes it valid");
	poison(&a);
	lw("a NL->EX|VALBLK", &a, LKM_EXMODE, LKF_CONVERT | LKF_VALBLK);
	check("a NL->EX|VALBLK", &a, "\"value-1\" + 25 zeros", "");
	fill(&a, "not written");
	lw("a EX->NL|VALBLK|IVVALBLK", &a, LKM_NLMODE, LKF_CONVERT | LKF_VALBLK | LKF_IVVALBLK);
	poison(&b);
	lw("b NL->PR|VALBLK", &b, LKM_PRMODE, LKF_CONVERT | LKF_VALBLK);
	check("b NL->PR|VALBLK", &b, "\"value-1\" + 25 zeros", "VALNOTVALID");
	lw("b PR->NL", &b, LKM_NLMODE, LKF_CONVERT);
	poison(&a);
	lw("a NL->EX|VALBLK", &a, LKM_EXMODE, LKF_CONVERT | LKF_VALBLK);
	check("a NL->EX|VALBLK", &a, "\"value-1\" + 25 zeros", "VALNOTVALID");
	fill(&a, "value-2");
	lw("a EX->NL|VALBLK", &a, LKM_NLMODE, LKF_CONVERT | LKF_VALBLK);
	check("a EX->NL|VALBLK", &a, "\"value-2\" + 25 zeros", "");
	poison(&b);
	lw("b NL->PR|VALBLK", &b, LKM_PRMODE, LKF_CONVERT | LKF_VALBLK);
	check("b NL->PR|VALBLK", &b, "\"value-2\" + 25 zeros", "");
	lw("b PR->NL", &b, LKM_NLMODE, LKF_CONVERT);

	ct_section("a process that dies holding EX leaves it not valid");
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		ct_fatal("fork failed");
	if (pid == 0)
		child_dies_holding_ex();
	if (waitpid(pid, &status, 0) != pid)
		ct_fatal("waitpid failed");
	ct_true("the child was granted EX|VALBLK and exited holding it",
		WIFEXITED(status) && WEXITSTATUS(status) == 0);
	poison(&b);
	lw("b NL->PR|VALBLK", &b, LKM_PRMODE, LKF_CONVERT | LKF_VALBLK);
	check("b NL->PR|VALBLK", &b, "\"value-2\" + 25 zeros", "VALNOTVALID");
	lw("b PR->NL", &b, LKM_NLMODE, LKF_CONVERT);

	ct_section("an unlock from EX with VALBLK writes the unlock's value block");
	poison(&a);
	lw("a NL->EX|VALBLK", &a, LKM_EXMODE, LKF_CONVERT | LKF_VALBLK);
	check("a NL->EX|VALBLK", &a, "\"value-2\" + 25 zeros", "VALNOTVALID");
	fill(&a, "written by unlock");
	uw("unlock a from EX", &a, LKF_VALBLK);
	poison(&b);
	lw("b NL->PR|VALBLK", &b, LKM_PRMODE, LKF_CONVERT | LKF_VALBLK);
	ct_eq_str("b NL->PR|VALBLK: sb_flags (the unlock wrote a valid block)",
		  ct_sbflags(b.lksb.sb_flags), "");
	ct_info("the block the unlock wrote is a's sb_lvbptr: %s",
		strcmp(b.lvb, "written by unlock") == 0 ? "yes" : "no");

	ct_section("the block goes with the resource's last lock");
	uw("unlock b", &b, 0);
	poison(&c);
	lw("c PR|VALBLK on the fresh resource", &c, LKM_PRMODE, LKF_VALBLK);
	check("c PR|VALBLK on the fresh resource", &c, "all 0x00", "");
	uw("unlock c", &c, 0);

	ct_release(LS, ls);
	return ct_end();
}
