/*
 * Entry points of the EL2 image: the primary CPU from the boot loader, the
 * secondary CPUs from PSCI CPU_ON or a spin-table release.
 *
 * The image starts with the arm64 Linux Image header (Documentation/arch/
 * arm64/booting.rst), so QEMU's -kernel, U-Boot's booti and the Raspberry Pi
 * firmware load it. It is linked at 0 as a PIE and relocates itself.
 */

/* adr_l and relocate_and_clear_bss come from asm/relocate.S, prepended by mod.rs. */

.section .text.head, "ax"
.global _start
_start:
    arm64_image_header primary_entry

.section .text, "ax"
primary_entry:
    mov     x19, x0                     // device tree (physical address)
    adr_l   x20, __image_start          // where the loader put us

    relocate_and_clear_bss x20, park, x1, x2, x3, x4, x5

    adr_l   x1, boot_stack_top
    mov     sp, x1
    mov     x29, xzr
    mov     x30, xzr
    mrs     x1, CurrentEL
    lsr     x1, x1, #2
    cmp     x1, #2
    b.ne    5f

    msr     tpidr_el2, xzr              // CPU index 0
    bl      el2_early_setup
    mov     x0, x19
    mov     x1, x20
    bl      primary_main                // never returns
    b       park

    /* Not at EL2: report through the UART if one is known. Rust code uses
     * FP/SIMD registers, so stop them trapping at this EL first. */
5:  cmp     x1, #3
    b.eq    6f
    mov     x2, #(3 << 20)              // CPACR_EL1.FPEN = 0b11
    msr     cpacr_el1, x2
    b       7f
6:  msr     cptr_el3, xzr               // CPTR_EL3.TFP = 0
7:  isb
    mov     x0, x19
    bl      wrong_exception_level       // never returns
    b       park

/*
 * Secondary CPUs arrive here at EL2 with the MMU off, released either by
 * PSCI CPU_ON (x0 = context id) or by a spin-table write. Everything they need
 * is in SECONDARY_BOOT, which the primary cleaned to the point of coherency.
 */
.global secondary_entry
secondary_entry:
    mrs     x1, CurrentEL
    lsr     x1, x1, #2
    cmp     x1, #2
    b.ne    park
    bl      el2_early_setup
    adr_l   x9, SECONDARY_BOOT
    ldp     x1, x2, [x9, #0]            // stack top, cpu index
    mov     sp, x1
    msr     tpidr_el2, x2
    ldp     x3, x4, [x9, #16]           // MAIR_EL2, TCR_EL2
    ldp     x5, x6, [x9, #32]           // TTBR0_EL2, SCTLR_EL2
    msr     mair_el2, x3
    msr     tcr_el2, x4
    msr     ttbr0_el2, x5
    isb
    tlbi    alle2
    dsb     nsh
    isb
    msr     sctlr_el2, x6
    isb
    mov     x29, xzr
    mov     x30, xzr
    mov     x0, x2
    bl      secondary_main              // never returns
    b       park

/*
 * EL2 state every CPU needs before running Rust code: a known SCTLR_EL2 with
 * the MMU and caches off, the exception vectors, FP/SIMD not trapped.
 */
el2_early_setup:
    ldr     x0, =0x30c50830             // SCTLR_EL2 RES1 bits, M/C/I off, little-endian
    msr     sctlr_el2, x0
    mov     x0, #0x33ff                 // CPTR_EL2: RES1 bits, TFP = 0 (no FP/SIMD trap)
    msr     cptr_el2, x0
    adr_l   x0, el2_vectors
    msr     vbar_el2, x0
    isb
    ret

.global park
park:
    msr     daifset, #0xf
1:  wfe
    b       1b

/* The primary CPU's stack; secondaries get theirs from the page allocator. */
.section .bss.boot_stack, "aw", %nobits
.balign 16
boot_stack:
    .space  0x10000
.global boot_stack_top
boot_stack_top:
