/*
 * Assembly macros shared by every image linked at 0 as a static PIE with the
 * root linker.ld (the hypervisor, dom0, the test guests): the arm64 Image
 * header, self-relocation and BSS clearing, and trap-frame register save/load.
 *
 * Not `.include`d: each crate prepends this text to its boot.S with
 * `global_asm!(concat!(include_str!(".../asm/relocate.S"), include_str!("boot.S")))`
 * so the macros exist before they are used. Include it once per crate: a
 * macro defined twice is an assembler error.
 */

/* \reg = runtime address of \sym (PC-relative, so correct before relocation). */
.macro adr_l reg, sym
    adrp    \reg, \sym
    add     \reg, \reg, :lo12:\sym
.endm

/*
 * relocate_and_clear_bss base, fail, t0, t1, t2, t3, t4
 *
 * \base holds the runtime address of __image_start. Applies every
 * R_AARCH64_RELATIVE relocation in [__rela_start, __rela_end):
 * *(base + r_offset) = base + r_addend, and every relative relocation packed
 * in [__relr_start, __relr_end) (the images link with
 * --pack-dyn-relocs=relr, so that is where lld puts them): *word += base.
 * Then zeroes [__bss_start, __bss_end) (16-byte aligned by linker.ld). Runs
 * with the MMU off, so plain stores reach memory. Any other relocation type
 * branches to \fail. Clobbers \t0..\t4 and the flags; \base is preserved.
 * Falls through when done.
 *
 * RELR (the ELF gABI's SHT_RELR): a stream of 64-bit entries. An even
 * entry is the link-time address of a word to relocate; the next entry's
 * bitmap starts at the word after it. An odd entry is a bitmap: bit i
 * (1..63) set means relocate the word (i - 1) words after the current
 * position, which then moves on by 63 words.
 */
.macro relocate_and_clear_bss base, fail, t0, t1, t2, t3, t4
    adr_l   \t0, __rela_start
    adr_l   \t1, __rela_end
1:  cmp     \t0, \t1
    b.hs    2f
    ldp     \t2, \t3, [\t0], #16        // r_offset, r_info
    ldr     \t4, [\t0], #8              // r_addend
    cmp     \t3, #1027                  // R_AARCH64_RELATIVE (symbol index 0)
    b.ne    \fail                       // the linker produced something we can't handle
    add     \t4, \t4, \base
    str     \t4, [\base, \t2]
    b       1b
2:  adr_l   \t0, __relr_start
    adr_l   \t1, __relr_end
    mov     \t2, \base                  // where the next bitmap starts
3:  cmp     \t0, \t1
    b.hs    7f
    ldr     \t3, [\t0], #8
    tbnz    \t3, #0, 4f
    add     \t2, \t3, \base             // an address: relocate that word
    ldr     \t4, [\t2]
    add     \t4, \t4, \base
    str     \t4, [\t2], #8              // the bitmap after it starts at the next
    b       3b
4:  lsr     \t3, \t3, #1                // a bitmap: bit k now means word k;
    orr     \t3, \t3, #(1 << 63)        // a stop bit after the 63 words
5:  tbz     \t3, #0, 6f
    ldr     \t4, [\t2]
    add     \t4, \t4, \base
    str     \t4, [\t2]
6:  add     \t2, \t2, #8
    lsr     \t3, \t3, #1
    cmp     \t3, #1                     // only the stop bit left: 63 words done
    b.ne    5b
    b       3b
7:  adr_l   \t0, __bss_start
    adr_l   \t1, __bss_end
8:  cmp     \t0, \t1
    b.hs    9f
    stp     xzr, xzr, [\t0], #16
    b       8b
9:
.endm

/*
 * The arm64 Linux Image header (Documentation/arch/arm64/booting.rst) at the
 * start of an image, branching to `entry`: text_offset 0x80000 (as Linux;
 * clear of the Raspberry Pi's armstub at 0), image_size from the linker
 * script (BSS included), little-endian, 4 KiB pages, anywhere in RAM.
 */
.macro arm64_image_header entry
    b       \entry                      // code0
    .long   0                           // code1
    .quad   0x80000                     // text_offset
    .quad   __image_size                // image_size, including BSS
    .quad   0xa                         // flags: little-endian, 4 KiB pages, anywhere in RAM
    .quad   0                           // res2
    .quad   0                           // res3
    .quad   0                           // res4
    .ascii  "ARM\x64"                   // magic
    .long   0                           // res5 (no PE/COFF header)
.endm

/*
 * The general registers of a trap frame at [sp]: x0..x29 as pairs at 8-byte
 * slots 0..29 (the caller handles x30, SP and the system registers). The
 * _x17 halves are what a call may clobber besides x18 and x30 (AAPCS64),
 * for entries that save only those.
 */
.macro store_x2_to_x17
    stp     x2, x3, [sp, #2 * 8]
    stp     x4, x5, [sp, #4 * 8]
    stp     x6, x7, [sp, #6 * 8]
    stp     x8, x9, [sp, #8 * 8]
    stp     x10, x11, [sp, #10 * 8]
    stp     x12, x13, [sp, #12 * 8]
    stp     x14, x15, [sp, #14 * 8]
    stp     x16, x17, [sp, #16 * 8]
.endm

.macro store_x2_to_x29
    store_x2_to_x17
    stp     x18, x19, [sp, #18 * 8]
    stp     x20, x21, [sp, #20 * 8]
    stp     x22, x23, [sp, #22 * 8]
    stp     x24, x25, [sp, #24 * 8]
    stp     x26, x27, [sp, #26 * 8]
    stp     x28, x29, [sp, #28 * 8]
.endm

.macro load_x0_to_x17
    ldp     x0, x1, [sp, #0 * 8]
    ldp     x2, x3, [sp, #2 * 8]
    ldp     x4, x5, [sp, #4 * 8]
    ldp     x6, x7, [sp, #6 * 8]
    ldp     x8, x9, [sp, #8 * 8]
    ldp     x10, x11, [sp, #10 * 8]
    ldp     x12, x13, [sp, #12 * 8]
    ldp     x14, x15, [sp, #14 * 8]
    ldp     x16, x17, [sp, #16 * 8]
.endm

.macro load_x0_to_x29
    load_x0_to_x17
    ldp     x18, x19, [sp, #18 * 8]
    ldp     x20, x21, [sp, #20 * 8]
    ldp     x22, x23, [sp, #22 * 8]
    ldp     x24, x25, [sp, #24 * 8]
    ldp     x26, x27, [sp, #26 * 8]
    ldp     x28, x29, [sp, #28 * 8]
.endm
