/*
 * Entry points of the dom0 EL1 image: the boot CPU from the loader (the
 * hypervisor, QEMU -kernel or firmware), the other CPUs from PSCI CPU_ON or a
 * spin-table release.
 *
 * The image starts with the arm64 Linux Image header (Documentation/arch/
 * arm64/booting.rst), is linked at 0 as a PIE and relocates itself with the
 * shared macros of asm/relocate.S (prepended by mod.rs). Entered at EL1 (under
 * the hypervisor, or QEMU virt without virtualization) or at EL2 (QEMU
 * raspi4b, real boards without a hypervisor), in which case it drops to EL1h.
 */

.section .text.head, "ax"
.global _start
_start:
    arm64_image_header primary_entry

.section .text, "ax"
primary_entry:
    msr     daifset, #0xf
    mov     x19, x0                     // device tree (physical address)
    adr_l   x20, __image_start          // where the loader put us
    relocate_and_clear_bss x20, park, x1, x2, x3, x4, x5
    bl      drop_to_el1
    bl      el1_setup
    adr_l   x1, boot_stack_top
    mov     sp, x1
    msr     tpidr_el1, xzr              // CPU index 0
    mov     x29, xzr
    mov     x30, xzr
    mov     x0, x19
    bl      primary_main                // never returns
    b       park

/*
 * Other CPUs arrive here with the MMU off, at EL1 (PSCI) or EL2 (spin table
 * on a board without a hypervisor). Everything they need is in
 * SECONDARY_BOOT (smp.rs), which the boot CPU cleaned to the point of coherency.
 */
.global secondary_entry
secondary_entry:
    msr     daifset, #0xf
    bl      drop_to_el1
    bl      el1_setup
    adr_l   x9, SECONDARY_BOOT
    ldp     x1, x2, [x9, #0]            // stack top, CPU index
    mov     sp, x1
    msr     tpidr_el1, x2
    ldp     x3, x4, [x9, #16]           // MAIR_EL1, TCR_EL1
    ldp     x5, x6, [x9, #32]           // TTBR0_EL1, SCTLR_EL1
    msr     mair_el1, x3
    msr     tcr_el1, x4
    msr     ttbr0_el1, x5
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    msr     sctlr_el1, x6
    isb
    mov     x29, xzr
    mov     x30, xzr
    mov     x0, x2
    bl      secondary_main              // never returns
    b       park

/*
 * If at EL2, configure it to get out of the way and return to the caller at
 * EL1h with DAIF masked: EL1 is AArch64 (HCR_EL2.RW, no stage 2, no traps),
 * EL1 may read the physical counter and timer (CNTHCTL_EL2), the virtual
 * counter equals the physical one (CNTVOFF_EL2 = 0), FP/SIMD and the GICv3
 * system registers are not trapped, and MIDR/MPIDR read their real values.
 * Clobbers x0.
 */
drop_to_el1:
    mrs     x0, CurrentEL
    cmp     x0, #(2 << 2)
    b.ne    2f
    mov     x0, #(1 << 31)              // HCR_EL2.RW
    msr     hcr_el2, x0
    mov     x0, #3                      // CNTHCTL_EL2.EL1PCTEN | EL1PCEN
    msr     cnthctl_el2, x0
    msr     cntvoff_el2, xzr
    mov     x0, #0x33ff                 // CPTR_EL2: RES1 bits, TFP = 0
    msr     cptr_el2, x0
    msr     hstr_el2, xzr
    mrs     x0, midr_el1
    msr     vpidr_el2, x0
    mrs     x0, mpidr_el1
    msr     vmpidr_el2, x0
    mrs     x0, id_aa64pfr0_el1
    ubfx    x0, x0, #24, #4             // GIC system-register interface implemented?
    cbz     x0, 1f
    mrs     x0, icc_sre_el2
    orr     x0, x0, #0x8                // ICC_SRE_EL2.Enable: EL1 may use ICC_SRE_EL1
    orr     x0, x0, #0x1                // ICC_SRE_EL2.SRE
    msr     icc_sre_el2, x0
    isb
1:  mov     x0, #0x3c5                  // SPSR_EL2: EL1h, D, A, I, F masked
    msr     spsr_el2, x0
    msr     elr_el2, x30
    eret
2:  ret

/*
 * EL1 state every CPU needs before Rust code: SCTLR_EL1 known (MMU and caches
 * off, little-endian), FP/SIMD not trapped (CPACR_EL1.FPEN), SP_EL1 in use,
 * exception vectors installed. Clobbers x0.
 */
el1_setup:
    ldr     x0, =0x30d00800             // SCTLR_EL1 RES1 bits, M/C/I off
    msr     sctlr_el1, x0
    mov     x0, #(3 << 20)              // CPACR_EL1.FPEN = 0b11
    msr     cpacr_el1, x0
    msr     spsel, #1
    adr_l   x0, el1_vectors
    msr     vbar_el1, x0
    isb
    ret

.global park
park:
    msr     daifset, #0xf
1:  wfe
    b       1b

/*
 * u64 probe_read_u64(u64 addr, u64 *out): 1 if *out = *(u64 *)addr was read,
 * 0 if the load aborted. The exception handler (probe.rs) recognises an abort
 * at probe_read_u64_load while the CPU's probe flag is set and resumes at
 * probe_read_u64_fixup.
 */
.global probe_read_u64
.global probe_read_u64_load
.global probe_read_u64_fixup
probe_read_u64:
probe_read_u64_load:
    ldr     x2, [x0]
    str     x2, [x1]
    mov     x0, #1
    ret
probe_read_u64_fixup:
    mov     x0, #0
    ret

/* The boot CPU's stack; the others' stacks are in smp.rs. */
.section .bss.boot_stack, "aw", %nobits
.balign 16
boot_stack:
    .space  0x10000
boot_stack_top:
