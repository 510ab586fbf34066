/*
 * A QEMU TCG plugin for ci/kernel/icount.sh: counts the guest
 * instructions executed, split into user space and kernel space, and
 * writes "ICOUNT user <n> kernel <n>" to the file named by
 * $DLM_ICOUNT_OUT when the guest powers off.
 *
 * Every translated block adds its instruction count to one of two
 * counters each time it runs (an inline add, no helper call); a block
 * whose start address is in the upper half of the address space is
 * kernel code. The guest runs one vCPU, so plain counters suffice.
 *
 * Debian 12 ships QEMU 7.2 without the plugin header, so the handful of
 * plugin API entry points used here (API version 1) are declared below.
 * Built by icount.sh: gcc -shared -fPIC -O2 -o icount-plugin.so icount-plugin.c
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define PLUGIN_EXPORT __attribute__((visibility("default")))

typedef uint64_t plugin_id_t;
struct qemu_plugin_tb;
struct qemu_info_t;

typedef void (*tb_trans_fn)(plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*atexit_fn)(plugin_id_t id, void *userdata);

/* The inline operation "add an immediate to a 64-bit counter". */
enum { INLINE_ADD_U64 = 0 };

void qemu_plugin_register_vcpu_tb_trans_cb(plugin_id_t id, tb_trans_fn cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb,
					      int op, void *ptr, uint64_t imm);
void qemu_plugin_register_atexit_cb(plugin_id_t id, atexit_fn cb,
				    void *userdata);

PLUGIN_EXPORT int qemu_plugin_version = 1;

static uint64_t user_insns, kernel_insns;

static void on_translate(plugin_id_t id, struct qemu_plugin_tb *tb)
{
	int kernel = qemu_plugin_tb_vaddr(tb) >= 0xffff800000000000ULL;

	(void)id;
	qemu_plugin_register_vcpu_tb_exec_inline(
		tb, INLINE_ADD_U64, kernel ? &kernel_insns : &user_insns,
		qemu_plugin_tb_n_insns(tb));
}

static void on_guest_exit(plugin_id_t id, void *userdata)
{
	const char *path = getenv("DLM_ICOUNT_OUT");
	FILE *f;

	(void)id;
	(void)userdata;
	if (!path || !*path)
		return;
	f = fopen(path, "w");
	if (!f)
		return;
	fprintf(f, "ICOUNT user %llu kernel %llu\n",
		(unsigned long long)user_insns,
		(unsigned long long)kernel_insns);
	fclose(f);
}

PLUGIN_EXPORT int qemu_plugin_install(plugin_id_t id,
				      const struct qemu_info_t *info, int argc,
				      char **argv)
{
	(void)info;
	(void)argc;
	(void)argv;
	qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
	qemu_plugin_register_atexit_cb(id, on_guest_exit, NULL);
	return 0;
}
