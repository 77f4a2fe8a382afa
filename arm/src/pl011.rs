//! The Arm PrimeCell UART (PL011) register map and bits, after the *PL011
//! Technical Reference Manual* (Arm DDI 0183), chapter 3 "Programmers
//! Model": for the console driver (`hv-uart`, through [`Registers`]), dom0's
//! emulated PL011 and the test guests' drivers (through the offsets in
//! [`reg`] and the masks in [`dr`], [`fr`], [`cr`], [`lcr_h`], [`rsr`], [`int`]).
//!
//! The guests' accesses are trapped and emulated by dom0, so they go through
//! `hv-mmio`'s single plain loads and stores (a hypervisor can emulate only
//! an access whose syndrome it gets) at the offsets below rather than
//! through the `register_structs!` layout they are derived from. The masks
//! are derived from the `register_bitfields!` definitions, so each bit's
//! position is written once.

use core::mem::offset_of;

use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

register_bitfields! [u32,
    /// UARTDR, data (TRM 3.3.1): a received byte with its error flags.
    pub UARTDR [
        DATA OFFSET(0) NUMBITS(8) [],
        /// Framing, parity, break and overrun errors.
        FE OFFSET(8) NUMBITS(1) [],
        PE OFFSET(9) NUMBITS(1) [],
        BE OFFSET(10) NUMBITS(1) [],
        OE OFFSET(11) NUMBITS(1) []
    ],
    /// UARTRSR, receive status (TRM 3.3.2).
    pub UARTRSR [
        /// Overrun: a byte arrived while the receive FIFO was full.
        OE OFFSET(3) NUMBITS(1) []
    ],
    /// UARTFR, flags (TRM 3.3.3).
    pub UARTFR [
        BUSY OFFSET(3) NUMBITS(1) [],
        RXFE OFFSET(4) NUMBITS(1) [],
        TXFF OFFSET(5) NUMBITS(1) [],
        RXFF OFFSET(6) NUMBITS(1) [],
        TXFE OFFSET(7) NUMBITS(1) []
    ],
    /// UARTLCR_H, line control (TRM 3.3.7).
    pub UARTLCR_H [
        /// Enable the FIFOs (16 deep); clear means one-character holding registers.
        FEN OFFSET(4) NUMBITS(1) [],
        /// Word length: 0b11 is 8 bits.
        WLEN OFFSET(5) NUMBITS(2) []
    ],
    /// UARTCR, control (TRM 3.3.8).
    pub UARTCR [
        UARTEN OFFSET(0) NUMBITS(1) [],
        /// Loopback: transmitted bytes go to the receiver instead of the line.
        LBE OFFSET(7) NUMBITS(1) [],
        TXE OFFSET(8) NUMBITS(1) [],
        RXE OFFSET(9) NUMBITS(1) []
    ],
    /// The interrupt bits of UARTIMSC, UARTRIS, UARTMIS and UARTICR
    /// (TRM 3.3.10 to 3.3.13).
    pub UARTINT [
        /// Receive: the receive FIFO reached its trigger level.
        RX OFFSET(4) NUMBITS(1) [],
        /// Transmit: the transmit FIFO fell to its trigger level.
        TX OFFSET(5) NUMBITS(1) [],
        /// Receive timeout: data waits in the receive FIFO below the trigger level.
        RT OFFSET(6) NUMBITS(1) [],
        /// All eleven interrupt bits (modem, receive, transmit, timeout, errors).
        ALL OFFSET(0) NUMBITS(11) []
    ]
];

register_structs! {
    /// The 4 KiB register frame (TRM 3.2, table 3-1).
    pub Registers {
        (0x000 => pub dr: ReadWrite<u32>),
        (0x004 => pub rsr_ecr: ReadWrite<u32, UARTRSR::Register>),
        (0x008 => _reserved0),
        (0x018 => pub fr: ReadOnly<u32, UARTFR::Register>),
        (0x01c => _reserved1),
        (0x020 => pub ilpr: ReadWrite<u32>),
        (0x024 => pub ibrd: ReadWrite<u32>),
        (0x028 => pub fbrd: ReadWrite<u32>),
        (0x02c => pub lcr_h: ReadWrite<u32, UARTLCR_H::Register>),
        (0x030 => pub cr: ReadWrite<u32, UARTCR::Register>),
        (0x034 => pub ifls: ReadWrite<u32>),
        (0x038 => pub imsc: ReadWrite<u32, UARTINT::Register>),
        (0x03c => pub ris: ReadOnly<u32, UARTINT::Register>),
        (0x040 => pub mis: ReadOnly<u32, UARTINT::Register>),
        (0x044 => pub icr: WriteOnly<u32, UARTINT::Register>),
        (0x048 => pub dmacr: ReadWrite<u32>),
        (0x04c => _reserved2),
        (0xfe0 => pub id: [ReadOnly<u32>; 8]),
        (0x1000 => @END),
    }
}

/// Register offsets within the frame.
pub mod reg {
    use super::*;

    /// `UARTDR`: data. Write transmits; read pops the receive FIFO.
    pub const DR: u64 = offset_of!(Registers, dr) as u64;
    /// `UARTRSR` (read) / `UARTECR` (write): receive status / error clear.
    pub const RSR_ECR: u64 = offset_of!(Registers, rsr_ecr) as u64;
    /// `UARTFR`: flags (read-only).
    pub const FR: u64 = offset_of!(Registers, fr) as u64;
    /// `UARTILPR`: IrDA low-power counter.
    pub const ILPR: u64 = offset_of!(Registers, ilpr) as u64;
    /// `UARTIBRD`: integer baud rate divisor.
    pub const IBRD: u64 = offset_of!(Registers, ibrd) as u64;
    /// `UARTFBRD`: fractional baud rate divisor.
    pub const FBRD: u64 = offset_of!(Registers, fbrd) as u64;
    /// `UARTLCR_H`: line control.
    pub const LCR_H: u64 = offset_of!(Registers, lcr_h) as u64;
    /// `UARTCR`: control.
    pub const CR: u64 = offset_of!(Registers, cr) as u64;
    /// `UARTIFLS`: interrupt FIFO level select.
    pub const IFLS: u64 = offset_of!(Registers, ifls) as u64;
    /// `UARTIMSC`: interrupt mask set/clear (1 = enabled).
    pub const IMSC: u64 = offset_of!(Registers, imsc) as u64;
    /// `UARTRIS`: raw interrupt status (read-only).
    pub const RIS: u64 = offset_of!(Registers, ris) as u64;
    /// `UARTMIS`: masked interrupt status (read-only).
    pub const MIS: u64 = offset_of!(Registers, mis) as u64;
    /// `UARTICR`: interrupt clear (write-only, write 1 to clear).
    pub const ICR: u64 = offset_of!(Registers, icr) as u64;
    /// `UARTDMACR`: DMA control.
    pub const DMACR: u64 = offset_of!(Registers, dmacr) as u64;
    /// First of the eight identification registers (`UARTPeriphID0`).
    pub const PERIPH_ID0: u64 = offset_of!(Registers, id) as u64;
    /// Size of the register frame.
    pub const FRAME_SIZE: u64 = core::mem::size_of::<Registers>() as u64;
}

/// `UARTDR` masks.
pub mod dr {
    use super::UARTDR;

    /// The four error flags a received byte carries.
    pub const ERRORS: u32 = UARTDR::FE::SET.value | UARTDR::PE::SET.value | UARTDR::BE::SET.value | UARTDR::OE::SET.value;
}

/// `UARTFR` masks.
pub mod fr {
    use super::UARTFR;

    pub const BUSY: u32 = UARTFR::BUSY::SET.value;
    pub const RXFE: u32 = UARTFR::RXFE::SET.value;
    pub const TXFF: u32 = UARTFR::TXFF::SET.value;
    pub const RXFF: u32 = UARTFR::RXFF::SET.value;
    pub const TXFE: u32 = UARTFR::TXFE::SET.value;
}

/// `UARTLCR_H` masks.
pub mod lcr_h {
    use super::UARTLCR_H;

    pub const FEN: u32 = UARTLCR_H::FEN::SET.value;
    /// 8-bit words.
    pub const WLEN_8: u32 = UARTLCR_H::WLEN.val(0b11).value;
}

/// `UARTCR` masks.
pub mod cr {
    use super::UARTCR;

    pub const UARTEN: u32 = UARTCR::UARTEN::SET.value;
    pub const LBE: u32 = UARTCR::LBE::SET.value;
    pub const TXE: u32 = UARTCR::TXE::SET.value;
    pub const RXE: u32 = UARTCR::RXE::SET.value;
    /// Value after reset: transmitter and receiver enabled, UART disabled.
    pub const RESET: u32 = TXE | RXE;
}

/// `UARTRSR` masks.
pub mod rsr {
    use super::UARTRSR;

    pub const OE: u32 = UARTRSR::OE::SET.value;
}

/// Masks of the interrupt bits shared by `UARTIMSC`, `UARTRIS`, `UARTMIS`
/// and `UARTICR`.
pub mod int {
    use super::UARTINT;

    pub const RX: u32 = UARTINT::RX::SET.value;
    pub const TX: u32 = UARTINT::TX::SET.value;
    pub const RT: u32 = UARTINT::RT::SET.value;
    pub const ALL: u32 = UARTINT::ALL::SET.value;
}

/// Receive and transmit FIFO depth with `FEN` set; one without.
pub const FIFO_DEPTH: usize = 16;

/// `UARTPeriphID0..3` then `UARTPCellID0..3` (TRM 3.3.15, 3.3.16) of a PL011
/// r1p5, the revision QEMU's `pl011` reports.
pub const ID_BYTES: [u8; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_bits_are_the_trm_s() {
        assert_eq!((reg::DR, reg::RSR_ECR, reg::FR, reg::ILPR, reg::IBRD, reg::FBRD), (0, 4, 0x18, 0x20, 0x24, 0x28));
        assert_eq!((reg::LCR_H, reg::CR, reg::IFLS, reg::IMSC, reg::RIS, reg::MIS), (0x2c, 0x30, 0x34, 0x38, 0x3c, 0x40));
        assert_eq!((reg::ICR, reg::DMACR, reg::PERIPH_ID0, reg::FRAME_SIZE), (0x44, 0x48, 0xfe0, 0x1000));
        assert_eq!((fr::BUSY, fr::RXFE, fr::TXFF, fr::RXFF, fr::TXFE), (1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 7));
        assert_eq!((cr::UARTEN, cr::LBE, cr::TXE, cr::RXE, cr::RESET), (1, 1 << 7, 1 << 8, 1 << 9, 0x300));
        assert_eq!((int::RX, int::TX, int::RT, int::ALL), (1 << 4, 1 << 5, 1 << 6, 0x7ff));
        assert_eq!((lcr_h::FEN, lcr_h::WLEN_8, rsr::OE, dr::ERRORS), (1 << 4, 0x60, 1 << 3, 0xf00));
    }
}
