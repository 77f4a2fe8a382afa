//! Test guest `chaos`: from a seed, for a bounded time, on every vCPU it
//! has, does what a hostile or broken kernel might: hypercalls (every
//! `hv_abi` function and unknown IDs, random arguments), PSCI and SMCCC
//! over HVC and SMC (CPU_ON of itself, of a sibling with bad entry points,
//! of CPUs that do not exist, unknown functions), loads and stores across
//! the IPA space (its RAM, the GIC frames, its devices, holes, dom0's and
//! the hypervisor's physical addresses), cache maintenance by address and
//! by set/way, trapped and untrapped system registers (random encodings
//! through one instruction written into a code slot), WFI/WFE storms, and
//! timer and SGI storms; secondaries switch themselves off (CPU_OFF) and
//! vCPU 0 switches them on again.
//!
//! Every operation runs with a fault hook armed: an exception it causes is
//! recorded (its class counted) and the instruction skipped. Each outcome
//! is judged against what the architecture and the hypervisor's contract
//! allow for that operation (`model.rs`); a disallowed one is a violation.
//!
//! Stores into its own RAM go only to a scratch buffer (one half per
//! vCPU); stores to device frames only to registers that cannot take the
//! guest's own interrupt delivery away (the SPI range of the distributor,
//! SGI bits, read-only and reserved offsets). SYSTEM_OFF/SYSTEM_RESET are
//! never drawn; the guest ends with SYSTEM_OFF, or with `chaos.end=cpu-off`
//! by switching off its last vCPU (the VM then never stops by itself).
//!
//! Bootargs: `chaos.seed=<n>` (default 1), `chaos.ms=<n>` (default 5000),
//! `chaos.end=system-off|cpu-off`, `chaos.kinds=<kind>+<kind>...` (only
//! these operations, named as in the report), `chaos.lr-starve=1` (also
//! stores to GICD_IGROUPR and GICD_ISACTIVER: see guests/README.md).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(target_os = "none")]
mod guest {
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::arch::asm;
    use core::cell::UnsafeCell;
    use core::fmt::Write;
    use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use chaos_model::{ec, psci, sysreg_read, sysreg_write, unknown_smccc_call, Expect, Kind, Outcome, Rng, SysReg};
    use testkit::arch::cpu::{self, MAX_CPUS};
    use testkit::arch::exception::{set_fault_hook, TrapFrame, Vector, VectorKind};
    use testkit::arch::{gic, smp, timer};
    use testkit::hv_abi::hypercall::{self, guest, Error, Function};
    use testkit::hv_devtree::platform::GicVersion;
    use testkit::windows::Windows;
    use testkit::{check, println, wait_until, Env};

    testkit::guest!("chaos", main);

    const NONE: u64 = u64::MAX;
    const TICK_HZ: u64 = 1000;

    /// Per vCPU: the hook is armed (an operation is running).
    static ARMED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
    /// Per vCPU: the syndrome of the last exception the hook took (NONE: none).
    static LAST_ESR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(NONE) }; MAX_CPUS];
    /// Exceptions taken, by exception class.
    static BY_CLASS: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
    /// Per kind: operations, then outcomes (completed, UNDEFINED, data abort, other).
    static BY_KIND: [[AtomicU64; 5]; Kind::ALL.len()] = [const { [const { AtomicU64::new(0) }; 5] }; Kind::ALL.len()];
    static VIOLATIONS: AtomicU64 = AtomicU64::new(0);
    static FIRST_VIOLATIONS: spin::Mutex<Vec<String>> = spin::Mutex::new(Vec::new());
    static SGIS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
    static RESTARTS: AtomicU64 = AtomicU64::new(0);
    /// Liveness after the storms, reported (a NOTE) rather than judged: a
    /// vCPU descheduled for 200 ms on a loaded host looks the same.
    static LATE_TICKS: AtomicU64 = AtomicU64::new(0);
    static LATE_SGIS: AtomicU64 = AtomicU64::new(0);
    static STOP: AtomicBool = AtomicBool::new(false);
    static OPS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
    static CONFIG: spin::Once<Config> = spin::Once::new();

    /// Scratch RAM the random stores may hit: one half per vCPU pair slot.
    const SCRATCH_SIZE: usize = 64 * 1024;
    #[repr(C, align(4096))]
    struct Scratch(UnsafeCell<[u8; SCRATCH_SIZE]>);
    // SAFETY: only reached through raw addresses by the chaos operations,
    // each vCPU in its own slice (`scratch_slice`); nothing holds a reference.
    unsafe impl Sync for Scratch {}
    static SCRATCH: Scratch = Scratch(UnsafeCell::new([0; SCRATCH_SIZE]));

    /// Per vCPU: a code slot for one system register instruction and `ret`.
    #[repr(C, align(64))]
    struct CodeSlots(UnsafeCell<[[u32; 16]; MAX_CPUS]>);
    // SAFETY: each vCPU writes and executes only its own slot.
    unsafe impl Sync for CodeSlots {}
    static CODE: CodeSlots = CodeSlots(UnsafeCell::new([[0; 16]; MAX_CPUS]));

    /// A LogWrite line in RAM.
    static LOG_LINE: &[u8] = b"chaos guest: LogWrite with a valid buffer\n";

    struct Config {
        seed: u64,
        ram: (u64, u64),
        windows: Windows,
        gic_v3: bool,
        mpidrs: Vec<u64>,
        pa_limit: u64,
        /// `chaos.lr-starve=1`: random stores to GICD_IGROUPR and
        /// GICD_ISACTIVER for SPIs too: interrupts the guest cannot take,
        /// which must not keep list registers from its own timer and SGIs
        /// (docs/security-model.md). `scripts/test.sh` turns it on.
        lr_starve: bool,
        /// `chaos.kinds=a,b`: only these kinds of operation (bit per `Kind`).
        kinds: u32,
    }

    fn config() -> &'static Config {
        CONFIG.get().expect("set before any chaos runs")
    }

    /// The fault hook: while an operation runs, record the exception and
    /// resume after the instruction that caused it (an SError is
    /// asynchronous: nothing to skip).
    fn on_fault(frame: &mut TrapFrame, vector: Vector) -> bool {
        let me = cpu::index();
        if !ARMED[me].load(Ordering::SeqCst) {
            return false;
        }
        let esr = if vector.kind() == VectorKind::SError {
            ((ec::SERROR as u64) << 26) | (frame.esr & 0x1ff_ffff)
        } else {
            frame.elr += 4;
            frame.esr
        };
        BY_CLASS[((esr >> 26) & 0x3f) as usize].fetch_add(1, Ordering::Relaxed);
        LAST_ESR[me].store(esr, Ordering::SeqCst);
        true
    }

    /// Runs `f` with the hook armed and says how it ended.
    fn capture<R>(f: impl FnOnce() -> R) -> (R, Outcome) {
        let me = cpu::index();
        LAST_ESR[me].store(NONE, Ordering::SeqCst);
        ARMED[me].store(true, Ordering::SeqCst);
        let r = f();
        ARMED[me].store(false, Ordering::SeqCst);
        let esr = LAST_ESR[me].load(Ordering::SeqCst);
        (r, if esr == NONE { Outcome::Completed } else { Outcome::Exception { esr } })
    }

    /// Counts the outcome of one operation of `kind` and judges it.
    fn judge(kind: Kind, expect: Expect, outcome: Outcome, value: u64, what: core::fmt::Arguments<'_>) {
        let row = &BY_KIND[kind as usize];
        row[0].fetch_add(1, Ordering::Relaxed);
        let column = match outcome.class() {
            None => 1,
            Some(ec::UNKNOWN) => 2,
            Some(ec::DATA_ABORT) => 3,
            Some(_) => 4,
        };
        row[column].fetch_add(1, Ordering::Relaxed);
        if !expect.allows(outcome, value) {
            violation(format_args!("{} {what}: {outcome:x?} value {value:#x}, want {expect:?}", kind.name()));
        }
    }

    fn violation(what: core::fmt::Arguments<'_>) {
        let n = VIOLATIONS.fetch_add(1, Ordering::SeqCst);
        if n < 8 {
            let mut s = String::new();
            let _ = write!(s, "vCPU {}: {what}", cpu::index());
            FIRST_VIOLATIONS.lock().push(s);
        }
    }

    // ---- calls --------------------------------------------------------

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Conduit {
        Hvc,
        Smc,
    }

    /// `HVC #0` or `SMC #0` with x0..x6; returns x0..x3.
    fn smccc(conduit: Conduit, r: [u64; 7]) -> [u64; 4] {
        let (mut x0, mut x1, mut x2, mut x3) = (r[0], r[1], r[2], r[3]);
        // SAFETY: a call changes only registers (x0..x17 at most, all
        // declared clobbered); the hypervisor writes nothing of this VM's
        // memory for the calls a guest may make (LogWrite only reads).
        unsafe {
            match conduit {
                Conduit::Hvc => asm!("hvc #0", inout("x0") x0, inout("x1") x1, inout("x2") x2, inout("x3") x3,
                    inout("x4") r[4] => _, inout("x5") r[5] => _, inout("x6") r[6] => _,
                    out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                    out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _, options(nostack)),
                Conduit::Smc => asm!("smc #0", inout("x0") x0, inout("x1") x1, inout("x2") x2, inout("x3") x3,
                    inout("x4") r[4] => _, inout("x5") r[5] => _, inout("x6") r[6] => _,
                    out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _,
                    out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _, options(nostack)),
            }
        }
        [x0, x1, x2, x3]
    }

    fn hypercall_op(rng: &mut Rng) {
        let c = config();
        let mut regs = [0u64; 7];
        for r in regs.iter_mut().skip(1) {
            *r = rng.argument(c.ram);
        }
        let (id, expect): (u32, Expect) = if rng.chance(200) {
            let f = rng.pick(&Function::ALL);
            let expect = match f {
                Function::Version => Expect::Value(hypercall::version()),
                Function::LogWrite => {
                    if rng.chance(128) {
                        regs[1] = LOG_LINE.as_ptr() as u64;
                        regs[2] = rng.below(LOG_LINE.len() as u64 + 1);
                    }
                    const LOG_WRITE_ANSWERS: [i64; 4] =
                        [0, Error::InvalidParameter.code(), Error::BadAddress.code(), Error::Busy.code()];
                    Expect::Returns(&LOG_WRITE_ANSWERS)
                }
                _ => Expect::Value(Error::Denied.code() as u64),
            };
            (f as u32, expect)
        } else {
            // Unknown IDs in the hypervisor's range.
            let n = Function::ALL.len() as u32 + rng.below(0x1_0000 - Function::ALL.len() as u64) as u32;
            (0xc600_0000 | n, Expect::Value(Error::NotSupported.code() as u64))
        };
        let high = if rng.chance(32) { rng.next_u64() << 32 } else { 0 };
        regs[0] = high | id as u64;
        let (r, outcome) = capture(|| smccc(Conduit::Hvc, regs));
        judge(Kind::Hypercall, expect, outcome, r[0], format_args!("{:#x}({:#x}, {:#x}, {:#x})", regs[0], regs[1], regs[2], regs[3]));
    }

    /// PSCI and SMCCC, over `conduit`.
    fn psci_op(rng: &mut Rng, conduit: Conduit) {
        let c = config();
        let kind = if conduit == Conduit::Hvc { Kind::Psci } else { Kind::Smc };
        let me = cpu::index();
        let my_mpidr = c.mpidrs[me];
        let entry = smp::entry_point();
        let bad_entries = [0, 0x1000, c.ram.0 - 4, c.ram.0 + c.ram.1, u64::MAX & !3, 0x0800_0000];
        let absent = loop {
            let any = rng.next_u64() & 0xff_00ff_ffff;
            let m = rng.pick(&[0xff, 0x100, 0x1_0000, 0xff_00ff_ffff, c.mpidrs.len() as u64, any]);
            if !c.mpidrs.contains(&(m & 0xff_00ff_ffff)) {
                break m;
            }
        };
        let (regs, expect): ([u64; 4], Expect) = match rng.below(10) {
            0 => ([psci::CPU_ON as u64, my_mpidr, entry, rng.next_u64()], Expect::Returns(&[psci::ALREADY_ON])),
            1 if c.mpidrs.len() > 1 => {
                let other = c.mpidrs[1 + rng.below(c.mpidrs.len() as u64 - 1) as usize];
                let target = if rng.chance(128) { other } else { my_mpidr };
                (
                    [psci::CPU_ON as u64, target, rng.pick(&bad_entries), 0],
                    Expect::Returns(&[psci::INVALID_ADDRESS, psci::ALREADY_ON, psci::ON_PENDING]),
                )
            }
            2 => ([psci::CPU_ON as u64, absent, entry, 0], Expect::Returns(&[psci::INVALID_PARAMETERS])),
            3 => {
                let level = if rng.chance(128) { 0 } else { rng.below(4) };
                ([psci::AFFINITY_INFO as u64, rng.pick(&c.mpidrs), level, 0], Expect::Returns(&[0, 1, 2, psci::INVALID_PARAMETERS]))
            }
            4 => ([psci::AFFINITY_INFO as u64, absent, 0, 0], Expect::Returns(&[psci::INVALID_PARAMETERS])),
            5 => {
                let known = [psci::VERSION, psci::CPU_ON, psci::CPU_OFF, psci::AFFINITY_INFO, psci::SYSTEM_OFF, psci::FEATURES];
                if rng.chance(128) {
                    ([psci::FEATURES as u64, rng.pick(&known) as u64, 0, 0], Expect::Returns(&[psci::SUCCESS]))
                } else {
                    ([psci::FEATURES as u64, rng.next_u64(), 0, 0], Expect::Returns(&[psci::SUCCESS, psci::NOT_SUPPORTED]))
                }
            }
            6 => {
                // Standby (StateType 0) mostly; any power state otherwise,
                // with no valid entry point to resume at.
                let state = if rng.chance(160) { rng.below(0x10000) } else { rng.next_u64() & 0xffff_ffff };
                ([psci::CPU_SUSPEND as u64, state, 0, 0], Expect::Returns(&[psci::SUCCESS, psci::INVALID_PARAMETERS, psci::INVALID_ADDRESS]))
            }
            7 => {
                let (id, expect) = rng.pick(&[
                    (psci::VERSION, Expect::Value(0x1_0001)),
                    (psci::SMCCC_VERSION, Expect::Value(0x1_0001)),
                    (psci::MIGRATE_INFO_TYPE, Expect::Value(2)),
                ]);
                ([id as u64, rng.next_u64(), 0, 0], expect)
            }
            _ => {
                let (id, expect) = unknown_smccc_call(rng);
                ([id, rng.argument(c.ram), rng.argument(c.ram), rng.argument(c.ram)], expect)
            }
        };
        if conduit == Conduit::Hvc && rng.chance(16) {
            // A non-zero HVC immediate: SMCCC defines only #0.
            let (r, outcome) = capture(|| {
                let mut x0 = regs[0];
                // SAFETY: as in `smccc`: only registers change.
                unsafe {
                    asm!("hvc #0x1234", inout("x0") x0, inout("x1") regs[1] => _, inout("x2") regs[2] => _, inout("x3") regs[3] => _,
                        out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                        out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _, options(nostack))
                };
                x0
            });
            judge(kind, Expect::Value(psci::NOT_SUPPORTED as u64), outcome, r, format_args!("hvc #0x1234 x0 {:#x}", regs[0]));
            return;
        }
        let (r, outcome) = capture(|| smccc(conduit, [regs[0], regs[1], regs[2], regs[3], 0, 0, 0]));
        judge(kind, expect, outcome, r[0], format_args!("{:#x}({:#x}, {:#x}, {:#x})", regs[0], regs[1], regs[2], regs[3]));
    }

    // ---- memory -------------------------------------------------------

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Region {
        Scratch,
        OwnRam,
        Device,
        Hole,
    }

    fn scratch_slice() -> (u64, u64) {
        let half = (SCRATCH_SIZE / MAX_CPUS) as u64;
        let base = SCRATCH.0.get() as u64 + cpu::index() as u64 * half;
        (base, half)
    }

    fn classify(addr: u64) -> Region {
        let c = config();
        let (s, n) = scratch_slice();
        if addr >= s && addr < s + n {
            Region::Scratch
        } else if addr >= c.ram.0 && addr - c.ram.0 < c.ram.1 {
            Region::OwnRam
        } else if c.windows.find(addr).is_some() || (guest::TEST_DEVICE_BASE..guest::TEST_DEVICE_BASE + guest::TEST_DEVICE_SIZE).contains(&addr) {
            Region::Device
        } else {
            Region::Hole
        }
    }

    /// Physical addresses of the machine the tests run on (QEMU virt, 1 GiB
    /// at 0x4000_0000: the hypervisor's image, dom0's RAM and device tree,
    /// the top of RAM) and of the physical GIC's other frames: to this VM
    /// they are IPAs like any other.
    const FOREIGN: [u64; 14] = [
        0x4008_0000,
        0x5000_0000,
        0x5800_0000,
        0x5fe0_0000,
        0x6000_0000,
        0x7fff_f000,
        0x8000_0000,
        0x0803_0000,
        0x0804_0000,
        0x0808_0000,
        0x0a00_3e00,
        0x0400_0000,
        0x1000_0000,
        0x0901_0000,
    ];

    /// Somewhere to load from.
    fn load_address(rng: &mut Rng) -> u64 {
        let c = config();
        let (s, n) = scratch_slice();
        let addr = match rng.below(10) {
            0 | 1 => s + rng.below(n - 16),
            2 => c.ram.0 + rng.below(c.ram.1 - 16),
            3 => guest::GICD_BASE + rng.below(guest::GICD_SIZE),
            4 => {
                if c.gic_v3 {
                    guest::GICR_BASE + rng.below(c.mpidrs.len() as u64 * guest::GICR_STRIDE)
                } else {
                    guest::GICC_BASE + rng.below(guest::GICC_SIZE)
                }
            }
            5 => {
                let (uart, test) = (rng.below(guest::UART_SIZE), rng.below(guest::TEST_DEVICE_SIZE));
                rng.pick(&[guest::UART_BASE + uart, guest::TEST_DEVICE_BASE + test])
            }
            6 => {
                let at = rng.pick(&FOREIGN);
                at + rng.below(0x1000)
            }
            7 => c.ram.0 + c.ram.1 + rng.below(1 << 20),
            8 => rng.below(1 << 32),
            _ => rng.below(c.pa_limit),
        };
        addr & !15
    }

    /// GICv2's CPU interface acknowledges on IAR (0xc) and AIAR (0x20)
    /// reads: a read of either would leave an interrupt active for ever.
    fn acknowledges(addr: u64, len: u64) -> bool {
        if config().gic_v3 || !(guest::GICC_BASE..guest::GICC_BASE + guest::GICC_SIZE).contains(&addr) {
            return false;
        }
        let off = addr - guest::GICC_BASE;
        [0xc, 0x20].iter().any(|&r| off < r + 4 && r < off + len)
    }

    fn load_expect(region: Region) -> Expect {
        match region {
            Region::Scratch | Region::OwnRam => Expect::Completes,
            Region::Device => Expect::CompletesOrDataAbort,
            Region::Hole => Expect::DataAbort,
        }
    }

    fn load_op(rng: &mut Rng) {
        let addr = load_address(rng);
        if acknowledges(addr, 16) {
            return;
        }
        let region = classify(addr);
        const PRFM: u64 = 11;
        let form = rng.below(PRFM + 1);
        let (v, outcome) = capture(|| {
            let mut v: u64 = 0;
            // SAFETY: the address is arbitrary on purpose: the identity
            // map covers the IPA space, so each load returns a value or
            // takes an exception the hook skips. Loads have no effect on
            // memory; the ones at device registers were chosen above to be
            // free of side effects the guest relies on (no acknowledge).
            unsafe {
                match form {
                    0 => asm!("ldrb {v:w}, [{a}]", a = in(reg) addr, v = inout(reg) v, options(nostack)),
                    1 => asm!("ldrh {v:w}, [{a}]", a = in(reg) addr, v = inout(reg) v, options(nostack)),
                    2 => asm!("ldr {v:w}, [{a}]", a = in(reg) addr, v = inout(reg) v, options(nostack)),
                    3 => asm!("ldr {v}, [{a}]", a = in(reg) addr, v = inout(reg) v, options(nostack)),
                    4 => asm!("ldrsb {v}, [{a}]", a = in(reg) addr, v = inout(reg) v, options(nostack)),
                    5 => asm!("ldrsw {v}, [{a}]", a = in(reg) addr, v = inout(reg) v, options(nostack)),
                    6 => asm!("ldp {v}, {w}, [{a}]", a = in(reg) addr, v = inout(reg) v, w = out(reg) _, options(nostack)),
                    7 => asm!("ldxr {v}, [{a}]", "clrex", a = in(reg) addr, v = inout(reg) v, options(nostack)),
                    8 => asm!("ldar {v}, [{a}]", a = in(reg) addr, v = inout(reg) v, options(nostack)),
                    9 => asm!("ldr {v}, [{a}], #8", a = inout(reg) addr => _, v = inout(reg) v, options(nostack)),
                    10 => asm!("ldr q0, [{a}]", "fmov {v}, d0", a = in(reg) addr, v = inout(reg) v, out("v0") _, options(nostack)),
                    _ => asm!("prfm pldl1keep, [{a}]", a = in(reg) addr, options(nostack)),
                }
            }
            v
        });
        // A prefetch is a hint: it never faults.
        let expect = if form == PRFM { Expect::Completes } else { load_expect(region) };
        judge(Kind::Load, expect, outcome, 0, format_args!("form {form} at {addr:#x} ({region:?})"));
        let _ = v;
    }

    /// GIC registers a store may hit without taking the guest's own
    /// interrupts away: (offset, span) ranges of the distributor (the SPI
    /// halves of the enable, pending, active, group, priority, target and
    /// config registers; read-only and ID registers; GICv2's SGIR and SGI
    /// pending registers), and of a redistributor (read-only registers,
    /// SGI bits only through the values written).
    fn gic_store_target(rng: &mut Rng) -> Option<(u64, u32)> {
        let c = config();
        const DIST: [(u64, u64); 11] = [
            (0x004, 0x8),   // TYPER, IIDR
            (0x104, 0x7c),  // ISENABLER1..
            (0x184, 0x7c),  // ICENABLER1..
            (0x204, 0x7c),  // ISPENDR1..
            (0x284, 0x7c),  // ICPENDR1..
            (0x384, 0x7c),  // ICACTIVER1..
            (0x420, 0x3e0), // IPRIORITYR8..
            (0x820, 0x3e0), // ITARGETSR8..
            (0xc08, 0xf8),  // ICFGR2..
            (0xd00, 0x200), // reserved, implementation defined
            (0xffd0, 0x30), // ID registers
        ];
        let value = rng.next_u64() as u32;
        if c.lr_starve && rng.chance(32) {
            // IGROUPR1.. (SPIs moved to group 0, which the CPU interface
            // does not take) and ISACTIVER1.. (SPIs made active without
            // being acknowledged): see `Config::lr_starve`.
            let off = rng.pick(&[0x084, 0x304]);
            return Some((guest::GICD_BASE + off + rng.below(0x7c) / 4 * 4, value));
        }
        match rng.below(4) {
            0 | 1 => {
                let (off, span) = rng.pick(&DIST);
                Some((guest::GICD_BASE + off + rng.below(span) / 4 * 4, value))
            }
            2 if c.gic_v3 => {
                let off = 0x6100 + rng.below(0x1f00) / 8 * 8; // IROUTER<n> for SPIs
                Some((guest::GICD_BASE + off, value))
            }
            2 => {
                // SGIR (any filter, targets, INTID), CPENDSGIR, SPENDSGIR.
                let sgi_pending = 0xf10 + rng.below(0x20) / 4 * 4;
                let off = rng.pick(&[0xf00, sgi_pending]);
                Some((guest::GICD_BASE + off, value))
            }
            _ if c.gic_v3 => {
                let frame = guest::GICR_BASE + rng.below(c.mpidrs.len() as u64) * guest::GICR_STRIDE;
                let priority = 0x10400 + rng.below(16) / 4 * 4;
                let (off, v) = rng.pick(&[
                    (0x8, value),                            // IIDR (RO)
                    (0xc, value),                            // TYPER upper (RO)
                    (0xffe8, value),                         // PIDR2 (RO)
                    (0x10100, value & 0xffff),               // ISENABLER0: SGIs only
                    (0x10200, value & 0xffff),               // ISPENDR0: SGIs only
                    (priority, value & 0x7f7f_7f7f), // IPRIORITYR0..3: SGIs, above the PMR
                    (0x10c00, value),                        // ICFGR0 (SGIs, RO)
                ]);
                Some((frame + off, v))
            }
            _ => None,
        }
    }

    fn store_op(rng: &mut Rng) {
        let c = config();
        let (s, n) = scratch_slice();
        let value = rng.next_u64();
        let (addr, width) = match rng.below(8) {
            0..=2 => (s + rng.below(n - 16) / 16 * 16, rng.pick(&[1u64, 2, 4, 8, 16])),
            3 => match gic_store_target(rng) {
                Some((a, v)) => {
                    let (_, outcome) = capture(|| {
                        // SAFETY: a 32-bit store to a GIC register chosen by
                        // `gic_store_target`: interrupt state only.
                        unsafe { asm!("str {v:w}, [{a}]", a = in(reg) a, v = in(reg) v, options(nostack)) }
                    });
                    judge(Kind::Store, Expect::CompletesOrDataAbort, outcome, 0, format_args!("GIC {a:#x} <- {v:#x}"));
                    return;
                }
                None => return,
            },
            4 => (guest::TEST_DEVICE_BASE + rng.below(0x120) / 8 * 8, rng.pick(&[1u64, 2, 4, 8])),
            5 => {
                let at = rng.pick(&FOREIGN);
                (at + rng.below(0x1000) / 16 * 16, rng.pick(&[1u64, 8, 16]))
            }
            6 => (c.ram.0 + c.ram.1 + rng.below(1 << 20) / 16 * 16, rng.pick(&[4u64, 8, 16])),
            _ => (rng.below(c.pa_limit) / 16 * 16, rng.pick(&[1u64, 8, 16])),
        };
        let region = classify(addr);
        let expect = match region {
            Region::Scratch => Expect::Completes,
            Region::Hole => Expect::DataAbort,
            // The test device's registers take any store; past them it aborts.
            Region::Device if (guest::TEST_DEVICE_BASE..guest::TEST_DEVICE_BASE + guest::TEST_DEVICE_SIZE).contains(&addr) => {
                Expect::CompletesOrDataAbort
            }
            // Own RAM outside the scratch, other devices: not ours to write.
            Region::OwnRam | Region::Device => return,
        };
        let exclusive = width == 8 && rng.chance(32);
        let (status, outcome) = capture(|| {
            let mut status: u64 = 0;
            // SAFETY: the target is this vCPU's scratch slice, the test
            // device's registers, or an address with nothing behind it
            // (classified above); the hook skips a store that aborts.
            unsafe {
                match (width, exclusive) {
                    (1, _) => asm!("strb {v:w}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack)),
                    (2, _) => asm!("strh {v:w}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack)),
                    (4, _) => asm!("str {v:w}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack)),
                    (8, false) => asm!("str {v}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack)),
                    (8, true) => asm!("ldxr {s}, [{a}]", "stxr {s:w}, {v}, [{a}]", a = in(reg) addr, v = in(reg) value,
                        s = inout(reg) status, options(nostack)),
                    _ => asm!("stp {v}, {v}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack)),
                }
                asm!("dsb sy", options(nostack));
            }
            status
        });
        judge(Kind::Store, expect, outcome, 0, format_args!("{width} bytes at {addr:#x} ({region:?})"));
        if region == Region::Scratch && outcome == Outcome::Completed && !exclusive {
            let mask = if width >= 8 { u64::MAX } else { (1u64 << (width * 8)) - 1 };
            // SAFETY: this vCPU's scratch slice, just written.
            let got = unsafe { core::ptr::read_volatile(addr as *const u64) };
            let want_mask = mask;
            if got & want_mask != value & want_mask {
                violation(format_args!("store of {width} bytes at {addr:#x} read back {got:#x} (wrote {value:#x})"));
            }
        }
        let _ = status;
    }

    fn cache_by_address_op(rng: &mut Rng) {
        let (s, n) = scratch_slice();
        let op = rng.below(6);
        let addr = if op >= 4 { s + rng.below(n - 2048) / 2048 * 2048 } else { load_address(rng) };
        let region = classify(addr);
        let expect = match (op, region) {
            // DC ZVA may be disabled (DCZID_EL0.DZP, HCR_EL2.TDZ).
            (5, _) => Expect::CompletesOrUndefined,
            (_, Region::Scratch | Region::OwnRam) => Expect::Completes,
            // By-VA maintenance of an address with nothing behind it: a
            // no-op, or the stage-2 fault reported as an abort.
            _ => Expect::CompletesOrDataAbort,
        };
        let (_, outcome) = capture(|| {
            // SAFETY: cache maintenance changes no memory contents except
            // DC IVAC (here only on this vCPU's scratch, whose contents do
            // not matter) and DC ZVA (scratch, a block inside it).
            unsafe {
                match op {
                    0 => asm!("dc civac, {a}", a = in(reg) addr, options(nostack)),
                    1 => asm!("dc cvac, {a}", a = in(reg) addr, options(nostack)),
                    2 => asm!("dc cvau, {a}", a = in(reg) addr, options(nostack)),
                    3 => asm!("ic ivau, {a}", a = in(reg) addr, options(nostack)),
                    4 => asm!("dc ivac, {a}", a = in(reg) addr, options(nostack)),
                    _ => asm!("dc zva, {a}", a = in(reg) addr, options(nostack)),
                }
                asm!("dsb sy", options(nostack));
            }
        });
        judge(Kind::CacheByAddress, expect, outcome, 0, format_args!("op {op} at {addr:#x} ({region:?})"));
    }

    fn cache_by_set_way_op(rng: &mut Rng) {
        let operand = rng.next_u64() & 0xffff_fffe;
        let op = rng.below(3);
        let (_, outcome) = capture(|| {
            // SAFETY: by set/way maintenance of this CPU's caches; an
            // invalidate is a clean and invalidate for a VM (HCR_EL2.SWIO),
            // and none of this changes what memory holds.
            unsafe {
                match op {
                    0 => asm!("dc isw, {x}", x = in(reg) operand, options(nostack)),
                    1 => asm!("dc csw, {x}", x = in(reg) operand, options(nostack)),
                    _ => asm!("dc cisw, {x}", x = in(reg) operand, options(nostack)),
                }
                asm!("dsb sy", options(nostack));
            }
        });
        judge(Kind::CacheBySetWay, Expect::Completes, outcome, 0, format_args!("op {op} operand {operand:#x}"));
    }

    // ---- system registers ---------------------------------------------

    /// Writes `insn; ret` into this vCPU's code slot and runs it with x0 =
    /// `x0`; returns x0 afterwards.
    fn run_insn(insn: u32, x0: u64) -> u64 {
        let slot = CODE.0.get() as *mut [u32; 16];
        let me = cpu::index();
        // SAFETY: the slot is this vCPU's own (see `CodeSlots`); it is in
        // RAM, which the identity map makes executable; the cache
        // maintenance makes the fetch see the new instruction.
        unsafe {
            let code = (*slot.add(me)).as_mut_ptr();
            core::ptr::write_volatile(code, insn);
            core::ptr::write_volatile(code.add(1), 0xd65f_03c0); // ret
            asm!("dc cvau, {a}", "dsb ish", "ic ivau, {a}", "dsb ish", "isb", a = in(reg) code, options(nostack));
            let mut x0 = x0;
            asm!("blr {f}", f = in(reg) code, inout("x0") x0, out("x30") _, options(nostack));
            x0
        }
    }

    fn sysreg_op(rng: &mut Rng, write: bool) {
        let c = config();
        let (reg, expect): (SysReg, Expect) = if write { sysreg_write(rng, c.gic_v3) } else { sysreg_read(rng) };
        let value = if write { rng.next_u64() } else { 0x5a5a_5a5a_5a5a_5a5a };
        let insn = if write { reg.msr(0) } else { reg.mrs(0) };
        let (got, outcome) = capture(|| run_insn(insn, value));
        let (kind, name) = if write { (Kind::SysRegWrite, "msr") } else { (Kind::SysRegRead, "mrs") };
        let shown = if write { 0 } else { got };
        judge(kind, expect, outcome, shown, format_args!(
            "{name} S{}_{}_C{}_C{}_{} ({insn:#x})", reg.op0, reg.op1, reg.crn, reg.crm, reg.op2
        ));
    }

    // ---- storms -------------------------------------------------------

    fn wait_storm(rng: &mut Rng) {
        let n = 1 + rng.below(24);
        let form = rng.below(4);
        let (_, outcome) = capture(|| {
            for _ in 0..n {
                // SAFETY: waiting instructions; the 1 kHz tick ends every
                // wait (WFI also with IRQs masked at PSTATE, unmasked after).
                unsafe {
                    match form {
                        0 => asm!("wfi", options(nostack)),
                        1 => asm!("sevl", "wfe", "wfe", options(nostack)),
                        2 => asm!("sev", "wfe", options(nostack)),
                        _ => asm!("msr daifset, #2", "wfi", "msr daifclr, #2", options(nostack)),
                    }
                }
            }
        });
        judge(Kind::WaitStorm, Expect::Completes, outcome, 0, format_args!("{n} waits of form {form}"));
    }

    fn timer_storm(rng: &mut Rng) {
        let n = 8 + rng.below(56);
        let before = timer::ticks();
        let seeds: Vec<(u64, u64, u64)> = (0..n).map(|_| (rng.below(8), rng.below(400), rng.next_u64())).collect();
        let (_, outcome) = capture(|| {
            for &(ctl, delta, tval) in &seeds {
                // SAFETY: this vCPU's virtual timer only (restarted below);
                // the physical timer is trapped and hidden.
                unsafe {
                    asm!("mrs {t}, cntvct_el0", "add {t}, {t}, {d}", "msr cntv_cval_el0, {t}", "msr cntv_ctl_el0, {c}",
                        t = out(reg) _, d = in(reg) delta, c = in(reg) ctl, options(nostack));
                    if tval & 1 == 1 {
                        asm!("msr cntv_tval_el0, {v}", v = in(reg) (tval >> 40), options(nostack));
                    }
                    if tval & 2 == 2 {
                        asm!("msr cntp_ctl_el0, {v}", "msr cntp_cval_el0, {v}", "mrs {v}, cntp_tval_el0",
                            v = inout(reg) tval => _, options(nostack));
                    }
                    asm!("isb", options(nostack));
                }
            }
        });
        timer::start_periodic(TICK_HZ);
        let ticked = wait_until(200_000, || timer::ticks() > 0);
        judge(Kind::TimerStorm, Expect::Completes, outcome, 0, format_args!("{n} timer writes"));
        if !ticked {
            LATE_TICKS.fetch_add(1, Ordering::Relaxed);
        }
        let _ = before;
    }

    fn sgi_storm(rng: &mut Rng) {
        let c = config();
        let me = cpu::index();
        let n = 4 + rng.below(60);
        let values: Vec<u64> = (0..n).map(|_| rng.next_u64()).collect();
        let (_, outcome) = capture(|| {
            for &v in &values {
                if c.gic_v3 {
                    // INTID [27:24], IRM [40], Aff1..3 mostly 0 so they land.
                    let v = if v & 1 == 0 { v & 0x0000_0100_0f00_ffff } else { v };
                    // SAFETY: generating SGIs only makes them pending at the targets.
                    unsafe { asm!("msr icc_sgi1r_el1, {v}", "isb", v = in(reg) v, options(nostack)) };
                } else {
                    // SAFETY: GICD_SGIR: filter, targets and INTID of a virtual SGI.
                    unsafe { asm!("str {v:w}, [{a}]", v = in(reg) v & 0x03ff_800f, a = in(reg) guest::GICD_BASE + 0xf00, options(nostack)) };
                }
            }
        });
        judge(Kind::SgiStorm, Expect::Completes, outcome, 0, format_args!("{n} SGIs"));
        let before = SGIS[me].load(Ordering::SeqCst);
        let sent = gic::send_sgi(rng.below(16) as u32, me);
        if sent.is_ok() && !wait_until(200_000, || SGIS[me].load(Ordering::SeqCst) > before) {
            LATE_SGIS.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_sgi(_intid: u32) {
        SGIS[cpu::index()].fetch_add(1, Ordering::SeqCst);
    }

    // ---- the loop -----------------------------------------------------

    /// What ended a vCPU's loop.
    #[derive(PartialEq, Eq)]
    enum Ended {
        Time,
        SwitchOff,
    }

    fn chaos_loop(mut rng: Rng, until: u64) -> Ended {
        let me = cpu::index();
        for i in 0..16 {
            gic::enable(i);
        }
        timer::start_periodic(TICK_HZ);
        cpu::enable_irqs();
        while cpu::counter() < until && !STOP.load(Ordering::SeqCst) {
            let kind = Kind::draw(&mut rng);
            if config().kinds & (1 << kind as u32) == 0 {
                continue;
            }
            OPS[me].fetch_add(1, Ordering::Relaxed);
            match kind {
                Kind::Hypercall => hypercall_op(&mut rng),
                Kind::Psci => psci_op(&mut rng, Conduit::Hvc),
                Kind::Smc => psci_op(&mut rng, Conduit::Smc),
                Kind::Load => load_op(&mut rng),
                Kind::Store => store_op(&mut rng),
                Kind::CacheByAddress => cache_by_address_op(&mut rng),
                Kind::CacheBySetWay => cache_by_set_way_op(&mut rng),
                Kind::SysRegRead => sysreg_op(&mut rng, false),
                Kind::SysRegWrite => sysreg_op(&mut rng, true),
                Kind::WaitStorm => wait_storm(&mut rng),
                Kind::TimerStorm => timer_storm(&mut rng),
                Kind::SgiStorm => sgi_storm(&mut rng),
                Kind::CpuOffOn => {
                    if me != 0 {
                        BY_KIND[Kind::CpuOffOn as usize][0].fetch_add(1, Ordering::Relaxed);
                        BY_KIND[Kind::CpuOffOn as usize][1].fetch_add(1, Ordering::Relaxed);
                        timer::stop();
                        return Ended::SwitchOff;
                    }
                    restart_siblings();
                }
            }
        }
        timer::stop();
        Ended::Time
    }

    /// vCPU 0: CPU_ON every sibling with the proper entry point; an off one
    /// (it switched itself off) starts again.
    fn restart_siblings() {
        let c = config();
        for (i, &mpidr) in c.mpidrs.iter().enumerate().skip(1).take(MAX_CPUS - 1) {
            let r = smp::cpu_on(i, mpidr, smp::context_id(i, RESTART_TAG), secondary);
            let outcome = if r.is_ok() { Outcome::Completed } else { Outcome::Exception { esr: 0 } };
            let value = r.unwrap_or(0) as u64;
            judge(Kind::CpuOffOn, Expect::Returns(&[psci::SUCCESS, psci::ALREADY_ON, psci::ON_PENDING]), outcome, value,
                format_args!("CPU_ON vCPU {i} (mpidr {mpidr:#x})"));
            if r == Ok(psci::SUCCESS) {
                RESTARTS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    const RESTART_TAG: u64 = 0xc4a05;
    static DEADLINE: AtomicU64 = AtomicU64::new(0);

    fn secondary(context: u64) {
        let me = cpu::index();
        let rng = Rng::new(config().seed ^ (me as u64).wrapping_mul(0x9e37_79b9) ^ cpu::counter() ^ (context << 16));
        let _ = chaos_loop(rng, DEADLINE.load(Ordering::SeqCst));
        cpu::disable_irqs();
    }

    fn main(env: &'static Env) {
        let cmd = env.cmdline();
        let seed = cmd.get_u64("chaos.seed").and_then(Result::ok).unwrap_or(1);
        let ms = cmd.get_u64("chaos.ms").and_then(Result::ok).unwrap_or(5000).clamp(100, 3_600_000);
        let end_with_cpu_off = cmd.get("chaos.end") == Some("cpu-off");
        let lr_starve = cmd.get_u64("chaos.lr-starve").and_then(Result::ok) == Some(1);
        let kinds = match cmd.get("chaos.kinds") {
            Some(list) => Kind::ALL.iter().filter(|k| list.split(['+', ',']).any(|n| n == k.name())).fold(0, |m, k| m | 1 << *k as u32),
            None => u32::MAX,
        };
        let Some(windows) = Windows::from_fdt(env.blob) else {
            check!("devicetree", false, "cannot walk the device tree");
            return;
        };
        let ram = env.platform.memory.first().map(|r| (r.base.as_u64(), r.size)).unwrap_or((guest::RAM_BASE, 16 << 20));
        let mpidrs: Vec<u64> = env.platform.cpus.iter().take(MAX_CPUS).map(|c| c.mpidr).collect();
        let gic_v3 = env.platform.gic.version == GicVersion::V3;
        CONFIG.call_once(|| Config { seed, ram, windows, gic_v3, mpidrs, pa_limit: 1u64 << cpu::pa_bits().min(48), lr_starve, kinds });
        for i in 0..16 {
            gic::set_handler(i, on_sgi);
        }
        set_fault_hook(Some(on_fault));
        let start = cpu::counter();
        let until = start + ms * cpu::counter_hz() / 1000;
        DEADLINE.store(until, Ordering::SeqCst);
        println!("NOTE chaos: seed {seed}, {ms} ms on {} vCPU(s), GIC v{}", config().mpidrs.len(), if gic_v3 { 3 } else { 2 });
        for (i, &mpidr) in config().mpidrs.iter().enumerate().skip(1) {
            let _ = smp::cpu_on(i, mpidr, smp::context_id(i, 0), secondary);
        }
        let _ = chaos_loop(Rng::new(seed), until);
        STOP.store(true, Ordering::SeqCst);
        // Secondaries finish their operation (a storm takes at most some
        // 100 ms) and switch off.
        let settled = wait_until(2_000_000, || smp::online() == 1);
        set_fault_hook(None);
        cpu::disable_irqs();
        report(seed, ms, cpu::elapsed_us(start), settled);
        if end_with_cpu_off {
            testkit::rt::print_done();
            println!("NOTE chaos: vCPU 0, the last one on, calls CPU_OFF");
            let _ = testkit::arch::psci::call(psci::CPU_OFF as u32, 0, 0, 0);
            println!("NOTE chaos: CPU_OFF returned");
            testkit::arch::psci::park()
        }
    }

    fn report(seed: u64, ms: u64, us: u64, settled: bool) {
        let ops: u64 = OPS.iter().map(|o| o.load(Ordering::Relaxed)).sum();
        for kind in Kind::ALL {
            let r = &BY_KIND[kind as usize];
            let n: [u64; 5] = core::array::from_fn(|i| r[i].load(Ordering::Relaxed));
            println!(
                "NOTE chaos: {}: {} ops: completed {}, undefined {}, data-abort {}, other {}",
                kind.name(), n[0], n[1], n[2], n[3], n[4]
            );
        }
        let mut classes = String::new();
        for (class, n) in BY_CLASS.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                let _ = write!(classes, " EC{class:#04x}={n}");
            }
        }
        let violations = VIOLATIONS.load(Ordering::SeqCst);
        let restarts = RESTARTS.load(Ordering::Relaxed);
        let sgis: u64 = SGIS.iter().map(|s| s.load(Ordering::Relaxed)).sum();
        println!(
            "RESULT chaos: seed={seed} ms={ms} us={us} ops={ops} violations={violations} restarts={restarts} sgis={sgis} exceptions:{classes}"
        );
        println!(
            "NOTE chaos: liveness: {} timer restart(s) with no tick within 200 ms, {} SGI(s) to itself not there within 200 ms",
            LATE_TICKS.load(Ordering::Relaxed),
            LATE_SGIS.load(Ordering::Relaxed)
        );
        let mut detail = String::new();
        for v in FIRST_VIOLATIONS.lock().iter() {
            let _ = write!(detail, "; {v}");
        }
        check!("outcomes", violations == 0 && ops > 0, "{ops} operations in {us} us, {violations} outside the architecture's answers{detail}");
        let per_cpu: Vec<u64> = OPS.iter().take(config().mpidrs.len()).map(|o| o.load(Ordering::Relaxed)).collect();
        check!(
            "every-vcpu",
            settled && per_cpu.iter().all(|&n| n > 0),
            "operations per vCPU {per_cpu:?}; {} restart(s) of switched-off vCPUs; secondaries {}",
            restarts,
            if settled { "off at the end" } else { "still on after 2 s" }
        );
    }

    extern crate alloc;
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is a guest VM image: build it with scripts/build-guests.sh");
}
