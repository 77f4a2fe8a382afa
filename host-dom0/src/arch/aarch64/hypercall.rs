//! Hypercalls (ABI v1, `hv_abi::hypercall`): `HVC #0`, function ID in x0.
//! Only call these when the device tree has a `/hypervisor` node: on bare
//! hardware an unknown HVC is UNDEFINED.

use hv_abi::hypercall::{decode_result, CopyDirection, Error, Function, IrqAction, VmInfo, VmOption, SHADOW_NONE};

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

/// `ConsoleRead` (the guests' console ring) into `buf` from `cursor`: as `log_read`.
pub fn console_read(buf: &mut [u8], cursor: u64) -> Result<LogChunk, Error> {
    let r = call(Function::ConsoleRead, &[buf.as_mut_ptr() as u64, buf.len() as u64, cursor]);
    let copied = decode_result(r[0])?;
    Ok(LogChunk {
        copied: (copied as usize).min(buf.len()),
        next_cursor: r[1],
        lost: r[2],
    })
}

/// Makes call `f` with `args` in x1.. and returns x0..x3.
fn call(f: Function, args: &[u64]) -> [u64; 4] {
    let mut regs = [0u64; 17];
    regs[..args.len()].copy_from_slice(args);
    let r = smccc::hvc64(f as u32, regs);
    [r[0], r[1], r[2], r[3]]
}

/// `VmCreate`: a VM named `name` (its bytes are read through their address,
/// dom0's RAM being identity-mapped). Returns the VM id.
pub fn vm_create(vcpus: u32, memory: u64, name: &str, weight: u32, pin: u64) -> Result<u32, Error> {
    let r = call(
        Function::VmCreate,
        &[u64::from(vcpus), memory, name.as_ptr() as u64, name.len() as u64, u64::from(weight), pin],
    );
    decode_result(r[0]).map(|id| id as u32)
}

/// `VmWrite`: copies `len` bytes at dom0 IPA `src` to `dst` in VM `id`.
pub fn vm_write(id: u32, dst: u64, src: u64, len: u64) -> Result<(), Error> {
    decode_result(call(Function::VmWrite, &[u64::from(id), dst, src, len])[0]).map(drop)
}

/// `VmSetEntry`: vCPU `vcpu` of VM `id` starts at `pc` with `x0`.
pub fn vm_set_entry(id: u32, vcpu: u32, pc: u64, x0: u64) -> Result<(), Error> {
    decode_result(call(Function::VmSetEntry, &[u64::from(id), u64::from(vcpu), pc, x0])[0]).map(drop)
}

/// `VmStart`, `VmPause`, `VmUnpause`, `VmDestroy`: the calls that take only a VM id.
pub fn vm_op(f: Function, id: u32) -> Result<(), Error> {
    debug_assert!(matches!(f, Function::VmStart | Function::VmPause | Function::VmUnpause | Function::VmDestroy));
    decode_result(call(f, &[u64::from(id)])[0]).map(drop)
}

/// `MemInfo`: (free pages, total pages) of the hypervisor's page allocator.
pub fn mem_info() -> Result<(u64, u64), Error> {
    let r = call(Function::MemInfo, &[]);
    decode_result(r[0]).map(|free| (free, r[1]))
}

/// `VmInfo` for VM `id`.
pub fn vm_info(id: u32) -> Result<VmInfo, Error> {
    let mut buf = [0u8; core::mem::size_of::<VmInfo>()];
    let r = call(Function::VmInfo, &[u64::from(id), buf.as_mut_ptr() as u64, buf.len() as u64]);
    decode_result(r[0])?;
    VmInfo::from_bytes(&buf).ok_or(Error::InvalidParameter)
}

/// `IoSetup`: the 4 KiB page at dom0 IPA `page` becomes the IO request page.
pub fn io_setup(page: u64) -> Result<(), Error> {
    decode_result(call(Function::IoSetup, &[page])[0]).map(drop)
}

/// `IoMap`: VM `id`'s accesses to `[base, base + size)` are forwarded to
/// dom0; `flags`: `hv_abi::ioreq::IO_MAP_POST_WRITES` or 0.
pub fn io_map(id: u32, base: u64, size: u64, flags: u64) -> Result<(), Error> {
    decode_result(call(Function::IoMap, &[u64::from(id), base, size, flags])[0]).map(drop)
}

/// `IoShadow`: the hypervisor answers VM `id`'s reads of the register at
/// `reg` with `value` (`None`: with a request again), as of dom0 having
/// handled the window's requests up to `seq`; writes at window offsets in
/// `keep` leave it valid. `Busy`: a write dom0 has not handled yet came
/// first.
pub fn io_shadow(id: u32, reg: u64, value: Option<u32>, seq: u64, keep: u64) -> Result<(), Error> {
    let value = value.map_or(SHADOW_NONE, u64::from);
    decode_result(call(Function::IoShadow, &[u64::from(id), reg, value, seq, keep])[0]).map(drop)
}

/// `VmConfigure`: sets `option` of the `Created` VM `id` to `value`.
pub fn vm_configure(id: u32, option: VmOption, value: u64) -> Result<(), Error> {
    decode_result(call(Function::VmConfigure, &[u64::from(id), option as u64, value])[0]).map(drop)
}

/// `IoComplete`: the hypervisor takes the completion ring; returns how many it took.
pub fn io_complete() -> Result<u64, Error> {
    decode_result(call(Function::IoComplete, &[])[0])
}

/// `VmCopy` from VM `id`'s RAM at `gpa` into `buf` (identity-mapped dom0
/// memory, so its address is its IPA). At most `MAX_COPY` bytes.
pub fn vm_copy_from(id: u32, gpa: u64, buf: &mut [u8]) -> Result<(), Error> {
    let args = [u64::from(id), gpa, buf.as_mut_ptr() as u64, buf.len() as u64, CopyDirection::FromGuest as u64];
    decode_result(call(Function::VmCopy, &args)[0]).map(drop)
}

/// `VmCopy` of `data` into VM `id`'s RAM at `gpa`.
pub fn vm_copy_to(id: u32, gpa: u64, data: &[u8]) -> Result<(), Error> {
    let args = [u64::from(id), gpa, data.as_ptr() as u64, data.len() as u64, CopyDirection::ToGuest as u64];
    decode_result(call(Function::VmCopy, &args)[0]).map(drop)
}

/// `GuestMap`: `len` bytes of VM `id`'s RAM from `gpa` appear at dom0 IPA
/// `window` (page-aligned, outside everything dom0 has).
pub fn guest_map(id: u32, window: u64, gpa: u64, len: u64) -> Result<(), Error> {
    decode_result(call(Function::GuestMap, &[u64::from(id), window, gpa, len])[0]).map(drop)
}

/// `GuestUnmap`: VM `id`'s window at dom0 IPA `window` goes.
pub fn guest_unmap(id: u32, window: u64) -> Result<(), Error> {
    decode_result(call(Function::GuestUnmap, &[u64::from(id), window])[0]).map(drop)
}

/// `IrqLine`: raise, lower or pulse SPI `intid` of VM `id`.
pub fn irq_line(id: u32, intid: u32, action: IrqAction) -> Result<(), Error> {
    decode_result(call(Function::IrqLine, &[u64::from(id), u64::from(intid), action as u64])[0]).map(drop)
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
