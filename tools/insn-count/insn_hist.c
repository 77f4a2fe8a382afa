/*
 * A QEMU TCG plugin for scripts/profile-bench.sh: how often each translated
 * block was executed, written at exit to the file given as `out=PATH`, one
 * line per block that ran:
 *
 *     PC INSNS WORD0 COUNT
 *
 * (hexadecimal PC and first instruction word, decimal instruction count and
 * executions). A block left early by an exception counts whole, as in
 * insn_count.c. The first word tells apart blocks at the same virtual
 * address in different images (the hypervisor and a guest both run at
 * 0x40080000). The same block translated again gets a line of its own; the
 * reader adds them up. Two runs that differ only in how many times a loop
 * runs give, line by line, the instructions one iteration costs and where.
 *
 * The plugin API it uses is declared in qemu_plugin_api.h. Built by
 * scripts/profile-bench.sh.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu_plugin_api.h"

EXPORT int qemu_plugin_version = 3;

/* One translation of a block; all of them, newest first. */
struct block {
    uint64_t pc;
    uint64_t insns;
    uint32_t word0;
    uint64_t count;
    struct block *next;
};
static struct block *blocks;
static FILE *out;

static void on_block(unsigned int vcpu, void *udata)
{
    (void)vcpu;
    struct block *b = udata;
    __atomic_fetch_add(&b->count, 1, __ATOMIC_RELAXED);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    /* Never freed: a block's callback may run as long as QEMU does. */
    struct block *b = calloc(1, sizeof *b);
    if (!b) {
        abort();
    }
    b->pc = qemu_plugin_tb_vaddr(tb);
    b->insns = qemu_plugin_tb_n_insns(tb);
    if (b->insns > 0) {
        qemu_plugin_insn_data(qemu_plugin_tb_get_insn(tb, 0), &b->word0, sizeof b->word0);
    }
    b->next = __atomic_load_n(&blocks, __ATOMIC_RELAXED);
    while (!__atomic_compare_exchange_n(&blocks, &b->next, b, false, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
    }
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_block, QEMU_PLUGIN_CB_NO_REGS, b);
}

static void on_qemu_exit(qemu_plugin_id_t id, void *udata)
{
    (void)id;
    (void)udata;
    for (struct block *b = __atomic_load_n(&blocks, __ATOMIC_ACQUIRE); b; b = b->next) {
        uint64_t n = __atomic_load_n(&b->count, __ATOMIC_RELAXED);
        if (n) {
            fprintf(out, "%" PRIx64 " %" PRIu64 " %08" PRIx32 " %" PRIu64 "\n", b->pc, b->insns, b->word0, n);
        }
    }
    fclose(out);
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            path = argv[i] + 4;
        }
    }
    if (!path || !info->system_emulation || !(out = fopen(path, "w"))) {
        fprintf(stderr, "insn_hist: needs system emulation and out=PATH (a writable file)\n");
        return 1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_qemu_exit, NULL);
    return 0;
}
