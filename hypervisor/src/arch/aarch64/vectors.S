/*
 * EL2 exception vectors (VBAR_EL2). Every entry saves the full register
 * state as a TrapFrame (hv_arm::TrapFrame, whose offsets are checked at
 * compile time) and calls the Rust handler with the frame and the entry kind
 * (synchronous exceptions from a VM, the hot path, have a handler of their
 * own: handle_guest_sync, which takes only the frame).
 */

.equ FRAME_SIZE, 36 * 8

.macro save_and_handle kind, handler=handle_exception
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0 * 8]
    store_x2_to_x29
    add     x0, sp, #FRAME_SIZE         // the interrupted SP (same-EL exceptions)
    stp     x30, x0, [sp, #30 * 8]
    mrs     x0, elr_el2
    mrs     x1, spsr_el2
    stp     x0, x1, [sp, #32 * 8]
    mrs     x0, esr_el2
    mrs     x1, far_el2
    stp     x0, x1, [sp, #34 * 8]
    mov     x0, sp
    mov     x1, #\kind
    bl      \handler
    b       exception_return
.endm

.macro vector kind, handler=handle_exception
.balign 0x80
    save_and_handle \kind, \handler
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
    vector 8, handle_guest_sync // lower EL, AArch64: synchronous (the hot path has its own entry)
    vector 9    //                     IRQ
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

exception_return:
    ldp     x0, x1, [sp, #32 * 8]
    msr     elr_el2, x0
    msr     spsr_el2, x1
    load_x0_to_x29
    ldr     x30, [sp, #30 * 8]
    add     sp, sp, #FRAME_SIZE
    eret
