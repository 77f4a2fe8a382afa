//! Hypercall ABI v1.
//!
//! Calling convention (SMC Calling Convention, Arm DEN 0028, fast calls):
//! `HVC #0` with the function ID in `x0` and arguments in `x1..=x6`. The
//! result comes back in `x0` as a signed 64-bit value: non-negative on
//! success, one of the negative [`Error`] codes on failure; further results
//! in `x1..=x3`. Registers `x4..=x17` are preserved except where a call
//! documents them as results. PSCI and SMCCC calls (function IDs
//! 0x8400_xxxx / 0xC400_xxxx, 0x8000_xxxx) use the same instruction.
//!
//! Hypervisor calls live in the SMCCC "vendor specific hypervisor service"
//! range: fast call, SMC64, owning entity 6, so IDs are `0xC600_0000 | n`.

/// `HVC` immediate for every call (SMCCC requires 0).
pub const HVC_IMMEDIATE: u16 = 0;

/// ABI version: major in bits [31:16], minor in bits [15:0]. A dom0 built for
/// major M works with any hypervisor of the same major and a minor at least
/// as high as the calls it uses were introduced in.
pub const VERSION_MAJOR: u16 = 1;
/// 1.1: `VmCopy`, `IrqLine`, `IoMap` flags (x4), posted writes and the
/// `WAITING_ELSEWHERE` request flag, the rings' `polling` words.
/// 1.2: `GuestMap`, `GuestUnmap`, `VmConfigure` (the per-VM fault policy),
/// `VmInfo::log_dropped`.
/// 1.3: `IoShadow` (register values the hypervisor answers reads with).
pub const VERSION_MINOR: u16 = 3;

pub const fn version() -> u64 {
    ((VERSION_MAJOR as u64) << 16) | VERSION_MINOR as u64
}

const BASE: u32 = 0xC600_0000;

/// Hypercall function IDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Function {
    /// `() -> x0 = version()`. Any VM may call it.
    Version = BASE,
    /// Read the hypervisor's log ring (dom0 only).
    /// `(x1 = buffer IPA, x2 = buffer length, x3 = cursor)` →
    /// `x0 = bytes copied, x1 = next cursor, x2 = bytes lost`.
    /// Cursors count bytes ever logged; start with 0. If the cursor is older
    /// than the ring holds, reading starts at the oldest byte held and `x2`
    /// says how many were skipped. 0 bytes copied means up to date. The
    /// buffer must lie in the caller's RAM.
    LogRead = BASE + 1,
    /// Write to the hypervisor's log (any VM; tagged with the VM).
    /// `(x1 = buffer IPA, x2 = length ≤ 256)` → `x0 = 0`. Rate-limited per
    /// VM ([`LOG_WRITE_BURST`] lines, then [`LOG_WRITE_PER_SECOND`] a
    /// second); a line over the limit is dropped, counted in
    /// [`VmInfo::log_dropped`], and the call returns `Busy`.
    LogWrite = BASE + 2,
    /// Create a VM (dom0 only): `(x1 = vCPUs 1..=8, x2 = memory bytes
    /// (multiple of 2 MiB, at least 2 MiB), x3 = name IPA, x4 = name length
    /// ≤ 31, x5 = weight 1..=1024 (0: 256), x6 = pinning: bit i allows
    /// physical CPU i (0: any))` → `x0 = VM id`. The VM's RAM is zeroed and
    /// appears at [`guest::RAM_BASE`]; the VM stays `Created` until `VmStart`.
    VmCreate = BASE + 3,
    /// Copy dom0 memory into a VM's RAM (dom0 only): `(x1 = VM id, x2 =
    /// destination IPA in the VM, x3 = source IPA in dom0, x4 = length)`.
    /// Both ranges must lie in the respective VM's RAM.
    VmWrite = BASE + 4,
    /// Set a vCPU's entry state (dom0 only, VM `Created`): `(x1 = VM id, x2 =
    /// vCPU, x3 = PC, x4 = x0)`. vCPU 0 starts at `VmStart`; the others wait
    /// for PSCI `CPU_ON` unless given an entry here.
    VmSetEntry = BASE + 5,
    /// `(x1 = VM id)`: start a `Created` VM.
    VmStart = BASE + 6,
    /// `(x1 = VM id)`: stop scheduling a running VM's vCPUs.
    VmPause = BASE + 7,
    /// `(x1 = VM id)`: resume a paused VM.
    VmUnpause = BASE + 8,
    /// `(x1 = VM id)`: destroy a VM in any state; its memory is zeroed and
    /// returned.
    VmDestroy = BASE + 9,
    /// `(x1 = VM id, x2 = buffer IPA, x3 = buffer length ≥ size of
    /// [`VmInfo`])`: fills a [`VmInfo`]. Unknown id → `InvalidParameter`.
    VmInfo = BASE + 10,
    /// Read the guests' console output ring (dom0 only): as `LogRead`.
    ConsoleRead = BASE + 11,
    /// The page allocator's state (dom0 only): `() → x0 = free pages,
    /// x1 = total pages` (4 KiB pages of RAM the hypervisor manages).
    MemInfo = BASE + 12,
    /// Set up IO forwarding (dom0 only, once): `(x1 = IPA of a 4 KiB page
    /// of dom0's RAM, page-aligned)`. The hypervisor initialises the page
    /// as an `ioreq::IoPage` (both rings empty) and from then on writes IO
    /// requests into it, raising [`IO_EVENT_INTID`] on one of dom0's vCPUs
    /// (one on another physical CPU than the requester, when there is one).
    IoSetup = BASE + 13,
    /// Forward a guest's accesses to `[x2, x2 + x3)` (page-aligned, outside
    /// its RAM and the devices the hypervisor emulates, except that the
    /// whole console UART window may be taken over) to dom0 (dom0 only; VM
    /// `Created`): `(x1 = VM id, x2 = base IPA, x3 = size, x4 = flags:
    /// 0 or ioreq::IO_MAP_POST_WRITES)`.
    IoMap = BASE + 14,
    /// Dom0 has put completions in the page's completion ring: the
    /// hypervisor drains it and resumes the vCPUs (dom0 only). `→ x0 =
    /// completions taken`.
    IoComplete = BASE + 15,
    /// Copy between a guest's RAM and dom0's (dom0 only; a backend's
    /// DMA-like access, in any VM state): `(x1 = VM id, x2 = IPA in the
    /// guest, x3 = IPA in dom0, x4 = length ≤ [`MAX_COPY`], x5 =
    /// [`CopyDirection`])`. The guest range must lie in that guest's RAM and
    /// the dom0 range in one region of dom0's RAM, else `BadAddress` and
    /// nothing is copied. Concurrent with the guest's own accesses, like a
    /// device's DMA.
    VmCopy = BASE + 16,
    /// Drive one of a guest's interrupt lines (dom0 only): `(x1 = VM id,
    /// x2 = INTID, an SPI 32..32 + the guest's SPI count, x3 =`
    /// [`IrqAction`]`)`. A line raised stays raised until lowered (level);
    /// `Pulse` latches one edge.
    IrqLine = BASE + 17,
    /// Map part of a guest's RAM into dom0's address space (dom0 only): `(x1
    /// = VM id, x2 = dom0 IPA of the window, x3 = guest IPA, x4 = length)`,
    /// all multiples of 4 KiB, length > 0. `[x3, x3 + x4)` must be that
    /// guest's RAM (else `BadAddress`); `[x2, x2 + x4)` must lie in dom0's
    /// IPA space, outside everything mapped or emulated for dom0 and every
    /// other window (else `InvalidParameter`). From then on dom0's accesses
    /// to the window reach the guest's RAM, as a device's DMA would, until
    /// `GuestUnmap` or the guest's destruction, which removes the window
    /// (with the TLB invalidation that needs) before its pages are freed.
    GuestMap = BASE + 18,
    /// Remove a window `GuestMap` made (dom0 only): `(x1 = VM id, x2 = dom0
    /// IPA the window starts at)`; `InvalidParameter` if there is none.
    GuestUnmap = BASE + 19,
    /// Set one of a guest's options (dom0 only; VM `Created`): `(x1 = VM
    /// id, x2 =` [`VmOption`]`, x3 = value)`.
    VmConfigure = BASE + 20,
    /// Publish the value of one register dom0 emulates, for the
    /// hypervisor to answer the guest's reads of it without a request
    /// (dom0 only): `(x1 = VM id, x2 = the register's IPA, 4-byte aligned,
    /// inside one of the VM's `IoMap` windows, x3 = the value (u32) or
    /// [`SHADOW_NONE`], x4 = the `seq` of the latest request to that
    /// window dom0 has handled (0 if none), x5 = keep mask)`. Until a guest
    /// write to the window invalidates it, a read of 1, 2 or 4 bytes inside
    /// the register gets the value's bytes. A write at window offset `4i`
    /// (i < 64) with bit `i` of the keep mask set leaves the value valid;
    /// any other write to the window makes it invalid as the write
    /// traps, and reads go to dom0 again until dom0 publishes anew. `Busy`
    /// (nothing published) if a write to the window that dom0 had not
    /// handled at `seq` already made the value invalid: dom0 publishes
    /// again once it has. At most [`IO_SHADOWS`] registers per VM
    /// (`NoMemory` beyond). docs/hypercalls.md, "Register shadows".
    IoShadow = BASE + 21,
}

/// `IoShadow`'s x3 for "no value": reads go to dom0 again.
pub const SHADOW_NONE: u64 = 1 << 32;
/// How many registers of one VM `IoShadow` can publish.
pub const IO_SHADOWS: usize = 2;

/// Whether a guest write at window offset `offset` leaves a value
/// published with keep mask `keep` valid (`IoShadow`): bit `i` names the
/// aligned word at `4i`, for `i` < 64; any other write invalidates.
pub const fn shadow_keeps(keep: u64, offset: u64) -> bool {
    offset % 4 == 0 && offset / 4 < 64 && keep & 1 << (offset / 4) != 0
}

/// Lines a VM may write with `LogWrite` at once before the rate limit.
pub const LOG_WRITE_BURST: u32 = 32;
/// Lines a VM may write with `LogWrite` per second, sustained.
pub const LOG_WRITE_PER_SECOND: u32 = 16;

/// `VmConfigure`'s options (x2), each with its values (x3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum VmOption {
    /// What happens when the guest touches an IPA with nothing behind it
    /// (a load, a store, an instruction fetch, or its own MMU's table
    /// walk): a [`FaultPolicy`].
    OnFault = 0,
}

impl VmOption {
    pub const fn from_u64(v: u64) -> Option<Self> {
        match v {
            0 => Some(Self::OnFault),
            _ => None,
        }
    }
}

/// `VmOption::OnFault`'s values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum FaultPolicy {
    /// The architecture's answer (the default): the guest takes a
    /// synchronous external abort (a data or prefetch abort; on its table
    /// walk, the walk's fault status with the lookup level) and runs on.
    Abort = 0,
    /// The VM is stopped instead (`StopReason::Crashed`, with the syndrome
    /// and PC): for guests whose owner would rather have them dead than
    /// running on after such a fault.
    Stop = 1,
}

impl FaultPolicy {
    pub const fn from_u64(v: u64) -> Option<Self> {
        match v {
            0 => Some(Self::Abort),
            1 => Some(Self::Stop),
            _ => None,
        }
    }
}

/// Most bytes one `VmCopy` moves.
pub const MAX_COPY: u64 = 1 << 20;

/// `VmCopy`'s direction (x5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum CopyDirection {
    /// Guest RAM → dom0.
    FromGuest = 0,
    /// Dom0 → guest RAM.
    ToGuest = 1,
}

impl CopyDirection {
    pub const fn from_u64(v: u64) -> Option<Self> {
        match v {
            0 => Some(Self::FromGuest),
            1 => Some(Self::ToGuest),
            _ => None,
        }
    }
}

/// `IrqLine`'s action (x3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum IrqAction {
    Lower = 0,
    Raise = 1,
    Pulse = 2,
}

impl IrqAction {
    pub const fn from_u64(v: u64) -> Option<Self> {
        match v {
            0 => Some(Self::Lower),
            1 => Some(Self::Raise),
            2 => Some(Self::Pulse),
            _ => None,
        }
    }
}

/// The interrupt dom0 receives when IO requests are waiting: PPI 15 (INTID
/// 31), edge, on dom0's vCPU 0. Dom0's device tree names it in the
/// `/hypervisor` node's `interrupts`.
pub const IO_EVENT_INTID: u32 = 31;

impl Function {
    /// Every function, in ID order.
    pub const ALL: [Function; 22] = [
        Function::Version,
        Function::LogRead,
        Function::LogWrite,
        Function::VmCreate,
        Function::VmWrite,
        Function::VmSetEntry,
        Function::VmStart,
        Function::VmPause,
        Function::VmUnpause,
        Function::VmDestroy,
        Function::VmInfo,
        Function::ConsoleRead,
        Function::MemInfo,
        Function::IoSetup,
        Function::IoMap,
        Function::IoComplete,
        Function::VmCopy,
        Function::IrqLine,
        Function::GuestMap,
        Function::GuestUnmap,
        Function::VmConfigure,
        Function::IoShadow,
    ];
    pub const fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            x if x == Self::Version as u32 => Self::Version,
            x if x == Self::LogRead as u32 => Self::LogRead,
            x if x == Self::LogWrite as u32 => Self::LogWrite,
            x if x == Self::VmCreate as u32 => Self::VmCreate,
            x if x == Self::VmWrite as u32 => Self::VmWrite,
            x if x == Self::VmSetEntry as u32 => Self::VmSetEntry,
            x if x == Self::VmStart as u32 => Self::VmStart,
            x if x == Self::VmPause as u32 => Self::VmPause,
            x if x == Self::VmUnpause as u32 => Self::VmUnpause,
            x if x == Self::VmDestroy as u32 => Self::VmDestroy,
            x if x == Self::VmInfo as u32 => Self::VmInfo,
            x if x == Self::ConsoleRead as u32 => Self::ConsoleRead,
            x if x == Self::MemInfo as u32 => Self::MemInfo,
            x if x == Self::IoSetup as u32 => Self::IoSetup,
            x if x == Self::IoMap as u32 => Self::IoMap,
            x if x == Self::IoComplete as u32 => Self::IoComplete,
            x if x == Self::VmCopy as u32 => Self::VmCopy,
            x if x == Self::IrqLine as u32 => Self::IrqLine,
            x if x == Self::GuestMap as u32 => Self::GuestMap,
            x if x == Self::GuestUnmap as u32 => Self::GuestUnmap,
            x if x == Self::VmConfigure as u32 => Self::VmConfigure,
            x if x == Self::IoShadow as u32 => Self::IoShadow,
            _ => return None,
        })
    }

    /// Is `id` in the hypervisor-call range at all (known or not)?
    pub const fn in_range(id: u32) -> bool {
        id & 0xFFFF_0000 == BASE
    }
}

/// Negative error codes in `x0`. `NotSupported` is SMCCC's -1, so callers
/// probing an unknown ID get the answer SMCCC promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum Error {
    /// Unknown function ID.
    NotSupported = -1,
    /// An argument is out of range or malformed.
    InvalidParameter = -2,
    /// The caller may not make this call (e.g. a guest calling a dom0 call).
    Denied = -3,
    /// A buffer is not entirely inside the caller's RAM.
    BadAddress = -4,
    /// The hypervisor is out of memory.
    NoMemory = -5,
    /// The target is in a state where the call makes no sense.
    Busy = -6,
}

impl Error {
    pub const fn code(self) -> i64 {
        self as i64
    }

    pub const fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            -1 => Self::NotSupported,
            -2 => Self::InvalidParameter,
            -3 => Self::Denied,
            -4 => Self::BadAddress,
            -5 => Self::NoMemory,
            -6 => Self::Busy,
            _ => return None,
        })
    }

    pub const fn description(self) -> &'static str {
        match self {
            Self::NotSupported => "not supported",
            Self::InvalidParameter => "invalid parameter",
            Self::Denied => "permission denied",
            Self::BadAddress => "bad address",
            Self::NoMemory => "out of memory",
            Self::Busy => "busy",
        }
    }
}

/// Splits a raw `x0` into a result or an error. Negative values that are
/// not known codes are reported as `NotSupported`.
pub const fn decode_result(x0: u64) -> Result<u64, Error> {
    let signed = x0 as i64;
    if signed >= 0 {
        Ok(x0)
    } else {
        match Error::from_code(signed) {
            Some(e) => Err(e),
            None => Err(Error::NotSupported),
        }
    }
}

/// Most VMs at once, dom0 included: dom0 is VM 0 and guests' ids run from
/// 1 to `MAX_VMS - 1`, so at most 63 guests. `VmCreate` answers `Busy`
/// when every id is taken.
pub const MAX_VMS: u16 = 64;
/// Most vCPUs one guest may have (`VmCreate`'s `x1`): the virtual GIC's
/// limit, the eight CPU interfaces GICv2 has, kept on GICv3 too.
pub const MAX_VCPUS: u32 = 8;
/// Longest VM name (bytes, UTF-8).
pub const MAX_NAME: usize = 31;

/// A VM's lifecycle state (`VmInfo::state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum VmState {
    Created = 0,
    Running = 1,
    Paused = 2,
    Stopped = 3,
}

impl VmState {
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Created,
            1 => Self::Running,
            2 => Self::Paused,
            3 => Self::Stopped,
            _ => return None,
        })
    }
}

/// Why a VM stopped (`VmInfo::stop_reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum StopReason {
    None = 0,
    /// PSCI `SYSTEM_OFF`.
    SystemOff = 1,
    /// PSCI `SYSTEM_RESET`.
    SystemReset = 2,
    /// A fault its `FaultPolicy::Stop` stops it for (an access, fetch or
    /// table walk into an IPA with nothing behind it; for dom0, which has no
    /// such policy, nothing stops it): `stop_syndrome` holds the ESR,
    /// `stop_address` the PC.
    Crashed = 3,
}

impl StopReason {
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::None,
            1 => Self::SystemOff,
            2 => Self::SystemReset,
            3 => Self::Crashed,
            _ => return None,
        })
    }
}

/// Exit counters in `VmInfo::exits`, by reason.
pub const EXIT_REASONS: [&str; 8] = ["hvc", "smc", "mmio", "wfi", "sysreg", "irq", "abort", "other"];

/// What `VmInfo` writes into dom0's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct VmInfo {
    pub id: u32,
    /// [`VmState`] as u32.
    pub state: u32,
    pub vcpus: u32,
    /// [`StopReason`] as u32.
    pub stop_reason: u32,
    pub memory: u64,
    pub stop_syndrome: u64,
    pub stop_address: u64,
    /// Total time its vCPUs ran, in nanoseconds.
    pub cpu_time_ns: u64,
    /// Exits by reason, indexed like [`EXIT_REASONS`].
    pub exits: [u64; 8],
    pub name_len: u32,
    pub weight: u32,
    pub name: [u8; 32],
    /// `LogWrite` lines dropped by the rate limit.
    pub log_dropped: u64,
}

const _: () = assert!(core::mem::size_of::<VmInfo>() == 6 * 8 + 8 * 8 + 8 + 32 + 8);

impl VmInfo {
    pub const fn zeroed() -> Self {
        VmInfo {
            id: 0,
            state: 0,
            vcpus: 0,
            stop_reason: 0,
            memory: 0,
            stop_syndrome: 0,
            stop_address: 0,
            cpu_time_ns: 0,
            exits: [0; 8],
            name_len: 0,
            weight: 0,
            name: [0; 32],
            log_dropped: 0,
        }
    }

    pub fn name(&self) -> &str {
        let len = (self.name_len as usize).min(self.name.len());
        core::str::from_utf8(&self.name[..len]).unwrap_or("?")
    }

    /// The bytes written into dom0's buffer (little-endian, as laid out).
    pub fn to_bytes(&self) -> [u8; core::mem::size_of::<VmInfo>()] {
        let mut out = [0u8; core::mem::size_of::<VmInfo>()];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&self.id.to_le_bytes());
        put(&self.state.to_le_bytes());
        put(&self.vcpus.to_le_bytes());
        put(&self.stop_reason.to_le_bytes());
        put(&self.memory.to_le_bytes());
        put(&self.stop_syndrome.to_le_bytes());
        put(&self.stop_address.to_le_bytes());
        put(&self.cpu_time_ns.to_le_bytes());
        for e in self.exits {
            put(&e.to_le_bytes());
        }
        put(&self.name_len.to_le_bytes());
        put(&self.weight.to_le_bytes());
        put(&self.name);
        put(&self.log_dropped.to_le_bytes());
        out
    }

    /// Reads what `to_bytes` wrote; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut at = 0;
        let mut take = |n: usize| {
            let b = bytes.get(at..at + n);
            at += n;
            b
        };
        let u32_ = |b: Option<&[u8]>| b.map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let u64_ = |b: Option<&[u8]>| {
            b.map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        };
        let id = u32_(take(4))?;
        let state = u32_(take(4))?;
        let vcpus = u32_(take(4))?;
        let stop_reason = u32_(take(4))?;
        let memory = u64_(take(8))?;
        let stop_syndrome = u64_(take(8))?;
        let stop_address = u64_(take(8))?;
        let cpu_time_ns = u64_(take(8))?;
        let mut exits = [0u64; 8];
        for e in &mut exits {
            *e = u64_(take(8))?;
        }
        let name_len = u32_(take(4))?;
        let weight = u32_(take(4))?;
        let mut name = [0u8; 32];
        name.copy_from_slice(take(32)?);
        let log_dropped = u64_(take(8))?;
        Some(VmInfo { id, state, vcpus, stop_reason, memory, stop_syndrome, stop_address, cpu_time_ns, exits, name_len, weight, name, log_dropped })
    }
}

/// The platform every guest VM sees: QEMU virt's layout, so kernels and
/// programs built for QEMU's `virt` machine run unchanged. The hypervisor
/// decides what to trap and map from these values, and the toolstack
/// builds the guest's device tree from the same values
/// (`hv_devtree::guest`), so the two cannot drift apart.
pub mod guest {
    /// Guest RAM starts here.
    pub const RAM_BASE: u64 = 0x4000_0000;
    /// GIC distributor (emulated), 64 KiB.
    pub const GICD_BASE: u64 = 0x0800_0000;
    pub const GICD_SIZE: u64 = 0x1_0000;
    /// GICv2 CPU interface (the host's GICV frame is mapped here).
    pub const GICC_BASE: u64 = 0x0801_0000;
    pub const GICC_SIZE: u64 = hv_arm::gic::gicc::FRAME_SIZE as u64;
    /// GICv3 redistributors (emulated), 128 KiB per vCPU.
    pub const GICR_BASE: u64 = 0x080A_0000;
    pub const GICR_STRIDE: u64 = hv_arm::gic::gicr::STRIDE as u64;
    /// PL011 console UART.
    pub const UART_BASE: u64 = 0x0900_0000;
    pub const UART_SIZE: u64 = hv_arm::pl011::reg::FRAME_SIZE;
    /// The UART's SPI number (INTID 33).
    pub const UART_SPI: u32 = 1;
    /// virtio-mmio slots: base + i * stride, SPI `VIRTIO_SPI_BASE + i`.
    pub const VIRTIO_BASE: u64 = 0x0A00_0000;
    pub const VIRTIO_STRIDE: u64 = 0x200;
    pub const VIRTIO_SLOTS: u32 = 32;
    pub const VIRTIO_SPI_BASE: u32 = 16;
    /// Timer PPIs as on QEMU virt: secure phys, non-secure phys, virtual,
    /// hypervisor (PPI numbers; INTID = PPI + 16).
    pub const TIMER_PPIS: [u32; 4] = [13, 14, 11, 10];
    /// Dom0's MMIO test device (forwarded to dom0 with `IoMap`): 32 64-bit
    /// scratch registers and a read-only magic value at 0x100.
    pub const TEST_DEVICE_BASE: u64 = 0x0B00_0000;
    pub const TEST_DEVICE_SIZE: u64 = 0x1000;
    /// The vCPUs' stolen-time structures (`crate::pvtime`, 64 bytes each,
    /// vCPU i at `PV_TIME_BASE + 64 * i`): a hypervisor page mapped
    /// read-only, outside RAM (where QEMU's `virt` puts its own).
    pub const PV_TIME_BASE: u64 = 0x090A_0000;
    pub const PV_TIME_SIZE: u64 = 0x1000;
    /// Where the toolstack places a raw binary (QEMU's rule for `-kernel`
    /// on virt: 64 KiB above the RAM base, entered at its first byte).
    pub const RAW_KERNEL_OFFSET: u64 = 0x1_0000;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_in_the_vendor_hypervisor_range() {
        for f in Function::ALL {
            assert_eq!(Function::from_id(f as u32), Some(f));
            assert!(Function::in_range(f as u32));
            // SMCCC: bit 31 fast call, bit 30 SMC64, bits [29:24] owner 6.
            assert_eq!((f as u32) >> 24, 0xC6);
        }
        assert_eq!(Function::from_id(0xC600_FFFF), None);
        assert!(!Function::in_range(0x8400_0000));
        // `ALL` is complete and in ID order.
        let known: usize = (BASE..BASE + 0x100).filter(|&id| Function::from_id(id).is_some()).count();
        assert_eq!(known, Function::ALL.len());
        assert!(Function::ALL.windows(2).all(|w| (w[0] as u32) < (w[1] as u32)));
    }

    #[test]
    fn vm_info_round_trips_through_bytes() {
        let mut info = VmInfo::zeroed();
        info.id = 3;
        info.state = VmState::Stopped as u32;
        info.stop_reason = StopReason::Crashed as u32;
        info.stop_syndrome = 0x0200_0000;
        info.exits = [1, 2, 3, 4, 5, 6, 7, 8];
        info.name[..4].copy_from_slice(b"test");
        info.name_len = 4;
        info.log_dropped = 9;
        let bytes = info.to_bytes();
        assert_eq!(VmInfo::from_bytes(&bytes), Some(info));
        assert_eq!(VmInfo::from_bytes(&bytes[..bytes.len() - 1]), None);
        assert_eq!(info.name(), "test");
    }

    #[test]
    fn results_decode_errors_and_values() {
        assert_eq!(decode_result(5), Ok(5));
        assert_eq!(decode_result(Error::Denied.code() as u64), Err(Error::Denied));
        assert_eq!(decode_result(-99i64 as u64), Err(Error::NotSupported));
        assert_eq!(Error::NotSupported.code(), -1);
    }
}
