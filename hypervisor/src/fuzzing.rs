//! Entry points for the fuzz targets (`fuzz/fuzz_targets/trap.rs`), built
//! only with `--cfg fuzzing` (cargo-fuzz sets it): a guest's traps and
//! dom0's IO completions, on the fake machine the host tests use
//! (`tests/support.rs`), so the fuzzer runs the real trap dispatch,
//! emulation, IO forwarding and completion code.

#[path = "tests/support.rs"]
mod support;

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU32, Ordering};

use hv_abi::hypercall::{guest, Function, VmState};
use hv_abi::ioreq::{completion_slot_offset, IoCompletion, CPL_PROD_OFFSET, IO_PAGE_SIZE};

use crate::arch::{fake, GuestException, TrapFrame};
use crate::sched;
use crate::vm::Vm;
use support::{create_guest, dom0, hypercall, poke, trap, Machine};

/// The window dom0 serves for the guest (with `IoMap`), as dom0's test
/// device: 4 KiB, reads wait for dom0's answer, writes are posted.
pub const WINDOW: u64 = guest::TEST_DEVICE_BASE;

/// Dom0 with an IO page, and a running guest with two vCPUs and 2 MiB of
/// zeroed RAM whose test-device window is forwarded to dom0. One at a time
/// (it holds the fake machine).
pub struct GuestMachine {
    _machine: Machine,
    dom0: Arc<Vm>,
    guest: Arc<Vm>,
    page: u64,
    /// Each vCPU's registers, kept across its traps.
    frames: [TrapFrame; 2],
}

impl GuestMachine {
    pub fn new() -> Self {
        let machine = Machine::take();
        let d0 = dom0();
        let g = create_guest(&d0, "fuzz", 2, 2 << 20, 0).expect("a guest fits");
        let ram = g.ram[0].ipa.as_u64();
        poke(&g, ram, &alloc::vec![0u8; 2 << 20]);
        let page = d0.ram[0].ipa.as_u64() + 0x10_0000;
        poke(&d0, page, &[0u8; IO_PAGE_SIZE]);
        assert_eq!(hypercall(&d0, Function::IoSetup, &[page]).0, 0, "IO page");
        assert_eq!(hypercall(&d0, Function::IoMap, &[g.id.0 as u64, WINDOW, 0x1000, 1]).0, 0, "IO window");
        g.set_state(VmState::Running);
        fake::take_events();
        let frame = TrapFrame { elr: ram + 0x1000, spsr: support::SPSR_EL1H, ..TrapFrame::default() };
        GuestMachine { _machine: machine, dom0: d0, guest: g, page, frames: [frame; 2] }
    }

    /// The guest's RAM base (IPA).
    pub fn ram(&self) -> u64 {
        self.guest.ram[0].ipa.as_u64()
    }

    /// Writes into the guest's RAM at `offset` (clipped to its 2 MiB).
    pub fn write_ram(&self, offset: u64, bytes: &[u8]) {
        let offset = offset % (2 << 20);
        let len = bytes.len().min(((2 << 20) - offset) as usize);
        poke(&self.guest, self.ram() + offset, &bytes[..len]);
    }

    /// vCPU `index` (mod 2) takes a synchronous exception with syndrome
    /// `esr`, the stage-2 fault address `ipa` (HPFAR), virtual address
    /// `far`, in PSTATE `spsr`, with general-purpose registers `x`, while
    /// its stage-1 regime is `stage1`. Nothing happens if the vCPU is not
    /// running (it waits for dom0). Returns whether it trapped.
    pub fn sync_trap(&mut self, index: usize, esr: u64, ipa: u64, far: u64, spsr: u64, x: u64, stage1: crate::s1walk::Stage1Regs) -> bool {
        let index = index % 2;
        if self.guest.vcpus[index].sched.load(Ordering::Acquire) != sched::state::RUNNABLE {
            return false;
        }
        let frame = &mut self.frames[index];
        frame.esr = esr;
        frame.far = far;
        frame.spsr = spsr;
        for (i, r) in frame.x.iter_mut().enumerate() {
            *r = x.rotate_left(i as u32);
        }
        fake::el2::set_fault_ipa(ipa);
        fake::vcpu::set_loaded_stage1(stage1);
        let _ = trap(&self.guest, index, frame, GuestException::Sync);
        fake::take_events();
        true
    }

    /// Dom0 writes `completion` into completion slot `slot`, moves the
    /// shared producer index by `advance` (any value: dom0 may be broken)
    /// and calls `IoComplete`; every vCPU the hypervisor woke is switched
    /// back in (`ioreq::finish`). Returns the call's result.
    pub fn dom0_completes(&mut self, slot: usize, completion: IoCompletion, advance: u32) -> i64 {
        let bytes = completion.to_bytes();
        let at = completion_slot_offset(slot % hv_abi::ioreq::IO_RING_SLOTS as usize);
        poke(&self.dom0, self.page + at as u64, &bytes);
        self.page_word(CPL_PROD_OFFSET).fetch_add(advance, Ordering::Release);
        let (result, _) = hypercall(&self.dom0, Function::IoComplete, &[]);
        for (index, frame) in self.frames.iter_mut().enumerate() {
            if self.guest.vcpus[index].sched.load(Ordering::Acquire) == sched::state::RUNNABLE {
                crate::ioreq::finish(&self.guest.vcpus[index], frame);
            }
        }
        fake::take_events();
        result
    }

    /// The request the hypervisor put in request slot `slot` (its sequence
    /// number, for a fitting completion).
    pub fn request_seq(&self, slot: usize) -> u64 {
        let at = hv_abi::ioreq::request_slot_offset(slot % hv_abi::ioreq::IO_RING_SLOTS as usize);
        let mut seq = [0u8; 8];
        // SAFETY: the IO page is dom0's RAM, on the fake machine a block
        // of the process's heap that lives for the whole run; `at` + 8 is
        // inside the 4 KiB page.
        unsafe { core::ptr::copy_nonoverlapping((self.page as usize + at) as *const u8, seq.as_mut_ptr(), 8) };
        u64::from_le_bytes(seq)
    }

    fn page_word(&self, offset: usize) -> &AtomicU32 {
        assert!(offset + 4 <= IO_PAGE_SIZE && offset % 4 == 0);
        // SAFETY: as in `request_seq`; the offset is an aligned header
        // word, which both sides access atomically.
        unsafe { &*((self.page as usize + offset) as *const AtomicU32) }
    }
}

impl Default for GuestMachine {
    fn default() -> Self {
        Self::new()
    }
}
