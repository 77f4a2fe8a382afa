//! A model of an SDHCI controller with an SD card in its slot, for the
//! state machine's host tests: register semantics as the SDHCI 3.00
//! specification states them (write-1-to-clear status, status bits only
//! when enabled, inhibit bits while busy), a card that follows the SD
//! state diagram (idle → ready → ident → stby → tran → data/rcv), and
//! faults to inject. Time advances by 1 µs per register read and by every
//! delay, so a driver that polls for ever fails the test by running out of
//! the step budget instead of hanging it.

use super::{Controller, Reg, CLOCK, CMDTM, HOST, INT, PRESENT};
use tock_registers::LocalRegisterCopy;

/// Register reads one test may make at most (a bound on any hang).
const STEP_BUDGET: u64 = 50_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Idle,
    Ready,
    Ident,
    Stby,
    Tran,
    Data,
    Rcv,
}

impl State {
    fn code(self) -> u32 {
        match self {
            State::Idle => 0,
            State::Ready => 1,
            State::Ident => 2,
            State::Stby => 3,
            State::Tran => 4,
            State::Data => 5,
            State::Rcv => 6,
        }
    }
}

pub struct Card {
    pub data: Vec<u8>,
    pub high_capacity: bool,
    /// Answers CMD8 (SD 2.00).
    pub v2: bool,
    pub state: State,
    pub rca: u16,
    /// ACMD41 answers "busy" this many more times.
    pub busy_polls: u32,
    pub bus_4bit: bool,
    app: bool,
}

impl Card {
    pub fn sdhc(sectors: usize) -> Self {
        Card {
            data: vec![0; sectors * 512],
            high_capacity: true,
            v2: true,
            state: State::Idle,
            rca: 0xb368,
            busy_polls: 3,
            bus_4bit: false,
            app: false,
        }
    }

    /// An SD 1.x standard-capacity card (no CMD8, byte addressing).
    pub fn sdsc_v1(sectors: usize) -> Self {
        Card { high_capacity: false, v2: false, ..Card::sdhc(sectors) }
    }

    fn sectors(&self) -> u64 {
        (self.data.len() / 512) as u64
    }

    fn r1(&self) -> u32 {
        let ready = matches!(self.state, State::Tran) as u32;
        (self.state.code() << 9) | (ready << 8) | ((self.app as u32) << 5)
    }
}

#[derive(Default)]
pub struct Faults {
    /// Commands with this index get no response (Command Timeout).
    pub cmd_timeout: Option<u8>,
    /// Commands with this index get a response with a bad CRC.
    pub cmd_crc: Option<u8>,
    /// Commands with this index are swallowed: no status bit ever.
    pub silent: Option<u8>,
    /// Reading this sector fails its data CRC.
    pub data_crc_sector: Option<u64>,
    /// The card is pulled out after this many more data blocks.
    pub remove_after_blocks: Option<usize>,
    /// Software resets never finish.
    pub reset_stuck: bool,
    /// The buffer never becomes ready for write data.
    pub write_stall: bool,
}

struct Xfer {
    read: bool,
    sector: u64,
    blocks_left: u32,
    multi: bool,
    auto_cmd12: bool,
    buf: [u8; 512],
    word: usize,
}

pub struct FakeSdhci {
    pub card: Option<Card>,
    pub write_protect: bool,
    pub faults: Faults,
    /// Every command the card saw: (application command?, index, argument).
    pub log: Vec<(bool, u8, u32)>,
    pub now: u64,
    pub caps: u32,
    pub version: u32,
    pub block: u32,
    arg1: u32,
    resp: [u32; 4],
    host: u32,
    clock: u32,
    int_status: u32,
    int_enable: u32,
    xfer: Option<Xfer>,
    /// Reads left before a software reset bit clears.
    reset_reads: u32,
    reads: u64,
}

impl FakeSdhci {
    pub fn new(card: Option<Card>) -> Self {
        FakeSdhci {
            card,
            write_protect: false,
            faults: Faults::default(),
            log: Vec::new(),
            now: 0,
            // QEMU's BCM2835 value: 52 MHz base clock, 3.3 V, no DMA.
            caps: 0x0521_34b4,
            version: 2 << 16,
            block: 0,
            arg1: 0,
            resp: [0; 4],
            host: 0,
            clock: 0,
            int_status: 0,
            int_enable: 0,
            xfer: None,
            reset_reads: 0,
            reads: 0,
        }
    }

    /// Commands without the application flag, as indices.
    pub fn commands(&self) -> Vec<u8> {
        self.log.iter().map(|&(_, i, _)| i).collect()
    }

    pub fn sector(&self, n: u64) -> &[u8] {
        let c = self.card.as_ref().expect("card");
        &c.data[n as usize * 512..(n as usize + 1) * 512]
    }

    pub fn bus_4bit(&self) -> bool {
        self.host & HOST::DATA_4BIT::SET.value != 0
    }

    fn raise(&mut self, bits: u32) {
        // Status bits appear only when enabled (SDHC 2.2.19-20).
        let b = bits & self.int_enable;
        self.int_status |= b;
        if self.int_status & 0xffff_0000 != 0 {
            self.int_status |= INT::ERROR::SET.value;
        }
    }

    fn command(&mut self, value: u32) {
        let c = LocalRegisterCopy::<u32, CMDTM::Register>::new(value);
        let index = c.read(CMDTM::INDEX) as u8;
        let arg = self.arg1;
        let app = self.card.as_ref().is_some_and(|c| c.app);
        self.log.push((app, index, arg));
        if self.faults.silent == Some(index) {
            return;
        }
        if self.faults.cmd_timeout == Some(index) {
            self.raise(INT::CMD_TIMEOUT::SET.value);
            return;
        }
        let Some(card) = self.card.as_mut() else {
            // Nobody answers; a command without a response still completes.
            if c.read(CMDTM::RESPONSE) == 0 {
                self.raise(INT::CMD_COMPLETE::SET.value);
            } else {
                self.raise(INT::CMD_TIMEOUT::SET.value);
            }
            return;
        };
        card.app = false;
        let sectors = card.sectors();
        let mut transfer_complete = false;
        let r: Option<[u32; 4]> = match (app, index) {
            (_, 0) => {
                card.state = State::Idle;
                Some([0; 4])
            }
            (false, 8) if card.v2 && card.state == State::Idle => Some([arg & 0xfff, 0, 0, 0]),
            (_, 55) => {
                card.app = true;
                Some([card.r1() | (1 << 5), 0, 0, 0])
            }
            (true, 41) if matches!(card.state, State::Idle | State::Ready) => {
                if card.busy_polls > 0 {
                    card.busy_polls -= 1;
                    Some([0x00ff_8000, 0, 0, 0])
                } else {
                    card.state = State::Ready;
                    let ccs = if card.high_capacity && arg & (1 << 30) != 0 { 1 << 30 } else { 0 };
                    Some([(1 << 31) | ccs | 0x00ff_8000, 0, 0, 0])
                }
            }
            (false, 2) if card.state == State::Ready => {
                card.state = State::Ident;
                // CID: manufacturer 0x03, OEM "SD", product "FAKE1".
                let mut r = [0u32; 4];
                set_bits(&mut r, 119, 112, 0x03);
                for (i, &b) in b"FAKE1".iter().enumerate() {
                    let hi = 103 - 8 - 8 * i as u32;
                    set_bits(&mut r, hi, hi - 7, u64::from(b));
                }
                Some(r)
            }
            (false, 3) if matches!(card.state, State::Ident | State::Stby) => {
                card.state = State::Stby;
                Some([(u32::from(card.rca) << 16) | (card.state.code() << 9), 0, 0, 0])
            }
            (false, 9) if card.state == State::Stby && arg >> 16 == u32::from(card.rca) => Some(csd(sectors, card.high_capacity)),
            (false, 7) if arg >> 16 == u32::from(card.rca) => {
                let r = card.r1();
                card.state = State::Tran;
                transfer_complete = true;
                Some([r, 0, 0, 0])
            }
            (false, 13) if arg >> 16 == u32::from(card.rca) => Some([card.r1(), 0, 0, 0]),
            (false, 16) if card.state == State::Tran => Some([card.r1(), 0, 0, 0]),
            (true, 6) if card.state == State::Tran => {
                card.bus_4bit = arg == 2;
                Some([card.r1(), 0, 0, 0])
            }
            (false, 12) if matches!(card.state, State::Data | State::Rcv | State::Tran) => {
                let r = card.r1();
                card.state = State::Tran;
                self.xfer = None;
                transfer_complete = true;
                Some([r, 0, 0, 0])
            }
            (false, 17 | 18 | 24 | 25) if card.state == State::Tran => {
                let sector = if card.high_capacity { u64::from(arg) } else { u64::from(arg) / 512 };
                let blocks = LocalRegisterCopy::<u32, super::BLOCK::Register>::new(self.block).read(super::BLOCK::COUNT);
                let multi = matches!(index, 18 | 25);
                let n = if multi { u64::from(blocks) } else { 1 };
                if (!card.high_capacity && !arg.is_multiple_of(512)) || sector + n > sectors {
                    // ADDRESS_ERROR / OUT_OF_RANGE, and no data.
                    Some([card.r1() | (1 << 31), 0, 0, 0])
                } else {
                    let read = matches!(index, 17 | 18);
                    let r = card.r1();
                    card.state = if read { State::Data } else { State::Rcv };
                    self.xfer = Some(Xfer {
                        read,
                        sector,
                        blocks_left: n as u32,
                        multi,
                        auto_cmd12: c.read(CMDTM::AUTO_CMD) == 1,
                        buf: [0; 512],
                        word: 0,
                    });
                    Some([r, 0, 0, 0])
                }
            }
            // Anything else: an illegal command gets no response.
            _ => None,
        };
        match r {
            None => self.raise(INT::CMD_TIMEOUT::SET.value),
            Some(r) => {
                self.resp = r;
                if self.faults.cmd_crc == Some(index) {
                    self.raise(INT::CMD_CRC::SET.value);
                    return;
                }
                self.raise(INT::CMD_COMPLETE::SET.value);
                if transfer_complete {
                    self.raise(INT::TRANSFER_COMPLETE::SET.value);
                }
                self.start_block();
            }
        }
    }

    /// Makes the next block of the open transfer available.
    fn start_block(&mut self) {
        let Some(x) = self.xfer.as_mut() else { return };
        x.word = 0;
        if x.read {
            if self.faults.data_crc_sector == Some(x.sector) {
                self.raise(INT::DATA_CRC::SET.value);
                return;
            }
            let card = self.card.as_ref().expect("card during transfer");
            let at = x.sector as usize * 512;
            x.buf.copy_from_slice(&card.data[at..at + 512]);
            self.raise(INT::BUFFER_READ_READY::SET.value);
        } else if !self.faults.write_stall {
            self.raise(INT::BUFFER_WRITE_READY::SET.value);
        }
    }

    /// The current block has been moved through the data port.
    fn end_block(&mut self) {
        let Some(mut x) = self.xfer.take() else { return };
        if !x.read {
            let card = self.card.as_mut().expect("card during transfer");
            let at = x.sector as usize * 512;
            card.data[at..at + 512].copy_from_slice(&x.buf);
        }
        if let Some(n) = self.faults.remove_after_blocks.as_mut() {
            if *n <= 1 {
                self.faults.remove_after_blocks = None;
                self.card = None;
                self.raise(INT::CARD_REMOVAL::SET.value);
                return;
            }
            *n -= 1;
        }
        x.blocks_left -= 1;
        x.sector += 1;
        if x.blocks_left > 0 {
            self.xfer = Some(x);
            self.start_block();
            return;
        }
        let card = self.card.as_mut().expect("card during transfer");
        if !x.multi || x.auto_cmd12 {
            card.state = State::Tran;
        }
        if x.auto_cmd12 {
            self.log.push((false, 12, 0));
        }
        self.raise(INT::TRANSFER_COMPLETE::SET.value);
    }

    fn data_read(&mut self) -> u32 {
        let Some(x) = self.xfer.as_mut().filter(|x| x.read) else { return 0 };
        let w = u32::from_le_bytes(x.buf[x.word * 4..x.word * 4 + 4].try_into().unwrap());
        x.word += 1;
        if x.word == 128 {
            self.end_block();
        }
        w
    }

    fn data_write(&mut self, value: u32) {
        let Some(x) = self.xfer.as_mut().filter(|x| !x.read) else { return };
        x.buf[x.word * 4..x.word * 4 + 4].copy_from_slice(&value.to_le_bytes());
        x.word += 1;
        if x.word == 128 {
            self.end_block();
        }
    }

    fn present(&self) -> u32 {
        let mut p = 0;
        if self.xfer.is_some() {
            p |= PRESENT::DAT_INHIBIT::SET.value;
        }
        if self.card.is_some() {
            p |= PRESENT::CARD_INSERTED::SET.value;
        }
        p |= PRESENT::CARD_STABLE::SET.value;
        if !self.write_protect {
            p |= PRESENT::WRITE_ENABLED::SET.value;
        }
        p
    }
}

impl Controller for FakeSdhci {
    fn read(&mut self, reg: Reg) -> u32 {
        self.now += 1;
        self.reads += 1;
        assert!(self.reads < STEP_BUDGET, "the driver polled {STEP_BUDGET} times: a hang");
        match reg {
            Reg::Arg2 => 0,
            Reg::Block => self.block,
            Reg::Arg1 => self.arg1,
            Reg::CmdTm => 0,
            Reg::Response(i) => self.resp[usize::from(i & 3)],
            Reg::Data => self.data_read(),
            Reg::Present => self.present(),
            Reg::Host => self.host,
            Reg::Clock => {
                if self.reset_reads > 0 && !self.faults.reset_stuck {
                    self.reset_reads -= 1;
                    if self.reset_reads == 0 {
                        self.clock &= !(CLOCK::RESET_ALL::SET + CLOCK::RESET_CMD::SET + CLOCK::RESET_DAT::SET).value;
                    }
                }
                let mut c = self.clock;
                if c & CLOCK::INTERNAL_ENABLE::SET.value != 0 {
                    c |= CLOCK::INTERNAL_STABLE::SET.value;
                }
                c
            }
            Reg::IntStatus => self.int_status,
            Reg::IntEnable => self.int_enable,
            Reg::IntSignal => 0,
            Reg::Caps => self.caps,
            Reg::Version => self.version,
        }
    }

    fn write(&mut self, reg: Reg, value: u32) {
        match reg {
            Reg::Block => self.block = value,
            Reg::Arg1 => self.arg1 = value,
            Reg::CmdTm => self.command(value),
            Reg::Data => self.data_write(value),
            Reg::Host => self.host = value,
            Reg::Clock => {
                let resets = (CLOCK::RESET_ALL::SET + CLOCK::RESET_CMD::SET + CLOCK::RESET_DAT::SET).value;
                if value & CLOCK::RESET_ALL::SET.value != 0 {
                    self.host = 0;
                    self.int_status = 0;
                    self.int_enable = 0;
                    self.block = 0;
                    self.xfer = None;
                }
                if value & (CLOCK::RESET_CMD::SET + CLOCK::RESET_DAT::SET).value != 0 {
                    self.xfer = None;
                    self.int_status = 0;
                }
                if value & resets != 0 {
                    self.reset_reads = 3;
                }
                self.clock = value;
            }
            Reg::IntStatus => {
                self.int_status &= !value;
                if self.int_status & 0xffff_0000 == 0 {
                    self.int_status &= !INT::ERROR::SET.value;
                }
            }
            Reg::IntEnable => self.int_enable = value,
            Reg::IntSignal | Reg::Arg2 | Reg::Response(_) | Reg::Present | Reg::Caps | Reg::Version => {}
        }
    }

    fn now_us(&mut self) -> u64 {
        self.now
    }

    fn delay_us(&mut self, us: u64) {
        self.now += us;
    }
}

/// Sets response bits `hi..=lo` (register numbering, as `super::bits`).
pub fn set_bits(resp: &mut [u32; 4], hi: u32, lo: u32, value: u64) {
    for b in lo..=hi {
        let bit = ((value >> (b - lo)) & 1) as u32;
        let w = &mut resp[(b / 32) as usize];
        *w = (*w & !(1 << (b % 32))) | (bit << (b % 32));
    }
}

/// A CSD for `sectors` (v2 for high capacity, else v1 with 512-byte
/// blocks and multiplier 512), as the controller stores it.
pub fn csd(sectors: u64, high_capacity: bool) -> [u32; 4] {
    let mut r = [0u32; 4];
    let mut f = |hi: u32, lo: u32, v: u64| set_bits(&mut r, hi - 8, lo - 8, v);
    if high_capacity {
        f(127, 126, 1);
        f(69, 48, sectors / 1024 - 1);
    } else {
        f(127, 126, 0);
        f(83, 80, 9);
        f(49, 47, 7);
        f(73, 62, sectors / 512 - 1);
    }
    r
}
