/*
 * Entry points of a test guest (EL1, MMU off): the boot vCPU from the loader
 * (the hypervisor's toolstack, or QEMU -kernel), the others from PSCI CPU_ON
 * with the context id in x0.
 *
 * The image starts with the arm64 Linux Image header, is linked at 0 as a PIE
 * and relocates itself with the shared macros of asm/relocate.S (prepended by
 * mod.rs). Every vCPU then turns on the identity map the boot vCPU built
 * (mmu.rs) before running Rust code that touches shared data.
 */

.equ STACK_SIZE, 0x8000
.equ MAX_CPUS, 8

.section .text.head, "ax"
.global _start
_start:
    arm64_image_header primary_entry

.section .text, "ax"
primary_entry:
    msr     daifset, #0xf
    mov     x19, x0                     // device tree
    adr_l   x20, __image_start
    relocate_and_clear_bss x20, park, x1, x2, x3, x4, x5
    bl      el1_setup
    adr_l   x1, testkit_stacks
    mov     x2, #STACK_SIZE
    add     x1, x1, x2
    mov     sp, x1
    msr     tpidr_el1, xzr              // vCPU index 0
    bl      testkit_build_page_tables   // Rust, MMU off, touches only the tables
    bl      mmu_on
    mov     x29, xzr
    mov     x30, xzr
    mov     x0, x19
    bl      testkit_primary_main        // defined by the guest (testkit::guest!)
    b       park

/* x0 = context id; its low 3 bits are the vCPU index the testkit chose. */
.global testkit_secondary_entry
testkit_secondary_entry:
    msr     daifset, #0xf
    mov     x19, x0
    bl      el1_setup
    and     x20, x19, #(MAX_CPUS - 1)
    adr_l   x1, testkit_stacks
    add     x2, x20, #1
    mov     x3, #STACK_SIZE
    madd    x1, x2, x3, x1
    mov     sp, x1
    msr     tpidr_el1, x20
    bl      mmu_on
    mov     x29, xzr
    mov     x30, xzr
    mov     x0, x19
    bl      testkit_secondary_main
    b       park

/* SCTLR_EL1 known (MMU, caches off), FP/SIMD untrapped, SP_EL1, vectors. Clobbers x0. */
el1_setup:
    ldr     x0, =0x30d00800
    msr     sctlr_el1, x0
    mov     x0, #(3 << 20)              // CPACR_EL1.FPEN
    msr     cpacr_el1, x0
    msr     spsel, #1
    adr_l   x0, el1_vectors
    msr     vbar_el1, x0
    isb
    ret

/*
 * Identity map from mmu.rs: MAIR idx0 Device-nGnRnE, idx1 Normal WB;
 * TCR: T0SZ 16 (48-bit VA), inner-shareable WB walks, 4 KiB granule, no
 * TTBR1 walks, IPS = the CPU's PARange (at most 48 bits). Clobbers x0, x1.
 */
mmu_on:
    mov     x0, #0xff00
    msr     mair_el1, x0
    mrs     x0, id_aa64mmfr0_el1
    and     x0, x0, #0xf
    mov     x1, #5
    cmp     x0, x1
    csel    x0, x1, x0, hi
    lsl     x0, x0, #32
    ldr     x1, =0x803510
    orr     x0, x0, x1
    msr     tcr_el1, x0
    adr_l   x0, testkit_l0_table
    msr     ttbr0_el1, x0
    isb
    tlbi    vmalle1
    ic      iallu
    dsb     nsh
    isb
    mrs     x0, sctlr_el1
    mov     x1, #((1 << 0) | (1 << 2) | (1 << 12))  // M, C, I
    orr     x0, x0, x1
    msr     sctlr_el1, x0
    isb
    ret

.global park
park:
    msr     daifset, #0xf
1:  wfe
    b       1b

/*
 * Accesses that may abort. exception.rs resumes an abort at one of the
 * *_insn labels at testkit_fixup, which returns 0; success returns 1.
 *   u64 testkit_probe_read(u64 addr, u64 *out)
 *   u64 testkit_probe_write(u64 addr, u64 value)
 *   u64 testkit_probe_read_pair(u64 addr, u64 out[2])   (LDP: no syndrome for a hypervisor)
 *   u64 testkit_guarded_hvc(u64 regs[4])   regs in: x0..x3, out: x0..x3
 *   u64 testkit_probe_fetch(u64 addr)   branches to addr; a prefetch abort
 *       there resumes after the branch with x0 = 0 (exception.rs)
 */
.global testkit_probe_read
.global testkit_probe_read_insn
.global testkit_probe_write
.global testkit_probe_write_insn
.global testkit_probe_read_pair
.global testkit_probe_read_pair_insn
.global testkit_guarded_hvc
.global testkit_guarded_hvc_insn
.global testkit_fixup
.global testkit_hvc_fixup
.global testkit_probe_fetch
testkit_probe_fetch:
    stp     x29, x30, [sp, #-16]!
    mov     x1, x0
    mov     x0, #1
    blr     x1
    ldp     x29, x30, [sp], #16
    ret

testkit_probe_read:
testkit_probe_read_insn:
    ldr     x2, [x0]
    str     x2, [x1]
    mov     x0, #1
    ret
testkit_probe_read_pair:
testkit_probe_read_pair_insn:
    ldp     x2, x3, [x0]
    stp     x2, x3, [x1]
    mov     x0, #1
    ret
testkit_probe_write:
    dsb     sy
testkit_probe_write_insn:
    str     x1, [x0]
    dsb     sy                          // a write abort is synchronous only if it surfaces here
    mov     x0, #1
    ret
testkit_guarded_hvc:
    str     x0, [sp, #-16]!             // SMCCC 1.0 callees may clobber x4..x17
    mov     x8, x0
    ldp     x0, x1, [x8]
    ldp     x2, x3, [x8, #16]
testkit_guarded_hvc_insn:
    hvc     #0
    ldr     x8, [sp], #16
    stp     x0, x1, [x8]
    stp     x2, x3, [x8, #16]
    mov     x0, #1
    ret
testkit_hvc_fixup:
    add     sp, sp, #16
testkit_fixup:
    mov     x0, #0
    ret

.section .bss.stacks, "aw", %nobits
.balign 16
.global testkit_stacks
testkit_stacks:
    .space  STACK_SIZE * MAX_CPUS        // vCPU i's stack is slot i
