/*
 * cl_locksh: a lock shell for the cluster tests. It holds locks in one
 * lockspace for as long as it runs, takes commands on standard input, one
 * a line, and prints what happens on standard output, one event a line,
 * flushed at once. Single-threaded, on libdlm_lt: poll() waits on stdin
 * and the lockspace's descriptor, and dlm_dispatch() runs the callbacks.
 *
 *   cl_locksh LOCKSPACE
 *
 * Commands (H is a handle, 0..63; RES a resource name; MODE NL CR CW PR
 * PW EX; OPTS any of noqueue, valblk, lvb=TEXT, which sets the value
 * block sent with the request; TEXT has no spaces, up to 31 bytes):
 *   lock H RES MODE [OPTS]    a new lock request
 *   convert H MODE [OPTS]     a conversion of H's lock
 *   unlock H [OPTS]           release H's lock
 *   show H                    print H's state
 *   quit                      release every lock and exit 0
 * End of input is quit too.
 *
 * Output lines (t= is CLOCK_REALTIME, seconds):
 *   READY ls=NAME created=0|1
 *   OK <command>                          libdlm accepted the request
 *   ERR <command> errno=N (text)          it did not (or a bad command)
 *   AST H status=S name=N sbflags=0xF [VALNOTVALID] [DEMOTED] mode=M lvb=... t=T
 *   BAST H held=M t=T                     a blocking callback on H's lock.
 *                                         libdlm's callback carries no mode:
 *                                         M is the mode this lock holds.
 *   STATE H res=RES lkid=0xID mode=M pending=0|1 lvb=...
 * An AST's status S is 0 (granted), EAGAIN (NOQUEUE refused), EUNLOCK
 * (unlocked), ECANCEL, EDEADLK or the number. mode= is the mode the lock
 * now holds (none after an unlock).
 * Exits 0 after quit, 1 when the lockspace cannot be opened or the
 * lockspace descriptor fails.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cl.h"

#define MAX_LOCKS 64

struct lk {
	int used;		/* a lock exists (granted or requested) */
	int pending;		/* a request is outstanding */
	int granted;		/* mode held, -1 none */
	int requested;		/* mode asked for by the pending request */
	int unlocking;		/* the pending request is an unlock */
	char res[65];
	struct dlm_lksb lksb;
	char lvb[DLM_LVB_LEN];
};

static struct lk locks[MAX_LOCKS];
static dlm_lshandle_t ls;

static void ast(void *arg)
{
	struct lk *l = arg;
	int h = (int)(l - locks);
	int st = l->lksb.sb_status;

	l->pending = 0;
	if (l->unlocking) {
		if (st == EUNLOCK) {
			l->granted = -1;
			l->used = 0;
		}
		l->unlocking = 0;
	} else if (st == 0) {
		l->granted = l->requested;
	} else if (l->granted < 0) {
		/* A refused or failed new request leaves no lock. */
		l->used = 0;
	}
	printf("AST %d status=%s(%d) sbflags=0x%x%s%s mode=%s ", h, cl_status_name(st), st,
	       (unsigned char)l->lksb.sb_flags,
	       (l->lksb.sb_flags & DLM_SBF_VALNOTVALID) ? " VALNOTVALID" : "",
	       (l->lksb.sb_flags & DLM_SBF_DEMOTED) ? " DEMOTED" : "",
	       l->granted >= 0 ? cl_mode_name(l->granted) : "none");
	cl_lvb_print(stdout, l->lvb);
	printf(" t=%.6f\n", cl_realtime());
	fflush(stdout);
}

static void bast(void *arg)
{
	struct lk *l = arg;

	printf("BAST %d held=%s t=%.6f\n", (int)(l - locks),
	       l->granted >= 0 ? cl_mode_name(l->granted) : "none", cl_realtime());
	fflush(stdout);
}

static void reply_err(const char *cmd, int err, const char *what)
{
	printf("ERR %s errno=%d (%s)\n", cmd, err, what ? what : strerror(err));
	fflush(stdout);
}

/* Parse the options after the fixed words; 0, or -1 on a bad one. */
static int parse_opts(char **words, int n, struct lk *l, uint32_t *flags)
{
	int i;

	for (i = 0; i < n; i++) {
		if (strcmp(words[i], "noqueue") == 0) {
			*flags |= LKF_NOQUEUE;
		} else if (strcmp(words[i], "valblk") == 0) {
			*flags |= LKF_VALBLK;
		} else if (strncmp(words[i], "lvb=", 4) == 0) {
			size_t len = strlen(words[i] + 4);

			if (len >= DLM_LVB_LEN)
				return -1;
			memset(l->lvb, 0, sizeof(l->lvb));
			memcpy(l->lvb, words[i] + 4, len);
		} else {
			return -1;
		}
	}
	return 0;
}

static int handle_of(const char *w)
{
	char *end;
	long h = strtol(w, &end, 10);

	if (*w == '\0' || *end != '\0' || h < 0 || h >= MAX_LOCKS)
		return -1;
	return (int)h;
}

static void show(int h)
{
	struct lk *l = &locks[h];

	printf("STATE %d res=%s lkid=0x%x mode=%s pending=%d ", h, l->used ? l->res : "-",
	       l->used ? l->lksb.sb_lkid : 0, l->granted >= 0 ? cl_mode_name(l->granted) : "none",
	       l->pending);
	cl_lvb_print(stdout, l->lvb);
	putchar('\n');
	fflush(stdout);
}

/* Run one command line; 1 to quit. */
static int command(char *line)
{
	char copy[512], *words[16], *save = NULL, *w;
	int n = 0, h, mode, rv;
	uint32_t flags = 0;
	struct lk *l;

	line[strcspn(line, "\r\n")] = '\0';
	snprintf(copy, sizeof(copy), "%s", line);
	for (w = strtok_r(line, " \t", &save); w && n < 16; w = strtok_r(NULL, " \t", &save))
		words[n++] = w;
	if (n == 0)
		return 0;
	if (strcmp(words[0], "quit") == 0)
		return 1;
	if (n < 2 || (h = handle_of(words[1])) < 0) {
		reply_err(copy, EINVAL, "bad command or handle");
		return 0;
	}
	l = &locks[h];
	if (strcmp(words[0], "show") == 0) {
		show(h);
		return 0;
	}
	if (strcmp(words[0], "lock") == 0) {
		if (n < 4 || (mode = cl_mode_parse(words[3])) < 0 || strlen(words[2]) > 64 ||
		    parse_opts(words + 4, n - 4, l, &flags) < 0) {
			reply_err(copy, EINVAL, "usage: lock H RES MODE [noqueue] [valblk] [lvb=TEXT]");
			return 0;
		}
		if (l->used) {
			reply_err(copy, EBUSY, "handle in use");
			return 0;
		}
		memset(&l->lksb, 0, sizeof(l->lksb));
		l->lksb.sb_lvbptr = l->lvb;
		snprintf(l->res, sizeof(l->res), "%s", words[2]);
		l->granted = -1;
		l->requested = mode;
		l->unlocking = 0;
		l->used = 1;
		l->pending = 1;
		rv = dlm_ls_lock(ls, (uint32_t)mode, &l->lksb, flags, l->res,
				 (unsigned int)strlen(l->res), 0, ast, l, bast, NULL);
		if (rv != 0) {
			l->used = 0;
			l->pending = 0;
			reply_err(copy, errno, NULL);
			return 0;
		}
	} else if (strcmp(words[0], "convert") == 0) {
		if (n < 3 || (mode = cl_mode_parse(words[2])) < 0 ||
		    parse_opts(words + 3, n - 3, l, &flags) < 0) {
			reply_err(copy, EINVAL, "usage: convert H MODE [noqueue] [valblk] [lvb=TEXT]");
			return 0;
		}
		if (!l->used || l->pending) {
			reply_err(copy, EBUSY, l->used ? "a request is pending" : "no lock on this handle");
			return 0;
		}
		l->requested = mode;
		l->pending = 1;
		rv = dlm_ls_lock(ls, (uint32_t)mode, &l->lksb, flags | LKF_CONVERT, l->res,
				 (unsigned int)strlen(l->res), 0, ast, l, bast, NULL);
		if (rv != 0) {
			l->pending = 0;
			reply_err(copy, errno, NULL);
			return 0;
		}
	} else if (strcmp(words[0], "unlock") == 0) {
		if (parse_opts(words + 2, n - 2, l, &flags) < 0) {
			reply_err(copy, EINVAL, "usage: unlock H [valblk] [lvb=TEXT]");
			return 0;
		}
		if (!l->used || l->pending) {
			reply_err(copy, EBUSY, l->used ? "a request is pending" : "no lock on this handle");
			return 0;
		}
		l->pending = 1;
		l->unlocking = 1;
		rv = dlm_ls_unlock(ls, l->lksb.sb_lkid, flags, &l->lksb, l);
		if (rv != 0) {
			l->pending = 0;
			l->unlocking = 0;
			reply_err(copy, errno, NULL);
			return 0;
		}
	} else {
		reply_err(copy, EINVAL, "unknown command");
		return 0;
	}
	printf("OK %s\n", copy);
	fflush(stdout);
	return 0;
}

/* Release every granted lock, waiting (20 s at most) for the answers. */
static void release_all(int fd)
{
	int h, left;
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint64_t end = cl_mono_ns() + 20000000000ull;

	for (h = 0; h < MAX_LOCKS; h++) {
		struct lk *l = &locks[h];

		if (l->used && !l->pending) {
			l->pending = 1;
			l->unlocking = 1;
			if (dlm_ls_unlock(ls, l->lksb.sb_lkid, 0, &l->lksb, l) != 0) {
				l->pending = 0;
				l->unlocking = 0;
			}
		}
	}
	for (;;) {
		for (left = 0, h = 0; h < MAX_LOCKS; h++)
			left += locks[h].pending;
		if (!left || cl_mono_ns() > end)
			break;
		if (poll(&p, 1, 1000) > 0)
			dlm_dispatch(fd);
	}
	if (left)
		printf("QUIT with %d requests unanswered\n", left);
}

int main(int argc, char **argv)
{
	char line[512];
	size_t used = 0;
	int created, fd;

	if (argc != 2) {
		fprintf(stderr, "usage: cl_locksh LOCKSPACE\n");
		return 2;
	}
	ls = cl_lockspace(argv[1], &created);
	if (!ls) {
		fprintf(stderr, "cl_locksh: lockspace %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	fd = dlm_ls_get_fd(ls);
	printf("READY ls=%s created=%d\n", argv[1], created);
	fflush(stdout);
	for (;;) {
		struct pollfd p[2] = { { .fd = 0, .events = POLLIN }, { .fd = fd, .events = POLLIN } };

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("cl_locksh: poll");
			return 1;
		}
		if (p[1].revents & (POLLERR | POLLNVAL)) {
			fprintf(stderr, "cl_locksh: the lockspace descriptor failed\n");
			return 1;
		}
		if (p[1].revents & POLLIN)
			dlm_dispatch(fd);
		if (p[0].revents & (POLLIN | POLLHUP)) {
			ssize_t r = read(0, line + used, sizeof(line) - 1 - used);
			char *nl;

			if (r <= 0)
				break;
			used += (size_t)r;
			line[used] = '\0';
			while ((nl = memchr(line, '\n', used))) {
				size_t len = (size_t)(nl - line) + 1;
				char cmd[512];

				memcpy(cmd, line, len);
				cmd[len] = '\0';
				memmove(line, nl + 1, used - len);
				used -= len;
				line[used] = '\0';
				if (command(cmd)) {
					release_all(fd);
					printf("BYE\n");
					return 0;
				}
			}
			if (used == sizeof(line) - 1)
				used = 0;	/* an over-long line is dropped */
		}
	}
	release_all(fd);
	printf("BYE\n");
	return 0;
}
