//! Hypercalls (ABI v1, `hv_abi::hypercall`): `HVC #0`, function ID in x0.
//! Only call these when the device tree has a `/hypervisor` node: on bare
//! hardware an unknown HVC is UNDEFINED.

use hv_abi::hypercall::{decode_result, Error, Function};

/// `Version`: the hypervisor's ABI version (major << 16 | minor).
pub fn version() -> Result<u64, Error> {
    let r = smccc::hvc64(Function::Version as u32, [0; 17]);
    decode_result(r[0])
}

/// What one `LogRead` returned.
pub struct LogChunk {
    pub copied: usize,
    pub next_cursor: u64,
    pub lost: u64,
}

/// `LogRead` into `buf` (identity-mapped, so its address is its IPA) from `cursor`.
pub fn log_read(buf: &mut [u8], cursor: u64) -> Result<LogChunk, Error> {
    let mut args = [0u64; 17];
    args[0] = buf.as_mut_ptr() as u64;
    args[1] = buf.len() as u64;
    args[2] = cursor;
    let r = smccc::hvc64(Function::LogRead as u32, args);
    let copied = decode_result(r[0])?;
    Ok(LogChunk {
        copied: (copied as usize).min(buf.len()),
        next_cursor: r[1],
        lost: r[2],
    })
}

/// The cheapest round trip: `Version` with nothing else saved or passed
/// (x0..x3 are the ABI's result registers, so they are clobbered).
#[inline(always)]
pub fn null() {
    // SAFETY: HVC #0 under the hypervisor's ABI changes only x0..x3.
    unsafe {
        core::arch::asm!("hvc #0", inout("x0") Function::Version as u64 => _, out("x1") _, out("x2") _, out("x3") _, options(nostack));
    }
}
