/*
 * A QEMU TCG plugin for scripts/bench.sh --io: counts the instructions each
 * CPU executes (a callback per translated block executed, adding its length,
 * so a block left early by an exception counts whole: a few instructions per
 * trap too many) and, each time any CPU executes the marker instruction
 * HINT #0x7e (a NOP on the CPU), writes one line to the file given as
 * `out=PATH`:
 *
 *     mark SEQ CPU COUNT0:WAIT0 COUNT1:WAIT1 ...
 *
 * SEQ counts markers from 0; COUNTi is what CPU i has executed so far, and
 * WAITi how many of those were waiting: iterations of a loop that comes
 * back to a block holding a spin-wait hint (ISB, which is what Rust's
 * core::hint::spin_loop and a counter read emit, YIELD or WFE) within
 * `wait_loop=N` instructions (default 100), every iteration but the first
 * (such a loop may hold several of those blocks: the last RECENT are
 * remembered). Real work that reads the counter in a loop that short
 * would count as waiting too. The
 * difference of two lines is what every CPU executed between them: the
 * guest's own instructions, the hypervisor's and dom0's; a CPU waiting in
 * WFI executes nothing, one polling executes its loop.
 *
 * With `profile=PATH` it also writes, at exit, a profile of the window
 * between markers `from=K` and K+1 (default 0): one line per translated
 * block that ran in it, per CPU,
 *
 *     block CPU VADDR DELTA INSNS
 *
 * VADDR being the block's virtual address, DELTA the host address of its
 * first instruction minus VADDR (code at the same virtual address in
 * different address spaces, the hypervisor's and a guest's, differs in
 * DELTA), INSNS what the CPU executed of it in the window. Spin-waiting is
 * not set apart there (scripts/lib/io_profile.py names the functions).
 * Then one line per pair of blocks run one after the other on a CPU in
 * the window (how a function was entered: its callers),
 *
 *     edge CPU FROM TO TIMES
 *
 * FROM and TO being the blocks' virtual addresses.
 *
 * The plugin API it uses is declared in qemu_plugin_api.h. Built by
 * scripts/lib/iobench.sh: cc -shared -fPIC -O2 -fvisibility=hidden.
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

/* HINT #0x7e: CRm:op2 = 0b1111110, an unallocated hint, so a NOP. */
#define MARKER 0xd5032fdfu

/* Spin-wait hints: ISB, YIELD, WFE. */
#define ISB 0xd5033fdfu
#define YIELD 0xd503203fu
#define WFE 0xd503205fu
/* The longest loop iteration (instructions) counted as waiting. */
static uint64_t wait_loop = 100;

#define MAX_CPUS 64
/* Each CPU's counts, written by its own thread (relaxed atomics). */
static uint64_t counts[MAX_CPUS];
static uint64_t waits[MAX_CPUS];
/* Per CPU, its own thread only: the last RECENT blocks with a hint it
 * executed and its count after each, and the count up to which waiting
 * has been counted. */
#define RECENT 4
static struct {
    uint64_t pc[RECENT];
    uint64_t at[RECENT];
    unsigned next;
    uint64_t counted;
} recent[MAX_CPUS];

/* What a translated block is, for its execution callback. */
struct block {
    uint64_t pc;
    uint64_t insns;
    uint64_t delta;
    bool hint;
    /* With a profile: instructions executed in the window, per CPU. */
    uint64_t *in_window;
    struct block *next;
};
static int ncpus;
static FILE *out;
static uint64_t seq;

/* The profile: its file, the marker opening the window, whether the
 * window is open, and every block translated (a list, pushed atomically). */
static const char *profile_path;
static uint64_t profile_from;
static bool profiling;
static struct block *blocks;
/* Per CPU, its own thread only: the block it executed last. */
static struct block *last[MAX_CPUS];
/* The window's edges between blocks: an open-addressing table keyed by
 * (CPU, from, to), written under a lock (the plugin's callbacks may run
 * on several threads). A full table drops edges. */
#define EDGES (1u << 20)
static struct edge {
    const struct block *from, *to;
    unsigned cpu;
    uint64_t times;
} *edges;
static int edge_lock;

static void count_edge(unsigned cpu, const struct block *from, const struct block *to)
{
    uint64_t h = ((uintptr_t)from * 0x9e3779b97f4a7c15ull) ^ ((uintptr_t)to * 0xc2b2ae3d27d4eb4full) ^ cpu;
    while (__atomic_exchange_n(&edge_lock, 1, __ATOMIC_ACQUIRE)) {
    }
    for (unsigned i = 0; i < 64; i++) {
        struct edge *e = &edges[(h + i) & (EDGES - 1)];
        if (e->times == 0) {
            *e = (struct edge){from, to, cpu, 1};
            break;
        }
        if (e->from == from && e->to == to && e->cpu == cpu) {
            e->times++;
            break;
        }
    }
    __atomic_store_n(&edge_lock, 0, __ATOMIC_RELEASE);
}

static void on_marker(unsigned int vcpu, void *udata)
{
    (void)udata;
    if (profile_path) {
        __atomic_store_n(&profiling, seq == profile_from, __ATOMIC_RELAXED);
    }
    fprintf(out, "mark %" PRIu64 " %u", seq++, vcpu);
    for (int i = 0; i < ncpus; i++) {
        fprintf(out, " %" PRIu64 ":%" PRIu64, __atomic_load_n(&counts[i], __ATOMIC_RELAXED),
                __atomic_load_n(&waits[i], __ATOMIC_RELAXED));
    }
    fputc('\n', out);
    fflush(out);
}

static void on_block(unsigned int vcpu, void *udata)
{
    const struct block *b = udata;
    if (vcpu >= MAX_CPUS) {
        return;
    }
    uint64_t now = __atomic_add_fetch(&counts[vcpu], b->insns, __ATOMIC_RELAXED);
    if (b->in_window && __atomic_load_n(&profiling, __ATOMIC_RELAXED)) {
        __atomic_fetch_add(&b->in_window[vcpu], b->insns, __ATOMIC_RELAXED);
        if (last[vcpu]) {
            count_edge(vcpu, last[vcpu], b);
        }
    }
    last[vcpu] = (struct block *)b;
    if (!b->hint) {
        return;
    }
    typeof(&recent[0]) r = &recent[vcpu];
    for (unsigned i = 0; i < RECENT; i++) {
        if (r->pc[i] == b->pc && r->at[i] != 0 && now - r->at[i] <= wait_loop) {
            /* Another iteration: what was not counted yet since the last. */
            uint64_t from = r->at[i] > r->counted ? r->at[i] : r->counted;
            __atomic_fetch_add(&waits[vcpu], now - from, __ATOMIC_RELAXED);
            r->counted = now;
            break;
        }
    }
    r->pc[r->next] = b->pc;
    r->at[r->next] = now;
    r->next = (r->next + 1) % RECENT;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    /* Never freed: a block's callback may run as long as QEMU does. */
    struct block *b = calloc(1, sizeof *b);
    if (!b) {
        abort();
    }
    b->pc = qemu_plugin_tb_vaddr(tb);
    b->insns = n;
    if (profile_path) {
        b->in_window = calloc(ncpus, sizeof *b->in_window);
        if (!b->in_window) {
            abort();
        }
        b->delta = n ? (uint64_t)(uintptr_t)qemu_plugin_insn_haddr(qemu_plugin_tb_get_insn(tb, 0)) - b->pc : 0;
        b->next = __atomic_load_n(&blocks, __ATOMIC_RELAXED);
        while (!__atomic_compare_exchange_n(&blocks, &b->next, b, false, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint32_t word = 0;
        if (qemu_plugin_insn_data(insn, &word, sizeof word) != sizeof word) {
            continue;
        }
        b->hint |= word == ISB || word == YIELD || word == WFE;
        if (word == MARKER) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_marker, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
    }
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_block, QEMU_PLUGIN_CB_NO_REGS, b);
}

static void on_qemu_exit(qemu_plugin_id_t id, void *udata)
{
    (void)id;
    (void)udata;
    fprintf(out, "exit");
    for (int i = 0; i < ncpus; i++) {
        fprintf(out, " %" PRIu64 ":%" PRIu64, __atomic_load_n(&counts[i], __ATOMIC_RELAXED),
                __atomic_load_n(&waits[i], __ATOMIC_RELAXED));
    }
    fputc('\n', out);
    fclose(out);
    FILE *prof = profile_path ? fopen(profile_path, "w") : NULL;
    if (!prof) {
        return;
    }
    for (struct block *b = __atomic_load_n(&blocks, __ATOMIC_ACQUIRE); b; b = b->next) {
        for (int i = 0; i < ncpus; i++) {
            if (b->in_window[i]) {
                fprintf(prof, "block %d %" PRIx64 " %" PRIx64 " %" PRIu64 "\n", i, b->pc, b->delta, b->in_window[i]);
            }
        }
    }
    for (unsigned i = 0; i < EDGES; i++) {
        if (edges[i].times) {
            fprintf(prof, "edge %u %" PRIx64 " %" PRIx64 " %" PRIu64 "\n", edges[i].cpu, edges[i].from->pc,
                    edges[i].to->pc, edges[i].times);
        }
    }
    fclose(prof);
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            path = argv[i] + 4;
        } else if (strncmp(argv[i], "wait_loop=", 10) == 0) {
            wait_loop = strtoull(argv[i] + 10, NULL, 10);
        } else if (strncmp(argv[i], "profile=", 8) == 0) {
            profile_path = argv[i] + 8;
        } else if (strncmp(argv[i], "from=", 5) == 0) {
            profile_from = strtoull(argv[i] + 5, NULL, 10);
        }
    }
    if (!path || !info->system_emulation || !(out = fopen(path, "w"))) {
        fprintf(stderr, "insn_count: needs system emulation and out=PATH (a writable file); wait_loop=N, profile=PATH and from=K are optional\n");
        return 1;
    }
    if (profile_path && !(edges = calloc(EDGES, sizeof *edges))) {
        return 1;
    }
    ncpus = info->system.smp_vcpus < MAX_CPUS ? info->system.smp_vcpus : MAX_CPUS;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_qemu_exit, NULL);
    return 0;
}
