//! A fake architecture for host tests (the way Hafnium tests its core): the
//! same interface as `aarch64`, with the machine replaced by a record of
//! what the core asked of it. Tests set the running CPU (`cpu::set_index`),
//! raise physical interrupts (`gic::raise`), choose the faulting IPA
//! (`el2::set_fault_ipa`) and read back what happened (`take_events`).
//!
//! "Physical" memory in tests is host memory: the page allocator is given
//! a block of the test process's heap, so the core's identity-mapped view
//! of RAM holds as it does at EL2.
//!
//! Functions that never return on hardware (entering a guest, idling with
//! nothing to do, parking) unwind with a payload instead ([`Entered`],
//! [`Idle`], [`Parked`]), which tests catch with `catch_unwind`.

extern crate std;

use std::sync::Mutex;
use std::vec::Vec;

pub use super::frame::TrapFrame;

/// What the core did to the fake machine, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An SGI to physical CPU `target`, sent from CPU `from`.
    Sgi { intid: u32, target: usize, from: usize },
    /// A physical interrupt's enable changed.
    Enable { intid: u32, enabled: bool },
    Priority { intid: u32, priority: u8 },
    Edge { intid: u32, edge: bool },
    Route { intid: u32, target: usize },
    /// An interrupt was deactivated (its IAR value).
    Deactivate { intid: u32 },
    /// An UNDEF was injected into the running vCPU.
    InjectUndefined { elr: u64 },
    /// A synchronous abort with syndrome `esr` (ESR_EL1) was injected.
    InjectAbort { esr: u64, far: u64 },
    /// A virtual SError with ESR ISS `syndrome` was made pending.
    InjectSError { syndrome: u64 },
    /// Stage 2 was pointed at VMID `vmid`.
    Stage2 { vmid: u16 },
    /// All TLB entries of the loaded VMID were invalidated.
    FlushVmTlbs,
    /// The stage-2 TLB entries for one IPA of the loaded VMID.
    InvalidateIpa { ipa: u64 },
    /// The EL2 slice timer of CPU `cpu` was (dis)armed.
    HypTimer { cpu: usize, deadline: Option<u64> },
}

static EVENTS: Mutex<Vec<Event>> = Mutex::new(Vec::new());

fn record(event: Event) {
    EVENTS.lock().unwrap_or_else(|e| e.into_inner()).push(event);
}

/// Everything recorded since the last call.
pub fn take_events() -> Vec<Event> {
    core::mem::take(&mut *EVENTS.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Resets the fake machine: no events, no pending interrupts, CPU 0.
pub fn reset() {
    take_events();
    gic::PENDING.lock().unwrap_or_else(|e| e.into_inner()).clear();
    gic::set_vmcr(gic::OPEN_VMCR);
    cpu::set_index(0);
    el2::set_fault_ipa(0);
    timer::set_vtimer_deadline(None);
    timer::set_vtimer_line(false);
    vcpu::set_loaded_stage1(crate::s1walk::Stage1Regs::default());
}

/// Unwind payload: the core entered a guest with these registers.
#[derive(Debug)]
pub struct Entered(pub TrapFrame);
/// Unwind payload: the CPU had nothing to run and no interrupt pending.
#[derive(Debug)]
pub struct Idle;
/// Unwind payload: the CPU parked (the system stopped).
#[derive(Debug)]
pub struct Parked;

pub mod cpu {
    use core::cell::Cell;
    use core::sync::atomic::{AtomicU64, Ordering};

    pub const MAX_CPUS: usize = 8;

    std::thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(0) };
    }
    static COUNTER: AtomicU64 = AtomicU64::new(1_000_000);

    /// The CPU the calling test thread plays.
    pub fn index() -> usize {
        INDEX.with(|i| i.get())
    }

    pub fn set_index(index: usize) {
        INDEX.with(|i| i.set(index));
    }

    /// 1 MHz: a tick is a microsecond.
    pub fn counter_frequency() -> u64 {
        1_000_000
    }

    /// Time moves on by a tick at every read, so the core's bounded waits
    /// end in tests too.
    pub fn counter() -> u64 {
        COUNTER.fetch_add(1, Ordering::Relaxed)
    }

    /// Moves time on by `ticks`.
    pub fn advance(ticks: u64) {
        COUNTER.fetch_add(ticks, Ordering::Relaxed);
    }

    pub fn current_el() -> u64 {
        2
    }

    pub fn zero(pa: crate::addr::PhysAddr, len: u64) {
        // SAFETY: in host tests "physical" memory is the test's own heap
        // block handed to the page allocator; the caller owns the range.
        unsafe { core::ptr::write_bytes(pa.as_u64() as *mut u8, 0, len as usize) };
    }

    /// Returns if a physical interrupt is pending; otherwise the CPU would
    /// sleep for good: unwinds with [`super::Idle`].
    pub fn wait_for_interrupt() {
        if super::gic::PENDING.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            std::panic::panic_any(super::Idle);
        }
    }

    static ID_REGS: std::sync::Mutex<std::collections::BTreeMap<(u8, u8), u64>> = std::sync::Mutex::new(std::collections::BTreeMap::new());

    /// What the CPU's ID register at (CRm, op2) holds (0 unless set).
    pub fn set_id_register(crm: u8, op2: u8, value: u64) {
        ID_REGS.lock().unwrap_or_else(|e| e.into_inner()).insert((crm, op2), value);
    }

    pub fn read_id_register(crm: u8, op2: u8) -> u64 {
        ID_REGS.lock().unwrap_or_else(|e| e.into_inner()).get(&(crm, op2)).copied().unwrap_or(0)
    }

    pub fn wait_for_event() {}

    pub fn send_event() {}

    pub fn park() -> ! {
        std::panic::panic_any(super::Parked)
    }
}

pub mod gic {
    use core::sync::atomic::{AtomicU64, Ordering};
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::{record, Event};
    use crate::vgic::ListRegisters;

    pub const SGI_KICK: u32 = 0;
    pub const SPURIOUS: u32 = 1023;

    /// Physical interrupts waiting to be acknowledged (any CPU).
    pub(super) static PENDING: Mutex<VecDeque<u32>> = Mutex::new(VecDeque::new());

    /// Makes physical interrupt `intid` pending.
    pub fn raise(intid: u32) {
        PENDING.lock().unwrap_or_else(|e| e.into_inner()).push_back(intid);
    }

    pub fn acknowledge() -> u32 {
        PENDING.lock().unwrap_or_else(|e| e.into_inner()).pop_front().unwrap_or(SPURIOUS)
    }

    pub fn priority_drop(_iar: u32) {}

    pub fn deactivate(iar: u32) {
        record(Event::Deactivate { intid: iar & 0x3ff });
    }

    pub fn set_enabled(intid: u32, enabled: bool) {
        record(Event::Enable { intid, enabled });
    }

    pub fn set_priority(intid: u32, priority: u8) {
        record(Event::Priority { intid, priority });
    }

    pub fn set_edge(intid: u32, edge: bool) {
        record(Event::Edge { intid, edge });
    }

    pub fn route_spi(intid: u32, target: usize) {
        record(Event::Route { intid, target });
    }

    pub fn send_sgi(intid: u32, target: usize) {
        record(Event::Sgi { intid, target, from: super::cpu::index() });
    }

    /// A GIC with 96 SPIs.
    pub fn lines() -> usize {
        128
    }

    /// Four list registers that hold what the vGIC writes.
    pub struct HwListRegisters;

    static LRS: Mutex<[u64; 4]> = Mutex::new([0; 4]);

    impl ListRegisters for HwListRegisters {
        fn count(&self) -> usize {
            4
        }

        fn read(&self, i: usize) -> u64 {
            LRS.lock().unwrap_or_else(|e| e.into_inner()).get(i).copied().unwrap_or(0)
        }

        fn write(&mut self, i: usize, value: u64) {
            if let Some(lr) = LRS.lock().unwrap_or_else(|e| e.into_inner()).get_mut(i) {
                *lr = value;
            }
        }

        fn set_underflow_irq(&mut self, _on: bool) {}

        /// As `set_vmcr` left it: at first both groups enabled, the
        /// priority mask open (v2 and v3 layouts).
        fn vmcr(&self) -> u64 {
            VMCR.load(Ordering::Relaxed)
        }
    }

    static VMCR: AtomicU64 = AtomicU64::new(OPEN_VMCR);
    /// Both groups enabled, priority mask open (v2 and v3 layouts).
    pub const OPEN_VMCR: u64 = 0xff00_0003;

    /// The guest's virtual CPU interface controls (GICH_VMCR /
    /// ICH_VMCR_EL2) as the loaded vCPU set them.
    pub fn set_vmcr(value: u64) {
        VMCR.store(value, Ordering::Relaxed);
    }
}

pub mod el2 {
    use core::sync::atomic::{AtomicU64, Ordering};

    use super::{record, Event};
    use crate::addr::PhysAddr;

    static FAULT_IPA: AtomicU64 = AtomicU64::new(0);

    /// The IPA the next stage-2 abort reports.
    pub fn set_fault_ipa(ipa: u64) {
        FAULT_IPA.store(ipa, Ordering::Relaxed);
    }

    pub fn configure_vm_traps() {}

    pub fn set_stage2(vmid: u16, _root: PhysAddr, _vtcr: u64) {
        record(Event::Stage2 { vmid });
    }

    pub fn set_vcpu_mpidr(_mpidr: u64) {}

    pub fn fault_ipa(far: u64) -> u64 {
        FAULT_IPA.load(Ordering::Relaxed) & !0xfff | (far & 0xfff)
    }

    pub fn flush_vm_tlbs() {
        record(Event::FlushVmTlbs);
    }

    pub fn invalidate_ipa(ipa: u64) {
        record(Event::InvalidateIpa { ipa });
    }

    /// A 40-bit IPA space walked from level 0 (PARange 2, as `aarch64`
    /// chooses it for a 40-bit CPU).
    pub fn stage2_geometry() -> (u32, u8, u64) {
        (40, 0, 2)
    }

    pub fn vtcr_value(ipa_bits: u32, _start_level: u8, _pa_range: u64) -> u64 {
        64 - ipa_bits as u64
    }

    pub fn publish_stage2_entries() {}
}

pub mod timer {
    use std::sync::Mutex;

    use super::{record, Event};

    pub const HYP_TIMER_PPI: u32 = 26;
    pub const VTIMER_PPI: u32 = 27;

    static VTIMER: Mutex<Option<u64>> = Mutex::new(None);

    pub fn set_hyp_deadline(deadline: Option<u64>) {
        record(Event::HypTimer { cpu: super::cpu::index(), deadline });
    }

    /// What the loaded vCPU's virtual timer reports.
    pub fn set_vtimer_deadline(deadline: Option<u64>) {
        *VTIMER.lock().unwrap_or_else(|e| e.into_inner()) = deadline;
    }

    pub fn vtimer_deadline() -> Option<u64> {
        *VTIMER.lock().unwrap_or_else(|e| e.into_inner())
    }

    static LINE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    /// What the loaded vCPU's virtual-timer output line is.
    pub fn set_vtimer_line(level: bool) {
        LINE.store(level, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn vtimer_line() -> bool {
        LINE.load(std::sync::atomic::Ordering::Relaxed)
    }
}

pub mod inject {
    use super::{record, Event, TrapFrame};

    pub fn undefined(frame: &mut TrapFrame) {
        record(Event::InjectUndefined { elr: frame.elr });
    }

    pub fn abort(_frame: &mut TrapFrame, esr: u64, far: u64) {
        record(Event::InjectAbort { esr, far });
    }

    pub fn serror(syndrome: u64) {
        record(Event::InjectSError { syndrome });
    }
}

pub mod vcpu {
    use std::sync::Mutex;

    use super::TrapFrame;
    use crate::s1walk::Stage1Regs;

    static STAGE1: Mutex<Stage1Regs> = Mutex::new(Stage1Regs { ttbr0: 0, ttbr1: 0, tcr: 0 });

    /// What the loaded vCPU's TTBR0/1_EL1 and TCR_EL1 hold.
    pub fn set_loaded_stage1(regs: Stage1Regs) {
        *STAGE1.lock().unwrap_or_else(|e| e.into_inner()) = regs;
    }

    pub fn loaded_stage1() -> Stage1Regs {
        *STAGE1.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub const SPSR_EL1H_MASKED: u64 = 0x3c5;

    /// A vCPU's architectural state: here only how often it was saved and
    /// loaded.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct VcpuArch {
        pub saves: u32,
        pub loads: u32,
    }

    impl VcpuArch {
        pub fn reset(_vmpidr: u64, _cntvoff: u64) -> Self {
            VcpuArch::default()
        }

        pub fn save(&mut self) {
            self.saves += 1;
        }

        pub fn load(&self) {}
    }

    pub fn enter(frame: &TrapFrame, _stack_top: usize) -> ! {
        std::panic::panic_any(super::Entered(*frame))
    }
}

pub mod psci {
    pub fn available() -> bool {
        false
    }

    pub fn system_off() -> Result<(), ()> {
        Err(())
    }

    pub fn system_reset() -> Result<(), ()> {
        Err(())
    }
}

pub mod exception {
    use super::TrapFrame;

    pub fn fatal(frame: &TrapFrame, why: &str) -> ! {
        panic!("fatal: {why} at PC {:#x}", frame.elr)
    }
}
