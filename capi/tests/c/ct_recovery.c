/*
 * ct_recovery: dlm-rs's extension header dlm_rs.h, the recovery callbacks
 * (struct dlm_lockspace_ops) through dlm_new_lockspace_ops(). dlm-rs's
 * libraries only: it links against their DLM_RS_1 symbol, which no other
 * libdlm has, so it is built against capi/include and run with --lib.
 *
 * Checks: bad arguments (NULL name, ops, ops_result; an over-long name; a
 * bad lvblen) give NULL with EINVAL, run no callback and leave
 * *ops_result alone; at join, recover_done comes once, before the call
 * returns, on the calling thread, with the members, our slot and
 * generation 1, and nothing else comes; *ops_result is as dlm_rs.h
 * documents it. The expected members depend on the backend, and the
 * program computes them itself, so that the transcript is the same on
 * both: on the fallback (no /dev/misc/dlm-control) {nodeid 1, slot 1},
 * our slot 1, ops_result 0; on the kernel, the node ids configfs lists
 * for the lockspace in node-id order with slots 1, 2, ..., our slot that
 * of our node id (comms/<n>/local), ops_result 0 when dlm-controld
 * --single-node's event socket is there (it publishes the lockspace's
 * stops and starts) or a controller put the lockspace in configfs
 * spaces/ (the library then follows the kernel's own recovery), else
 * -EOPNOTSUPP. A second join
 * through the same call (the lockspace exists) gets its own recover_done;
 * each join is released (the kernel counts creations), the last with
 * force.
 * With CT_KILL_CMD set (run-host.sh sets it: a command that kills dlmd
 * with SIGKILL and starts it again), it also checks that a daemon death
 * brings recover_prep, then recover_done with generation 2, and that the
 * lock held before is still held (its lock id the same) afterwards.
 */
#include "ct.h"

#include <dirent.h>
#include <dlm_rs.h>

#define LS "ct_recov"
#define MAXM 64

struct rec {
	int prep, slot, done;
	int order[8]; /* 'p', 's', 'd' in the order they came */
	int norder;
	int nslots, our_slot;
	uint32_t generation;
	struct dlm_slot slots[MAXM];
	pthread_t thread;
};

static void on_prep(void *arg)
{
	struct rec *r = arg;

	pthread_mutex_lock(&ct_mu);
	r->prep++;
	if (r->norder < 8)
		r->order[r->norder++] = 'p';
	pthread_cond_broadcast(&ct_cv);
	pthread_mutex_unlock(&ct_mu);
}

static void on_slot(void *arg, struct dlm_slot *s)
{
	struct rec *r = arg;

	(void)s;
	pthread_mutex_lock(&ct_mu);
	r->slot++;
	if (r->norder < 8)
		r->order[r->norder++] = 's';
	pthread_mutex_unlock(&ct_mu);
}

static void on_done(void *arg, struct dlm_slot *slots, int num_slots, int our_slot,
		    uint32_t generation)
{
	struct rec *r = arg;
	int i;

	pthread_mutex_lock(&ct_mu);
	r->done++;
	if (r->norder < 8)
		r->order[r->norder++] = 'd';
	r->nslots = num_slots;
	r->our_slot = our_slot;
	r->generation = generation;
	for (i = 0; i < num_slots && i < MAXM; i++)
		r->slots[i] = slots[i];
	r->thread = pthread_self();
	pthread_cond_broadcast(&ct_cv);
	pthread_mutex_unlock(&ct_mu);
}

static const struct dlm_lockspace_ops ops = {
	.recover_prep = on_prep,
	.recover_slot = on_slot,
	.recover_done = on_done,
};

static int read_int(const char *path, int *v)
{
	FILE *f = fopen(path, "r");
	int ok;

	if (!f)
		return -1;
	ok = fscanf(f, "%d", v) == 1;
	fclose(f);
	return ok ? 0 : -1;
}

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/* The members dlm_rs.h promises: fallback or kernel (configfs). */
static void expected(struct dlm_slot *want, int *n, int *our, int *result)
{
	const char *base = "/sys/kernel/config/dlm/cluster";
	char p[512];
	int ids[MAXM], nids = 0, local = -1, i;
	struct dirent *e;
	DIR *d;

	if (access("/dev/misc/dlm-control", F_OK) != 0 || getenv("DLM_BACKEND")) {
		want[0].nodeid = 1;
		want[0].slot = 1;
		*n = 1;
		*our = 1;
		*result = 0;
		return;
	}
	snprintf(p, sizeof(p), "%s/spaces/%s", base, LS);
	*result = access("/run/dlm-controld/events.sock", F_OK) == 0 || access(p, F_OK) == 0 ?
		0 : -EOPNOTSUPP;
	snprintf(p, sizeof(p), "%s/spaces/%s/nodes", base, LS);
	d = opendir(p);
	while (d && (e = readdir(d)) && nids < MAXM) {
		int id;

		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/spaces/%s/nodes/%s/nodeid", base, LS, e->d_name);
		if (read_int(p, &id) == 0)
			ids[nids++] = id;
	}
	if (d)
		closedir(d);
	d = opendir("/sys/kernel/config/dlm/cluster/comms");
	while (d && (e = readdir(d))) {
		int l, id;

		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/comms/%s/local", base, e->d_name);
		if (read_int(p, &l) != 0 || l != 1)
			continue;
		snprintf(p, sizeof(p), "%s/comms/%s/nodeid", base, e->d_name);
		if (read_int(p, &id) == 0)
			local = id;
	}
	if (d)
		closedir(d);
	qsort(ids, nids, sizeof(ids[0]), cmp_int);
	*our = 0;
	for (i = 0; i < nids; i++) {
		want[i].nodeid = ids[i];
		want[i].slot = i + 1;
		if (ids[i] == local)
			*our = i + 1;
	}
	*n = nids;
}

static void check_join(const char *what, struct rec *r, int result)
{
	struct dlm_slot want[MAXM];
	int n, our, want_result, i, same;

	expected(want, &n, &our, &want_result);
	ct_eq(ct_what("%s: one recover_done", what), r->done, 1);
	ct_eq(ct_what("%s: no recover_prep", what), r->prep, 0);
	ct_eq(ct_what("%s: no recover_slot", what), r->slot, 0);
	ct_true(ct_what("%s: recover_done ran on the calling thread", what),
		r->done && pthread_equal(r->thread, pthread_self()));
	ct_true(ct_what("%s: the backend's members (at least one)", what), n >= 1);
	ct_eq(ct_what("%s: num_slots", what), r->nslots, n);
	same = r->nslots == n;
	for (i = 0; same && i < n; i++)
		same = r->slots[i].nodeid == want[i].nodeid && r->slots[i].slot == want[i].slot;
	ct_true(ct_what("%s: slots are the members, in node-id order, slots 1 and up", what),
		same);
	ct_eq(ct_what("%s: our_slot", what), r->our_slot, our);
	ct_true(ct_what("%s: our_slot is a member's", what), our >= 1);
	ct_eq(ct_what("%s: generation", what), r->generation, 1);
	ct_eq(ct_what("%s: ops_result (0 fallback or controller events, else -EOPNOTSUPP)", what), result,
	      want_result);
}

static void bad(const char *what, const char *name, const struct dlm_lockspace_ops *o, int lvblen,
		int *result)
{
	struct rec r;
	void *h;

	memset(&r, 0, sizeof(r));
	if (result)
		*result = 12345;
	errno = 0;
	h = dlm_new_lockspace_ops(name, NULL, 0, lvblen, 0600, o, &r, result);
	ct_true(ct_what("%s: NULL", what), h == NULL);
	ct_eq_err(ct_what("%s: errno", what), errno, EINVAL);
	ct_eq(ct_what("%s: no callback", what), r.prep + r.slot + r.done, 0);
	if (result)
		ct_eq(ct_what("%s: ops_result left alone", what), *result, 12345);
	if (h)
		dlm_release_lockspace(name, h, 1);
}

/* Wait (dispatching ls's fd, or sleeping while the AST thread runs) until
 * r has n recover_done calls. */
static int wait_done(dlm_lshandle_t ls, struct rec *r, int n)
{
	int i;

	for (i = 0; i < CT_WAIT_MS / 10; i++) {
		int got;

		pthread_mutex_lock(&ct_mu);
		got = r->done;
		pthread_mutex_unlock(&ct_mu);
		if (got >= n)
			return 0;
		if (ct_ast_thread) {
			usleep(10000);
		} else {
			struct pollfd p = { .fd = dlm_ls_get_fd(ls), .events = POLLIN };

			if (poll(&p, 1, 10) > 0)
				dlm_dispatch(p.fd);
		}
	}
	return -1;
}

static void kill_daemon(const char *cmd)
{
	struct rec r;
	struct ct_lock a;
	dlm_lshandle_t ls;
	int result = 0, rv;
	uint32_t lkid;

	ct_section("the daemon is killed (SIGKILL) and started again");
	memset(&r, 0, sizeof(r));
	ls = dlm_new_lockspace_ops(LS, NULL, 0, 0, 0600, &ops, &r, &result);
	if (!ls)
		ct_fatal("dlm_new_lockspace_ops(" LS "): %s", ct_errname(errno));
	ct_eq("join: generation 1", r.generation, 1);
#if CT_THREADED
	ct_start_ast_thread(ls);
#endif
	ct_lock_init(&a, "a");
	rv = dlm_ls_lock(ls, LKM_EXMODE, &a.lksb, 0, "r", 1, 0, ct_cast, &a, NULL, NULL);
	ct_call("dlm_ls_lock(EX r)", rv, errno, 0);
	ct_wait(ls, &a, 1);
	ct_eq_str("lock granted", ct_take(&a), "cast:0");
	lkid = a.lksb.sb_lkid;
	if (system(cmd) != 0)
		ct_fatal("CT_KILL_CMD failed");
	ct_true("recover_done with the next generation came", wait_done(ls, &r, 2) == 0);
	pthread_mutex_lock(&ct_mu);
	ct_eq("one recover_prep", r.prep, 1);
	ct_eq("no recover_slot", r.slot, 0);
	ct_eq("two recover_done (join, replay)", r.done, 2);
	ct_true("in order: done (join), prep, done",
		r.norder == 3 && r.order[0] == 'd' && r.order[1] == 'p' && r.order[2] == 'd');
	ct_eq("generation", r.generation, 2);
	ct_eq("num_slots", r.nslots, 1);
	ct_true("slots {1, 1}", r.slots[0].nodeid == 1 && r.slots[0].slot == 1);
	ct_eq("our_slot", r.our_slot, 1);
	/* dlm_rs.h: on the thread that met the failure: this one, in
	 * dlm_dispatch(), with libdlm_lt; the AST thread with libdlm. */
	ct_true(CT_THREADED ? "recover_done (replay) ran on the AST thread"
			    : "recover_done (replay) ran in dlm_dispatch() on this thread",
		CT_THREADED != pthread_equal(r.thread, pthread_self()));
	pthread_mutex_unlock(&ct_mu);
	/* The replayed lock: still ours, by the same id. */
	rv = dlm_ls_unlock(ls, lkid, 0, &a.lksb, &a);
	ct_call("dlm_ls_unlock of the replayed lock (its old lock id)", rv, errno, 0);
	ct_wait(ls, &a, 1);
	ct_eq_str("unlocked", ct_take(&a), "cast:EUNLOCK");
	ct_release(LS, ls);
}

int main(void)
{
	struct rec r1, r2;
	struct dlm_lockspace_ops none;
	char longname[80];
	void *h1, *h2;
	int result1 = 777, result2 = 777, x;
	const char *cmd = getenv("CT_KILL_CMD");

	ct_begin("ct_recovery");

	ct_section("bad arguments");
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	bad("NULL name", NULL, &ops, 0, &x);
	bad("NULL ops", LS, NULL, 0, &x);
	bad("NULL ops_result", LS, &ops, 0, NULL);
	bad("79-byte name", longname, &ops, 0, &x);
	bad("lvblen 16", LS, &ops, 16, &x);
	bad("lvblen -1", LS, &ops, -1, &x);

	ct_section("join: recover_done before the call returns");
	memset(&r1, 0, sizeof(r1));
	h1 = dlm_new_lockspace_ops(LS, "anycluster", 0, DLM_LVB_LEN, 0600, &ops, &r1, &result1);
	ct_true("dlm_new_lockspace_ops(" LS ") is not NULL", h1 != NULL);
	if (!h1)
		ct_fatal("cannot go on without " LS ": %s", ct_errname(errno));
	check_join("first join", &r1, result1);

	ct_section("a second join of the existing lockspace, no callback members set");
	memset(&r2, 0, sizeof(r2));
	h2 = dlm_new_lockspace_ops(LS, NULL, 0, 0, 0600, &ops, &r2, &result2);
	ct_true("second dlm_new_lockspace_ops is not NULL", h2 != NULL);
	if (h2)
		check_join("second join", &r2, result2);
	ct_eq("the first handle got nothing more", r1.done + r1.prep + r1.slot, 1);
	ct_call("dlm_release_lockspace(second, force 0)", dlm_release_lockspace(LS, h2, 0), errno, 0);
	memset(&none, 0, sizeof(none));
	result2 = 777;
	h2 = dlm_new_lockspace_ops(LS, NULL, 0, 0, 0600, &none, NULL, &result2);
	ct_true("all-NULL ops: not NULL (NULL callbacks are skipped)", h2 != NULL);
	ct_true("all-NULL ops: ops_result set", result2 == 0 || result2 == -EOPNOTSUPP);
	ct_call("dlm_release_lockspace(all-NULL ops, force 0)", dlm_release_lockspace(LS, h2, 0), errno, 0);
	ct_release(LS, h1);
	ct_eq("no callback after release", r1.done + r1.prep + r1.slot, 1);

	if (cmd)
		kill_daemon(cmd);
	return ct_end();
}
