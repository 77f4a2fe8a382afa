/*
 * EL1 exception vectors (VBAR_EL1), shared by dom0 and the test guests'
 * testkit (each defines its own handle_exception). Every entry saves the general registers
 * as a TrapFrame (hv_arm::TrapFrame checks the offsets at compile time) plus the
 * FP/SIMD state (interrupt handlers are Rust code and may use it), calls
 * handle_exception(frame, kind), and restores everything (the handler may
 * change ELR, e.g. the peek fix-up).
 */

.equ GPR_SIZE, 36 * 8
.equ FP_OFFSET, GPR_SIZE                // fpsr, fpcr, then q0..q31
.equ FRAME_SIZE, GPR_SIZE + 16 + 32 * 16

/* Each vector slot is 32 instructions: save x0/x1, note the kind, go on below. */
.macro vector kind
.balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0 * 8]
    mov     x1, #\kind
    b       save_and_handle
.endm

.section .text.vectors, "ax"
.balign 0x800
.global el1_vectors
el1_vectors:
    vector 0    // current EL, SP_EL0: synchronous
    vector 1    //                     IRQ
    vector 2    //                     FIQ
    vector 3    //                     SError
    vector 4    // current EL, SP_EL1: synchronous
    vector 5    //                     IRQ
    vector 6    //                     FIQ
    vector 7    //                     SError
    vector 8    // lower EL, AArch64:  synchronous
    vector 9    //                     IRQ
    vector 10   //                     FIQ
    vector 11   //                     SError
    vector 12   // lower EL, AArch32:  synchronous
    vector 13   //                     IRQ
    vector 14   //                     FIQ
    vector 15   //                     SError

/* x1 = vector kind; x0/x1 already saved. */
save_and_handle:
    store_x2_to_x29
    add     x2, sp, #FRAME_SIZE         // the interrupted SP
    stp     x30, x2, [sp, #30 * 8]
    mrs     x2, elr_el1
    mrs     x3, spsr_el1
    stp     x2, x3, [sp, #32 * 8]
    mrs     x2, esr_el1
    mrs     x3, far_el1
    stp     x2, x3, [sp, #34 * 8]
    mrs     x2, fpsr
    mrs     x3, fpcr
    stp     x2, x3, [sp, #FP_OFFSET]
    add     x2, sp, #(FP_OFFSET + 16)
    stp     q0, q1, [x2, #0 * 32]
    stp     q2, q3, [x2, #1 * 32]
    stp     q4, q5, [x2, #2 * 32]
    stp     q6, q7, [x2, #3 * 32]
    stp     q8, q9, [x2, #4 * 32]
    stp     q10, q11, [x2, #5 * 32]
    stp     q12, q13, [x2, #6 * 32]
    stp     q14, q15, [x2, #7 * 32]
    stp     q16, q17, [x2, #8 * 32]
    stp     q18, q19, [x2, #9 * 32]
    stp     q20, q21, [x2, #10 * 32]
    stp     q22, q23, [x2, #11 * 32]
    stp     q24, q25, [x2, #12 * 32]
    stp     q26, q27, [x2, #13 * 32]
    stp     q28, q29, [x2, #14 * 32]
    stp     q30, q31, [x2, #15 * 32]
    mov     x0, sp
    bl      handle_exception
    /* fall through */

exception_return:
    add     x0, sp, #(FP_OFFSET + 16)
    ldp     q0, q1, [x0, #0 * 32]
    ldp     q2, q3, [x0, #1 * 32]
    ldp     q4, q5, [x0, #2 * 32]
    ldp     q6, q7, [x0, #3 * 32]
    ldp     q8, q9, [x0, #4 * 32]
    ldp     q10, q11, [x0, #5 * 32]
    ldp     q12, q13, [x0, #6 * 32]
    ldp     q14, q15, [x0, #7 * 32]
    ldp     q16, q17, [x0, #8 * 32]
    ldp     q18, q19, [x0, #9 * 32]
    ldp     q20, q21, [x0, #10 * 32]
    ldp     q22, q23, [x0, #11 * 32]
    ldp     q24, q25, [x0, #12 * 32]
    ldp     q26, q27, [x0, #13 * 32]
    ldp     q28, q29, [x0, #14 * 32]
    ldp     q30, q31, [x0, #15 * 32]
    ldp     x0, x1, [sp, #FP_OFFSET]
    msr     fpsr, x0
    msr     fpcr, x1
    ldp     x0, x1, [sp, #32 * 8]
    msr     elr_el1, x0
    msr     spsr_el1, x1
    load_x0_to_x29
    ldr     x30, [sp, #30 * 8]
    add     sp, sp, #FRAME_SIZE
    eret
