//! SD cards on an SDHCI controller (the Raspberry Pi 4's EMMC2; QEMU
//! `raspi4b` models it as a generic SDHCI without DMA): card
//! initialisation, multi-block PIO reads and writes, flush, and errors
//! turned into [`SdError`] values, never a hang.
//!
//! Layers:
//! - [`SdhciRegisters`] / the `register_bitfields!` blocks: the register
//!   map (SD Host Controller Simplified Specification 3.00, section 2),
//!   accessed only as 32-bit words (the BCM283x controllers drop 8- and
//!   16-bit writes, so Transfer Mode + Command, Host Control + Power, Clock
//!   + Timeout + Reset are written together).
//! - [`Controller`]: the register file and a microsecond clock. [`Mmio`] is
//!   the real one; the tests' fake (`sdhci/fake.rs`) models a controller
//!   and a card, with faults to inject.
//! - [`SdCard`]: the command and card state machine (SD Physical Layer
//!   Simplified Specification 9.00, 4.2 card identification, 4.3 data
//!   transfer), arch-neutral and host-tested.
//!
//! Every wait is bounded by the clock ([`Timeouts`]); on a command or data
//! error the controller's CMD and DAT lines are reset, an open multi-block
//! transfer is stopped (CMD12), and the request fails. A card that
//! disappears (card-detect off, or the card no longer answering SEND_STATUS)
//! is forgotten: every later request fails with [`SdError::NoCard`].
//!
//! Flush: the card's own volatile cache (SD 6.0 "cache", off unless the
//! host enables it with CMD48/49) is never enabled, and a write request
//! returns only after the controller's Transfer Complete, which for writes
//! follows the card's busy signal (programming done). So data is durable
//! when `write` returns; [`SdCard::flush`] confirms the card is back in the
//! transfer state with no error bits set (SEND_STATUS), so a card that
//! failed or vanished after the last write is reported.
//!
//! Hand-written: no `no_std` SDHCI crate fits a polled driver over an
//! abstract register file (the ones published bind to one SoC's HAL).

use core::fmt;

use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs, LocalRegisterCopy};

register_bitfields! [u32,
    /// 0x04 Block Size (bits 15:0) and Block Count (31:16) (SDHC 2.2.2-3).
    pub BLOCK [
        SIZE OFFSET(0) NUMBITS(12) [],
        COUNT OFFSET(16) NUMBITS(16) []
    ],
    /// 0x0C Transfer Mode (15:0) and Command (31:16) (SDHC 2.2.5-6).
    pub CMDTM [
        DMA_ENABLE OFFSET(0) NUMBITS(1) [],
        BLOCK_COUNT_ENABLE OFFSET(1) NUMBITS(1) [],
        AUTO_CMD OFFSET(2) NUMBITS(2) [
            None = 0,
            Cmd12 = 1
        ],
        READ OFFSET(4) NUMBITS(1) [],
        MULTI_BLOCK OFFSET(5) NUMBITS(1) [],
        RESPONSE OFFSET(16) NUMBITS(2) [
            None = 0,
            Bits136 = 1,
            Bits48 = 2,
            Bits48Busy = 3
        ],
        CRC_CHECK OFFSET(19) NUMBITS(1) [],
        INDEX_CHECK OFFSET(20) NUMBITS(1) [],
        DATA_PRESENT OFFSET(21) NUMBITS(1) [],
        INDEX OFFSET(24) NUMBITS(6) []
    ],
    /// 0x24 Present State (SDHC 2.2.9).
    pub PRESENT [
        CMD_INHIBIT OFFSET(0) NUMBITS(1) [],
        DAT_INHIBIT OFFSET(1) NUMBITS(1) [],
        CARD_INSERTED OFFSET(16) NUMBITS(1) [],
        CARD_STABLE OFFSET(17) NUMBITS(1) [],
        /// 1: writes allowed (the write-protect switch is off).
        WRITE_ENABLED OFFSET(19) NUMBITS(1) []
    ],
    /// 0x28 Host Control 1 (7:0) and Power Control (15:8) (SDHC 2.2.10-11).
    pub HOST [
        DATA_4BIT OFFSET(1) NUMBITS(1) [],
        BUS_POWER OFFSET(8) NUMBITS(1) [],
        BUS_VOLTAGE OFFSET(9) NUMBITS(3) [
            V3_3 = 0b111
        ]
    ],
    /// 0x2C Clock Control (15:0), Timeout Control (19:16), Software Reset
    /// (26:24) (SDHC 2.2.14-16).
    pub CLOCK [
        INTERNAL_ENABLE OFFSET(0) NUMBITS(1) [],
        INTERNAL_STABLE OFFSET(1) NUMBITS(1) [],
        SD_ENABLE OFFSET(2) NUMBITS(1) [],
        /// Bits 9:8 of the 10-bit divider (version 3.00).
        DIVIDER_HIGH OFFSET(6) NUMBITS(2) [],
        DIVIDER_LOW OFFSET(8) NUMBITS(8) [],
        DATA_TIMEOUT OFFSET(16) NUMBITS(4) [],
        RESET_ALL OFFSET(24) NUMBITS(1) [],
        RESET_CMD OFFSET(25) NUMBITS(1) [],
        RESET_DAT OFFSET(26) NUMBITS(1) []
    ],
    /// 0x30 Normal (15:0) and Error (31:16) Interrupt Status; the same
    /// layout at 0x34 (status enable) and 0x38 (signal enable)
    /// (SDHC 2.2.17-22). Status bits are cleared by writing 1.
    pub INT [
        CMD_COMPLETE OFFSET(0) NUMBITS(1) [],
        TRANSFER_COMPLETE OFFSET(1) NUMBITS(1) [],
        BUFFER_WRITE_READY OFFSET(4) NUMBITS(1) [],
        BUFFER_READ_READY OFFSET(5) NUMBITS(1) [],
        CARD_INSERTION OFFSET(6) NUMBITS(1) [],
        CARD_REMOVAL OFFSET(7) NUMBITS(1) [],
        ERROR OFFSET(15) NUMBITS(1) [],
        CMD_TIMEOUT OFFSET(16) NUMBITS(1) [],
        CMD_CRC OFFSET(17) NUMBITS(1) [],
        CMD_END_BIT OFFSET(18) NUMBITS(1) [],
        CMD_INDEX OFFSET(19) NUMBITS(1) [],
        DATA_TIMEOUT OFFSET(20) NUMBITS(1) [],
        DATA_CRC OFFSET(21) NUMBITS(1) [],
        DATA_END_BIT OFFSET(22) NUMBITS(1) [],
        CURRENT_LIMIT OFFSET(23) NUMBITS(1) [],
        AUTO_CMD OFFSET(24) NUMBITS(1) []
    ],
    /// 0x40 Capabilities, low word (SDHC 2.2.26).
    pub CAPS [
        /// Base clock in MHz: bits 13:8 before version 3.00, 15:8 from it;
        /// 0 = "get it another way".
        BASE_CLOCK OFFSET(8) NUMBITS(8) [],
        VOLTAGE_3_3 OFFSET(24) NUMBITS(1) []
    ],
    /// 0xFC Slot Interrupt Status (15:0) and Host Controller Version (31:16).
    pub VERSION [
        SPEC OFFSET(16) NUMBITS(8) [
            V1_00 = 0,
            V2_00 = 1,
            V3_00 = 2
        ]
    ]
];

register_structs! {
    /// The SDHCI register block, as 32-bit words.
    pub SdhciRegisters {
        (0x00 => arg2: ReadWrite<u32>),
        (0x04 => block: ReadWrite<u32, BLOCK::Register>),
        (0x08 => arg1: ReadWrite<u32>),
        (0x0c => cmdtm: ReadWrite<u32, CMDTM::Register>),
        (0x10 => response: [ReadOnly<u32>; 4]),
        (0x20 => data: ReadWrite<u32>),
        (0x24 => present: ReadOnly<u32, PRESENT::Register>),
        (0x28 => host: ReadWrite<u32, HOST::Register>),
        (0x2c => clock: ReadWrite<u32, CLOCK::Register>),
        (0x30 => int_status: ReadWrite<u32, INT::Register>),
        (0x34 => int_enable: ReadWrite<u32, INT::Register>),
        (0x38 => int_signal: ReadWrite<u32, INT::Register>),
        (0x3c => host2: ReadWrite<u32>),
        (0x40 => caps: ReadOnly<u32, CAPS::Register>),
        (0x44 => caps_high: ReadOnly<u32>),
        (0x48 => _reserved),
        (0xfc => version: ReadOnly<u32, VERSION::Register>),
        (0x100 => @END),
    }
}

/// Bytes of the register window.
pub const WINDOW: u64 = 0x100;
/// Bytes per block (the only block length this driver uses).
pub const SECTOR_SIZE: usize = 512;
/// Blocks in one read or write command at most; longer requests are split.
pub const MAX_BLOCKS: u64 = 128;

/// A 32-bit register of the block, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    Arg2,
    Block,
    Arg1,
    CmdTm,
    Response(u8),
    Data,
    Present,
    Host,
    Clock,
    IntStatus,
    IntEnable,
    IntSignal,
    Caps,
    Version,
}

/// The controller as the state machine sees it: its registers and a clock.
pub trait Controller {
    fn read(&mut self, reg: Reg) -> u32;
    fn write(&mut self, reg: Reg, value: u32);
    /// Monotonic microseconds.
    fn now_us(&mut self) -> u64;
    /// Waits about `us` microseconds.
    fn delay_us(&mut self, us: u64);
}

/// The real controller: its register window and the CPU's counter.
pub struct Mmio {
    regs: &'static SdhciRegisters,
    clock: fn() -> u64,
}

impl Mmio {
    /// # Safety
    /// `base` is the address of an SDHCI register block (0x100 bytes),
    /// mapped as Device memory, that nothing else drives for as long as
    /// the returned value lives. `clock` returns monotonic microseconds.
    pub unsafe fn new(base: usize, clock: fn() -> u64) -> Self {
        // SAFETY: per the contract the window is mapped, ours, and as large
        // as `SdhciRegisters`, whose layout `register_structs!` checks.
        let regs = unsafe { &*(base as *const SdhciRegisters) };
        Mmio { regs, clock }
    }
}

impl Controller for Mmio {
    fn read(&mut self, reg: Reg) -> u32 {
        let r = self.regs;
        match reg {
            Reg::Arg2 => r.arg2.get(),
            Reg::Block => r.block.get(),
            Reg::Arg1 => r.arg1.get(),
            Reg::CmdTm => r.cmdtm.get(),
            Reg::Response(i) => r.response[usize::from(i & 3)].get(),
            Reg::Data => r.data.get(),
            Reg::Present => r.present.get(),
            Reg::Host => r.host.get(),
            Reg::Clock => r.clock.get(),
            Reg::IntStatus => r.int_status.get(),
            Reg::IntEnable => r.int_enable.get(),
            Reg::IntSignal => r.int_signal.get(),
            Reg::Caps => r.caps.get(),
            Reg::Version => r.version.get(),
        }
    }

    fn write(&mut self, reg: Reg, value: u32) {
        let r = self.regs;
        match reg {
            Reg::Arg2 => r.arg2.set(value),
            Reg::Block => r.block.set(value),
            Reg::Arg1 => r.arg1.set(value),
            Reg::CmdTm => r.cmdtm.set(value),
            Reg::Data => r.data.set(value),
            Reg::Host => r.host.set(value),
            Reg::Clock => r.clock.set(value),
            Reg::IntStatus => r.int_status.set(value),
            Reg::IntEnable => r.int_enable.set(value),
            Reg::IntSignal => r.int_signal.set(value),
            // Read-only registers: writes have no effect on the hardware.
            Reg::Response(_) | Reg::Present | Reg::Caps | Reg::Version => {}
        }
    }

    fn now_us(&mut self) -> u64 {
        (self.clock)()
    }

    fn delay_us(&mut self, us: u64) {
        let end = self.now_us().saturating_add(us);
        while self.now_us() < end {
            core::hint::spin_loop();
        }
    }
}

/// How long each wait may take, in microseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// A software reset or the internal clock becoming stable.
    pub reset: u64,
    /// A command's response.
    pub command: u64,
    /// The card leaving its power-up busy state (ACMD41 repeated).
    pub power_up: u64,
    /// One block's data, or the end of a transfer (write busy included).
    pub data: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        // SD 4.6.2: read access at most 100 ms, write busy at most 250 ms
        // (500 ms for SDXC); ACMD41 at most 1 s. Doubled for slack.
        Timeouts { reset: 100_000, command: 100_000, power_up: 2_000_000, data: 1_000_000 }
    }
}

/// Board facts the device tree gives (or the driver's defaults).
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The card-detect signal is not wired (`broken-cd`, as on the Pi 4):
    /// assume a card is present and notice its absence by timeouts.
    pub broken_card_detect: bool,
    /// Ignore the write-protect signal (`disable-wp`).
    pub ignore_write_protect: bool,
    /// The base clock in Hz if the capabilities register says 0.
    pub base_clock_hz: u32,
    pub timeouts: Timeouts,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            broken_card_detect: false,
            ignore_write_protect: false,
            base_clock_hz: 100_000_000,
            timeouts: Timeouts::default(),
        }
    }
}

/// Why a request or the initialisation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdError {
    /// No card: card-detect says so, or the card was removed or stopped
    /// answering earlier.
    NoCard,
    /// The card was removed during this request.
    CardRemoved,
    /// The controller did not finish a software reset or its clock did
    /// not become stable.
    Controller(&'static str),
    /// No response to command `cmd` (the card or the controller timed out).
    CommandTimeout { cmd: u8 },
    /// The response to `cmd` was corrupt: CRC, end bit or index error
    /// (`status` is the Error Interrupt Status, bits 31:16 of 0x30).
    CommandError { cmd: u8, status: u32 },
    /// Data of command `cmd` did not arrive or was not taken in time.
    DataTimeout { cmd: u8 },
    /// Data of command `cmd` failed its CRC or end bit, or the automatic
    /// CMD12 failed (`status` as above).
    DataError { cmd: u8, status: u32 },
    /// The card reported error bits in its status (R1) for `cmd`.
    CardStatus { cmd: u8, status: u32 },
    /// The card is not an SD memory card this driver can use.
    Unusable(&'static str),
    /// The range is outside the card. Nothing was sent.
    OutOfRange { sector: u64, sectors: u64, capacity: u64 },
    /// The buffer is empty or not whole sectors. Nothing was sent.
    BadLength(usize),
    /// The card's write-protect switch is on. Nothing was sent.
    ReadOnly,
}

impl fmt::Display for SdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoCard => f.write_str("no SD card"),
            Self::CardRemoved => f.write_str("the SD card was removed"),
            Self::Controller(what) => write!(f, "SD controller: {what}"),
            Self::CommandTimeout { cmd } => write!(f, "SD card: no response to CMD{cmd} (timeout)"),
            Self::CommandError { cmd, status } => {
                write!(f, "SD card: corrupt response to CMD{cmd} (CRC/end bit/index error, status {status:#06x})")
            }
            Self::DataTimeout { cmd } => write!(f, "SD card: data timeout in CMD{cmd}"),
            Self::DataError { cmd, status } => {
                write!(f, "SD card: data error in CMD{cmd} (CRC/end bit/auto CMD12 error, status {status:#06x})")
            }
            Self::CardStatus { cmd, status } => write!(f, "SD card: CMD{cmd} failed, card status {status:#010x}"),
            Self::Unusable(why) => write!(f, "SD card unusable: {why}"),
            Self::OutOfRange { sector, sectors, capacity } => write!(
                f,
                "{sectors} sector(s) from sector {sector} are beyond the end of the card ({capacity} sectors)"
            ),
            Self::BadLength(n) => write!(f, "{n} bytes is not a whole, non-zero number of {SECTOR_SIZE}-byte sectors"),
            Self::ReadOnly => f.write_str("the SD card is write-protected"),
        }
    }
}

/// The SD commands this driver sends (SD 4.7.4).
mod cmd {
    pub const GO_IDLE_STATE: u8 = 0;
    pub const ALL_SEND_CID: u8 = 2;
    pub const SEND_RELATIVE_ADDR: u8 = 3;
    pub const SET_BUS_WIDTH: u8 = 6; // after APP_CMD
    pub const SELECT_CARD: u8 = 7;
    pub const SEND_IF_COND: u8 = 8;
    pub const SEND_CSD: u8 = 9;
    pub const STOP_TRANSMISSION: u8 = 12;
    pub const SEND_STATUS: u8 = 13;
    pub const SET_BLOCKLEN: u8 = 16;
    pub const READ_SINGLE_BLOCK: u8 = 17;
    pub const READ_MULTIPLE_BLOCK: u8 = 18;
    pub const WRITE_BLOCK: u8 = 24;
    pub const WRITE_MULTIPLE_BLOCK: u8 = 25;
    pub const SD_SEND_OP_COND: u8 = 41; // after APP_CMD
    pub const APP_CMD: u8 = 55;
}

/// Response formats (SD 4.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resp {
    None,
    /// R1, R6, R7: 48 bits with CRC and index.
    R1,
    /// R1b: R1, then busy on DAT0.
    R1b,
    /// R2: 136 bits (CID, CSD), CRC checked by the controller, no index.
    R2,
    /// R3: OCR, neither CRC nor index.
    R3,
}

/// R1 card status bits that report an error of the command itself
/// (SD 4.10.1: OUT_OF_RANGE .. WP_VIOLATION, LOCK_UNLOCK_FAILED,
/// CARD_ECC_FAILED, CC_ERROR, ERROR, CSD_OVERWRITE, WP_ERASE_SKIP,
/// AKE_SEQ_ERROR). COM_CRC_ERROR and ILLEGAL_COMMAND (23, 22) concern the
/// previous command and are left out.
const R1_ERRORS: u32 = 0xfd39_8008;
/// R1 CURRENT_STATE (12:9) and READY_FOR_DATA (8).
const R1_STATE_SHIFT: u32 = 9;
const R1_STATE_TRAN: u32 = 4;
const R1_READY_FOR_DATA: u32 = 1 << 8;
/// OCR bits (SD 5.1): power-up done, card capacity status, 2.7-3.6 V.
const OCR_DONE: u32 = 1 << 31;
const OCR_CCS: u32 = 1 << 30;
const OCR_VOLTAGES: u32 = 0x00ff_8000;
/// SEND_IF_COND argument: 2.7-3.6 V, check pattern 0xAA.
const IF_COND: u32 = 0x1aa;
/// The interrupt status bits this driver waits on (all errors included).
const INT_ENABLE: u32 = 0x01ff_00f3;
/// The error half of the interrupt status.
const INT_ERRORS: u32 = 0xffff_0000;
/// Clock rates: identification mode, then default speed.
const IDENT_HZ: u32 = 400_000;
const TRANSFER_HZ: u32 = 25_000_000;

/// What the card said about itself during initialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CardInfo {
    /// Relative card address (CMD3).
    pub rca: u16,
    /// SDHC/SDXC: block addressing (OCR CCS); otherwise byte addressing.
    pub high_capacity: bool,
    /// SD 2.00 or later (answered SEND_IF_COND).
    pub v2: bool,
    /// Capacity in 512-byte sectors (from the CSD).
    pub sectors: u64,
    /// Card identification (CID, SD 5.2), as the four response words.
    pub cid: [u32; 4],
    /// The write-protect switch is on (and not ignored).
    pub write_protected: bool,
    /// The bus clock chosen for transfers, in Hz.
    pub clock_hz: u32,
}

impl CardInfo {
    /// The CID's product name (5 ASCII characters, CID 103:64).
    pub fn product_name(&self) -> [u8; 5] {
        let mut name = [0u8; 5];
        for (i, b) in name.iter_mut().enumerate() {
            // CID bit 103 - 8i .. 96 - 8i, response bit = CID bit - 8.
            let bit = 103 - 8 * i as u32 - 8 - 7;
            *b = bits(&self.cid, bit + 7, bit) as u8;
        }
        name
    }
}

/// Bits `hi..=lo` of a 136-bit response as the controller stores it
/// (response bits 127:8 in RESP 119:0; the CRC byte is dropped), addressed
/// by response-register bit number.
fn bits(resp: &[u32; 4], hi: u32, lo: u32) -> u64 {
    let mut v = 0u64;
    for b in (lo..=hi).rev() {
        let word = resp[(b / 32) as usize];
        v = (v << 1) | u64::from((word >> (b % 32)) & 1);
    }
    v
}

/// Capacity in 512-byte sectors from a CSD (SD 5.3), or why not.
fn csd_sectors(resp: &[u32; 4]) -> Result<u64, &'static str> {
    // Field [hi:lo] of the CSD sits at response bits [hi-8:lo-8].
    let f = |hi: u32, lo: u32| bits(resp, hi - 8, lo - 8);
    match f(127, 126) {
        0 => {
            let read_bl_len = f(83, 80);
            let c_size = f(73, 62);
            let mult = f(49, 47);
            if !(9..=11).contains(&read_bl_len) {
                return Err("CSD v1 READ_BL_LEN out of range");
            }
            Ok(((c_size + 1) << (mult + 2 + read_bl_len)) / SECTOR_SIZE as u64)
        }
        1 => Ok((f(69, 48) + 1) * 1024),
        _ => Err("unknown CSD structure version"),
    }
}

/// The 10-bit divider N (SD clock = base / 2N, N = 0: base) for at most
/// `hz`, or the version 2.00 power-of-two divider, as Clock Control bits.
fn clock_divider(base_hz: u32, hz: u32, v3: bool) -> (u32, u32) {
    if v3 {
        let n = if base_hz <= hz { 0 } else { base_hz.div_ceil(2 * hz).min(0x3ff) };
        (n, if n == 0 { base_hz } else { base_hz / (2 * n) })
    } else {
        let mut n = 1u32;
        while n < 0x80 && base_hz / (2 * n) > hz {
            n <<= 1;
        }
        if base_hz <= hz {
            (0, base_hz)
        } else {
            (n, base_hz / (2 * n))
        }
    }
}

/// An SD card behind its controller.
pub struct SdCard<C: Controller> {
    host: C,
    opts: Options,
    card: Option<CardInfo>,
    /// Clock Control's timeout field, kept on every write to 0x2C.
    timeout_field: u32,
    /// Requests that failed since initialisation.
    errors: u64,
    /// Why the card was forgotten, for the status report.
    lost: Option<SdError>,
}

impl<C: Controller> SdCard<C> {
    /// Resets the controller and initialises the card in its slot.
    pub fn init(host: C, opts: Options) -> Result<Self, (C, SdError)> {
        let mut sd = SdCard { host, opts, card: None, timeout_field: 0xe, errors: 0, lost: None };
        match sd.identify() {
            Ok(info) => {
                sd.card = Some(info);
                Ok(sd)
            }
            Err(e) => Err((sd.host, e)),
        }
    }

    /// The card, while it is usable.
    pub fn info(&self) -> Option<&CardInfo> {
        self.card.as_ref()
    }

    pub fn capacity_sectors(&self) -> u64 {
        self.card.map_or(0, |c| c.sectors)
    }

    pub fn read_only(&self) -> bool {
        self.card.is_some_and(|c| c.write_protected)
    }

    /// Requests that failed so far.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Why the card is gone, if it is.
    pub fn lost(&self) -> Option<SdError> {
        self.lost
    }

    /// The controller (tests inspect the fake).
    pub fn host(&mut self) -> &mut C {
        &mut self.host
    }

    /// Reads `buf.len() / 512` sectors from `sector`.
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), SdError> {
        let card = self.check(sector, buf.len())?;
        let r = buf
            .chunks_mut(MAX_BLOCKS as usize * SECTOR_SIZE)
            .enumerate()
            .try_for_each(|(i, chunk)| self.transfer(&card, sector + i as u64 * MAX_BLOCKS, Data::Read(chunk)));
        self.account(r)
    }

    /// Writes `buf` (whole sectors) from `sector` on; durable on return.
    /// After an error, earlier chunks of 128 sectors may have been written.
    pub fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), SdError> {
        let card = self.check(sector, buf.len())?;
        if card.write_protected {
            return Err(SdError::ReadOnly);
        }
        let r = buf
            .chunks(MAX_BLOCKS as usize * SECTOR_SIZE)
            .enumerate()
            .try_for_each(|(i, chunk)| self.transfer(&card, sector + i as u64 * MAX_BLOCKS, Data::Write(chunk)));
        self.account(r)
    }

    /// Confirms every completed write is on the card: the card is in the
    /// transfer state, ready, with no error bits (see the module comment).
    pub fn flush(&mut self) -> Result<(), SdError> {
        let card = self.card.ok_or(self.lost.unwrap_or(SdError::NoCard))?;
        // A card that does not answer SEND_STATUS is gone.
        let r = self.wait_ready(&card).map_err(|e| match e {
            SdError::CommandTimeout { .. } => SdError::CardRemoved,
            e => e,
        });
        self.account(r)
    }

    fn account(&mut self, r: Result<(), SdError>) -> Result<(), SdError> {
        if let Err(e) = r {
            self.errors += 1;
            if matches!(e, SdError::CardRemoved | SdError::NoCard) {
                self.card = None;
                self.lost = Some(e);
            }
        }
        r
    }

    /// After a failed data command: a card that no longer answers
    /// SEND_STATUS is gone ([`SdError::CardRemoved`]); one left in the
    /// sending-data or receive-data state (the automatic CMD12 did not run,
    /// or the command's response was lost) is stopped with CMD12.
    fn recover(&mut self, card: &CardInfo, e: SdError) -> SdError {
        match self.status(card) {
            Err(SdError::CommandTimeout { .. } | SdError::CardRemoved) => SdError::CardRemoved,
            Ok(s) if matches!((s >> R1_STATE_SHIFT) & 0xf, 5 | 6) => {
                let _ = self.command(cmd::STOP_TRANSMISSION, 0, Resp::R1b);
                e
            }
            _ => e,
        }
    }

    fn check(&self, sector: u64, len: usize) -> Result<CardInfo, SdError> {
        let card = self.card.ok_or(self.lost.unwrap_or(SdError::NoCard))?;
        if len == 0 || !len.is_multiple_of(SECTOR_SIZE) {
            return Err(SdError::BadLength(len));
        }
        let sectors = (len / SECTOR_SIZE) as u64;
        match sector.checked_add(sectors) {
            Some(end) if end <= card.sectors => Ok(card),
            _ => Err(SdError::OutOfRange { sector, sectors, capacity: card.sectors }),
        }
    }

    // ---- initialisation ---------------------------------------------------

    fn identify(&mut self) -> Result<CardInfo, SdError> {
        let t = self.opts.timeouts;
        // Reset everything; the firmware may have left a transfer running.
        self.write_clock(CLOCK::RESET_ALL::SET.value);
        self.wait_clock_clear(CLOCK::RESET_ALL::SET.value, t.reset, "software reset did not finish")?;
        if !self.card_present() {
            return Err(SdError::NoCard);
        }
        let caps = LocalRegisterCopy::<u32, CAPS::Register>::new(self.host.read(Reg::Caps));
        if !caps.is_set(CAPS::VOLTAGE_3_3) {
            return Err(SdError::Controller("no 3.3 V bus support"));
        }
        let v3 = LocalRegisterCopy::<u32, VERSION::Register>::new(self.host.read(Reg::Version)).read(VERSION::SPEC) >= 2;
        let base_mhz = if v3 { caps.read(CAPS::BASE_CLOCK) } else { caps.read(CAPS::BASE_CLOCK) & 0x3f };
        let base_hz = if base_mhz == 0 { self.opts.base_clock_hz } else { base_mhz * 1_000_000 };
        self.host.write(Reg::Host, (HOST::BUS_VOLTAGE::V3_3 + HOST::BUS_POWER::SET).value);
        self.set_clock(base_hz, IDENT_HZ, v3)?;
        self.host.write(Reg::IntEnable, INT_ENABLE);
        self.host.write(Reg::IntSignal, 0);
        self.host.write(Reg::IntStatus, u32::MAX);
        // SD 6.4.1: the supply ramps up, then 1 ms and 74 clocks before the
        // first command; 10 ms as Linux's mmc core waits, for slow supplies.
        self.host.delay_us(10_000);

        self.command(cmd::GO_IDLE_STATE, 0, Resp::None)?;
        let v2 = match self.command(cmd::SEND_IF_COND, IF_COND, Resp::R1) {
            Ok(r) if r & 0xfff == IF_COND => true,
            Ok(_) => return Err(SdError::Unusable("SEND_IF_COND echoed the wrong pattern")),
            // SD 1.x cards do not know CMD8.
            Err(SdError::CommandTimeout { .. }) => false,
            Err(e) => return Err(e),
        };
        let hcs = if v2 { OCR_CCS } else { 0 };
        let start = self.host.now_us();
        let ocr = loop {
            self.command(cmd::APP_CMD, 0, Resp::R1)?;
            let ocr = self.command(cmd::SD_SEND_OP_COND, hcs | OCR_VOLTAGES, Resp::R3)?;
            if ocr & OCR_DONE != 0 {
                break ocr;
            }
            if self.host.now_us().saturating_sub(start) > t.power_up {
                return Err(SdError::Unusable("the card stayed busy after power-up (ACMD41)"));
            }
            self.host.delay_us(10_000);
        };
        if ocr & OCR_VOLTAGES == 0 {
            return Err(SdError::Unusable("the card does not support 2.7-3.6 V"));
        }
        let high_capacity = v2 && ocr & OCR_CCS != 0;
        self.command(cmd::ALL_SEND_CID, 0, Resp::R2)?;
        let cid = self.response136();
        let rca = (self.command(cmd::SEND_RELATIVE_ADDR, 0, Resp::R1)? >> 16) as u16;
        let arg = u32::from(rca) << 16;
        self.command(cmd::SEND_CSD, arg, Resp::R2)?;
        let sectors = csd_sectors(&self.response136()).map_err(SdError::Unusable)?;
        if sectors == 0 {
            return Err(SdError::Unusable("the CSD says the capacity is 0"));
        }
        self.command(cmd::SELECT_CARD, arg, Resp::R1b)?;
        if !high_capacity {
            self.command_checked(cmd::SET_BLOCKLEN, SECTOR_SIZE as u32, Resp::R1)?;
        }
        // Every SD memory card supports a 4-bit bus (SD 3.6.2 SCR).
        self.command_checked(cmd::APP_CMD, arg, Resp::R1)?;
        self.command_checked(cmd::SET_BUS_WIDTH, 2, Resp::R1)?;
        let host = self.host.read(Reg::Host);
        self.host.write(Reg::Host, host | HOST::DATA_4BIT::SET.value);
        let clock_hz = self.set_clock(base_hz, TRANSFER_HZ, v3)?;
        let present = LocalRegisterCopy::<u32, PRESENT::Register>::new(self.host.read(Reg::Present));
        let write_protected = !self.opts.ignore_write_protect && !present.is_set(PRESENT::WRITE_ENABLED);
        Ok(CardInfo { rca, high_capacity, v2, sectors, cid, write_protected, clock_hz })
    }

    fn card_present(&mut self) -> bool {
        if self.opts.broken_card_detect {
            return true;
        }
        let t = self.opts.timeouts;
        // Card-detect debounces for a while after a reset (CARD_STABLE).
        let start = self.host.now_us();
        loop {
            let p = LocalRegisterCopy::<u32, PRESENT::Register>::new(self.host.read(Reg::Present));
            if p.is_set(PRESENT::CARD_STABLE) || self.host.now_us().saturating_sub(start) > t.reset {
                return p.is_set(PRESENT::CARD_INSERTED);
            }
            self.host.delay_us(100);
        }
    }

    /// Switches the SD clock to at most `hz`; returns the rate chosen.
    fn set_clock(&mut self, base_hz: u32, hz: u32, v3: bool) -> Result<u32, SdError> {
        let (n, actual) = clock_divider(base_hz, hz, v3);
        let div = (CLOCK::DIVIDER_LOW.val(n & 0xff) + CLOCK::DIVIDER_HIGH.val(n >> 8)).value;
        self.write_clock(0);
        self.write_clock(div | CLOCK::INTERNAL_ENABLE::SET.value);
        let stable = CLOCK::INTERNAL_STABLE::SET.value;
        self.wait_clock(|c| c & stable != 0, self.opts.timeouts.reset, "the internal clock did not become stable")?;
        self.write_clock(div | CLOCK::INTERNAL_ENABLE::SET.value | CLOCK::SD_ENABLE::SET.value);
        Ok(actual)
    }

    /// Writes Clock Control with the data timeout field kept.
    fn write_clock(&mut self, value: u32) {
        self.host.write(Reg::Clock, value | CLOCK::DATA_TIMEOUT.val(self.timeout_field).value);
    }

    fn wait_clock_clear(&mut self, bits: u32, limit: u64, what: &'static str) -> Result<(), SdError> {
        self.wait_clock(|c| c & bits == 0, limit, what)
    }

    fn wait_clock(&mut self, done: impl Fn(u32) -> bool, limit: u64, what: &'static str) -> Result<(), SdError> {
        let start = self.host.now_us();
        loop {
            if done(self.host.read(Reg::Clock)) {
                return Ok(());
            }
            if self.host.now_us().saturating_sub(start) > limit {
                return Err(SdError::Controller(what));
            }
        }
    }

    // ---- commands -------------------------------------------------------

    fn response136(&mut self) -> [u32; 4] {
        [0, 1, 2, 3].map(|i| self.host.read(Reg::Response(i)))
    }

    /// A command whose R1 must show no error bits.
    fn command_checked(&mut self, index: u8, arg: u32, resp: Resp) -> Result<u32, SdError> {
        let r = self.command(index, arg, resp)?;
        if r & R1_ERRORS != 0 {
            return Err(SdError::CardStatus { cmd: index, status: r });
        }
        Ok(r)
    }

    /// Sends a command without data and waits for its response (and, for
    /// R1b, for the end of busy). Returns response word 0.
    fn command(&mut self, index: u8, arg: u32, resp: Resp) -> Result<u32, SdError> {
        self.issue(index, arg, resp, 0)?;
        if resp == Resp::R1b {
            self.wait_lines(false, true, self.opts.timeouts.data, index, true)?;
            self.host.write(Reg::IntStatus, INT::TRANSFER_COMPLETE::SET.value);
        }
        Ok(self.host.read(Reg::Response(0)))
    }

    /// Waits for the lines the command needs, writes argument and command
    /// (with `transfer_mode`), and waits for Command Complete.
    fn issue(&mut self, index: u8, arg: u32, resp: Resp, transfer_mode: u32) -> Result<(), SdError> {
        let data = transfer_mode != 0;
        self.wait_lines(true, data || resp == Resp::R1b, self.opts.timeouts.command, index, false)?;
        self.host.write(Reg::IntStatus, u32::MAX);
        let (kind, crc, idx) = match resp {
            Resp::None => (CMDTM::RESPONSE::None, false, false),
            Resp::R1 => (CMDTM::RESPONSE::Bits48, true, true),
            Resp::R1b => (CMDTM::RESPONSE::Bits48Busy, true, true),
            Resp::R2 => (CMDTM::RESPONSE::Bits136, true, false),
            Resp::R3 => (CMDTM::RESPONSE::Bits48, false, false),
        };
        let mut value = (CMDTM::INDEX.val(u32::from(index)) + kind).value | transfer_mode;
        if crc {
            value |= CMDTM::CRC_CHECK::SET.value;
        }
        if idx {
            value |= CMDTM::INDEX_CHECK::SET.value;
        }
        if data {
            value |= CMDTM::DATA_PRESENT::SET.value;
        }
        self.host.write(Reg::Arg1, arg);
        self.host.write(Reg::CmdTm, value);
        let status = self.wait_int(INT::CMD_COMPLETE::SET.value, self.opts.timeouts.command, index, false)?;
        self.host.write(Reg::IntStatus, status & INT::CMD_COMPLETE::SET.value);
        Ok(())
    }

    /// Waits until CMD (and, with `dat`, DAT) inhibit clear. On timeout
    /// the lines are reset.
    fn wait_lines(&mut self, cmd_line: bool, dat: bool, limit: u64, index: u8, data_phase: bool) -> Result<(), SdError> {
        let mut mask = 0;
        if cmd_line {
            mask |= PRESENT::CMD_INHIBIT::SET.value;
        }
        if dat {
            mask |= PRESENT::DAT_INHIBIT::SET.value;
        }
        let start = self.host.now_us();
        loop {
            let p = self.host.read(Reg::Present);
            if !self.opts.broken_card_detect && p & PRESENT::CARD_INSERTED::SET.value == 0 {
                self.reset_lines();
                return Err(SdError::CardRemoved);
            }
            if p & mask == 0 {
                return Ok(());
            }
            if self.host.now_us().saturating_sub(start) > limit {
                self.reset_lines();
                return Err(if data_phase { SdError::DataTimeout { cmd: index } } else { SdError::CommandTimeout { cmd: index } });
            }
        }
    }

    /// Waits for any of `bits` in the interrupt status, or an error, or the
    /// card's removal, for at most `limit` µs. Errors reset the CMD and DAT
    /// lines and come back as [`SdError`]s.
    fn wait_int(&mut self, bits: u32, limit: u64, index: u8, data_phase: bool) -> Result<u32, SdError> {
        let start = self.host.now_us();
        loop {
            let status = self.host.read(Reg::IntStatus);
            if status & (INT_ERRORS | INT::ERROR::SET.value) != 0 {
                self.reset_lines();
                let e = status >> 16;
                let s = LocalRegisterCopy::<u32, INT::Register>::new(status);
                return Err(if s.is_set(INT::CMD_TIMEOUT) {
                    SdError::CommandTimeout { cmd: index }
                } else if s.is_set(INT::DATA_TIMEOUT) {
                    SdError::DataTimeout { cmd: index }
                } else if s.is_set(INT::CMD_CRC) || s.is_set(INT::CMD_END_BIT) || s.is_set(INT::CMD_INDEX) {
                    SdError::CommandError { cmd: index, status: e }
                } else {
                    SdError::DataError { cmd: index, status: e }
                });
            }
            if status & bits != 0 {
                return Ok(status);
            }
            if !self.opts.broken_card_detect
                && (status & INT::CARD_REMOVAL::SET.value != 0
                    || self.host.read(Reg::Present) & PRESENT::CARD_INSERTED::SET.value == 0)
            {
                self.reset_lines();
                return Err(SdError::CardRemoved);
            }
            if self.host.now_us().saturating_sub(start) > limit {
                self.reset_lines();
                return Err(if data_phase { SdError::DataTimeout { cmd: index } } else { SdError::CommandTimeout { cmd: index } });
            }
        }
    }

    /// Resets the CMD and DAT state machines and clears the status (SDHC
    /// 3.10 error recovery). Bounded; a controller that never finishes is
    /// left as it is (the next command times out).
    fn reset_lines(&mut self) {
        let bits = (CLOCK::RESET_CMD::SET + CLOCK::RESET_DAT::SET).value;
        let keep = self.host.read(Reg::Clock) & 0xffff;
        self.host.write(Reg::Clock, keep | bits | CLOCK::DATA_TIMEOUT.val(self.timeout_field).value);
        let _ = self.wait_clock_clear(bits, self.opts.timeouts.reset, "line reset did not finish");
        self.host.write(Reg::IntStatus, u32::MAX);
    }

    /// SEND_STATUS: the card's R1.
    fn status(&mut self, card: &CardInfo) -> Result<u32, SdError> {
        self.command(cmd::SEND_STATUS, u32::from(card.rca) << 16, Resp::R1)
    }

    /// Polls SEND_STATUS until the card is in the transfer state and ready.
    fn wait_ready(&mut self, card: &CardInfo) -> Result<(), SdError> {
        let start = self.host.now_us();
        loop {
            let s = self.status(card)?;
            if s & R1_ERRORS != 0 {
                return Err(SdError::CardStatus { cmd: cmd::SEND_STATUS, status: s });
            }
            if (s >> R1_STATE_SHIFT) & 0xf == R1_STATE_TRAN && s & R1_READY_FOR_DATA != 0 {
                return Ok(());
            }
            if self.host.now_us().saturating_sub(start) > self.opts.timeouts.data {
                return Err(SdError::DataTimeout { cmd: cmd::SEND_STATUS });
            }
            self.host.delay_us(100);
        }
    }

    // ---- data -----------------------------------------------------------

    /// One read or write command of up to [`MAX_BLOCKS`] blocks.
    fn transfer(&mut self, card: &CardInfo, sector: u64, data: Data<'_>) -> Result<(), SdError> {
        let blocks = data.len() / SECTOR_SIZE;
        let multi = blocks > 1;
        let (index, read) = match (&data, multi) {
            (Data::Read(_), false) => (cmd::READ_SINGLE_BLOCK, true),
            (Data::Read(_), true) => (cmd::READ_MULTIPLE_BLOCK, true),
            (Data::Write(_), false) => (cmd::WRITE_BLOCK, false),
            (Data::Write(_), true) => (cmd::WRITE_MULTIPLE_BLOCK, false),
        };
        // SDSC cards are addressed in bytes (below 2 GiB, so it fits).
        let addr = if card.high_capacity { sector } else { sector * SECTOR_SIZE as u64 };
        let addr = u32::try_from(addr).map_err(|_| SdError::OutOfRange { sector, sectors: blocks as u64, capacity: card.sectors })?;
        self.host.write(Reg::Block, (BLOCK::SIZE.val(SECTOR_SIZE as u32) + BLOCK::COUNT.val(blocks as u32)).value);
        let mut mode = CMDTM::BLOCK_COUNT_ENABLE::SET.value;
        if read {
            mode |= CMDTM::READ::SET.value;
        }
        if multi {
            mode |= (CMDTM::MULTI_BLOCK::SET + CMDTM::AUTO_CMD::Cmd12).value;
        }
        if let Err(e) = self.issue(index, addr, Resp::R1, mode) {
            return Err(self.recover(card, e));
        }
        let r1 = self.host.read(Reg::Response(0));
        let result = self.move_data(index, data).and_then(|()| match r1 & R1_ERRORS {
            0 => Ok(()),
            _ => Err(SdError::CardStatus { cmd: index, status: r1 }),
        });
        result.map_err(|e| self.recover(card, e))
    }

    fn move_data(&mut self, index: u8, mut data: Data<'_>) -> Result<(), SdError> {
        let t = self.opts.timeouts.data;
        let blocks = data.len() / SECTOR_SIZE;
        for block in 0..blocks {
            let ready = match data {
                Data::Read(_) => INT::BUFFER_READ_READY::SET.value,
                Data::Write(_) => INT::BUFFER_WRITE_READY::SET.value,
            };
            self.wait_int(ready, t, index, true)?;
            self.host.write(Reg::IntStatus, ready);
            let at = block * SECTOR_SIZE;
            match &mut data {
                Data::Read(buf) => {
                    for w in buf[at..at + SECTOR_SIZE].chunks_exact_mut(4) {
                        w.copy_from_slice(&self.host.read(Reg::Data).to_le_bytes());
                    }
                }
                Data::Write(buf) => {
                    for w in buf[at..at + SECTOR_SIZE].chunks_exact(4) {
                        self.host.write(Reg::Data, u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
                    }
                }
            }
        }
        // Transfer Complete follows the last block (and, for writes, the
        // card's busy; with auto CMD12, that command's too).
        self.wait_int(INT::TRANSFER_COMPLETE::SET.value, t, index, true)?;
        self.host.write(Reg::IntStatus, INT::TRANSFER_COMPLETE::SET.value);
        Ok(())
    }
}

enum Data<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

impl Data<'_> {
    fn len(&self) -> usize {
        match self {
            Data::Read(b) => b.len(),
            Data::Write(b) => b.len(),
        }
    }
}

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
