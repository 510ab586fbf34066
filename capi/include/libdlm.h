/*
 * libdlm.h: the C interface of dlm-rs's libdlm.so.3 and libdlm_lt.so.3.
 *
 * Written for dlm-rs. It declares the same names, types and macros as
 * libdlm 4.2's header, so programs built against either run on either
 * library. Link with -ldlm_lt (no threads; see "lite") or, compiling with
 * -D_REENTRANT, with -ldlm -lpthread (an AST thread; see "threaded").
 *
 * Backends: the same library drives the kernel DLM when its control
 * device exists (/dev/misc/dlm-control), and otherwise the fallback daemon
 * dlmd, started per user if none answers, as the Rust API does
 * (DLM_BACKEND=kernel|fallback, DLM_SOCKET and DLM_NO_AUTOSTART choose).
 *
 * Status values: sb_status is 0 or a positive errno value; besides
 * EAGAIN (NOQUEUE), EDEADLK (conversion deadlock, deadlock cancel) and
 * ETIMEDOUT, the three below. EINPROG is written into the lksb when a
 * request is made and stays until its completion arrives.
 *
 * Lite and threaded. Completion and blocking ASTs run:
 *  - lite (libdlm_lt): in dlm_dispatch(), on the thread that calls it
 *    (poll dlm_ls_get_fd() / dlm_get_fd() for POLLIN first), and inside a
 *    *_wait call, which reads the lockspace on the calling thread until
 *    its own operation completes. A *_wait call returns -1 with errno set
 *    to the status when the status is neither 0 nor EUNLOCK.
 *  - threaded (libdlm): on the AST thread once dlm_ls_pthread_init() (or
 *    dlm_pthread_init() for the default lockspace) started it, or in
 *    dlm_dispatch(). A *_wait call returns 0 once its operation completed
 *    and leaves the status in the lksb. Without an AST thread, or when
 *    called from an AST on the AST thread, it reads the lockspace itself.
 *
 * Where this library differs from libdlm 4.2 on purpose (libdlm's known
 * bugs, each decided):
 *  - Unlock requests carry an initialised value block: the lksb's
 *    sb_lvbptr, or zeros (libdlm sends uninitialised stack bytes, which
 *    the DLM writes into the resource on an unlock from PW/EX with
 *    VALBLK). Fixed.
 *  - A blocking AST leaves the lksb alone (libdlm copies the kernel's
 *    status block over it), so a lite *_wait conversion no longer returns
 *    early, with a stale status, when a blocking AST for the same lock
 *    arrives: it returns when the conversion completes. Fixed.
 *  - The completion of an unlock or cancel goes to the AST routine of the
 *    lock's last request or conversion, with the unlock's astarg when it
 *    is not NULL, and the unlock's lksb, as the kernel delivers it. Kept.
 *  - dlm_release_lockspace() returns 0 even when the DLM refuses
 *    (EBUSY without force while locks remain), as libdlm does. Kept.
 *  - unlock_resource() without a default lockspace sets errno to ENOTCONN
 *    (libdlm sets -ENOTCONN). Fixed.
 *  - lock_resource() and unlock_resource() keep their status block off
 *    the caller's stack, for as long as a callback may still come into it
 *    (libdlm's is on its stack: the completion of an unlock whose lock's
 *    earlier completion came first writes into a frame that has
 *    returned). Fixed; what they return is unchanged.
 *  - NULL or unknown handles, NULL lksbs, names, version pointers, and a
 *    NULL handle to dlm_ls_pthread_init(), fail with -1 (or NULL) and
 *    errno EINVAL (dlm_open_lockspace(NULL): ENOENT, as libdlm) where
 *    libdlm crashes. A conversion ignores its name and namelen (libdlm
 *    sends namelen bytes beyond its buffer). Fixed.
 *  - LKF_TIMEOUT with a timeout (dlm_ls_lockx, in centiseconds) is
 *    honoured in user space: an operation still in progress when it runs
 *    out is cancelled and completes with ETIMEDOUT (libdlm 4.2 ignores the
 *    timeout; the kernel dropped it in 6.2). The xid is accepted and not
 *    used (nothing in the DLM reads it any more).
 *  - A lite *_wait never blocks a thread forever without reading: a
 *    threaded *_wait with no AST thread reads the lockspace itself
 *    (libdlm blocks until some other thread calls dlm_dispatch()).
 *  - libdlm_lt.pc describes libdlm_lt (4.2 ships a copy of libdlm.pc).
 */
#ifndef __LIBDLM_H
#define __LIBDLM_H

#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The lock value block's length in bytes. */
#define DLM_LVB_LEN             32

#ifndef BUILDING_LIBDLM
/* The longest lockspace name, and the longest (binary) resource name. */
#define DLM_LOCKSPACE_LEN       64
#define DLM_RESNAME_MAXLEN      64

/* The lock status block: owned by the caller, filled by the library. */
struct dlm_lksb {
	int sb_status;		/* 0, a positive errno, or ECANCEL/EUNLOCK/EINPROG */
	uint32_t sb_lkid;	/* the lock's id, set when the request returns */
	char sb_flags;		/* DLM_SBF_* */
	char *sb_lvbptr;	/* DLM_LVB_LEN bytes, or NULL */
};

/* sb_flags */
#define DLM_SBF_DEMOTED         0x01	/* demoted to NL by CONVDEADLK */
#define DLM_SBF_VALNOTVALID     0x02	/* the value block may be stale */
#define DLM_SBF_ALTMODE         0x04	/* granted the alternate mode */

/* Lockspace flags (dlm_new_lockspace) */
#define DLM_LSFL_TIMEWARN       0x00000002	/* ignored, as in libdlm 4.2 */
#define DLM_LSFL_FS             0x00000004
#define DLM_LSFL_NEWEXCL        0x00000008	/* EEXIST if it exists */
#endif

#if 0
/* The query interface is long gone; its name stays reserved. */
struct dlm_queryinfo;
#endif

/* Device interface versions: the kernel's (-1 without a DLM) and ours. */
extern int dlm_kernel_version(uint32_t *maj, uint32_t *min, uint32_t *patch);
extern void dlm_library_version(uint32_t *maj, uint32_t *min, uint32_t *patch);

#ifdef _REENTRANT
/* Blocking calls on the default lockspace (threaded library only). */
extern int lock_resource(const char *resource, int mode, int flags, int *lockid);
extern int unlock_resource(int lockid);
#endif

/*
 * The default lockspace ("default", created 0600 when first needed by
 * dlm_lock, dlm_lock_wait or dlm_get_fd; dlm_unlock and dlm_unlock_wait
 * use it only if it is open).
 */
extern int dlm_lock(uint32_t mode,
		struct dlm_lksb *lksb,
		uint32_t flags,
		const void *name,
		unsigned int namelen,
		uint32_t parent,		/* unused */
		void (*astaddr) (void *astarg),
		void *astarg,
		void (*bastaddr) (void *astarg),
		void *range);			/* unused: non-NULL is ENOSYS */

extern int dlm_unlock(uint32_t lkid,
		uint32_t flags,
		struct dlm_lksb *lksb,
		void *astarg);

extern int dlm_lock_wait(uint32_t mode,
		struct dlm_lksb *lksb,
		uint32_t flags,
		const void *name,
		unsigned int namelen,
		uint32_t parent,		/* unused */
		void *bastarg,
		void (*bastaddr) (void *bastarg),
		void *range);			/* unused: non-NULL is ENOSYS */

extern int dlm_unlock_wait(uint32_t lkid,
		uint32_t flags,
		struct dlm_lksb *lksb);

/* The default lockspace's fd to poll, and running the ASTs that are due. */
extern int dlm_get_fd(void);
extern int dlm_dispatch(int fd);

/* A lockspace handle. */
typedef void *dlm_lshandle_t;

extern dlm_lshandle_t dlm_create_lockspace(const char *name, mode_t mode);
extern int dlm_release_lockspace(const char *name, dlm_lshandle_t ls,
		int force);
extern dlm_lshandle_t dlm_open_lockspace(const char *name);
extern int dlm_close_lockspace(dlm_lshandle_t ls);
extern int dlm_ls_get_fd(dlm_lshandle_t ls);
extern dlm_lshandle_t dlm_new_lockspace(const char *name, mode_t mode,
		uint32_t flags);

/* Locks in a lockspace of one's own. */
extern int dlm_ls_lock(dlm_lshandle_t lockspace,
		uint32_t mode,
		struct dlm_lksb *lksb,
		uint32_t flags,
		const void *name,
		unsigned int namelen,
		uint32_t parent,		/* unused */
		void (*astaddr) (void *astarg),
		void *astarg,
		void (*bastaddr) (void *astarg),
		void *range);			/* unused: non-NULL is ENOSYS */

extern int dlm_ls_lockx(dlm_lshandle_t lockspace,
		uint32_t mode,
		struct dlm_lksb *lksb,
		uint32_t flags,
		const void *name,
		unsigned int namelen,
		uint32_t parent,		/* unused */
		void (*astaddr) (void *astarg),
		void *astarg,
		void (*bastaddr) (void *astarg),
		uint64_t *xid,
		uint64_t *timeout);		/* centiseconds, with LKF_TIMEOUT */

extern int dlm_ls_unlock(dlm_lshandle_t lockspace,
		uint32_t lkid,
		uint32_t flags,
		struct dlm_lksb *lksb,
		void *astarg);

extern int dlm_ls_lock_wait(dlm_lshandle_t lockspace,
		uint32_t mode,
		struct dlm_lksb *lksb,
		uint32_t flags,
		const void *name,
		unsigned int namelen,
		uint32_t parent,		/* unused */
		void *bastarg,
		void (*bastaddr) (void *bastarg),
		void *range);			/* unused: non-NULL is ENOSYS */

extern int dlm_ls_unlock_wait(dlm_lshandle_t lockspace,
		uint32_t lkid,
		uint32_t flags,
		struct dlm_lksb *lksb);

extern int dlm_ls_deadlock_cancel(dlm_lshandle_t ls,
		uint32_t lkid,
		uint32_t flags);

/* Release the orphans of pid (0: every pid) on nodeid (0: this node).
 * With pid the caller's own (the calling thread's id on the kernel, which
 * compares it with current->pid; the process's id on the fallback) the
 * DLM purges this handle's own locks instead, and no callback of theirs
 * ever comes. On the fallback dlm-rs forgets them too: calls waiting on
 * them fail with ENOENT. On the kernel, as with libdlm, such a call waits
 * for ever. A lock requested with LKF_FORCEUNLOCK among its own flags
 * survives such a purge, dead and still granted, until its lockspace is
 * released (the kernel's way). */
extern int dlm_ls_purge(dlm_lshandle_t lockspace,
		int nodeid,
		int pid);

#ifdef _REENTRANT
/* The AST threads (threaded library only). */
extern int dlm_pthread_init(void);
extern int dlm_ls_pthread_init(dlm_lshandle_t lockspace);
extern int dlm_pthread_cleanup(void);
#endif

/* Lock modes */
#define LKM_NLMODE		0	/* null */
#define LKM_CRMODE		1	/* concurrent read */
#define LKM_CWMODE		2	/* concurrent write */
#define LKM_PRMODE		3	/* protected read */
#define LKM_PWMODE		4	/* protected write */
#define LKM_EXMODE		5	/* exclusive */

/* Request flags: the kernel's DLM_LKF_* values. */
#define LKF_NOQUEUE		0x00000001
#define LKF_CANCEL		0x00000002
#define LKF_CONVERT		0x00000004
#define LKF_VALBLK		0x00000008
#define LKF_QUECVT		0x00000010
#define LKF_IVVALBLK		0x00000020
#define LKF_CONVDEADLK		0x00000040
#define LKF_PERSISTENT		0x00000080
#define LKF_NODLCKWT		0x00000100
#define LKF_NODLCKBLK		0x00000200
#define LKF_EXPEDITE		0x00000400
#define LKF_NOQUEUEBAST		0x00000800
#define LKF_HEADQUE		0x00001000
#define LKF_NOORDER		0x00002000
#define LKF_ORPHAN		0x00004000
#define LKF_ALTPR		0x00008000
#define LKF_ALTCW		0x00010000
#define LKF_FORCEUNLOCK		0x00020000
#define LKF_TIMEOUT		0x00040000
#define LKF_WAIT		0x80000000	/* the *_wait calls' own; never sent */

/* Statuses beyond errno's */
#define ECANCEL			0x10001	/* cancelled */
#define EUNLOCK			0x10002	/* unlocked */
#define EINPROG			0x10003	/* in progress */

#ifdef __cplusplus
}
#endif

#endif /* __LIBDLM_H */
