/*
 * Shared helpers of the cluster test programs (ci/cluster/c/): lock mode
 * names, status names, times, value block printing, opening a lockspace.
 * Only libdlm.h's API is used, so the programs run against Debian's
 * libdlm_lt and, later, against ours.
 */
#ifndef CL_H
#define CL_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <time.h>

#include <libdlm.h>

/* libdlm reports an unlock's completion as +EUNLOCK (65538), a cancel's
 * as +ECANCEL (65537); older headers may lack the names. */
#ifndef EUNLOCK
#define EUNLOCK 0x10002
#endif
#ifndef ECANCEL
#define ECANCEL 0x10001
#endif

static inline const char *cl_mode_name(int mode)
{
	static const char *const names[] = { "NL", "CR", "CW", "PR", "PW", "EX" };

	if (mode >= 0 && mode <= 5)
		return names[mode];
	return "IV";
}

/* The mode named NAME (NL, CR, CW, PR, PW, EX), or -1. */
static inline int cl_mode_parse(const char *name)
{
	int m;

	for (m = 0; m <= 5; m++)
		if (strcasecmp(name, cl_mode_name(m)) == 0)
			return m;
	return -1;
}

/* A lock status's name: 0, EAGAIN, EUNLOCK, ECANCEL, EDEADLK, ... */
static inline const char *cl_status_name(int status)
{
	switch (status) {
	case 0: return "0";
	case EAGAIN: return "EAGAIN";
	case EUNLOCK: return "EUNLOCK";
	case ECANCEL: return "ECANCEL";
	case EDEADLK: return "EDEADLK";
	case EINVAL: return "EINVAL";
	case ENOMEM: return "ENOMEM";
	case EBUSY: return "EBUSY";
	case ENOENT: return "ENOENT";
	case ETIMEDOUT: return "ETIMEDOUT";
	default: return "other";
	}
}

/* CLOCK_REALTIME in seconds: comparable across guests once each guest's
 * offset from the host is known (the harness measures it). */
static inline double cl_realtime(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CLOCK_MONOTONIC in nanoseconds, for intervals. */
static inline uint64_t cl_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Whether the value block is all zero bytes. */
static inline int cl_lvb_zero(const char *lvb)
{
	int i;

	for (i = 0; i < DLM_LVB_LEN; i++)
		if (lvb[i])
			return 0;
	return 1;
}

/* Print the value block as lvb="text" (up to its first NUL; other
 * bytes as \xNN), or lvb=<zero> when every byte is zero. */
static inline void cl_lvb_print(FILE *f, const char *lvb)
{
	int i;

	if (cl_lvb_zero(lvb)) {
		fputs("lvb=<zero>", f);
		return;
	}
	fputs("lvb=\"", f);
	for (i = 0; i < DLM_LVB_LEN && lvb[i]; i++) {
		unsigned char c = (unsigned char)lvb[i];

		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
			fputc(c, f);
		else
			fprintf(f, "\\x%02x", c);
	}
	fputc('"', f);
}

/* Open lockspace NAME if it exists (dlm_tool join made it), else create
 * it (mode 0600). NULL with errno on failure; *created says which. */
static inline dlm_lshandle_t cl_lockspace(const char *name, int *created)
{
	dlm_lshandle_t ls;

	*created = 0;
	ls = dlm_open_lockspace(name);
	if (ls)
		return ls;
	ls = dlm_create_lockspace(name, 0600);
	if (ls)
		*created = 1;
	return ls;
}

#endif
