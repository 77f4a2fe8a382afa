//! A guest's traps through the hypervisor's real dispatch on the fake
//! machine of the host tests: data and instruction aborts anywhere (the
//! emulated GIC distributor and redistributors, the console UART, the
//! window forwarded to dom0, unbacked IPAs, stage-1 table walks over page
//! tables the input writes into guest RAM), trapped system registers,
//! HVC/SMC calls, and dom0's completions, well-formed or not. Any syndrome
//! a guest can cause, and any completion dom0 can write, must be answered
//! without a panic.
#![no_main]

use hv_abi::hypercall::guest;
use hv_abi::ioreq::{IoCompletion, IoStatus};
use hv_fuzz::Input;
use hypervisor::fuzzing::{GuestMachine, WINDOW};
use hypervisor::s1walk::Stage1Regs;
use libfuzzer_sys::fuzz_target;

/// An exception class a guest can cause at EL2, and the ISS bits to keep.
const CLASSES: [(u64, u64); 7] = [
    (0x24, 0x01ff_ffff), // data abort from a lower EL: every ISS
    (0x24, 0x01ff_ffff),
    (0x24, 0x01ff_ffff),
    (0x20, 0x01ff_ffff), // instruction abort
    (0x18, 0x01ff_ffff), // MSR/MRS
    (0x16, 0xffff),      // HVC
    (0x17, 0xffff),      // SMC
];

/// A stage-2 fault address: mostly where something is.
fn ipa(input: &mut Input, ram: u64) -> u64 {
    let offset = u64::from(input.u32());
    match input.u8() % 7 {
        0 => guest::GICD_BASE + offset % guest::GICD_SIZE,
        1 => guest::GICR_BASE + offset % (2 * guest::GICR_STRIDE),
        2 => guest::UART_BASE + offset % guest::UART_SIZE,
        3 => WINDOW + offset % 0x1000,
        4 => ram + offset % (2 << 20),
        5 => guest::VIRTIO_BASE + offset % 0x4000,
        _ => input.u64(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mut m = GuestMachine::new();
    let ram = m.ram();
    let mut steps = 0;
    while !input.is_empty() && steps < 256 {
        steps += 1;
        match input.u8() % 4 {
            0 | 1 => {
                let (class, iss_mask) = CLASSES[usize::from(input.u8()) % CLASSES.len()];
                let esr = (class << 26) | (1 << 25) | (u64::from(input.u32()) & iss_mask);
                let index = usize::from(input.u8());
                let ipa = ipa(&mut input, ram);
                let far = if input.bool() { ipa } else { input.u64() };
                let spsr = [0x3c5, 0x3c4, 0x0, 0x3c5][usize::from(input.u8() % 4)];
                let x = input.u64();
                let stage1 = if input.bool() {
                    // Tables at the start of guest RAM, 4 KiB granule.
                    Stage1Regs { ttbr0: ram + u64::from(input.u16() & 0xf000), ttbr1: ram, tcr: u64::from(input.u32()) }
                } else {
                    Stage1Regs::default()
                };
                m.sync_trap(index, esr, ipa, far, spsr, x, stage1);
            }
            // The guest writes its RAM (its page tables).
            2 => {
                let at = u64::from(input.u16() & 0x7ff8);
                let len = usize::from(input.u8() % 64);
                m.write_ram(at, input.bytes(len));
            }
            // Dom0 answers: the request's own sequence number or any, any
            // status, and a producer index moved by 1 or anything.
            _ => {
                let slot = usize::from(input.u8());
                let seq = if input.bool() { m.request_seq(slot) } else { input.u64() };
                let status = IoStatus::from_u32(input.u32() % 4);
                let advance = if input.bool() { 1 } else { input.u32() };
                let completion = IoCompletion::new(seq, status, input.u64());
                m.dom0_completes(slot, completion, advance);
            }
        }
    }
});
