/*
 * EL2 exception vectors (VBAR_EL2). Every entry saves the register state
 * as a TrapFrame (hv_arm::TrapFrame, whose offsets are checked at compile
 * time) and calls the Rust handler with the frame and the entry kind.
 *
 * The two hot entries, synchronous exceptions and IRQs from a VM, save a
 * fast frame first: only x0-x18 and x30 of the general registers, which a
 * call may clobber. The Rust handler preserves x19-x29 (AAPCS64), so they
 * still hold the VM's values when it returns. If it answers 0 the VM is
 * resumed with the fast frame restored. Otherwise the entry completes the
 * frame with x19-x29 and calls the finish handler with the answer (the
 * full handler, or a switch to another vCPU, which saves the whole frame).
 */

.equ FRAME_SIZE, 36 * 8

/* ELR, SPSR, ESR and FAR into the frame (clobbers x0, x1). */
.macro save_syndrome
    mrs     x0, elr_el2
    mrs     x1, spsr_el2
    stp     x0, x1, [sp, #32 * 8]
    mrs     x0, esr_el2
    mrs     x1, far_el2
    stp     x0, x1, [sp, #34 * 8]
.endm

.macro save_and_handle kind
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0 * 8]
    store_x2_to_x29
    add     x0, sp, #FRAME_SIZE         // the interrupted SP (same-EL exceptions)
    stp     x30, x0, [sp, #30 * 8]
    save_syndrome
    mov     x0, sp
    mov     x1, #\kind
    bl      handle_exception
    b       exception_return
.endm

.macro vector kind
.balign 0x80
    save_and_handle \kind
.endm

.macro fast_vector handler, finish
.balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0 * 8]
    store_x2_to_x17
    str     x18, [sp, #18 * 8]
    str     x30, [sp, #30 * 8]
    save_syndrome
    mov     x0, sp
    bl      \handler
    cbnz    x0, 1f
    b       fast_return
1:  adr     x1, \finish
    b       complete_and_finish
.endm

.section .text.vectors, "ax"
.balign 0x800
.global el2_vectors
el2_vectors:
    vector 0    // current EL, SP_EL0: synchronous
    vector 1    //                     IRQ
    vector 2    //                     FIQ
    vector 3    //                     SError
    vector 4    // current EL, SP_ELx: synchronous
    vector 5    //                     IRQ
    vector 6    //                     FIQ
    vector 7    //                     SError
    fast_vector handle_guest_sync_fast, finish_guest_sync // lower EL, AArch64: synchronous
    fast_vector handle_guest_irq_fast, finish_guest_irq   //                     IRQ
    vector 10   //                     FIQ
    vector 11   //                     SError
    vector 12   // lower EL, AArch32:  synchronous
    vector 13   //                     IRQ
    vector 14   //                     FIQ
    vector 15   //                     SError

/*
 * enter_guest(frame, stack_top): copy the TrapFrame to the top of this
 * CPU's EL2 stack (where lower-EL exceptions will save the next one) and
 * return to the guest through exception_return.
 */
.global enter_guest
enter_guest:
    mov     sp, x1
    sub     sp, sp, #FRAME_SIZE
    mov     x2, sp
    mov     x3, #(FRAME_SIZE / 16)
1:  ldp     x4, x5, [x0], #16
    stp     x4, x5, [x2], #16
    subs    x3, x3, #1
    b.ne    1b
    b       exception_return

/*
 * A fast entry's handler asked for more (x0: its answer, x1: the finish
 * handler): complete the frame with x19-x29 (still the VM's) and the
 * interrupted SP slot, call finish(frame, answer), return with the whole
 * frame.
 */
complete_and_finish:
    stp     x19, x20, [sp, #19 * 8]
    stp     x21, x22, [sp, #21 * 8]
    stp     x23, x24, [sp, #23 * 8]
    stp     x25, x26, [sp, #25 * 8]
    stp     x27, x28, [sp, #27 * 8]
    add     x2, sp, #FRAME_SIZE
    str     x29, [sp, #29 * 8]
    str     x2, [sp, #31 * 8]
    mov     x2, x1
    mov     x1, x0
    mov     x0, sp
    blr     x2
    b       exception_return

/*
 * Back to the VM with the whole frame: x19-x29 from it, then on as from a
 * fast frame.
 */
exception_return:
    ldr     x19, [sp, #19 * 8]
    ldp     x20, x21, [sp, #20 * 8]
    ldp     x22, x23, [sp, #22 * 8]
    ldp     x24, x25, [sp, #24 * 8]
    ldp     x26, x27, [sp, #26 * 8]
    ldp     x28, x29, [sp, #28 * 8]
/* Back to the VM from a fast frame: x19-x29 hold the VM's values already. */
fast_return:
    ldp     x0, x1, [sp, #32 * 8]
    msr     elr_el2, x0
    msr     spsr_el2, x1
    load_x0_to_x17
    ldr     x18, [sp, #18 * 8]
    ldr     x30, [sp, #30 * 8]
    add     sp, sp, #FRAME_SIZE
    eret
