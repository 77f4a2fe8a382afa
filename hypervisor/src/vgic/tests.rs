//! Host tests of the vGIC: register behaviour per group (v2 and v3),
//! redistributors, SGIs, the List Register flow against a fake, and a
//! deterministic fuzz of guest accesses.

use super::*;
use AccessSize::{Byte, Double, Half, Word};

// ----- fixtures -----

/// vCPU i has MPIDR Aff1 = i / 4, Aff0 = i % 4 (two clusters of four).
fn mpidr(i: usize) -> u64 {
    (((i / 4) as u64) << 8) | (i % 4) as u64
}

fn v2(vcpus: usize) -> Vgic {
    Vgic::new(VgicVersion::V2, vcpus, 64, mpidr).unwrap()
}

fn v3(vcpus: usize) -> Vgic {
    Vgic::new(VgicVersion::V3, vcpus, 64, mpidr).unwrap()
}

/// A VMCR with both groups enabled and the priority mask open, in the v2
/// and the v3 layout alike.
const OPEN_VMCR: u64 = 0xff00_0003;

/// List Registers as the arch layer would hold them, plus the guest's
/// side of the virtual CPU interface (acknowledge, EOI).
#[derive(Clone)]
struct FakeLrs {
    version: VgicVersion,
    regs: [u64; MAX_LRS],
    n: usize,
    underflow: bool,
    /// GICH_VMCR / ICH_VMCR_EL2 as the guest set it.
    vmcr: u64,
}

impl FakeLrs {
    fn new(version: VgicVersion, n: usize) -> Self {
        Self {
            version,
            regs: [0; MAX_LRS],
            n,
            underflow: false,
            vmcr: OPEN_VMCR,
        }
    }

    fn lr(&self, i: usize) -> ListRegister {
        ListRegister::decode(self.version, self.regs[i])
    }

    /// LR index and content of every valid LR holding `vintid`.
    fn find(&self, vintid: u32) -> Vec<(usize, ListRegister)> {
        (0..self.n)
            .map(|i| (i, self.lr(i)))
            .filter(|(_, l)| !l.state.is_invalid() && l.vintid == vintid)
            .collect()
    }

    fn one(&self, vintid: u32) -> ListRegister {
        let f = self.find(vintid);
        assert_eq!(
            f.len(),
            1,
            "intid {vintid} should be in exactly one LR: {f:?}"
        );
        f[0].1
    }

    fn valid(&self) -> Vec<u32> {
        let mut v: Vec<u32> = (0..self.n)
            .map(|i| self.lr(i))
            .filter(|l| !l.state.is_invalid())
            .map(|l| l.vintid)
            .collect();
        v.sort();
        v
    }

    fn set_state(&mut self, i: usize, st: LrState) {
        let mut l = self.lr(i);
        l.state = st;
        self.regs[i] = l.encode(self.version);
    }

    /// The guest acknowledges the highest-priority pending LR (IAR read).
    fn ack(&mut self) -> Option<u32> {
        let i = (0..self.n)
            .filter(|&i| self.lr(i).state.pending && !self.lr(i).state.active)
            .min_by_key(|&i| self.lr(i).priority)?;
        self.set_state(i, LrState::ACTIVE);
        Some(self.lr(i).vintid)
    }

    /// The guest EOIs/deactivates `vintid`: active → invalid, P+A → P.
    fn eoi(&mut self, vintid: u32) {
        let (i, l) = self.find(vintid)[0];
        assert!(l.state.active);
        self.set_state(
            i,
            if l.state.pending {
                LrState::PENDING
            } else {
                LrState::INVALID
            },
        );
    }
}

impl ListRegisters for FakeLrs {
    fn count(&self) -> usize {
        self.n
    }
    fn read(&self, i: usize) -> u64 {
        self.regs[i]
    }
    fn write(&mut self, i: usize, value: u64) {
        self.regs[i] = value;
    }
    fn set_underflow_irq(&mut self, on: bool) {
        self.underflow = on;
    }
    fn vmcr(&self) -> u64 {
        self.vmcr
    }
}

fn wr(g: &mut Vgic, vcpu: usize, off: u64, size: AccessSize, val: u64) -> Effects {
    let mut e = Effects::new();
    g.dist_write(vcpu, off, size, val, &mut e).unwrap();
    g.check_invariants();
    e
}

fn rd(g: &mut Vgic, vcpu: usize, off: u64, size: AccessSize) -> u64 {
    g.dist_read(vcpu, off, size).unwrap()
}

fn rwr(g: &mut Vgic, vcpu: usize, off: u64, size: AccessSize, val: u64) -> Effects {
    let mut e = Effects::new();
    g.redist_write(vcpu, off, size, val, &mut e).unwrap();
    g.check_invariants();
    e
}

fn rrd(g: &mut Vgic, vcpu: usize, off: u64, size: AccessSize) -> u64 {
    g.redist_read(vcpu, off, size).unwrap()
}

const SGI_BASE: u64 = REDIST_FRAME_SIZE;

/// Enable both groups and `intid` (through the distributor or, for v3
/// private interrupts, the vCPU's redistributor), priority `prio`.
fn enable(g: &mut Vgic, vcpu: usize, intid: u32, prio: u8) {
    wr(g, vcpu, 0, Word, 0b11);
    let word = u64::from(intid / 32) * 4;
    let bit = 1u64 << (intid % 32);
    if g.version() == VgicVersion::V3 && intid < 32 {
        let base = vcpu as u64 * REDIST_STRIDE + SGI_BASE;
        rwr(g, vcpu, base + 0x100, Word, bit);
        rwr(
            g,
            vcpu,
            base + 0x400 + u64::from(intid),
            Byte,
            u64::from(prio),
        );
    } else {
        wr(g, vcpu, 0x100 + word, Word, bit);
        wr(g, vcpu, 0x400 + u64::from(intid), Byte, u64::from(prio));
    }
}

fn pulse(g: &mut Vgic, intid: u32, vcpu: usize) -> Effects {
    let mut e = Effects::new();
    g.pulse(intid, vcpu, &mut e).unwrap();
    g.check_invariants();
    e
}

fn flush(g: &mut Vgic, vcpu: usize, l: &mut FakeLrs) {
    let mut e = Effects::new();
    g.flush(vcpu, l, &mut e).unwrap();
    g.check_invariants();
}

fn sync(g: &mut Vgic, vcpu: usize, l: &mut FakeLrs) {
    let mut e = Effects::new();
    g.sync(vcpu, l, &mut e).unwrap();
    g.check_invariants();
}

fn kicks(e: &Effects) -> Vec<usize> {
    e.kicks().collect()
}

// ----- construction -----

#[test]
fn new_rejects_out_of_range_configs() {
    assert_eq!(
        Vgic::new(VgicVersion::V2, 0, 32, mpidr).err(),
        Some(VgicError::BadConfig)
    );
    assert_eq!(
        Vgic::new(VgicVersion::V2, 9, 32, mpidr).err(),
        Some(VgicError::BadConfig)
    );
    assert_eq!(
        Vgic::new(VgicVersion::V3, 1, 33, mpidr).err(),
        Some(VgicError::BadConfig)
    );
    assert_eq!(
        Vgic::new(VgicVersion::V3, 1, 992, mpidr).err(),
        Some(VgicError::BadConfig)
    );
    assert!(Vgic::new(VgicVersion::V3, 8, 988, mpidr).is_ok());
    assert!(Vgic::new(VgicVersion::V2, 1, 0, mpidr).is_ok());
}

// ----- distributor: identification and control -----

#[test]
fn v2_typer_reports_it_lines_and_cpu_number() {
    let mut g = v2(4);
    // 32 + 64 interrupts → ITLinesNumber 2; CPUNumber = 3.
    assert_eq!(rd(&mut g, 0, 0x004, Word), 2 | (3 << 5));
    let mut big = Vgic::new(VgicVersion::V2, 1, 988, mpidr).unwrap();
    assert_eq!(rd(&mut big, 0, 0x004, Word) & 0x1f, 31);
}

#[test]
fn v3_typer_has_ten_id_bits_and_no_lpis_or_mbis() {
    let mut g = v3(2);
    let t = rd(&mut g, 0, 0x004, Word);
    assert_eq!(t & 0x1f, 2);
    assert_eq!((t >> 19) & 0x1f, 9, "IDbits");
    assert_eq!(t & (1 << 17), 0, "LPIS");
    assert_eq!(t & (1 << 16), 0, "MBIS");
}

#[test]
fn pidr2_reports_architecture_revision() {
    let mut g = v2(1);
    assert_eq!((rd(&mut g, 0, 0xfe8, Word) >> 4) & 0xf, 2);
    let mut g = v3(1);
    assert_eq!((rd(&mut g, 0, 0xffe8, Word) >> 4) & 0xf, 3);
    assert_eq!((rrd(&mut g, 0, 0xffe8, Word) >> 4) & 0xf, 3);
    assert_eq!(rd(&mut g, 0, 0xfff0, Word), 0x0d, "CIDR0");
    assert_eq!(rd(&mut g, 0, 0x008, Word), 0x43b, "IIDR implementer");
}

/// `DistFixed`, which the trap's hot path reads without the vGIC's lock,
/// answers exactly GICD_TYPER, GICD_IIDR and the twelve ID registers, each
/// as `dist_read` does, for every vCPU, on both versions and several sizes
/// of VM, before and after the guest has written every register (its
/// values are taken once, when the VM is made).
#[test]
fn fixed_distributor_registers_read_as_the_locked_read_does() {
    for version in [VgicVersion::V2, VgicVersion::V3] {
        for (vcpus, spis) in [(1, 0), (2, 64), (3, 32), (8, 988)] {
            let mut g = Vgic::new(version, vcpus, spis, mpidr).unwrap();
            let fixed = g.dist_fixed();
            for scribbled in [false, true] {
                if scribbled {
                    // Every word of the frame written with ones, then with
                    // a pattern (a vCPU of each; errors and effects ignored).
                    for value in [0xffff_ffff, 0x5a5a_a5a5] {
                        for offset in (0..V3_DIST_SIZE).step_by(4) {
                            let mut e = Effects::new();
                            let _ = g.dist_write(offset as usize % vcpus, offset, Word, value, &mut e);
                        }
                    }
                    g.check_invariants();
                }
                let mut answered = 0;
                // Every byte offset (unaligned ones too) and past the frame.
                for offset in 0..V3_DIST_SIZE + 0x100 {
                    let Some(value) = fixed.word_read(offset) else {
                        continue;
                    };
                    answered += 1;
                    for vcpu in 0..vcpus {
                        assert_eq!(g.dist_read(vcpu, offset, Word), Ok(u64::from(value)), "{version:?} {vcpus} vCPUs {spis} SPIs, offset {offset:#x}, vCPU {vcpu}, scribbled {scribbled}");
                    }
                    // Other sizes are not answered from the copy (the trap
                    // path takes only word loads to it): the locked read
                    // refuses them.
                    for size in [Byte, Half, Double] {
                        assert!(g.dist_read(0, offset, size).is_err(), "{version:?} offset {offset:#x} {size:?}");
                    }
                }
                assert_eq!(answered, 2 + 12, "{version:?}: TYPER, IIDR and the ID registers");
                assert!(fixed.word_read(0x4).is_some() && fixed.word_read(0x8).is_some());
                assert_eq!(fixed.word_read(0), None, "GICD_CTLR changes: not fixed");
            }
        }
    }
}

/// The bit-per-interrupt words (IGROUPR, ISENABLER/ICENABLER,
/// ISPENDR/ICPENDR, ISACTIVER/ICACTIVER) read bit for bit what each
/// interrupt's own view says, for every word of the distributor (and on
/// v3 the redistributors' SGI/PPI words) and the word past the last
/// interrupt, every vCPU, after patterns were written to the set registers.
#[test]
fn bit_register_words_match_each_interrupts_view() {
    for version in [VgicVersion::V2, VgicVersion::V3] {
        for spis in [0, 32, 64] {
            let vcpus = 2;
            let mut g = Vgic::new(version, vcpus, spis, mpidr).unwrap();
            let words = (32 + spis).div_ceil(32) as u64;
            for (vcpu, pattern) in [(0, 0x9249_2492u64), (1, 0x5a5a_a5a5)] {
                for base in [0x080, 0x100, 0x200, 0x300] {
                    for w in 0..words {
                        if version == VgicVersion::V3 && w == 0 {
                            rwr(&mut g, vcpu, vcpu as u64 * REDIST_STRIDE + SGI_BASE + base, Word, pattern);
                        } else {
                            wr(&mut g, vcpu, base + 4 * w, Word, pattern.rotate_left(w as u32));
                        }
                    }
                }
            }
            for vcpu in 0..vcpus {
                for w in 0..words + 1 {
                    for (set, clear, field) in [(0x080, 0x080, 0), (0x100, 0x180, 1), (0x200, 0x280, 2), (0x300, 0x380, 3)] {
                        let read = |g: &mut Vgic, offset: u64| {
                            if version == VgicVersion::V3 && w == 0 {
                                rrd(g, vcpu, vcpu as u64 * REDIST_STRIDE + SGI_BASE + offset, Word)
                            } else {
                                rd(g, vcpu, offset + 4 * w, Word)
                            }
                        };
                        let word = read(&mut g, set);
                        assert_eq!(read(&mut g, clear), word, "{version:?} set and clear registers agree");
                        for i in 0..32 {
                            let intid = (w * 32 + i) as u32;
                            let expected = g.irq_view(intid, vcpu).is_some_and(|v| [v.group1, v.enabled, v.pending, v.active][field]);
                            assert_eq!(word >> i & 1 == 1, expected, "{version:?} {spis} SPIs, vCPU {vcpu}, INTID {intid}, register {set:#x}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn v2_ctlr_holds_both_group_enables() {
    let mut g = v2(1);
    wr(&mut g, 0, 0, Word, 0xffff_ffff);
    assert_eq!(rd(&mut g, 0, 0, Word), 0b11);
    wr(&mut g, 0, 0, Word, 0b10);
    assert_eq!(rd(&mut g, 0, 0, Word), 0b10);
}

#[test]
fn v3_ctlr_has_are_and_ds_set_and_rwp_clear() {
    let mut g = v3(1);
    assert_eq!(rd(&mut g, 0, 0, Word), (1 << 4) | (1 << 6));
    wr(&mut g, 0, 0, Word, 0x8000_0013);
    assert_eq!(rd(&mut g, 0, 0, Word), 0b11 | (1 << 4) | (1 << 6));
}

// ----- distributor: bit-per-interrupt registers -----

#[test]
fn enable_set_and_clear_registers_v2() {
    let mut g = v2(2);
    wr(&mut g, 0, 0x104, Word, 0x8000_0001); // SPI 32 and 63
    assert_eq!(rd(&mut g, 0, 0x104, Word), 0x8000_0001);
    assert_eq!(rd(&mut g, 0, 0x184, Word), 0x8000_0001);
    wr(&mut g, 0, 0x184, Word, 1);
    assert_eq!(rd(&mut g, 0, 0x104, Word), 0x8000_0000);
    // Private enables are banked per vCPU.
    wr(&mut g, 1, 0x100, Word, 0xffff);
    assert_eq!(rd(&mut g, 1, 0x100, Word), 0xffff);
    assert_eq!(rd(&mut g, 0, 0x100, Word), 0);
    // Beyond the implemented SPIs: RAZ/WI.
    wr(&mut g, 0, 0x10c, Word, !0);
    assert_eq!(rd(&mut g, 0, 0x10c, Word), 0);
}

#[test]
fn pending_and_active_set_and_clear_v3() {
    let mut g = v3(1);
    wr(&mut g, 0, 0x204, Word, 0b110);
    assert_eq!(rd(&mut g, 0, 0x204, Word), 0b110);
    wr(&mut g, 0, 0x284, Word, 0b010);
    assert_eq!(rd(&mut g, 0, 0x284, Word), 0b100);
    wr(&mut g, 0, 0x304, Word, 0b1000);
    assert_eq!(rd(&mut g, 0, 0x384, Word), 0b1000);
    wr(&mut g, 0, 0x384, Word, 0b1000);
    assert_eq!(rd(&mut g, 0, 0x304, Word), 0);
}

#[test]
fn level_interrupt_stays_pending_after_icpendr_while_line_high() {
    let mut g = v2(1);
    let mut e = Effects::new();
    g.set_level(40, 0, true, &mut e).unwrap();
    assert_eq!(rd(&mut g, 0, 0x204, Word), 1 << 8);
    wr(&mut g, 0, 0x284, Word, 1 << 8);
    assert_eq!(rd(&mut g, 0, 0x204, Word), 1 << 8, "line still asserted");
    g.set_level(40, 0, false, &mut e).unwrap();
    assert_eq!(rd(&mut g, 0, 0x204, Word), 0);
}

#[test]
fn igroupr_is_read_write_per_bank() {
    let mut g = v2(2);
    wr(&mut g, 0, 0x084, Word, 0xf0f0_f0f0);
    assert_eq!(rd(&mut g, 0, 0x084, Word), 0xf0f0_f0f0);
    wr(&mut g, 1, 0x080, Word, 0x1);
    assert_eq!(rd(&mut g, 1, 0x080, Word), 1);
    assert_eq!(rd(&mut g, 0, 0x080, Word), 0);
}

#[test]
fn v2_sgi_pending_bits_are_read_only_in_ispendr() {
    let mut g = v2(1);
    wr(&mut g, 0, 0x200, Word, 0xffff);
    assert_eq!(rd(&mut g, 0, 0x200, Word), 0);
}

#[test]
fn v3_distributor_private_words_are_raz_wi() {
    let mut g = v3(1);
    for off in [
        0x080u64, 0x100, 0x200, 0x300, 0x400, 0x41c, 0xc00, 0xc04, 0x800, 0x820, 0xf00,
    ] {
        wr(&mut g, 0, off, Word, 0xffff_ffff);
        assert_eq!(rd(&mut g, 0, off, Word), 0, "offset {off:#x}");
    }
    // …but the redistributor holds them.
    rwr(&mut g, 0, SGI_BASE + 0x100, Word, 0xff);
    assert_eq!(rd(&mut g, 0, 0x100, Word), 0);
    assert_eq!(rrd(&mut g, 0, SGI_BASE + 0x100, Word), 0xff);
}

// ----- distributor: byte-per-interrupt registers -----

#[test]
fn priority_byte_and_word_access() {
    let mut g = v3(1);
    wr(&mut g, 0, 0x420, Word, 0x4433_2211);
    assert_eq!(rd(&mut g, 0, 0x420, Word), 0x4433_2211);
    assert_eq!(rd(&mut g, 0, 0x422, Byte), 0x33);
    wr(&mut g, 0, 0x421, Byte, 0xaa);
    assert_eq!(rd(&mut g, 0, 0x420, Word), 0x4433_aa11);
    assert_eq!(g.irq_view(33, 0).unwrap().priority, 0xaa);
}

#[test]
fn v2_priority_keeps_five_bits() {
    let mut g = v2(1);
    wr(&mut g, 0, 0x400, Word, 0xffff_ffff);
    assert_eq!(rd(&mut g, 0, 0x400, Word), 0xf8f8_f8f8);
}

#[test]
fn v2_itargetsr_private_reads_own_cpu_and_ignores_writes() {
    let mut g = v2(4);
    assert_eq!(rd(&mut g, 2, 0x800, Word), 0x0404_0404);
    assert_eq!(rd(&mut g, 1, 0x81f, Byte), 0x02);
    wr(&mut g, 2, 0x800, Word, 0);
    assert_eq!(rd(&mut g, 2, 0x800, Word), 0x0404_0404);
}

#[test]
fn v2_itargetsr_spi_masks_missing_cpus_and_routes() {
    let mut g = v2(2);
    wr(&mut g, 0, 0x820, Word, 0xff02_0301);
    assert_eq!(rd(&mut g, 0, 0x820, Word), 0x0302_0301);
    assert_eq!(
        g.irq_view(33, 0).unwrap().dest,
        Some(0),
        "1-of-N picks the lowest vCPU"
    );
    assert_eq!(g.irq_view(34, 0).unwrap().dest, Some(1));
    wr(&mut g, 0, 0x821, Byte, 0);
    assert_eq!(g.irq_view(33, 0).unwrap().dest, None);
}

#[test]
fn icfgr_sgis_fixed_edge_others_configurable() {
    let mut g = v2(1);
    assert_eq!(rd(&mut g, 0, 0xc00, Word), 0xaaaa_aaaa);
    wr(&mut g, 0, 0xc00, Word, 0);
    assert_eq!(rd(&mut g, 0, 0xc00, Word), 0xaaaa_aaaa);
    wr(&mut g, 0, 0xc04, Word, 0x8000_0002); // PPI 16 and 31 edge
    assert_eq!(rd(&mut g, 0, 0xc04, Word), 0x8000_0002);
    wr(&mut g, 0, 0xc08, Word, 0xffff_ffff); // SPIs 32..47 edge, reserved bits dropped
    assert_eq!(rd(&mut g, 0, 0xc08, Word), 0xaaaa_aaaa);
    assert!(g.irq_view(47, 0).unwrap().edge);
}

#[test]
fn v3_irouter_64_bit_and_32_bit_halves() {
    let mut g = v3(8);
    let off = 0x6000 + 8 * 40;
    // vCPU 5 is Aff1 = 1, Aff0 = 1.
    wr(&mut g, 0, off, Double, 0x0000_0000_0000_0101);
    assert_eq!(g.irq_view(40, 0).unwrap().dest, Some(5));
    assert_eq!(rd(&mut g, 0, off, Double), 0x101);
    wr(&mut g, 0, off + 4, Word, 0x7);
    assert_eq!(rd(&mut g, 0, off + 4, Word), 7);
    assert_eq!(rd(&mut g, 0, off, Word), 0x101);
    assert_eq!(
        g.irq_view(40, 0).unwrap().dest,
        None,
        "Aff3 = 7 matches no vCPU"
    );
    wr(&mut g, 0, off, Double, 1 << 31);
    assert_eq!(
        g.irq_view(40, 0).unwrap().dest,
        Some(0),
        "IRM = 1 → any: vCPU 0"
    );
    // Undefined bits are RES0; private INTIDs have no IROUTER.
    wr(&mut g, 0, off, Double, !0);
    assert_eq!(rd(&mut g, 0, off, Double), 0xff_80ff_ffff);
    wr(&mut g, 0, 0x6000, Double, 0x101);
    assert_eq!(rd(&mut g, 0, 0x6000, Double), 0);
}

// ----- access checks -----

#[test]
fn disallowed_sizes_and_offsets_are_errors() {
    let mut g = v3(1);
    let mut e = Effects::new();
    assert_eq!(g.dist_read(0, 0x000, Half), Err(VgicError::BadAccessSize));
    assert_eq!(g.dist_read(0, 0x000, Double), Err(VgicError::BadAccessSize));
    assert_eq!(
        g.dist_read(0, 0x100, Byte),
        Err(VgicError::BadAccessSize),
        "ISENABLER is word-only"
    );
    assert_eq!(g.dist_read(0, 0x402, Half), Err(VgicError::BadAccessSize));
    assert_eq!(
        g.dist_read(0, 0x401, Word),
        Err(VgicError::BadAccessSize),
        "misaligned"
    );
    assert_eq!(
        g.dist_read(0, 0x6004, Double),
        Err(VgicError::BadAccessSize),
        "misaligned IROUTER"
    );
    assert_eq!(g.dist_read(0, 0x6000, Byte), Err(VgicError::BadAccessSize));
    assert_eq!(g.dist_read(0, 0x1_0000, Word), Err(VgicError::OutOfFrame));
    assert_eq!(
        g.dist_write(0, u64::MAX - 3, Word, 0, &mut e),
        Err(VgicError::OutOfFrame)
    );
    assert_eq!(g.dist_read(1, 0x0, Word), Err(VgicError::BadVcpu));
    assert!(g.dist_read(0, 0x401, Byte).is_ok());
    // Reserved space is RAZ/WI, word-only.
    assert_eq!(g.dist_read(0, 0x0040, Word), Ok(0));
    assert_eq!(g.dist_read(0, 0x0040, Byte), Err(VgicError::BadAccessSize));
    let mut g2 = v2(1);
    assert_eq!(g2.dist_read(0, 0x1000, Word), Err(VgicError::OutOfFrame));
    assert_eq!(g2.dist_read(0, 0x6000, Word), Err(VgicError::OutOfFrame));
    assert!(g2.dist_read(0, 0x820, Byte).is_ok());
    assert!(
        g2.dist_read(0, 0xf21, Byte).is_ok(),
        "SPENDSGIR is byte-accessible"
    );
}

#[test]
fn undrained_effects_refuse_the_write_without_changing_state() {
    let mut g = v3(1);
    g.link_hw(40, None, 72).unwrap();
    let mut e = Effects::new();
    g.dist_write(0, 0x104, Word, 1 << 8, &mut e).unwrap();
    assert_eq!(e.phys().len(), 1);
    assert_eq!(
        g.dist_write(0, 0x184, Word, 1 << 8, &mut e),
        Err(VgicError::EffectsFull)
    );
    assert!(g.irq_view(40, 0).unwrap().enabled);
}

// ----- redistributor -----

#[test]
fn gicr_typer_affinity_processor_number_and_last() {
    let mut g = v3(6);
    for v in 0..6u64 {
        let t = rrd(&mut g, 0, v * REDIST_STRIDE + 8, Double);
        assert_eq!(t >> 32, mpidr(v as usize), "Affinity_Value");
        assert_eq!((t >> 8) & 0xffff, v, "Processor_Number");
        assert_eq!(t & (1 << 4) != 0, v == 5, "Last");
        assert_eq!(t & 1, 0, "PLPIS");
        let lo = rrd(&mut g, 0, v * REDIST_STRIDE + 8, Word);
        let hi = rrd(&mut g, 0, v * REDIST_STRIDE + 0xc, Word);
        assert_eq!(lo | (hi << 32), t);
    }
    let mut aff3 = Vgic::new(VgicVersion::V3, 1, 32, |_| 0x12_0034_5678).unwrap();
    assert_eq!(rrd(&mut aff3, 0, 8, Double) >> 32, 0x1234_5678);
}

#[test]
fn gicr_waker_sleep_handshake() {
    let mut g = v3(2);
    let waker = REDIST_STRIDE + 0x14;
    assert_eq!(rrd(&mut g, 1, waker, Word), 0b110, "reset: asleep");
    rwr(&mut g, 1, waker, Word, 0);
    assert_eq!(
        rrd(&mut g, 1, waker, Word) & 0b100,
        0,
        "ChildrenAsleep follows"
    );
    assert_eq!(
        rrd(&mut g, 0, 0x14, Word),
        0b110,
        "other redistributor untouched"
    );
    rwr(&mut g, 1, waker, Word, 0b10);
    assert_eq!(rrd(&mut g, 1, waker, Word), 0b110);
}

#[test]
fn redistributor_frame_selects_the_target_vcpu() {
    let mut g = v3(2);
    // vCPU 0 programs vCPU 1's SGI_base (as Linux does during boot).
    let base = REDIST_STRIDE + SGI_BASE;
    rwr(&mut g, 0, base + 0x100, Word, 1 << 27);
    rwr(&mut g, 0, base + 0x41b, Byte, 0xa0);
    rwr(&mut g, 0, base + 0x080, Word, !0);
    assert!(g.irq_view(27, 1).unwrap().enabled);
    assert!(!g.irq_view(27, 0).unwrap().enabled);
    assert_eq!(rrd(&mut g, 1, base + 0x418, Word), 0xa0 << 24);
    assert_eq!(rrd(&mut g, 1, base + 0x080, Word), 0xffff_ffff);
    assert_eq!(rrd(&mut g, 1, SGI_BASE + 0x080, Word), 0);
}

#[test]
fn redistributor_sgi_frame_registers() {
    let mut g = v3(1);
    assert_eq!(
        rrd(&mut g, 0, SGI_BASE + 0xc00, Word),
        0xaaaa_aaaa,
        "ICFGR0: SGIs edge"
    );
    rwr(&mut g, 0, SGI_BASE + 0xc00, Word, 0);
    assert_eq!(rrd(&mut g, 0, SGI_BASE + 0xc00, Word), 0xaaaa_aaaa);
    rwr(&mut g, 0, SGI_BASE + 0xc04, Word, 2 << 22);
    assert_eq!(rrd(&mut g, 0, SGI_BASE + 0xc04, Word), 2 << 22);
    rwr(&mut g, 0, SGI_BASE + 0x200, Word, 1 << 3);
    assert_eq!(rrd(&mut g, 0, SGI_BASE + 0x200, Word), 1 << 3);
    rwr(&mut g, 0, SGI_BASE + 0x280, Word, 1 << 3);
    assert_eq!(rrd(&mut g, 0, SGI_BASE + 0x200, Word), 0);
    rwr(&mut g, 0, SGI_BASE + 0x300, Word, 1 << 20);
    assert_eq!(rrd(&mut g, 0, SGI_BASE + 0x380, Word), 1 << 20);
    rwr(&mut g, 0, SGI_BASE + 0x400, Word, 0x1020_3040);
    assert_eq!(rrd(&mut g, 0, SGI_BASE + 0x400, Word), 0x1020_3040);
    // Only the first word of each array exists in SGI_base.
    rwr(&mut g, 0, SGI_BASE + 0x104, Word, !0);
    assert_eq!(rrd(&mut g, 0, SGI_BASE + 0x104, Word), 0);
}

#[test]
fn redistributor_access_checks() {
    let mut g = v3(2);
    let mut e = Effects::new();
    assert_eq!(
        g.redist_read(0, 2 * REDIST_STRIDE, Word),
        Err(VgicError::OutOfFrame)
    );
    assert_eq!(
        g.redist_read(0, 0x14, Double),
        Err(VgicError::BadAccessSize)
    );
    assert_eq!(
        g.redist_read(0, 0x0c, Double),
        Err(VgicError::BadAccessSize)
    );
    assert_eq!(
        g.redist_read(0, SGI_BASE + 0x100, Byte),
        Err(VgicError::BadAccessSize)
    );
    assert_eq!(
        g.redist_write(0, SGI_BASE + 0x401, Half, 0, &mut e),
        Err(VgicError::BadAccessSize)
    );
    assert_eq!(
        g.redist_read(0, 0x70, Double),
        Ok(0),
        "PROPBASER RAZ without LPIs"
    );
    let mut g2 = v2(1);
    assert_eq!(
        g2.redist_read(0, 0, Word),
        Err(VgicError::OutOfFrame),
        "no redistributors on v2"
    );
}

// ----- SGIs -----

#[test]
fn v2_sgir_target_list_filters() {
    let mut g = v2(4);
    let pending = |g: &Vgic, v: usize| g.irq_view(5, v).unwrap().pending;
    // Filter 0: the list (CPUs 1 and 3; bits for missing CPUs ignored).
    let e = wr(&mut g, 0, 0xf00, Word, (0b1010_1010 << 16) | 5);
    assert_eq!(
        (0..4).map(|v| pending(&g, v)).collect::<Vec<_>>(),
        [false, true, false, true]
    );
    assert!(kicks(&e).is_empty(), "SGI not enabled yet: nothing to kick");
    let mut g = v2(4);
    wr(&mut g, 2, 0xf00, Word, (1 << 24) | 5); // all but self
    assert_eq!(
        (0..4).map(|v| pending(&g, v)).collect::<Vec<_>>(),
        [true, true, false, true]
    );
    let mut g = v2(4);
    wr(&mut g, 2, 0xf00, Word, (2 << 24) | (0xff << 16) | 5); // self only
    assert_eq!(
        (0..4).map(|v| pending(&g, v)).collect::<Vec<_>>(),
        [false, false, true, false]
    );
    let mut g = v2(4);
    wr(&mut g, 2, 0xf00, Word, (3 << 24) | (0xff << 16) | 5); // reserved
    assert!((0..4).all(|v| !pending(&g, v)));
    assert_eq!(rd(&mut g, 0, 0xf00, Word), 0, "SGIR is write-only");
}

#[test]
fn v2_sgi_sources_are_separate_instances() {
    let mut g = v2(3);
    enable(&mut g, 0, 1, 0x80);
    wr(&mut g, 1, 0xf00, Word, (1 << 16) | 1);
    let e = wr(&mut g, 2, 0xf00, Word, (1 << 16) | 1);
    assert_eq!(
        kicks(&e),
        [] as [usize; 0],
        "already queued: no second kick"
    );
    // SPENDSGIR0 byte 1 = SGI 1's sources.
    assert_eq!(rd(&mut g, 0, 0xf21, Byte), 0b110);
    let mut l = FakeLrs::new(VgicVersion::V2, 4);
    flush(&mut g, 0, &mut l);
    assert_eq!(l.one(1).source, 1, "lowest source first, in the LR's CPUID");
    assert_eq!(rd(&mut g, 0, 0xf20, Word), 0b110 << 8, "both still pending");
    l.ack();
    l.eoi(1);
    sync(&mut g, 0, &mut l);
    flush(&mut g, 0, &mut l);
    assert_eq!(l.one(1).source, 2);
    // CPENDSGIR clears a source.
    wr(&mut g, 0, 0xf10, Word, 0b100 << 8);
    assert_eq!(rd(&mut g, 0, 0xf21, Byte), 0);
    sync(&mut g, 0, &mut l);
    flush(&mut g, 0, &mut l);
    assert!(
        l.valid().is_empty(),
        "the pending-only instance left the LR"
    );
}

#[test]
fn sgi1r_decodes_target_list_with_aff1() {
    let mut g = v3(8);
    let mut e = Effects::new();
    // Aff1 = 1, TargetList = {Aff0 0, 2}: vCPUs 4 and 6; INTID 3.
    g.sgi1r_write(0, (1 << 16) | (3 << 24) | 0b101, &mut e)
        .unwrap();
    let p: Vec<bool> = (0..8).map(|v| g.irq_view(3, v).unwrap().pending).collect();
    assert_eq!(p, [false, false, false, false, true, false, true, false]);
    // RS = 1 selects Aff0 16..31: no such vCPUs.
    let mut g = v3(8);
    g.sgi1r_write(0, (1 << 44) | (3 << 24) | 0xffff, &mut e)
        .unwrap();
    assert!((0..8).all(|v| !g.irq_view(3, v).unwrap().pending));
    // Aff2 mismatch: nothing.
    g.sgi1r_write(0, (1 << 32) | 1, &mut e).unwrap();
    assert!((0..8).all(|v| !g.irq_view(0, v).unwrap().pending));
}

#[test]
fn sgi1r_irm_targets_all_but_self() {
    let mut g = v3(4);
    for v in 0..4 {
        enable(&mut g, v, 9, 0);
    }
    let mut e = Effects::new();
    g.sgi1r_write(2, (1 << 40) | (9 << 24), &mut e).unwrap();
    let p: Vec<bool> = (0..4).map(|v| g.irq_view(9, v).unwrap().pending).collect();
    assert_eq!(p, [true, true, false, true]);
    assert_eq!(kicks(&e), [0, 1, 3]);
}

// ----- List Registers: encoding -----

#[test]
fn v2_list_register_encoding() {
    let lr = ListRegister {
        vintid: 0x3a5,
        state: LrState::PENDING,
        priority: 0xa8,
        group1: true,
        hw: None,
        eoi: true,
        source: 5,
    };
    let raw = lr.encode(VgicVersion::V2);
    assert_eq!(
        raw,
        0x3a5 | (5 << 10) | (1 << 19) | (0x15 << 23) | (1 << 28) | (1 << 30)
    );
    assert_eq!(ListRegister::decode(VgicVersion::V2, raw), lr);
    let hw = ListRegister {
        vintid: 27,
        state: LrState::PENDING,
        priority: 0,
        group1: false,
        hw: Some(27),
        eoi: false,
        source: 0,
    };
    let raw = hw.encode(VgicVersion::V2);
    assert_eq!(raw, 27 | (27 << 10) | (1 << 28) | (1 << 31));
    assert_eq!(ListRegister::decode(VgicVersion::V2, raw), hw);
}

#[test]
fn v3_list_register_encoding() {
    let lr = ListRegister {
        vintid: 1000,
        state: LrState::PENDING_ACTIVE,
        priority: 0xa1,
        group1: true,
        hw: None,
        eoi: true,
        source: 0,
    };
    let raw = lr.encode(VgicVersion::V3);
    assert_eq!(raw, 1000 | (1 << 41) | (0xa1 << 48) | (1 << 60) | (3 << 62));
    assert_eq!(ListRegister::decode(VgicVersion::V3, raw), lr);
    let hw = ListRegister {
        vintid: 40,
        state: LrState::PENDING,
        priority: 0x80,
        group1: true,
        hw: Some(0x3f0),
        eoi: false,
        source: 0,
    };
    let raw = hw.encode(VgicVersion::V3);
    assert_eq!(
        raw,
        40 | (0x3f0 << 32) | (0x80 << 48) | (1 << 60) | (1 << 61) | (1 << 62)
    );
    assert_eq!(ListRegister::decode(VgicVersion::V3, raw), hw);
}

// ----- List Registers: flush and sync -----

#[test]
fn flush_picks_highest_priority_and_queues_the_rest_with_underflow() {
    for version in [VgicVersion::V2, VgicVersion::V3] {
        let mut g = Vgic::new(version, 1, 64, mpidr).unwrap();
        let prios = [
            (40u32, 0xc0u8),
            (41, 0x20),
            (42, 0x80),
            (43, 0x40),
            (44, 0xa0),
        ];
        for &(i, p) in &prios {
            enable(&mut g, 0, i, p);
            pulse(&mut g, i, 0);
        }
        let mut l = FakeLrs::new(version, 3);
        flush(&mut g, 0, &mut l);
        assert_eq!(l.valid(), [41, 42, 43]);
        assert!(l.underflow, "two left over");
        assert_eq!(l.one(41).state, LrState::PENDING);
        // The guest takes two; the rest follow in priority order.
        let a = l.ack().unwrap();
        assert_eq!(a, 41);
        l.eoi(a);
        let b = l.ack().unwrap();
        assert_eq!(b, 43);
        l.eoi(b);
        sync(&mut g, 0, &mut l);
        flush(&mut g, 0, &mut l);
        assert_eq!(l.valid(), [40, 42, 44]);
        assert!(!l.underflow);
    }
}

#[test]
fn flush_preempts_a_lower_priority_pending_lr() {
    let mut g = v3(1);
    enable(&mut g, 0, 40, 0xc0);
    enable(&mut g, 0, 41, 0x10);
    pulse(&mut g, 40, 0);
    let mut l = FakeLrs::new(VgicVersion::V3, 1);
    flush(&mut g, 0, &mut l);
    assert_eq!(l.valid(), [40]);
    sync(&mut g, 0, &mut l);
    pulse(&mut g, 41, 0);
    flush(&mut g, 0, &mut l);
    assert_eq!(l.valid(), [41]);
    assert!(l.underflow);
    assert!(
        g.irq_view(40, 0).unwrap().queued,
        "evicted back into the queue, still pending"
    );
    assert!(g.irq_view(40, 0).unwrap().pending);
    // An active LR is never preempted.
    l.ack();
    sync(&mut g, 0, &mut l);
    enable(&mut g, 0, 42, 0x00);
    pulse(&mut g, 42, 0);
    flush(&mut g, 0, &mut l);
    assert_eq!(l.one(41).state, LrState::ACTIVE);
}

#[test]
fn disabled_group_is_not_delivered_until_ctlr_enables_it() {
    let mut g = v2(2);
    enable(&mut g, 1, 40, 0);
    wr(&mut g, 0, 0x828, Word, 0x0200); // SPI 41 → vCPU 1
    wr(&mut g, 0, 0x104, Word, 1 << 9);
    wr(&mut g, 0, 0, Word, 0);
    let e = pulse(&mut g, 41, 0);
    assert!(kicks(&e).is_empty());
    let mut l = FakeLrs::new(VgicVersion::V2, 4);
    flush(&mut g, 1, &mut l);
    assert!(l.valid().is_empty());
    assert!(!l.underflow);
    let e = wr(&mut g, 0, 0, Word, 0b01); // group 0
    assert_eq!(kicks(&e), [1]);
    flush(&mut g, 1, &mut l);
    assert_eq!(l.valid(), [41]);
}

#[test]
fn edge_interrupt_eoi_frees_the_lr_without_redelivery() {
    let mut g = v2(1);
    enable(&mut g, 0, 40, 0x80);
    wr(&mut g, 0, 0xc08, Word, 2 << 16); // edge
    let e = pulse(&mut g, 40, 0);
    assert_eq!(kicks(&e), [0]);
    let mut l = FakeLrs::new(VgicVersion::V2, 4);
    flush(&mut g, 0, &mut l);
    assert!(!l.one(40).eoi, "edge: no EOI maintenance");
    assert_eq!(l.ack(), Some(40));
    l.eoi(40);
    sync(&mut g, 0, &mut l);
    assert!(l.valid().is_empty());
    assert_eq!(l.regs[0], 0, "freed LR cleared");
    flush(&mut g, 0, &mut l);
    assert!(l.valid().is_empty());
    let v = g.irq_view(40, 0).unwrap();
    assert!(!v.pending && !v.active && v.in_lr.is_none());
}

#[test]
fn edge_pulsed_while_active_becomes_pending_and_active() {
    let mut g = v3(1);
    enable(&mut g, 0, 40, 0x80);
    wr(&mut g, 0, 0xc08, Word, 2 << 16);
    pulse(&mut g, 40, 0);
    let mut l = FakeLrs::new(VgicVersion::V3, 4);
    flush(&mut g, 0, &mut l);
    l.ack();
    sync(&mut g, 0, &mut l);
    let e = pulse(&mut g, 40, 0);
    assert_eq!(kicks(&e), [0], "the LR must be updated");
    flush(&mut g, 0, &mut l);
    assert_eq!(l.one(40).state, LrState::PENDING_ACTIVE);
    assert_eq!(l.find(40).len(), 1);
    // EOI leaves the second edge pending in the same LR.
    l.eoi(40);
    sync(&mut g, 0, &mut l);
    flush(&mut g, 0, &mut l);
    assert_eq!(l.one(40).state, LrState::PENDING);
    // A pulse while still pending coalesces.
    pulse(&mut g, 40, 0);
    sync(&mut g, 0, &mut l);
    flush(&mut g, 0, &mut l);
    l.ack();
    l.eoi(40);
    sync(&mut g, 0, &mut l);
    flush(&mut g, 0, &mut l);
    assert!(l.valid().is_empty());
}

#[test]
fn level_interrupt_resampled_on_eoi() {
    for version in [VgicVersion::V2, VgicVersion::V3] {
        let mut g = Vgic::new(version, 1, 64, mpidr).unwrap();
        enable(&mut g, 0, 50, 0x40);
        let mut e = Effects::new();
        g.set_level(50, 0, true, &mut e).unwrap();
        let mut l = FakeLrs::new(version, 4);
        flush(&mut g, 0, &mut l);
        assert!(l.one(50).eoi, "level: EOI maintenance to resample");
        l.ack();
        l.eoi(50);
        // Line still high: pending again.
        sync(&mut g, 0, &mut l);
        flush(&mut g, 0, &mut l);
        assert_eq!(l.one(50).state, LrState::PENDING);
        // Device deasserts after the guest handled it: not re-delivered.
        l.ack();
        g.set_level(50, 0, false, &mut e).unwrap();
        l.eoi(50);
        sync(&mut g, 0, &mut l);
        flush(&mut g, 0, &mut l);
        assert!(l.valid().is_empty());
        assert!(!g.irq_view(50, 0).unwrap().pending);
    }
}

#[test]
fn level_line_dropped_before_ack_leaves_the_lr() {
    let mut g = v3(1);
    enable(&mut g, 0, 50, 0x40);
    let mut e = Effects::new();
    g.set_level(50, 0, true, &mut e).unwrap();
    let mut l = FakeLrs::new(VgicVersion::V3, 4);
    flush(&mut g, 0, &mut l);
    g.set_level(50, 0, false, &mut e).unwrap();
    sync(&mut g, 0, &mut l);
    flush(&mut g, 0, &mut l);
    assert!(l.valid().is_empty());
}

#[test]
fn icpendr_and_icactiver_reach_an_interrupt_in_an_lr() {
    let mut g = v3(1);
    enable(&mut g, 0, 40, 0x40);
    enable(&mut g, 0, 41, 0x40);
    pulse(&mut g, 40, 0);
    pulse(&mut g, 41, 0);
    let mut l = FakeLrs::new(VgicVersion::V3, 4);
    flush(&mut g, 0, &mut l);
    sync(&mut g, 0, &mut l);
    let e = wr(&mut g, 0, 0x284, Word, 1 << 8);
    assert_eq!(kicks(&e), [0]);
    assert_eq!(rd(&mut g, 0, 0x204, Word) & (1 << 8), 0);
    flush(&mut g, 0, &mut l);
    assert_eq!(l.valid(), [41]);
    assert_eq!(l.ack(), Some(41));
    sync(&mut g, 0, &mut l);
    wr(&mut g, 0, 0x384, Word, 1 << 9);
    flush(&mut g, 0, &mut l);
    assert!(l.valid().is_empty());
    assert!(!g.irq_view(41, 0).unwrap().active);
}

#[test]
fn retargeted_spi_stays_in_one_lr_and_moves_after_eoi() {
    let mut g = v2(2);
    enable(&mut g, 0, 40, 0x40);
    wr(&mut g, 0, 0xc08, Word, 2 << 16); // edge
    pulse(&mut g, 40, 0);
    let (mut l0, mut l1) = (
        FakeLrs::new(VgicVersion::V2, 4),
        FakeLrs::new(VgicVersion::V2, 4),
    );
    flush(&mut g, 0, &mut l0);
    l0.ack();
    sync(&mut g, 0, &mut l0);
    wr(&mut g, 0, 0x828, Byte, 0b10); // → vCPU 1
    let e = pulse(&mut g, 40, 0);
    assert_eq!(kicks(&e), [0], "the LR owner must fold the new edge in");
    flush(&mut g, 1, &mut l1);
    assert!(l1.valid().is_empty(), "never in two LRs");
    flush(&mut g, 0, &mut l0);
    assert_eq!(l0.one(40).state, LrState::PENDING_ACTIVE);
    l0.eoi(40);
    l0.ack();
    l0.eoi(40);
    let mut e = Effects::new();
    g.sync(0, &mut l0, &mut e).unwrap();
    g.check_invariants();
    assert!(l0.valid().is_empty());
    assert!(!g.irq_view(40, 0).unwrap().pending);
}

// ----- hardware-linked interrupts -----

#[test]
fn enabling_a_hw_linked_spi_mirrors_to_the_physical_gic() {
    let mut g = v3(2);
    g.link_hw(40, None, 72).unwrap();
    let e = wr(&mut g, 0, 0x104, Word, 1 << 8);
    assert_eq!(
        e.phys(),
        [Effect::PhysEnable {
            intid: 72,
            enable: true
        }]
    );
    let e = wr(&mut g, 0, 0x428, Byte, 0xa0);
    assert_eq!(
        e.phys(),
        [Effect::PhysPriority {
            intid: 72,
            prio: 0xa0
        }]
    );
    let e = wr(&mut g, 0, 0xc08, Word, 2 << 16);
    assert_eq!(
        e.phys(),
        [Effect::PhysConfig {
            intid: 72,
            edge: true
        }]
    );
    let e = wr(&mut g, 0, 0x6000 + 8 * 40, Double, 1); // Aff0 = 1: vCPU 1
    assert_eq!(e.phys(), [Effect::PhysTarget { intid: 72, vcpu: 1 }]);
    let e = wr(&mut g, 0, 0x204, Word, 1 << 8);
    assert_eq!(
        e.phys(),
        [Effect::PhysPending {
            intid: 72,
            set: true
        }]
    );
    assert!(
        !g.irq_view(40, 0).unwrap().pending,
        "pending lives in the physical GIC"
    );
    let e = wr(&mut g, 0, 0x184, Word, 1 << 8);
    assert_eq!(
        e.phys(),
        [Effect::PhysEnable {
            intid: 72,
            enable: false
        }]
    );
    // A software SPI produces no physical effects.
    let e = wr(&mut g, 0, 0x104, Word, 1 << 9);
    assert!(e.phys().is_empty());
    assert!(e.is_empty(), "{e:?}");
}

#[test]
fn hw_linked_interrupt_lr_carries_hw_and_pintid() {
    for version in [VgicVersion::V2, VgicVersion::V3] {
        let mut g = Vgic::new(version, 2, 64, mpidr).unwrap();
        g.link_hw(27, Some(1), 27).unwrap();
        g.link_hw(40, None, 90).unwrap();
        enable(&mut g, 1, 27, 0xa0);
        enable(&mut g, 0, 40, 0x20);
        let mut e = Effects::new();
        g.inject_hw(27, 1, &mut e).unwrap();
        assert_eq!(kicks(&e), [1]);
        g.inject_hw(40, 0, &mut e).unwrap();
        let mut l = FakeLrs::new(version, 4);
        flush(&mut g, 0, &mut l);
        let lr = l.one(40);
        assert_eq!(lr.hw, Some(90));
        assert!(!lr.eoi);
        assert_eq!(
            l.regs[0] >> if version == VgicVersion::V2 { 31 } else { 61 } & 1,
            1
        );
        let mut l1 = FakeLrs::new(version, 4);
        flush(&mut g, 1, &mut l1);
        assert_eq!(l1.valid(), [27], "the SPI is routed to vCPU 0");
        assert_eq!(l1.one(27).hw, Some(27));
        // Guest EOI deactivates the physical interrupt (in hardware); the
        // model only frees the slot.
        l.ack();
        l.eoi(40);
        sync(&mut g, 0, &mut l);
        flush(&mut g, 0, &mut l);
        assert!(l.valid().is_empty());
        assert_eq!(
            g.inject_hw(41, 0, &mut e),
            Err(VgicError::BadIntid),
            "not linked"
        );
    }
}

#[test]
fn clearing_an_injected_hw_interrupt_deactivates_the_physical_one() {
    let mut g = v3(1);
    g.link_hw(40, None, 72).unwrap();
    enable(&mut g, 0, 40, 0);
    let mut e = Effects::new();
    g.inject_hw(40, 0, &mut e).unwrap();
    let e = wr(&mut g, 0, 0x284, Word, 1 << 8);
    assert_eq!(
        e.phys(),
        [
            Effect::PhysPending {
                intid: 72,
                set: false
            },
            Effect::PhysActive {
                intid: 72,
                set: false
            }
        ]
    );
    // Same once it is in an LR: done at the next flush.
    let mut e = Effects::new();
    g.inject_hw(40, 0, &mut e).unwrap();
    let mut l = FakeLrs::new(VgicVersion::V3, 2);
    flush(&mut g, 0, &mut l);
    sync(&mut g, 0, &mut l);
    wr(&mut g, 0, 0x284, Word, 1 << 8);
    let mut e = Effects::new();
    g.flush(0, &mut l, &mut e).unwrap();
    assert_eq!(
        e.phys(),
        [Effect::PhysActive {
            intid: 72,
            set: false
        }]
    );
    assert!(l.valid().is_empty());
}

#[test]
fn link_hw_validates() {
    let mut g = v3(2);
    assert_eq!(g.link_hw(27, None, 27), Err(VgicError::BadVcpu));
    assert_eq!(g.link_hw(5, Some(0), 27), Err(VgicError::BadIntid));
    assert_eq!(g.link_hw(40, None, 1020), Err(VgicError::BadIntid));
    assert_eq!(g.link_hw(200, None, 100), Err(VgicError::BadIntid));
    assert_eq!(g.link_hw(27, Some(2), 27), Err(VgicError::BadVcpu));
}

// ----- fuzz -----

/// xorshift64*: deterministic, no dependencies.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_guest_accesses_never_panic_and_keep_invariants() {
    for (seed, version) in [
        (1u64, VgicVersion::V2),
        (2, VgicVersion::V3),
        (3, VgicVersion::V2),
        (4, VgicVersion::V3),
    ] {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
        let vcpus = 1 + r.below(4) as usize;
        let mut g = Vgic::new(version, vcpus, 64, mpidr).unwrap();
        let _ = g.link_hw(40, None, 72);
        let _ = g.link_hw(27, Some(0), 27);
        let mut lrs: Vec<FakeLrs> = (0..vcpus)
            .map(|_| FakeLrs::new(version, 1 + r.below(4) as usize))
            .collect();
        let sizes = [Byte, Half, Word, Double];
        let frame = if version == VgicVersion::V2 {
            V2_DIST_SIZE
        } else {
            V3_DIST_SIZE
        };
        let mut delivered = 0;
        // Start from a guest that has enabled everything, so the random
        // traffic reaches the delivery path.
        for v in 0..vcpus {
            let mut e = Effects::new();
            g.dist_write(v, 0, Word, 0b11, &mut e).unwrap();
            for w in 0..4u64 {
                e.clear();
                g.dist_write(v, 0x100 + 4 * w, Word, !0, &mut e).unwrap();
            }
            if version == VgicVersion::V3 {
                e.clear();
                g.redist_write(
                    v,
                    v as u64 * REDIST_STRIDE + SGI_BASE + 0x100,
                    Word,
                    !0,
                    &mut e,
                )
                .unwrap();
            }
        }
        for i in 0..20_000 {
            let mut e = Effects::new();
            let vcpu = r.below(vcpus as u64 + 1) as usize; // sometimes invalid
            let size = sizes[r.below(4) as usize];
            // Mostly in the interesting low registers, sometimes anywhere.
            let offset = match r.below(4) {
                0 => r.next(),
                1 => r.below(frame + 64),
                _ => r.below(0x1000) & !3,
            };
            let value = if r.below(3) == 0 { !0 } else { r.next() };
            let v = vcpu.min(vcpus - 1);
            match r.below(12) {
                0..=2 => drop(g.dist_read(vcpu, offset, size)),
                3..=5 => {
                    let _ = g.dist_write(vcpu, offset, size, value, &mut e);
                }
                6 => drop(g.redist_read(vcpu, r.below(REDIST_STRIDE * 5), size)),
                7 => {
                    let off =
                        r.below(vcpus as u64) * REDIST_STRIDE + SGI_BASE + (r.below(0x1000) & !3);
                    let _ = g.redist_write(vcpu, off, size, value, &mut e);
                }
                8 => {
                    let _ = g.sgi1r_write(vcpu, value, &mut e);
                }
                9 => {
                    let intid = r.below(110) as u32;
                    let _ = match r.below(3) {
                        0 => g.pulse(intid, vcpu, &mut e),
                        1 => g.set_level(intid, vcpu, r.below(2) == 0, &mut e),
                        _ => g.inject_hw(intid, vcpu, &mut e),
                    };
                }
                10 => {
                    // The guest runs: acknowledges and EOIs some LRs.
                    let l = &mut lrs[v];
                    for _ in 0..r.below(3) {
                        if let Some(x) = l.ack() {
                            if r.below(2) == 0 {
                                l.eoi(x);
                            }
                        }
                    }
                    if r.below(2) == 0 {
                        if let Some(x) = (0..l.n)
                            .map(|k| l.lr(k))
                            .find(|x| x.state.active)
                            .map(|x| x.vintid)
                        {
                            l.eoi(x);
                        }
                    }
                }
                _ => {
                    let mut e2 = Effects::new();
                    g.sync(v, &mut lrs[v], &mut e2).unwrap();
                    g.flush(v, &mut lrs[v], &mut e2).unwrap();
                    let l = &lrs[v];
                    let held = l.valid();
                    delivered += held.len();
                    let mut dedup = held.clone();
                    dedup.dedup();
                    assert_eq!(held, dedup, "an interrupt in two LRs");
                }
            }
            assert!(e.phys().len() <= MAX_PHYS_EFFECTS);
            if i % 97 == 0 {
                g.check_invariants();
            }
        }
        g.check_invariants();
        assert!(
            delivered > 100,
            "the fuzz should reach the LR flow ({delivered})"
        );
    }
}

// ----- a hardware line the hypervisor samples (the virtual timer) -----

/// A vGIC whose vCPU 0 has the timer PPI 27 linked to physical 27 and
/// enabled, with the guest's view of its private pending bits.
fn timer_vgic(version: VgicVersion) -> Vgic {
    let mut g = Vgic::new(version, 1, 64, mpidr).unwrap();
    g.link_hw(27, Some(0), 27).unwrap();
    enable(&mut g, 0, 27, 0x80);
    g
}

/// GICR_ISPENDR0 (v3) or GICD_ISPENDR0 (v2) of vCPU 0, and ICPENDR0.
fn private_pending(g: &mut Vgic) -> (u64, u64) {
    match g.version() {
        VgicVersion::V3 => (rrd(g, 0, SGI_BASE + 0x200, Word), rrd(g, 0, SGI_BASE + 0x280, Word)),
        VgicVersion::V2 => (rd(g, 0, 0x200, Word), rd(g, 0, 0x280, Word)),
    }
}

fn line(g: &mut Vgic, level: bool) -> Effects {
    let mut e = Effects::new();
    g.set_hw_line(27, 0, level, &mut e).unwrap();
    g.check_invariants();
    e
}

#[test]
fn the_timer_ppi_reads_pending_exactly_while_its_line_is_high() {
    for version in [VgicVersion::V3, VgicVersion::V2] {
        let mut g = timer_vgic(version);
        line(&mut g, true);
        assert_eq!(private_pending(&mut g), (1 << 27, 1 << 27), "{version:?}: enabled, condition met, unmasked");
        line(&mut g, false);
        assert_eq!(private_pending(&mut g), (0, 0), "{version:?}: disabled or masked");
        // Fired, taken by the guest (active), line still high: pending and active.
        let mut e = Effects::new();
        g.inject_hw(27, 0, &mut e).unwrap();
        let mut l = FakeLrs::new(version, 4);
        flush(&mut g, 0, &mut l);
        let i = l.find(27)[0].0;
        l.set_state(i, LrState::ACTIVE);
        sync(&mut g, 0, &mut l);
        assert_eq!(private_pending(&mut g).0, 1 << 27, "{version:?}: the line is still high while it is handled");
        line(&mut g, false);
        assert_eq!(private_pending(&mut g).0, 0, "{version:?}: the handler cleared the condition");
    }
}

#[test]
fn a_timer_instance_in_a_list_register_is_withdrawn_when_the_line_drops() {
    for version in [VgicVersion::V3, VgicVersion::V2] {
        let mut g = timer_vgic(version);
        let mut e = Effects::new();
        g.inject_hw(27, 0, &mut e).unwrap();
        let mut l = FakeLrs::new(version, 4);
        flush(&mut g, 0, &mut l);
        assert_eq!(l.one(27).hw, Some(27));
        // The guest disables its timer before taking the interrupt.
        let e = line(&mut g, false);
        assert_eq!(kicks(&e), [0], "{version:?}: the owner must look at its LRs");
        sync(&mut g, 0, &mut l);
        let mut e = Effects::new();
        g.flush(0, &mut l, &mut e).unwrap();
        g.check_invariants();
        assert!(l.valid().is_empty(), "{version:?}: no interrupt left for the guest to take");
        assert_eq!(e.phys(), [Effect::PhysActive { intid: 27, set: false }], "{version:?}: the physical one deactivated");
        assert!(!g.has_work(0));
    }
}

#[test]
fn a_timer_instance_the_guest_is_handling_is_not_withdrawn() {
    let mut g = timer_vgic(VgicVersion::V3);
    let mut e = Effects::new();
    g.inject_hw(27, 0, &mut e).unwrap();
    let mut l = FakeLrs::new(VgicVersion::V3, 4);
    flush(&mut g, 0, &mut l);
    let i = l.find(27)[0].0;
    l.set_state(i, LrState::ACTIVE);
    sync(&mut g, 0, &mut l);
    line(&mut g, false);
    let mut e = Effects::new();
    g.flush(0, &mut l, &mut e).unwrap();
    assert_eq!(l.one(27).state, LrState::ACTIVE, "its deactivation is the guest's");
    assert!(e.phys().is_empty());
}

#[test]
fn a_timer_instance_that_was_never_queued_is_dropped_and_deactivated_when_the_line_drops() {
    let mut g = timer_vgic(VgicVersion::V3);
    // The guest has the PPI disabled in its redistributor when the timer fires.
    rwr(&mut g, 0, SGI_BASE + 0x180, Word, 1 << 27);
    let mut e = Effects::new();
    g.inject_hw(27, 0, &mut e).unwrap();
    assert_eq!(private_pending(&mut g).0, 1 << 27);
    let e = line(&mut g, false);
    assert_eq!(e.phys(), [Effect::PhysActive { intid: 27, set: false }]);
    // Enabled again with the timer off: nothing to deliver.
    rwr(&mut g, 0, SGI_BASE + 0x100, Word, 1 << 27);
    let mut l = FakeLrs::new(VgicVersion::V3, 4);
    flush(&mut g, 0, &mut l);
    assert!(l.valid().is_empty(), "a disabled timer raises no interrupt");
    assert!(!g.has_work(0));
}

#[test]
fn set_hw_line_needs_a_linked_interrupt_and_private_pending_reads_are_recognised() {
    let mut g = v3(2);
    let mut e = Effects::new();
    assert_eq!(g.set_hw_line(27, 0, true, &mut e), Err(VgicError::BadIntid));
    assert_eq!(g.set_hw_line(27, 5, true, &mut e), Err(VgicError::BadVcpu));
    assert!(is_private_pending_read(true, REDIST_STRIDE + SGI_BASE + 0x200, 1));
    assert!(!is_private_pending_read(true, REDIST_STRIDE + SGI_BASE + 0x200, 0), "another vCPU's frame");
    assert!(!is_private_pending_read(true, SGI_BASE + 0x100, 0), "ISENABLER0");
    assert!(is_private_pending_read(false, 0x280, 3));
    assert!(!is_private_pending_read(false, 0x204, 0), "SPIs' pending bits");
}

// ----- list registers for what the guest can take -----

/// A VMCR (GICH_VMCR or ICH_VMCR_EL2) with these group enables and
/// priority mask.
fn vmcr(version: VgicVersion, group0: bool, group1: bool, pmr: u8) -> u64 {
    let mask = match version {
        VgicVersion::V2 => u64::from(pmr >> 3) << 27,
        VgicVersion::V3 => u64::from(pmr) << 24,
    };
    mask | u64::from(group0) | (u64::from(group1) << 1)
}

/// Puts private interrupt `intid` of `vcpu` in group 1 (GICR_IGROUPR0 or
/// the banked GICD_IGROUPR0).
fn group1_private(g: &mut Vgic, vcpu: usize, intid: u32) {
    let bit = 1u64 << intid;
    match g.version() {
        VgicVersion::V3 => {
            let off = vcpu as u64 * REDIST_STRIDE + SGI_BASE + 0x80;
            let old = rrd(g, vcpu, off, Word);
            rwr(g, vcpu, off, Word, old | bit);
        }
        VgicVersion::V2 => {
            let old = rd(g, vcpu, 0x80, Word);
            wr(g, vcpu, 0x80, Word, old | bit);
        }
    }
}

#[test]
fn spis_made_active_but_never_acknowledged_do_not_starve_the_timer() {
    for version in [VgicVersion::V3, VgicVersion::V2] {
        let mut g = timer_vgic(version);
        for intid in 40..44 {
            enable(&mut g, 0, intid, 0x10);
        }
        // GICD_ISACTIVER1: SPIs 40..43 active, none of them acknowledged.
        wr(&mut g, 0, 0x304, Word, 0xf << 8);
        let mut l = FakeLrs::new(version, 4);
        flush(&mut g, 0, &mut l);
        sync(&mut g, 0, &mut l);
        // The timer fires.
        let mut e = Effects::new();
        g.inject_hw(27, 0, &mut e).unwrap();
        line(&mut g, true);
        flush(&mut g, 0, &mut l);
        assert_eq!(l.one(27).state, LrState::PENDING, "{version:?}: the timer has a list register");
        assert!(g.has_work(0), "{version:?}: a WFI returns");
        assert_eq!(l.ack(), Some(27), "{version:?}: the guest takes the timer");
        // The SPI that gave its LR up is still active, as the guest reads it.
        assert_eq!(rd(&mut g, 0, 0x304, Word) >> 8 & 0xf, 0xf, "{version:?}: ISACTIVER1");
        l.eoi(27);
        sync(&mut g, 0, &mut l);
        flush(&mut g, 0, &mut l);
        assert_eq!(l.valid(), [40, 41, 42, 43], "{version:?}: back in the spare LR");
        // And the guest can still deactivate them all.
        wr(&mut g, 0, 0x384, Word, 0xf << 8);
        sync(&mut g, 0, &mut l);
        flush(&mut g, 0, &mut l);
        assert!(l.valid().is_empty(), "{version:?}: {:?}", l.valid());
        assert_eq!(rd(&mut g, 0, 0x304, Word) >> 8 & 0xf, 0, "{version:?}");
    }
}

#[test]
fn pending_spis_of_a_group_the_cpu_interface_disables_do_not_starve_the_other_group() {
    for version in [VgicVersion::V3, VgicVersion::V2] {
        let mut g = timer_vgic(version);
        // GICv3 guests take group 1 only, leaving the SPIs in group 0 (the
        // reset value); GICv2 guests may take group 0 only.
        let (spi_group1, timer_group1) = match version {
            VgicVersion::V3 => (false, true),
            VgicVersion::V2 => (true, false),
        };
        if timer_group1 {
            group1_private(&mut g, 0, 27);
        }
        for intid in 40..45 {
            enable(&mut g, 0, intid, 0x10);
        }
        if spi_group1 {
            wr(&mut g, 0, 0x84, Word, 0x1f << 8);
        }
        for intid in 40..45 {
            pulse(&mut g, intid, 0);
        }
        let mut l = FakeLrs::new(version, 4);
        l.vmcr = vmcr(version, !timer_group1, timer_group1, 0xf0);
        flush(&mut g, 0, &mut l);
        assert_eq!(l.valid().len(), 4, "{version:?}: spare LRs are used");
        sync(&mut g, 0, &mut l);
        let mut e = Effects::new();
        g.inject_hw(27, 0, &mut e).unwrap();
        line(&mut g, true);
        flush(&mut g, 0, &mut l);
        assert_eq!(l.one(27).state, LrState::PENDING, "{version:?}: the timer has a list register");
        assert!(g.has_work(0), "{version:?}");
        let still_pending = rd(&mut g, 0, 0x204, Word) >> 8 & 0x1f;
        assert_eq!(still_pending, 0x1f, "{version:?}: the SPI that gave its LR up is still pending");
        // Once the guest enables their group they are all delivered.
        l.vmcr = vmcr(version, true, true, 0xf0);
        let mut taken = Vec::new();
        for _ in 0..8 {
            sync(&mut g, 0, &mut l);
            flush(&mut g, 0, &mut l);
            let Some(i) = l.ack() else { break };
            l.eoi(i);
            taken.push(i);
        }
        taken.sort();
        assert_eq!(taken, [27, 40, 41, 42, 43, 44], "{version:?}");
    }
}

#[test]
fn pending_lrs_below_the_priority_mask_give_way_to_an_interrupt_above_it() {
    for version in [VgicVersion::V3, VgicVersion::V2] {
        let mut g = timer_vgic(version);
        for intid in 40..44 {
            enable(&mut g, 0, intid, 0xc0);
            pulse(&mut g, intid, 0);
        }
        let mut l = FakeLrs::new(version, 4);
        l.vmcr = vmcr(version, true, true, 0xa0);
        flush(&mut g, 0, &mut l);
        assert_eq!(l.valid(), [40, 41, 42, 43]);
        sync(&mut g, 0, &mut l);
        let mut e = Effects::new();
        g.inject_hw(27, 0, &mut e).unwrap();
        flush(&mut g, 0, &mut l);
        assert_eq!(l.one(27).state, LrState::PENDING, "{version:?}");
        assert!(g.has_work(0), "{version:?}");
    }
}

#[test]
fn an_interrupt_regrouped_or_reprioritised_while_pending_in_an_lr_is_rewritten() {
    let mut g = v3(1);
    enable(&mut g, 0, 40, 0x10);
    pulse(&mut g, 40, 0);
    let mut l = FakeLrs::new(VgicVersion::V3, 4);
    l.vmcr = vmcr(VgicVersion::V3, false, true, 0xff);
    flush(&mut g, 0, &mut l);
    assert!(!l.one(40).group1);
    sync(&mut g, 0, &mut l);
    wr(&mut g, 0, 0x84, Word, 1 << 8); // GICD_IGROUPR1: group 1
    wr(&mut g, 0, 0x428, Byte, 0x60); // GICD_IPRIORITYR40
    flush(&mut g, 0, &mut l);
    let lr = l.one(40);
    assert!(lr.group1 && lr.priority == 0x60 && lr.state == LrState::PENDING, "{lr:?}");
    assert!(g.has_work(0));
}

#[test]
fn pending_lr_leaves_when_its_interrupt_or_distributor_group_is_disabled() {
    let mut g = v3(1);
    enable(&mut g, 0, 40, 0x10);
    enable(&mut g, 0, 41, 0x10);
    pulse(&mut g, 40, 0);
    pulse(&mut g, 41, 0);
    let mut l = FakeLrs::new(VgicVersion::V3, 4);
    flush(&mut g, 0, &mut l);
    sync(&mut g, 0, &mut l);
    wr(&mut g, 0, 0x184, Word, 1 << 8); // GICD_ICENABLER1: SPI 40
    flush(&mut g, 0, &mut l);
    assert_eq!(l.valid(), [41]);
    assert!(g.irq_view(40, 0).unwrap().pending, "still pending while disabled");
    sync(&mut g, 0, &mut l);
    wr(&mut g, 0, 0, Word, 0b10); // GICD_CTLR: group 0 off
    flush(&mut g, 0, &mut l);
    assert!(l.valid().is_empty());
    wr(&mut g, 0, 0x104, Word, 1 << 8);
    wr(&mut g, 0, 0, Word, 0b11);
    flush(&mut g, 0, &mut l);
    assert_eq!(l.valid(), [40, 41]);
}

#[test]
fn an_acknowledged_lr_is_never_given_up() {
    let mut g = v3(1);
    for intid in 40..44 {
        enable(&mut g, 0, intid, 0x80);
        pulse(&mut g, intid, 0);
    }
    let mut l = FakeLrs::new(VgicVersion::V3, 4);
    flush(&mut g, 0, &mut l);
    for _ in 0..4 {
        l.ack();
    }
    sync(&mut g, 0, &mut l);
    // Made active again through ISACTIVER: still the guest's.
    wr(&mut g, 0, 0x304, Word, 0xf << 8);
    enable(&mut g, 0, 44, 0x00);
    pulse(&mut g, 44, 0);
    flush(&mut g, 0, &mut l);
    assert_eq!(l.valid(), [40, 41, 42, 43]);
    assert!(l.underflow, "44 waits for an LR");
    l.eoi(42);
    sync(&mut g, 0, &mut l);
    flush(&mut g, 0, &mut l);
    assert_eq!(l.one(44).state, LrState::PENDING);
}

#[test]
fn wfi_has_work_only_for_what_the_cpu_interface_signals() {
    for version in [VgicVersion::V3, VgicVersion::V2] {
        let mut g = Vgic::new(version, 1, 64, mpidr).unwrap();
        enable(&mut g, 0, 40, 0x10);
        enable(&mut g, 0, 41, 0x10);
        enable(&mut g, 0, 42, 0xc0);
        wr(&mut g, 0, 0x84, Word, 1 << 9); // SPI 41 in group 1
        let mut l = FakeLrs::new(version, 4);
        l.vmcr = vmcr(version, true, false, 0xa0);
        // Active, never acknowledged; pending in a group the CPU interface
        // has off; pending below the priority mask.
        wr(&mut g, 0, 0x304, Word, 1 << 8);
        pulse(&mut g, 41, 0);
        pulse(&mut g, 42, 0);
        for lrs in [0, 4] {
            l.n = lrs;
            flush(&mut g, 0, &mut l);
            assert!(!g.has_work(0), "{version:?}, {lrs} LRs: nothing to wake for");
        }
        l.vmcr = vmcr(version, true, true, 0xa0);
        flush(&mut g, 0, &mut l);
        assert!(g.has_work(0), "{version:?}: group 1 enabled");
        l.vmcr = vmcr(version, true, false, 0xff);
        flush(&mut g, 0, &mut l);
        assert!(g.has_work(0), "{version:?}: mask opened");
    }
}

/// `inject_hw_loaded` (a hardware PPI of the vCPU loaded here) leaves the
/// model and the list registers as `inject_hw` followed by the vCPU's next
/// flush would, whether it takes its direct way to a free LR or not: the
/// same LRs, the same view of every interrupt, the same answer to WFI.
#[test]
fn inject_hw_loaded_ends_as_inject_hw_and_a_flush_would() {
    type Setup = fn(&mut Vgic, &mut FakeLrs);
    let scenarios: [(&str, Setup); 11] = [
        ("alone", |_, _| {}),
        // The guest's CPU interface holds it back (priority mask, group
        // off): placed all the same, but not signalled.
        ("masked", |g, l| {
            l.vmcr = vmcr(g.version(), true, true, 0x80);
            flush(g, 1, l);
        }),
        ("group off in the CPU interface", |g, l| {
            l.vmcr = vmcr(g.version(), true, false, 0xf0);
            flush(g, 1, l);
        }),
        ("disabled", |g, _| {
            let base = if g.version() == VgicVersion::V3 { REDIST_STRIDE + SGI_BASE } else { 0 };
            let e = if g.version() == VgicVersion::V3 { rwr(g, 1, base + 0x180, Word, 1 << 27) } else { wr(g, 1, 0x180, Word, 1 << 27) };
            let _ = e;
        }),
        ("groups off", |g, _| {
            wr(g, 1, 0, Word, 0);
        }),
        ("another queued", |g, _| {
            enable(g, 1, 29, 0x40);
            g.link_hw(29, Some(1), 29).unwrap();
            let mut e = Effects::new();
            g.inject_hw(29, 1, &mut e).unwrap();
        }),
        ("already in an LR", |g, l| {
            let mut e = Effects::new();
            g.inject_hw(27, 1, &mut e).unwrap();
            flush(g, 1, l);
        }),
        ("active", |g, l| {
            let mut e = Effects::new();
            g.inject_hw(27, 1, &mut e).unwrap();
            flush(g, 1, l);
            assert_eq!(l.ack(), Some(27));
            sync(g, 1, l);
        }),
        ("no free LR", |g, l| {
            enable(g, 1, 29, 0x40);
            g.link_hw(29, Some(1), 29).unwrap();
            let mut e = Effects::new();
            g.inject_hw(29, 1, &mut e).unwrap();
            flush(g, 1, l);
            assert_eq!(l.ack(), Some(29));
            sync(g, 1, l);
        }),
        ("line driven", |g, _| {
            let mut e = Effects::new();
            g.set_hw_line(27, 1, true, &mut e).unwrap();
        }),
        ("line driven, sampled low", |g, _| {
            let mut e = Effects::new();
            g.set_hw_line(27, 1, false, &mut e).unwrap();
        }),
    ];
    for version in [VgicVersion::V2, VgicVersion::V3] {
        for (name, setup) in scenarios {
            let mut g = Vgic::new(version, 2, 64, mpidr).unwrap();
            g.link_hw(27, Some(1), 27).unwrap();
            enable(&mut g, 1, 27, 0xa0);
            let lrs = if name == "no free LR" { 1 } else { 4 };
            let mut l = FakeLrs::new(version, lrs);
            setup(&mut g, &mut l);
            g.check_invariants();
            // The reference: inject, then the flush the kick asks for.
            let (mut want, mut want_l) = (g.clone(), l.clone());
            let mut e = Effects::new();
            want.inject_hw(27, 1, &mut e).unwrap();
            flush(&mut want, 1, &mut want_l);
            // The direct way alone: where it places the interrupt, it says
            // whether the vCPU now has work as `has_work` would.
            let (mut direct, mut direct_l) = (g.clone(), l.clone());
            match direct.place_hw_loaded(27, 1, &mut direct_l).unwrap() {
                HwPlaced::No => {
                    assert_eq!(direct_l.regs, l.regs, "{version:?} {name}: not placed, LRs untouched");
                    assert!((0..96).all(|i| direct.irq_view(i, 1) == g.irq_view(i, 1)), "{version:?} {name}: not placed, model untouched");
                }
                HwPlaced::Yes { signalled } => {
                    assert_eq!(signalled, want.has_work(1), "{version:?} {name}: signalled");
                    assert_eq!(direct_l.regs, want_l.regs, "{version:?} {name}: the direct way's LRs");
                }
            }
            // The loaded way, with a flush only if it says it did not place it.
            let mut e = Effects::new();
            let placed = g.inject_hw_loaded(27, 1, &mut l, &mut e).unwrap();
            g.check_invariants();
            if !placed {
                flush(&mut g, 1, &mut l);
            }
            let lrs_of = |l: &FakeLrs| {
                let mut v: Vec<(u32, u64)> = (0..l.n).filter(|&i| !l.lr(i).state.is_invalid()).map(|i| (l.lr(i).vintid, l.regs[i])).collect();
                v.sort();
                v
            };
            let same = |g: &Vgic, l: &FakeLrs, want: &Vgic, want_l: &FakeLrs, stage: &str| {
                assert_eq!(lrs_of(l), lrs_of(want_l), "{version:?} {name} {stage}: list registers");
                for vcpu in 0..2 {
                    for intid in 0..96 {
                        let view = |g: &Vgic| g.irq_view(intid, vcpu).map(|v| IrqView { in_lr: v.in_lr.map(|(c, _)| (c, 0)), ..v });
                        assert_eq!(view(g), view(want), "{version:?} {name} {stage}: vcpu{vcpu} intid {intid}");
                    }
                    assert_eq!(g.has_work(vcpu), want.has_work(vcpu), "{version:?} {name} {stage}: vcpu{vcpu} has_work");
                }
            };
            same(&g, &l, &want, &want_l, "injected");
            // The guest takes it and EOIs it: nothing of it is left over
            // (a latch left behind would deliver it twice).
            let (mut taken, mut taken_l, mut want_taken, mut want_taken_l) = (g.clone(), l.clone(), want.clone(), want_l.clone());
            for (g, l) in [(&mut taken, &mut taken_l), (&mut want_taken, &mut want_taken_l)] {
                if l.ack() == Some(27) {
                    l.eoi(27);
                }
                sync(g, 1, l);
                flush(g, 1, l);
            }
            same(&taken, &taken_l, &want_taken, &want_taken_l, "taken");
            // The guest disables it before taking it: the LR is evicted at
            // the next flush, and what it held (the latch) goes back to the
            // model, where it shows once it is enabled again.
            for (g, l) in [(&mut g, &mut l), (&mut want, &mut want_l)] {
                let base = if version == VgicVersion::V3 { REDIST_STRIDE + SGI_BASE } else { 0 };
                let _ = if version == VgicVersion::V3 { rwr(g, 1, base + 0x180, Word, 1 << 27) } else { wr(g, 1, 0x180, Word, 1 << 27) };
                sync(g, 1, l);
                flush(g, 1, l);
                let _ = if version == VgicVersion::V3 { rwr(g, 1, base + 0x100, Word, 1 << 27) } else { wr(g, 1, 0x100, Word, 1 << 27) };
                flush(g, 1, l);
            }
            same(&g, &l, &want, &want_l, "evicted and enabled again");
            if ["alone", "line driven", "line driven, sampled low", "masked", "group off in the CPU interface"].contains(&name) {
                assert!(placed, "{version:?} {name}: the direct way");
            }
        }
    }
}

/// `sgi1r_write_one` (an SGI to one other vCPU that waits for it) leaves
/// the model as `sgi1r_write` does and asks for the same kick; for any
/// other write it says so and changes nothing.
#[test]
fn sgi1r_write_one_ends_as_sgi1r_write_or_does_nothing() {
    type Setup = fn(&mut Vgic, &mut FakeLrs);
    let to = |vcpu: usize| Sgi1r::to_pe(5, mpidr(vcpu)).encode();
    // (name, the write from vCPU 0, setup, whether the direct way takes it)
    let scenarios: [(&str, u64, Setup, bool); 12] = [
        ("alone", to(1), |_, _| {}, true),
        ("to the other cluster", to(4), |_, _| {}, true),
        ("something else queued", to(1), |g, _| {
            enable(g, 1, 6, 0x40);
            let mut e = Effects::new();
            g.pulse(6, 1, &mut e).unwrap();
        }, true),
        ("to itself", to(0), |_, _| {}, false),
        ("two targets", to(1) | 0b11, |_, _| {}, false),
        ("all others", (1 << 40) | (5 << 24), |_, _| {}, false),
        ("no target", to(1) & !0xffff, |_, _| {}, false),
        ("disabled", to(1), |g, _| {
            rwr(g, 1, REDIST_STRIDE + SGI_BASE + 0x180, Word, 1 << 5);
        }, false),
        ("group off", to(1), |g, _| {
            wr(g, 0, 0, Word, 0b10);
        }, false),
        ("already pending", to(1), |g, _| {
            let mut e = Effects::new();
            g.pulse(5, 1, &mut e).unwrap();
        }, false),
        ("in an LR", to(1), |g, l| {
            let mut e = Effects::new();
            g.pulse(5, 1, &mut e).unwrap();
            flush(g, 1, l);
        }, false),
        ("active", to(1), |g, l| {
            let mut e = Effects::new();
            g.pulse(5, 1, &mut e).unwrap();
            flush(g, 1, l);
            assert_eq!(l.ack(), Some(5));
            sync(g, 1, l);
            l.eoi(5);
        }, false),
    ];
    for (name, value, setup, direct) in scenarios {
        let mut g = v3(8);
        for vcpu in 0..8 {
            enable(&mut g, vcpu, 5, 0x80);
        }
        let mut l = FakeLrs::new(VgicVersion::V3, 4);
        setup(&mut g, &mut l);
        g.check_invariants();
        let before = format!("{g:?}");
        let mut want = g.clone();
        let mut e = Effects::new();
        want.sgi1r_write(0, value, &mut e).unwrap();
        match g.sgi1r_write_one(0, value) {
            Some(target) => {
                g.check_invariants();
                assert!(direct, "{name}: took the direct way");
                assert_eq!(format!("{g:?}"), format!("{want:?}"), "{name}: the model");
                assert_eq!(kicks(&e), [target], "{name}: the kick");
                assert!(e.phys().is_empty());
            }
            None => {
                assert!(!direct, "{name}: not the direct way");
                assert_eq!(format!("{g:?}"), before, "{name}: changed nothing");
            }
        }
    }
    // A v2 vGIC ignores the register; the direct way does not take it.
    let mut g = v2(2);
    enable(&mut g, 1, 5, 0x80);
    assert_eq!(g.sgi1r_write_one(0, to(1)), None);
}

/// `flush_unused` (no LR in use) leaves the model and the list registers
/// as `flush` does, or says it does not apply and leaves them alone.
#[test]
fn flush_unused_ends_as_flush_or_does_nothing() {
    type Setup = fn(&mut Vgic, &mut FakeLrs);
    fn pend(g: &mut Vgic, intid: u32) {
        enable(g, 1, intid, 0x40 + intid as u8);
        let mut e = Effects::new();
        g.pulse(intid, 1, &mut e).unwrap();
    }
    let scenarios: [(&str, Setup, bool); 8] = [
        ("nothing queued", |_, _| {}, true),
        ("one SGI", |g, _| pend(g, 5), true),
        ("an SGI and a PPI", |g, _| {
            pend(g, 5);
            pend(g, 20);
        }, true),
        ("more than fit", |g, _| {
            for intid in [1, 2, 3, 4, 5] {
                pend(g, intid);
            }
        }, false),
        ("group off in the CPU interface", |g, l| {
            pend(g, 5);
            l.vmcr = 0xff00_0000;
        }, true),
        ("an LR in use", |g, l| {
            pend(g, 5);
            flush(g, 1, l);
            pend(g, 6);
        }, false),
        ("an LR done with, not read back", |g, l| {
            pend(g, 5);
            flush(g, 1, l);
            assert_eq!(l.ack(), Some(5));
            l.eoi(5);
            pend(g, 6);
        }, false),
        ("done with and read back", |g, l| {
            pend(g, 5);
            flush(g, 1, l);
            assert_eq!(l.ack(), Some(5));
            l.eoi(5);
            sync(g, 1, l);
            pend(g, 6);
        }, true),
    ];
    for version in [VgicVersion::V2, VgicVersion::V3] {
        for (name, setup, direct) in scenarios {
            let mut g = Vgic::new(version, 2, 64, mpidr).unwrap();
            let mut l = FakeLrs::new(version, 4);
            setup(&mut g, &mut l);
            g.check_invariants();
            let (before, before_l, before_cpuif) = (format!("{g:?}"), l.regs, g.vcpus[1].cpuif);
            let (mut want, mut want_l) = (g.clone(), l.clone());
            sync(&mut want, 1, &mut want_l);
            flush(&mut want, 1, &mut want_l);
            if g.flush_unused(1, &mut l) {
                g.check_invariants();
                assert!(direct, "{version:?} {name}: took the direct way");
                assert_eq!(l.regs, want_l.regs, "{version:?} {name}: list registers");
                assert_eq!(l.underflow, want_l.underflow, "{version:?} {name}: underflow");
                assert_eq!(format!("{g:?}"), format!("{want:?}"), "{version:?} {name}: the model");
            } else {
                assert!(!direct, "{version:?} {name}: not the direct way");
                assert_eq!(l.regs, before_l, "{version:?} {name}: list registers untouched");
                // Only the CPU interface controls it read may differ.
                g.vcpus[1].cpuif = before_cpuif;
                assert_eq!(format!("{g:?}"), before, "{version:?} {name}: the model untouched");
            }
        }
    }
}

#[test]
fn irq_bitmap_single_is_the_one_bit_set_or_none() {
    let mut q = IrqBitmap::default();
    assert_eq!(q.single(), None);
    for intid in [0, 5, 63, 64, 300, 1023] {
        q.set(intid);
        assert_eq!(q.single(), Some(intid));
        for other in [1, 65, 700] {
            q.set(other);
            assert_eq!(q.single(), None, "{intid} and {other}");
            q.clear(other);
        }
        assert_eq!(q.single(), Some(intid));
        q.clear(intid);
        assert_eq!(q.single(), None);
    }
}
