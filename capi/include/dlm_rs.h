/*
 * dlm_rs.h: dlm-rs's own extension to libdlm: recovery callbacks.
 *
 * Not part of libdlm's interface: neither libdlm 4.2 nor any other libdlm
 * has these. The kernel offers them to in-kernel users only (gfs2, ocfs2,
 * md-cluster, through dlm_new_lockspace() in <linux/dlm.h>); dlm-rs's
 * libdlm.so.3 and libdlm_lt.so.3 bring them to userspace, under names and
 * with argument lists that follow the kernel's. Include it after
 * <libdlm.h>; link as for libdlm (-ldlm_lt, or -D_REENTRANT -ldlm
 * -lpthread).
 *
 * The symbols are versioned, DLM_RS_1, where libdlm's are not: a program
 * that uses them says so in its binary (objdump -T: DLM_RS_1), and
 * loading it with another libdlm fails at once ("version `DLM_RS_1' not
 * found") instead of at the first call. A program that wants to run on
 * either can look dlm_new_lockspace_ops up with dlsym() and fall back to
 * dlm_new_lockspace() when it is not there.
 *
 * The callbacks, as the kernel's member.c calls them:
 *  - recover_prep(ops_arg): the lock manager is about to recover the
 *    lockspace's locks. What the locks protect may not be trusted until
 *    recover_done. Once per stop of the lockspace.
 *  - recover_slot(ops_arg, slot): a member failed (one that left cleanly
 *    gets none), with its node id and slot, between recover_prep and
 *    recover_done. The fallback daemon has one member, this host, and
 *    never calls it; nor does dlm-controld --single-node. On the kernel
 *    under the cluster's dlm_controld it comes for each failed member
 *    (see below).
 *  - recover_done(ops_arg, slots, num_slots, our_slot, generation):
 *    recovery is over. slots holds num_slots {nodeid, slot} pairs, every
 *    member's; our_slot is this node's slot; generation the lockspace's,
 *    which grows by one at each recovery. The array is the library's and
 *    valid only during the call: copy what you keep.
 *
 * When they run, on each backend (the same as the Rust API, dlm::Recovery):
 *  - At join, on every backend: recover_done once, on the thread that
 *    calls dlm_new_lockspace_ops(), before that call returns (so before
 *    the caller has the handle). On the fallback daemon (dlmd) the members
 *    are this host alone, {nodeid 1, slot 1}, our_slot is 1 and the
 *    generation 1. On the kernel the members are the node ids in configfs
 *    (/sys/kernel/config/dlm/cluster/spaces/<name>/nodes), each with its
 *    position in node-id order as its slot, and our_slot is our node id's
 *    (0 when configfs does not list it); the generation is 1. Those slots
 *    are the kernel's own only while no member has left: the kernel
 *    assigns slots itself (fs/dlm/member.c) and does not export them.
 *  - On the fallback, when the daemon dies (killed, crashed, restarted):
 *    the library replays the process's locks onto the daemon that comes
 *    back (see libdlm.h and the README, "When the daemon dies"), framed by
 *    recover_prep, before the replay, and recover_done with the generation
 *    one higher, once it is over. Both run on the thread that meets the
 *    failure, with none of the library's locks held: with libdlm_lt,
 *    inside dlm_dispatch() or the call of this lockspace that met it (a
 *    *_wait call reading its completion, a request whose write failed);
 *    with libdlm and an AST thread (dlm_ls_pthread_init()), that thread,
 *    the one that runs the ASTs, unless a call on another thread met the
 *    failure first. A replay that fails (no daemon came back) ends with no
 *    recover_done: the locks are lost, and each lock's AST says so
 *    (sb_status ENOLCK).
 *  - On the kernel, with dlm-controld --single-node (its event socket
 *    /run/dlm-controld/events.sock, root's), recover_prep when it stops
 *    the lockspace and recover_done with the generation one higher when
 *    it starts it again, on a thread of the library's own; *ops_result is
 *    0.
 *  - On the kernel under the cluster's dlm_controld (corosync): the
 *    kernel's own recovery, read every 50 ms from
 *    /sys/kernel/dlm/<name>/recover_status and configfs. recover_prep
 *    when the kernel stops the lockspace (a member failed, left or
 *    joined); once this node's recovery is over, recover_slot for each
 *    member that failed (not one that left cleanly, which keeps its
 *    configfs comms entry: the kernel's own rule), then recover_done with
 *    the members now and the generation one higher (counted from 1 at
 *    join: the kernel does not export its own); on a thread of the
 *    library's own; *ops_result is 0.
 *  - Without either controller only the recover_done at join comes, and
 *    *ops_result says -EOPNOTSUPP, as the kernel's does when it cannot
 *    deliver the callbacks (the kernel then delivers none, not even at
 *    join).
 *
 * A callback may be called from a thread the program did not create (the
 * AST thread); it must not longjmp out of the library. A NULL member of
 * struct dlm_lockspace_ops is skipped, as in the kernel.
 */
#ifndef __DLM_RS_H
#define __DLM_RS_H

#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One member of a lockspace: the kernel's struct dlm_slot. */
struct dlm_slot {
	int nodeid; /* 1 and up */
	int slot;   /* 1 and up: small, unique among the members */
};

/* The recovery callbacks: the kernel's struct dlm_lockspace_ops, the same
 * members in the same order with the same arguments. */
struct dlm_lockspace_ops {
	void (*recover_prep)(void *ops_arg);
	void (*recover_slot)(void *ops_arg, struct dlm_slot *slot);
	void (*recover_done)(void *ops_arg, struct dlm_slot *slots,
			     int num_slots, int our_slot, uint32_t generation);
};

/*
 * dlm_new_lockspace_ops: dlm_new_lockspace() with recovery callbacks, as
 * the kernel's dlm_new_lockspace() takes them. Creates the lockspace, or
 * joins it if it exists (DLM_LSFL_NEWEXCL in flags: EEXIST instead), and
 * returns its handle, as dlm_new_lockspace() does; NULL with errno set on
 * failure.
 *
 *   name       the lockspace's name, NUL-terminated, at most
 *              DLM_LOCKSPACE_LEN (64) bytes
 *   cluster    the kernel's cluster name check. Userspace cannot make it
 *              (the device interface carries no cluster name): accepted,
 *              NULL or any string, and not used
 *   flags      DLM_LSFL_*, as dlm_new_lockspace()'s
 *   lvblen     the value block's length: 0 or DLM_LVB_LEN (32), the one
 *              length the userspace interface has; else EINVAL
 *   mode       the access mode of the lockspace (its device node on the
 *              kernel), as dlm_new_lockspace()'s; 0 is 0600
 *   ops        the callbacks (not NULL: use dlm_new_lockspace() for none);
 *              the library copies the struct
 *   ops_arg    passed, as is, to every callback
 *   ops_result set to 0 when the backend delivers every callback (the
 *              fallback daemon; the kernel with dlm-controld
 *              --single-node's events), to -EOPNOTSUPP where it delivers
 *              only the recover_done at join
 *
 * Errors (NULL, errno): EINVAL for a NULL or over-long name, a NULL ops
 * or ops_result, a bad lvblen; otherwise dlm_new_lockspace()'s. On error
 * no callback has run and *ops_result is left alone.
 *
 * Close the handle with dlm_close_lockspace() or dlm_release_lockspace(),
 * as any; no callback runs after it is closed.
 */
void *dlm_new_lockspace_ops(const char *name, const char *cluster,
			    uint32_t flags, int lvblen, mode_t mode,
			    const struct dlm_lockspace_ops *ops, void *ops_arg,
			    int *ops_result);

#ifdef __cplusplus
}
#endif

#endif /* __DLM_RS_H */
