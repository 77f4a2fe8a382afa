//! The fake machine the host tests run on: a QEMU-virt platform (GICv3,
//! two CPUs), 64 MiB of "physical" RAM that is a block of the test's heap,
//! dom0 with one vCPU and 8 MiB, and helpers to make traps.

extern crate std;

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::vec::Vec;

use alloc::sync::Arc;
use hv_abi::hypercall::{Function, VmState};

use crate::addr::{Ipa, PhysAddr, PAGE_SIZE};
use crate::arch::{fake, GuestException, TrapFrame};
use crate::esr::ExceptionClass;
use crate::mm::frames::FrameAllocator;
use crate::mm::machine_frames;
use crate::sched::{self, Next};
use crate::stage2::Stage2Tables;
use crate::vgic::{Vgic, VgicVersion};
use crate::vm::{self, RamChunk, Vcpu, Vm, VmId, VmKind, VmSpec};

/// Bytes of fake RAM.
const RAM_SIZE: usize = 64 << 20;
/// Dom0's RAM.
pub const DOM0_RAM: u64 = 8 << 20;

static LOCK: Mutex<()> = Mutex::new(());

/// The fake RAM block, 2 MiB aligned, for the life of the test process.
fn ram() -> (u64, u64) {
    static RAM: OnceLock<usize> = OnceLock::new();
    let base = *RAM.get_or_init(|| {
        let layout = std::alloc::Layout::from_size_align(RAM_SIZE, 2 << 20).expect("valid layout");
        // SAFETY: a non-zero-sized layout; the block is never freed (the
        // page allocator hands it out for the whole test run).
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!p.is_null(), "test RAM");
        p as usize
    });
    (base as u64, RAM_SIZE as u64)
}

/// The machine, taken by one test at a time, reset to: two CPUs online,
/// all of the fake RAM free, no VMs, empty run queues, no IO page, the
/// test thread on CPU 0.
pub struct Machine {
    _lock: MutexGuard<'static, ()>,
}

impl Machine {
    pub fn take() -> Machine {
        let lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        if crate::machine::try_platform().is_none() {
            let blob = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../devtree/tests/fixtures/virt-gicv3.dtb")).expect("QEMU virt GICv3 fixture");
            crate::machine::set_platform(crate::platform::Platform::from_fdt(&blob).expect("fixture parses"));
        }
        crate::machine::set_online_cpus(2);
        vm::clear_for_test();
        sched::reset_for_test();
        crate::ioreq::reset_for_test();
        fake::reset();
        let (base, size) = ram();
        let mut frames = FrameAllocator::new();
        frames.add_range(PhysAddr::new(base), PhysAddr::new(base + size)).expect("fresh allocator");
        machine_frames::install(frames);
        Machine { _lock: lock }
    }

    /// Free pages of the machine's page allocator.
    pub fn free_pages(&self) -> usize {
        machine_frames::stats().expect("installed").1
    }
}

/// Dom0 as the tests need it: one vCPU on CPU 0, `DOM0_RAM` of RAM mapped
/// 1:1 (IPA = host address), running, in the VM table.
pub fn dom0() -> Arc<Vm> {
    let pages = (DOM0_RAM / PAGE_SIZE) as usize;
    let base = machine_frames::alloc_aligned(pages, 2 << 20).expect("dom0 RAM");
    let stage2 = Stage2Tables::new().expect("tables");
    let vgic = Vgic::new(VgicVersion::V3, 1, 64, |i| i as u64).expect("vGIC");
    sched::place_fixed(0);
    crate::ioreq::set_dom0_placement(&[0]);
    let vm = Arc::new(Vm::new(VmSpec {
        id: VmId(0),
        name: "dom0".into(),
        kind: VmKind::Dom0,
        stage2,
        ram: alloc::vec![RamChunk { ipa: Ipa::new(base.as_u64()), pa: base, size: DOM0_RAM }],
        regions: Vec::new(),
        hw_ppis: Vec::new(),
        pv_time: None,
        vgic,
        vcpus: alloc::vec![Vcpu::new(0, 0, 0, 0)],
        cntvoff: 0,
        weight: crate::schedpolicy::DEFAULT_WEIGHT,
        state: VmState::Running,
    }));
    vm::insert(vm.clone()).unwrap_or_else(|_| panic!("slot 0 free"));
    vm
}

/// Exception class codes (Arm ARM D23.2 "ESR_EL2"), as the CPU reports them.
pub mod ec {
    pub const UNKNOWN: u64 = 0x00;
    pub const WFX: u64 = 0x01;
    pub const HVC64: u64 = 0x16;
    pub const SMC64: u64 = 0x17;
    pub const SYSREG: u64 = 0x18;
    pub const IABT_LOWER: u64 = 0x20;
    pub const DABT_LOWER: u64 = 0x24;
}

/// PSTATE of a guest at EL1 using SP_EL1 with DAIF masked (SPSR.M = EL1h).
pub const SPSR_EL1H: u64 = 0x3c5;

/// An ESR_EL2 value of class `class` with ISS `iss` (IL set).
pub fn esr(class: u64, iss: u64) -> u64 {
    let value = (class << 26) | (1 << 25) | iss;
    debug_assert!(ExceptionClass::from_esr(value) != ExceptionClass::Unknown || class == ec::UNKNOWN);
    value
}

/// A data abort's ESR: ISV with the access size (bytes), target register,
/// direction.
pub fn data_abort_esr(bytes: u64, register: u64, write: bool) -> u64 {
    let sas = bytes.trailing_zeros() as u64;
    let iss = (1 << 24) | (sas << 22) | (register << 16) | ((write as u64) << 6) | 0b000100 /* translation fault, level 0..: any stage-2 fault */;
    esr(ec::DABT_LOWER, iss)
}

/// `vm`'s vCPU `index` takes `exception` with registers `frame` on its
/// CPU (the test thread becomes that CPU): returns what the trap handler decided.
pub fn trap(vm: &Arc<Vm>, index: usize, frame: &mut TrapFrame, exception: GuestException) -> Next {
    fake::cpu::set_index(vm.vcpus[index].pcpu());
    sched::make_current(vm.clone(), index);
    crate::trap::dispatch(vm, &vm.vcpus[index], frame, exception)
}

/// A hypercall `f` with arguments `args` (x1..) from `vm`'s vCPU 0:
/// returns x0 after it (the result or error code) and the whole frame.
pub fn hypercall(vm: &Arc<Vm>, f: Function, args: &[u64]) -> (i64, TrapFrame) {
    let mut frame = TrapFrame { esr: esr(ec::HVC64, 0), elr: 0x1000, ..TrapFrame::default() };
    frame.x[0] = f as u64;
    frame.x[1..=args.len()].copy_from_slice(args);
    let next = trap(vm, 0, &mut frame, GuestException::Sync);
    assert_eq!(next, Next::Resume, "hypercalls return to the caller");
    (frame.x[0] as i64, frame)
}

/// Writes `bytes` into `vm`'s RAM at `ipa` (the test's view of guest
/// memory).
pub fn poke(vm: &Vm, ipa: u64, bytes: &[u8]) {
    let pa = vm.ram_buffer(ipa, bytes.len() as u64).expect("inside the VM's RAM");
    // SAFETY: `ram_buffer` checked the range is the VM's RAM, which in host
    // tests is the test's heap block.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), pa.as_u64() as *mut u8, bytes.len()) };
}

/// Reads `len` bytes of `vm`'s RAM at `ipa`.
pub fn peek(vm: &Vm, ipa: u64, len: usize) -> Vec<u8> {
    let pa = vm.ram_buffer(ipa, len as u64).expect("inside the VM's RAM");
    let mut out = alloc::vec![0; len];
    // SAFETY: as in `poke`.
    unsafe { core::ptr::copy_nonoverlapping(pa.as_u64() as *const u8, out.as_mut_ptr(), len) };
    out
}

/// Dom0 creates a guest with `vcpus` vCPUs and `memory` bytes named
/// `name`: the VM, or the hypercall's error code.
pub fn create_guest(dom0: &Arc<Vm>, name: &str, vcpus: u64, memory: u64, pin: u64) -> Result<Arc<Vm>, i64> {
    let name_ipa = dom0.ram[0].ipa.as_u64() + 0x1000;
    poke(dom0, name_ipa, name.as_bytes());
    let (r, _) = hypercall(dom0, Function::VmCreate, &[vcpus, memory, name_ipa, name.len() as u64, 0, pin]);
    if r < 0 {
        return Err(r);
    }
    Ok(vm::get(VmId(r as u16)).expect("created VM is in the table"))
}

/// Runs `f`, which is expected to end by entering a guest, idling or
/// parking (on the fake arch, an unwind): returns the payload.
pub fn diverges(f: impl FnOnce()) -> Box<dyn std::any::Any + Send> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    match result {
        Ok(()) => panic!("expected the CPU to leave (enter a guest, idle or park)"),
        Err(payload) => payload,
    }
}

use std::boxed::Box;
