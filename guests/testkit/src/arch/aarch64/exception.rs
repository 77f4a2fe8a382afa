//! Exception entry from vectors.S: IRQs go to the GIC dispatcher; aborts at
//! the probe instructions and an UNDEFINED `hvc` resume at their fix-ups;
//! a guest may install a hook for the rest (`set_fault_hook`, the chaos
//! guest's); anything else is unexpected, reported as a FAIL, and ends the
//! guest.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use hv_arm::esr::ExceptionClass;
/// What a [`FaultHook`] is told about the vector taken.
pub use hv_arm::{Vector, VectorKind};

use super::cpu::{self, MAX_CPUS};
use super::gic;

/// Saved by vectors.S: the layout shared with the hypervisor and dom0.
pub use hv_arm::TrapFrame;

extern "C" {
    fn testkit_probe_read(addr: u64, out: *mut u64) -> u64;
    fn testkit_probe_write(addr: u64, value: u64) -> u64;
    fn testkit_probe_read_pair(addr: u64, out: *mut [u64; 2]) -> u64;
    fn testkit_guarded_hvc(regs: *mut [u64; 4]) -> u64;
    fn testkit_probe_fetch(addr: u64) -> u64;
    static testkit_probe_read_insn: u8;
    static testkit_probe_write_insn: u8;
    static testkit_probe_read_pair_insn: u8;
    static testkit_guarded_hvc_insn: u8;
    static testkit_fixup: u8;
    static testkit_hvc_fixup: u8;
}

/// The syndrome of a caught exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caught {
    pub esr: u64,
    pub far: u64,
}

/// Per vCPU: the address `probe_fetch` branched to (0: none).
static FETCH_TARGET: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

static CAUGHT: [[AtomicU64; 2]; MAX_CPUS] = [const { [AtomicU64::new(0), AtomicU64::new(0)] }; MAX_CPUS];

fn last_caught() -> Caught {
    let slot = &CAUGHT[cpu::index()];
    Caught { esr: slot[0].load(Ordering::SeqCst), far: slot[1].load(Ordering::SeqCst) }
}

/// Reads the 64-bit word at `addr` (VA == IPA), or returns the data abort.
pub fn probe_read(addr: u64) -> Result<u64, Caught> {
    let mut value = 0;
    // SAFETY: the address is arbitrary on purpose. The identity map covers
    // the whole IPA space as Device or Normal memory, so the load either
    // returns a value or takes a data abort that `fix_up` resumes at
    // testkit_fixup; a successful load only writes `value`.
    let ok = unsafe { testkit_probe_read(addr, &mut value) };
    if ok == 1 { Ok(value) } else { Err(last_caught()) }
}

/// Reads two 64-bit words at `addr` with one LDP (an access a hypervisor
/// gets no syndrome for, so cannot emulate), or returns the data abort.
pub fn probe_read_pair(addr: u64) -> Result<[u64; 2], Caught> {
    let mut value = [0u64; 2];
    // SAFETY: as `probe_read`; a successful load only writes `value`.
    let ok = unsafe { testkit_probe_read_pair(addr, &mut value) };
    if ok == 1 { Ok(value) } else { Err(last_caught()) }
}

/// Writes `value` at `addr`, or returns the data abort.
pub fn probe_write(addr: u64, value: u64) -> Result<(), Caught> {
    // SAFETY: as `probe_read`. A write that does not abort may change
    // whatever is at `addr`; callers only aim at addresses outside their own
    // RAM, which this image never uses.
    let ok = unsafe { testkit_probe_write(addr, value) };
    if ok == 1 { Ok(()) } else { Err(last_caught()) }
}

/// Branches to `addr` (which must be mapped executable and hold nothing,
/// so the fetch aborts), and returns the prefetch abort. `Ok` only if the
/// code there returned on its own (with x0 = 1).
pub fn probe_fetch(addr: u64) -> Result<(), Caught> {
    FETCH_TARGET[cpu::index()].store(addr, Ordering::SeqCst);
    // SAFETY: the caller maps `addr` where nothing is, so the first fetch
    // aborts and `fix_up` resumes after the branch with x0 = 0; the asm
    // keeps the frame pointer and link register on the stack.
    let ok = unsafe { testkit_probe_fetch(addr) };
    FETCH_TARGET[cpu::index()].store(0, Ordering::SeqCst);
    if ok == 1 { Ok(()) } else { Err(last_caught()) }
}

/// `hvc #0` with x0..x3 = `regs`, returning x0..x3; `Err` if the
/// instruction was UNDEFINED (no EL2, or EL2 refused it).
pub fn guarded_hvc(regs: [u64; 4]) -> Result<[u64; 4], Caught> {
    let mut r = regs;
    // SAFETY: an SMCCC call changes only x0..x17 (the asm saves what it
    // needs on the stack); an UNDEFINED hvc is resumed at the fix-up, which
    // rebalances the stack.
    let ok = unsafe { testkit_guarded_hvc(&mut r) };
    if ok == 1 { Ok(r) } else { Err(last_caught()) }
}

fn fix_up(frame: &mut TrapFrame) -> bool {
    let class = ExceptionClass::from_esr(frame.esr);
    let is = |label: *const u8| frame.elr == label as u64;
    let resume = if class == ExceptionClass::DataAbortSameEl
        && (is(&raw const testkit_probe_read_insn)
            || is(&raw const testkit_probe_write_insn)
            || is(&raw const testkit_probe_read_pair_insn))
    {
        &raw const testkit_fixup
    } else if class == ExceptionClass::Unknown && is(&raw const testkit_guarded_hvc_insn) {
        &raw const testkit_hvc_fixup
    } else if class == ExceptionClass::InstructionAbortSameEl && frame.elr != 0 && frame.elr == FETCH_TARGET[cpu::index()].load(Ordering::SeqCst) {
        // Back after the `blr` (its link register), reporting failure.
        let slot = &CAUGHT[cpu::index()];
        slot[0].store(frame.esr, Ordering::SeqCst);
        slot[1].store(frame.far, Ordering::SeqCst);
        frame.elr = frame.x[30];
        frame.x[0] = 0;
        return true;
    } else {
        return false;
    };
    let slot = &CAUGHT[cpu::index()];
    slot[0].store(frame.esr, Ordering::SeqCst);
    slot[1].store(frame.far, Ordering::SeqCst);
    frame.elr = resume as u64;
    true
}

/// A guest's own answer to synchronous exceptions and SErrors taken from
/// EL1 that no probe fix-up claims: `true` if it handled the exception
/// (and changed `frame.elr` as needed), `false` for "unexpected".
pub type FaultHook = fn(frame: &mut TrapFrame, vector: Vector) -> bool;

/// The installed [`FaultHook`] as a function address (0: none).
static FAULT_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Installs `hook` for every vCPU (`None` removes it).
pub fn set_fault_hook(hook: Option<FaultHook>) {
    FAULT_HOOK.store(hook.map_or(0, |h| h as usize), Ordering::SeqCst);
}

fn run_fault_hook(frame: &mut TrapFrame, vector: Vector) -> bool {
    let hook = FAULT_HOOK.load(Ordering::SeqCst);
    if hook == 0 {
        return false;
    }
    // SAFETY: only `set_fault_hook` stores a non-zero value, and it stores
    // a `FaultHook` cast to an address, so this is a valid function pointer
    // of that type.
    let hook: FaultHook = unsafe { core::mem::transmute::<usize, FaultHook>(hook) };
    hook(frame, vector)
}

/// `kind` is the vector table entry (`hv_arm::Vector`).
#[no_mangle]
extern "C" fn handle_exception(frame: &mut TrapFrame, kind: u64) {
    let vector = Vector(kind);
    match vector.kind() {
        VectorKind::Irq if vector.from_current_el() => gic::handle_irq(),
        VectorKind::Synchronous if vector.from_current_el() && fix_up(frame) => {}
        VectorKind::Synchronous | VectorKind::SError if vector.from_current_el() && run_fault_hook(frame, vector) => {}
        _ => crate::rt::unexpected_exception(vector, frame.esr, frame.elr, frame.far),
    }
}
