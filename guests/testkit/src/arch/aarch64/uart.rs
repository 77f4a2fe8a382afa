//! PL011 output, polled (Arm PrimeCell UART PL011 TRM, DDI 0183; register
//! map from `hv_arm::pl011`).

use core::sync::atomic::{AtomicU64, Ordering};

use hv_abi::hypercall::guest;
use hv_arm::pl011::reg::{CR, DR, FR};
use hv_arm::pl011::{cr, fr};

const CR_UARTEN_TXE: u32 = cr::UARTEN | cr::TXE;

static BASE: AtomicU64 = AtomicU64::new(guest::UART_BASE);

/// Uses the PL011 at `base` (the device tree's console), enabling its
/// transmitter if nobody has.
pub fn init(base: u64) {
    BASE.store(base, Ordering::SeqCst);
    let cr = read(CR);
    if cr & CR_UARTEN_TXE != CR_UARTEN_TXE {
        write(CR, cr | CR_UARTEN_TXE);
    }
}

fn read(reg: u64) -> u32 {
    // SAFETY: BASE is the PL011 window (the guest ABI's, or the tree's
    // console), identity-mapped as Device memory; reads have no side effects
    // on the registers used here.
    unsafe { hv_mmio::read32((BASE.load(Ordering::Relaxed) + reg) as usize) }
}

fn write(reg: u64, value: u32) {
    // SAFETY: as `read`; writing DR sends a byte, CR enables the UART.
    unsafe { hv_mmio::write32((BASE.load(Ordering::Relaxed) + reg) as usize, value) }
}

pub fn put_byte(b: u8) {
    let mut spins = 0u32;
    while read(FR) & fr::TXFF != 0 && spins < 1_000_000 {
        spins += 1;
    }
    write(DR, b as u32);
}

pub fn put_str(s: &str) {
    for b in s.bytes() {
        if b == b'\n' {
            put_byte(b'\r');
        }
        put_byte(b);
    }
}
