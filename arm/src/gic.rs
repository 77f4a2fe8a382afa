//! GIC register maps: the distributor (GICD), the GICv3 redistributor
//! (GICR), the GICv2 CPU interface (GICC) and the GICv2 virtual interface
//! control (GICH), plus the fields the project's drivers and the vGIC use.
//!
//! Sources: GICv2 IHI 0048B, 4.1.2 "Distributor register map", 4.1.3 "CPU
//! interface register map", 5.3.1 "GIC virtual interface control register
//! map"; GICv3 IHI 0069, 12.8 "The GIC Distributor register map", 12.10 "The
//! GIC Redistributor register map" and 12.11 "ICC_SGI1R_EL1".
//!
//! Each frame is a `register_structs!` layout (which checks every offset at
//! compile time), and the offsets the drivers use are derived from it with
//! `offset_of!`, so the layout is written once. The drivers do not
//! dereference these structs: dom0 and the guests reach the GIC only through
//! `hv-mmio`'s accessors, because the hypervisor traps and emulates their
//! GIC accesses and can emulate only a single plain load or store whose
//! syndrome it gets (ESR ISV = 1), while tock-registers' `read_volatile` may
//! be compiled to a post-indexed or paired access it cannot emulate. The
//! hypervisor (not trapped) uses the same offsets, so all four drivers and
//! the emulator agree by construction. Registers that are arrays indexed by
//! INTID export their base offset; the caller adds `4 * (intid / 32)` (bit
//! arrays), `intid` (byte arrays), `4 * (intid / 16)` (ICFGR) or `8 * intid`
//! (IROUTER).

use core::mem::offset_of;

use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

/// INTIDs 1020..=1023 are special; 1023 means "nothing pending".
pub const SPURIOUS: u32 = 1023;
/// The first special INTID: a distributor implements at most this many lines.
pub const FIRST_SPECIAL_INTID: u32 = 1020;
/// SGIs are INTIDs 0..16, PPIs 16..32, SPIs from 32.
pub const FIRST_PPI: u32 = 16;
pub const FIRST_SPI: u32 = 32;

/// Number of interrupt lines a distributor implements, from GICD_TYPER:
/// 32 * (ITLinesNumber + 1), capped below the special INTIDs.
pub fn distributor_lines(typer: u32) -> u32 {
    (32 * (GICD_TYPER::ITLinesNumber.read(typer) + 1)).min(FIRST_SPECIAL_INTID)
}

register_bitfields! [u32,
    /// GICD_CTLR. The names are those of the single-Security-state view
    /// (GICv2 without Security Extensions, GICv3 with DS = 1); in the
    /// Non-secure view of a GIC with two Security states bit 0 is
    /// EnableGrp1, bit 1 EnableGrp1A and bit 4 ARE_NS.
    pub GICD_CTLR [
        EnableGrp0 OFFSET(0) NUMBITS(1) [],
        EnableGrp1 OFFSET(1) NUMBITS(1) [],
        /// GICv3: affinity routing enable.
        ARE OFFSET(4) NUMBITS(1) [],
        /// GICv3: disable security (one Security state).
        DS OFFSET(6) NUMBITS(1) [],
        /// GICv3: register write pending.
        RWP OFFSET(31) NUMBITS(1) [],
        /// Non-secure view (GICv2 with Security Extensions, GICv3 with DS =
        /// 0): bit 0 enables Non-secure group 1 ...
        EnableGrp1NS OFFSET(0) NUMBITS(1) [],
        /// ... bit 1 is GICv3's EnableGrp1A ...
        EnableGrp1A OFFSET(1) NUMBITS(1) [],
        /// ... and bit 4 GICv3's ARE_NS.
        ARE_NS OFFSET(4) NUMBITS(1) []
    ],
    /// GICD_TYPER.
    pub GICD_TYPER [
        /// Lines implemented: 32 * (ITLinesNumber + 1).
        ITLinesNumber OFFSET(0) NUMBITS(5) [],
        /// GICv2: number of CPU interfaces - 1.
        CPUNumber OFFSET(5) NUMBITS(3) [],
        /// GICv3: INTID bits supported - 1.
        IDbits OFFSET(19) NUMBITS(5) [],
        /// GICv3: Aff3 is supported.
        A3V OFFSET(24) NUMBITS(1) []
    ],
    /// GICD_SGIR (GICv2): software-generated interrupt.
    pub GICD_SGIR [
        SGIINTID OFFSET(0) NUMBITS(4) [],
        CPUTargetList OFFSET(16) NUMBITS(8) [],
        TargetListFilter OFFSET(24) NUMBITS(2) [
            TargetList = 0,
            AllOthers = 1,
            SelfOnly = 2
        ]
    ],
    /// GICR_CTLR.
    pub GICR_CTLR [
        /// Register write pending.
        RWP OFFSET(3) NUMBITS(1) []
    ],
    /// GICR_WAKER.
    pub GICR_WAKER [
        ProcessorSleep OFFSET(1) NUMBITS(1) [],
        ChildrenAsleep OFFSET(2) NUMBITS(1) []
    ],
    /// GICC_CTLR (GICv2). Names of the view without Security Extensions; in
    /// the Non-secure view bit 0 is EnableGrp1 and bit 9 EOImodeNS.
    pub GICC_CTLR [
        EnableGrp0 OFFSET(0) NUMBITS(1) [],
        EnableGrp1 OFFSET(1) NUMBITS(1) [],
        /// GICC_IAR acknowledges group 1 interrupts too.
        AckCtl OFFSET(2) NUMBITS(1) [],
        /// Split priority drop (EOIR) and deactivation (DIR).
        EOImodeS OFFSET(9) NUMBITS(1) [],
        EOImodeNS OFFSET(10) NUMBITS(1) [],
        /// Non-secure view: bit 0 enables group 1.
        EnableGrp1NS OFFSET(0) NUMBITS(1) []
    ],
    /// GICH_HCR (GICv2), and the same bits of ICH_HCR_EL2 (GICv3).
    pub GICH_HCR [
        /// Virtual CPU interface enable.
        En OFFSET(0) NUMBITS(1) [],
        /// Underflow (list registers empty or nearly) maintenance interrupt.
        UIE OFFSET(1) NUMBITS(1) []
    ],
    /// GICH_VTR (GICv2).
    pub GICH_VTR [
        /// Number of list registers - 1.
        ListRegs OFFSET(0) NUMBITS(6) []
    ]
];

register_bitfields! [u64,
    /// GICR_TYPER.
    pub GICR_TYPER [
        /// Virtual LPIs supported: the redistributor has two more 64 KiB
        /// frames (VLPI_base and a reserved one).
        VLPIS OFFSET(1) NUMBITS(1) [],
        /// The last redistributor of its region.
        Last OFFSET(4) NUMBITS(1) [],
        /// A number for the PE, unique among the redistributors.
        ProcessorNumber OFFSET(8) NUMBITS(16) [],
        /// Aff3.Aff2.Aff1.Aff0 of the PE this redistributor serves.
        AffinityValue OFFSET(32) NUMBITS(32) []
    ],
    /// GICD_IROUTER<n> (GICv3): where SPI n goes.
    pub GICD_IROUTER [
        Aff0 OFFSET(0) NUMBITS(8) [],
        Aff1 OFFSET(8) NUMBITS(8) [],
        Aff2 OFFSET(16) NUMBITS(8) [],
        /// Interrupt routing mode: any one participating PE.
        IRM OFFSET(31) NUMBITS(1) [],
        Aff3 OFFSET(32) NUMBITS(8) []
    ],
    /// ICC_SGI1R_EL1 (GICv3), the system register that sends a group 1 SGI.
    pub ICC_SGI1R [
        /// Aff0 values RS * 16 + bit that receive the SGI.
        TargetList OFFSET(0) NUMBITS(16) [],
        Aff1 OFFSET(16) NUMBITS(8) [],
        INTID OFFSET(24) NUMBITS(4) [],
        Aff2 OFFSET(32) NUMBITS(8) [],
        /// Interrupt routing mode: every PE except the sender.
        IRM OFFSET(40) NUMBITS(1) [],
        /// Range selector: TargetList covers Aff0 RS * 16 .. RS * 16 + 15.
        RS OFFSET(44) NUMBITS(4) [],
        Aff3 OFFSET(48) NUMBITS(8) []
    ]
];

/// The MPIDR_EL1 affinity of a PE as GICR_TYPER.AffinityValue reports it
/// (Aff3 in bits [31:24], then Aff2.Aff1.Aff0).
pub const fn redistributor_affinity(mpidr: u64) -> u64 {
    ((mpidr >> 32) & 0xff) << 24 | (mpidr & 0xff_ffff)
}

/// The affinity fields of GICD_IROUTER<n>, which sit where MPIDR_EL1 has them.
pub const IROUTER_AFFINITY_MASK: u64 = GICD_IROUTER::Aff0::SET.value
    | GICD_IROUTER::Aff1::SET.value
    | GICD_IROUTER::Aff2::SET.value
    | GICD_IROUTER::Aff3::SET.value;

/// The MPIDR_EL1 affinity as GICD_IROUTER<n> takes it (IRM = 0).
pub const fn irouter_affinity(mpidr: u64) -> u64 {
    mpidr & IROUTER_AFFINITY_MASK
}

/// A decoded ICC_SGI1R_EL1 value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sgi1r {
    /// TargetList: Aff0 values RS * 16 + bit.
    pub target_list: u16,
    pub aff1: u8,
    pub intid: u8,
    pub aff2: u8,
    /// IRM: all PEs except self.
    pub irm: bool,
    /// RS: which 16 Aff0 values `target_list` covers.
    pub rs: u8,
    pub aff3: u8,
}

impl Sgi1r {
    pub fn decode(v: u64) -> Self {
        Self {
            target_list: ICC_SGI1R::TargetList.read(v) as u16,
            aff1: ICC_SGI1R::Aff1.read(v) as u8,
            intid: ICC_SGI1R::INTID.read(v) as u8,
            aff2: ICC_SGI1R::Aff2.read(v) as u8,
            irm: ICC_SGI1R::IRM.is_set(v),
            rs: ICC_SGI1R::RS.read(v) as u8,
            aff3: ICC_SGI1R::Aff3.read(v) as u8,
        }
    }

    /// SGI `intid` to the one PE with affinity `mpidr` (whose Aff0 is below 16).
    pub fn to_pe(intid: u32, mpidr: u64) -> Self {
        Self {
            target_list: 1 << (mpidr & 0xf),
            aff1: (mpidr >> 8) as u8,
            intid: (intid & 0xf) as u8,
            aff2: (mpidr >> 16) as u8,
            irm: false,
            rs: 0,
            aff3: (mpidr >> 32) as u8,
        }
    }

    pub fn encode(self) -> u64 {
        (ICC_SGI1R::TargetList.val(self.target_list.into())
            + ICC_SGI1R::Aff1.val(self.aff1.into())
            + ICC_SGI1R::INTID.val(self.intid.into())
            + ICC_SGI1R::Aff2.val(self.aff2.into())
            + ICC_SGI1R::IRM.val(self.irm.into())
            + ICC_SGI1R::RS.val(self.rs.into())
            + ICC_SGI1R::Aff3.val(self.aff3.into()))
        .value
    }

    /// Whether a PE with this MPIDR is in the target list.
    pub fn targets(&self, mpidr: u64) -> bool {
        let aff = |n: u32| (mpidr >> n) as u8;
        if (aff(32), aff(16), aff(8)) != (self.aff3, self.aff2, self.aff1) {
            return false;
        }
        let aff0 = u32::from(aff(0));
        let base = u32::from(self.rs) * 16;
        (base..base + 16).contains(&aff0) && self.target_list & (1 << (aff0 - base)) != 0
    }
}

/// Identification registers (PIDR4..PIDR7, PIDR0..PIDR3, CIDR0..CIDR3) are
/// the last 0x30 bytes of a distributor or redistributor frame, whatever
/// its size.
pub const ID_REGISTERS_FROM_END: usize = 0x30;

/// The distributor.
pub mod gicd {
    use super::*;

    register_structs! {
        /// The distributor frame: 4 KiB in GICv2 (which ends at 0x1000 and
        /// has its identification registers at 0xfd0), 64 KiB in GICv3.
        pub Registers {
            (0x0000 => pub ctlr: ReadWrite<u32, GICD_CTLR::Register>),
            (0x0004 => pub typer: ReadOnly<u32, GICD_TYPER::Register>),
            (0x0008 => pub iidr: ReadOnly<u32>),
            (0x000c => _reserved0),
            (0x0080 => pub igroupr: [ReadWrite<u32>; 32]),
            (0x0100 => pub isenabler: [ReadWrite<u32>; 32]),
            (0x0180 => pub icenabler: [ReadWrite<u32>; 32]),
            (0x0200 => pub ispendr: [ReadWrite<u32>; 32]),
            (0x0280 => pub icpendr: [ReadWrite<u32>; 32]),
            (0x0300 => pub isactiver: [ReadWrite<u32>; 32]),
            (0x0380 => pub icactiver: [ReadWrite<u32>; 32]),
            (0x0400 => pub ipriorityr: [ReadWrite<u8>; 1024]),
            (0x0800 => pub itargetsr: [ReadWrite<u8>; 1024]),
            (0x0c00 => pub icfgr: [ReadWrite<u32>; 64]),
            (0x0d00 => _reserved1),
            (0x0f00 => pub sgir: WriteOnly<u32, GICD_SGIR::Register>),
            (0x0f04 => _reserved2),
            (0x0f10 => pub cpendsgir: [ReadWrite<u8>; 16]),
            (0x0f20 => pub spendsgir: [ReadWrite<u8>; 16]),
            (0x0f30 => _reserved3),
            /// n = 32..=1019 exist; the block's other slots are reserved.
            (0x6000 => pub irouter: [ReadWrite<u64>; 1024]),
            (0x8000 => _reserved4),
            (0xffd0 => pub id: [ReadOnly<u32>; 12]),
            (0x10000 => @END),
        }
    }

    pub const CTLR: usize = offset_of!(Registers, ctlr);
    pub const TYPER: usize = offset_of!(Registers, typer);
    pub const IIDR: usize = offset_of!(Registers, iidr);
    pub const IGROUPR: usize = offset_of!(Registers, igroupr);
    pub const ISENABLER: usize = offset_of!(Registers, isenabler);
    pub const ICENABLER: usize = offset_of!(Registers, icenabler);
    pub const ISPENDR: usize = offset_of!(Registers, ispendr);
    pub const ICPENDR: usize = offset_of!(Registers, icpendr);
    pub const ISACTIVER: usize = offset_of!(Registers, isactiver);
    pub const ICACTIVER: usize = offset_of!(Registers, icactiver);
    pub const IPRIORITYR: usize = offset_of!(Registers, ipriorityr);
    pub const ITARGETSR: usize = offset_of!(Registers, itargetsr);
    pub const ICFGR: usize = offset_of!(Registers, icfgr);
    /// GICv2 only.
    pub const SGIR: usize = offset_of!(Registers, sgir);
    pub const CPENDSGIR: usize = offset_of!(Registers, cpendsgir);
    pub const SPENDSGIR: usize = offset_of!(Registers, spendsgir);
    /// GICv3 only: 64 bits per INTID.
    pub const IROUTER: usize = offset_of!(Registers, irouter);
    /// The end of each array (exclusive), for decoders that match ranges.
    pub const IGROUPR_END: usize = ISENABLER;
    pub const ICACTIVER_END: usize = IPRIORITYR;
    pub const IPRIORITYR_END: usize = ITARGETSR;
    pub const ITARGETSR_END: usize = ICFGR;
    pub const ICFGR_END: usize = ICFGR + 64 * 4;
    pub const CPENDSGIR_END: usize = SPENDSGIR;
    pub const SPENDSGIR_END: usize = SPENDSGIR + 16;
    pub const IROUTER_END: usize = IROUTER + 1024 * 8;

    /// Frame sizes.
    pub const V2_FRAME_SIZE: usize = 0x1000;
    pub const V3_FRAME_SIZE: usize = core::mem::size_of::<Registers>();
}

/// The GICv3 redistributor: an RD_base frame, then an SGI_base frame.
pub mod gicr {
    use super::*;

    register_structs! {
        /// RD_base: control, identification and power management.
        pub RdRegisters {
            (0x0000 => pub ctlr: ReadWrite<u32, GICR_CTLR::Register>),
            (0x0004 => pub iidr: ReadOnly<u32>),
            (0x0008 => pub typer: ReadOnly<u64, GICR_TYPER::Register>),
            (0x0010 => pub statusr: ReadWrite<u32>),
            (0x0014 => pub waker: ReadWrite<u32, GICR_WAKER::Register>),
            (0x0018 => _reserved0),
            (0x0040 => pub setlpir: WriteOnly<u64>),
            (0x0048 => pub clrlpir: WriteOnly<u64>),
            (0x0050 => _reserved1),
            (0x0070 => pub propbaser: ReadWrite<u64>),
            (0x0078 => pub pendbaser: ReadWrite<u64>),
            (0x0080 => _reserved2),
            (0xffd0 => pub id: [ReadOnly<u32>; 12]),
            (0x10000 => @END),
        },
        /// SGI_base: the SGI and PPI registers of this PE, at the offsets the
        /// distributor has for INTIDs 0..32.
        pub SgiRegisters {
            (0x0000 => _reserved0),
            (0x0080 => pub igroupr0: ReadWrite<u32>),
            (0x0084 => _reserved1),
            (0x0100 => pub isenabler0: ReadWrite<u32>),
            (0x0104 => _reserved2),
            (0x0180 => pub icenabler0: ReadWrite<u32>),
            (0x0184 => _reserved3),
            (0x0200 => pub ispendr0: ReadWrite<u32>),
            (0x0204 => _reserved4),
            (0x0280 => pub icpendr0: ReadWrite<u32>),
            (0x0284 => _reserved5),
            (0x0300 => pub isactiver0: ReadWrite<u32>),
            (0x0304 => _reserved6),
            (0x0380 => pub icactiver0: ReadWrite<u32>),
            (0x0384 => _reserved7),
            (0x0400 => pub ipriorityr: [ReadWrite<u8>; 32]),
            (0x0420 => _reserved8),
            (0x0c00 => pub icfgr: [ReadWrite<u32>; 2]),
            (0x0c08 => _reserved9),
            (0x10000 => @END),
        }
    }

    pub const CTLR: usize = offset_of!(RdRegisters, ctlr);
    pub const IIDR: usize = offset_of!(RdRegisters, iidr);
    pub const TYPER: usize = offset_of!(RdRegisters, typer);
    pub const STATUSR: usize = offset_of!(RdRegisters, statusr);
    pub const WAKER: usize = offset_of!(RdRegisters, waker);
    pub const PROPBASER: usize = offset_of!(RdRegisters, propbaser);
    pub const PENDBASER: usize = offset_of!(RdRegisters, pendbaser);
    pub const PENDBASER_END: usize = PENDBASER + 8;

    /// Each frame's size.
    pub const FRAME_SIZE: usize = core::mem::size_of::<RdRegisters>();
    /// SGI_base, from RD_base.
    pub const SGI_BASE: usize = FRAME_SIZE;
    /// From one redistributor to the next (RD_base + SGI_base), without
    /// virtual LPIs.
    pub const STRIDE: usize = FRAME_SIZE + core::mem::size_of::<SgiRegisters>();
    /// The same with GICR_TYPER.VLPIS (VLPI_base and a reserved frame follow).
    pub const STRIDE_VLPIS: usize = 2 * STRIDE;

    /// Offsets within SGI_base.
    pub mod sgi {
        use super::*;

        pub const IGROUPR0: usize = offset_of!(SgiRegisters, igroupr0);
        pub const ISENABLER0: usize = offset_of!(SgiRegisters, isenabler0);
        pub const ICENABLER0: usize = offset_of!(SgiRegisters, icenabler0);
        pub const ISPENDR0: usize = offset_of!(SgiRegisters, ispendr0);
        pub const ICPENDR0: usize = offset_of!(SgiRegisters, icpendr0);
        pub const ISACTIVER0: usize = offset_of!(SgiRegisters, isactiver0);
        pub const ICACTIVER0: usize = offset_of!(SgiRegisters, icactiver0);
        pub const IPRIORITYR: usize = offset_of!(SgiRegisters, ipriorityr);
        pub const IPRIORITYR_END: usize = IPRIORITYR + 32;
        pub const ICFGR0: usize = offset_of!(SgiRegisters, icfgr);
        pub const ICFGR1: usize = ICFGR0 + 4;
    }
}

/// The GICv2 CPU interface.
pub mod gicc {
    use super::*;

    register_structs! {
        pub Registers {
            (0x0000 => pub ctlr: ReadWrite<u32, GICC_CTLR::Register>),
            (0x0004 => pub pmr: ReadWrite<u32>),
            (0x0008 => pub bpr: ReadWrite<u32>),
            (0x000c => pub iar: ReadOnly<u32>),
            (0x0010 => pub eoir: WriteOnly<u32>),
            (0x0014 => pub rpr: ReadOnly<u32>),
            (0x0018 => pub hppir: ReadOnly<u32>),
            (0x001c => _reserved0),
            (0x00fc => pub iidr: ReadOnly<u32>),
            (0x0100 => _reserved1),
            (0x1000 => pub dir: WriteOnly<u32>),
            (0x1004 => _reserved2),
            (0x2000 => @END),
        }
    }

    pub const CTLR: usize = offset_of!(Registers, ctlr);
    pub const PMR: usize = offset_of!(Registers, pmr);
    pub const BPR: usize = offset_of!(Registers, bpr);
    pub const IAR: usize = offset_of!(Registers, iar);
    pub const EOIR: usize = offset_of!(Registers, eoir);
    pub const DIR: usize = offset_of!(Registers, dir);
    pub const FRAME_SIZE: usize = core::mem::size_of::<Registers>();

    /// GICC_IAR / ICC_IAR1_EL1: the acknowledged INTID (bits [9:0]; GICv2
    /// puts the source CPU of an SGI in [12:10]).
    pub const IAR_INTID_MASK: u32 = 0x3ff;
}

/// The GICv2 virtual interface control (GICH), the hypervisor's view of a
/// vCPU's list registers.
pub mod gich {
    use super::*;

    register_structs! {
        pub Registers {
            (0x0000 => pub hcr: ReadWrite<u32, GICH_HCR::Register>),
            (0x0004 => pub vtr: ReadOnly<u32, GICH_VTR::Register>),
            (0x0008 => pub vmcr: ReadWrite<u32>),
            (0x000c => _reserved0),
            (0x0010 => pub misr: ReadOnly<u32>),
            (0x0014 => _reserved1),
            (0x0020 => pub eisr: [ReadOnly<u32>; 2]),
            (0x0028 => _reserved2),
            (0x0030 => pub elrsr: [ReadOnly<u32>; 2]),
            (0x0038 => _reserved3),
            (0x00f0 => pub apr: ReadWrite<u32>),
            (0x00f4 => _reserved4),
            (0x0100 => pub lr: [ReadWrite<u32>; 64]),
            (0x0200 => @END),
        }
    }

    pub const HCR: usize = offset_of!(Registers, hcr);
    pub const VTR: usize = offset_of!(Registers, vtr);
    pub const VMCR: usize = offset_of!(Registers, vmcr);
    pub const MISR: usize = offset_of!(Registers, misr);
    pub const ELRSR0: usize = offset_of!(Registers, elrsr);
    pub const APR: usize = offset_of!(Registers, apr);
    /// List register n is at `LR0 + 4 * n`.
    pub const LR0: usize = offset_of!(Registers, lr);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_the_specifications() {
        // Spot checks against the register maps of IHI 0048B and IHI 0069.
        assert_eq!((gicd::CTLR, gicd::TYPER, gicd::IGROUPR, gicd::ISENABLER, gicd::ICENABLER), (0, 4, 0x80, 0x100, 0x180));
        assert_eq!((gicd::ICPENDR, gicd::ISACTIVER, gicd::ICACTIVER, gicd::IPRIORITYR), (0x280, 0x300, 0x380, 0x400));
        assert_eq!((gicd::ITARGETSR, gicd::ICFGR, gicd::SGIR, gicd::IROUTER), (0x800, 0xc00, 0xf00, 0x6000));
        assert_eq!((gicd::CPENDSGIR, gicd::SPENDSGIR, gicd::V3_FRAME_SIZE), (0xf10, 0xf20, 0x1_0000));
        assert_eq!((gicr::TYPER, gicr::WAKER, gicr::PROPBASER, gicr::PENDBASER), (8, 0x14, 0x70, 0x78));
        assert_eq!((gicr::SGI_BASE, gicr::STRIDE, gicr::STRIDE_VLPIS), (0x1_0000, 0x2_0000, 0x4_0000));
        assert_eq!((gicr::sgi::IGROUPR0, gicr::sgi::ISENABLER0, gicr::sgi::IPRIORITYR, gicr::sgi::ICFGR1), (0x80, 0x100, 0x400, 0xc04));
        assert_eq!((gicc::PMR, gicc::IAR, gicc::EOIR, gicc::DIR), (4, 0xc, 0x10, 0x1000));
        assert_eq!((gich::VTR, gich::MISR, gich::ELRSR0, gich::APR, gich::LR0), (4, 0x10, 0x30, 0xf0, 0x100));
    }

    #[test]
    fn fields_are_where_the_specifications_put_them() {
        assert_eq!(GICD_CTLR::RWP::SET.value, 1 << 31);
        assert_eq!((GICD_CTLR::ARE::SET + GICD_CTLR::EnableGrp1::SET + GICD_CTLR::EnableGrp0::SET).value, 0x13);
        assert_eq!(GICR_WAKER::ChildrenAsleep::SET.value, 1 << 2);
        assert_eq!(GICR_TYPER::Last::SET.value, 1 << 4);
        assert_eq!(GICC_CTLR::EOImodeNS::SET.value, 1 << 10);
        assert_eq!(distributor_lines(0x1f), 1020);
        assert_eq!(distributor_lines(0x2), 96);
    }

    #[test]
    fn sgi1r_round_trips_and_names_its_target() {
        let mpidr = (0x3 << 32) | (0x2 << 16) | (0x1 << 8) | 0x5;
        let sgi = Sgi1r::to_pe(7, mpidr);
        let raw = sgi.encode();
        assert_eq!(raw, (0x3 << 48) | (0x2 << 32) | (7 << 24) | (0x1 << 16) | (1 << 5));
        assert_eq!(Sgi1r::decode(raw), sgi);
        assert!(sgi.targets(mpidr));
        assert!(!sgi.targets(mpidr + 1));
        assert!(Sgi1r::decode(1 << 40).irm);
        assert_eq!(redistributor_affinity(mpidr), (0x3 << 24) | (0x2 << 16) | (0x1 << 8) | 0x5);
        assert_eq!(irouter_affinity(mpidr | (1 << 31)), mpidr);
        assert_eq!(IROUTER_AFFINITY_MASK, 0xff_00ff_ffff);
    }
}
