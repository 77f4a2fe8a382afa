//! Building dom0, the privileged host VM: its kernel comes from the boot
//! bundle (the initrd, a cpio archive, `hv_abi::bundle`); its RAM is one
//! contiguous block mapped 1:1 (IPA = PA, since dom0's drivers program DMA
//! with the addresses they see); its device tree is derived from the host's
//! (`hv_devtree::dom0`); every device the hypervisor does not keep is passed
//! through, with its interrupts.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use hv_abi::bundle;
use hv_abi::hypercall::VmState;
use hv_devtree::dom0::{derive_dom0_tree, Dom0Config, GicView, GICR_FRAME_PAIR};
use log::{debug, info};

use crate::addr::{Ipa, PAGE_SIZE};
use crate::arch::timer::VTIMER_PPI;
use crate::arch::{cpu, gic};
use crate::mm::machine_frames;
use crate::mm::pagetable::Attributes;
use crate::platform::{GicVersion, MemRegion, Platform};
use crate::stage2::Stage2Tables;
use crate::vgic::{Vgic, VgicVersion};
use crate::vm::{self, power, EmulatedDevice, EmulatedRegion, RamChunk, Vcpu, VcpuStart, Vm, VmId, VmKind, VmSpec};

const DEFAULT_MEMORY: u64 = 256 << 20;
/// arm64 Image header: magic at 56, text_offset at 8, image_size at 16.
const IMAGE_MAGIC: u32 = 0x644d_5241;

/// What went wrong building dom0, for the boot log.
pub type Dom0Error = String;

pub struct Dom0Settings<'a> {
    pub memory: Option<u64>,
    pub vcpus: Option<usize>,
    pub args: &'a str,
    pub online_cpus: usize,
}

/// Creates dom0 (not yet running). Its vCPU i runs on physical CPU i.
pub fn create(platform: &Platform, host_dtb: &[u8], settings: &Dom0Settings<'_>) -> Result<Arc<Vm>, Dom0Error> {
    let initrd = platform.initrd.ok_or("no boot bundle: start the hypervisor with an initrd holding dom0.img (see README)")?;
    // SAFETY: the initrd is RAM the boot loader filled, excluded from the
    // page allocator and mapped by the EL2 identity map; nothing writes it.
    let archive = unsafe { core::slice::from_raw_parts(initrd.base.as_u64() as *const u8, initrd.size as usize) };
    let kernel = bundle::find(archive, bundle::DOM0_KERNEL)
        .map_err(|e| format!("{e}"))?
        .ok_or_else(|| format!("the boot bundle has no {}", bundle::DOM0_KERNEL))?;
    let (text_offset, image_size) = parse_image_header(kernel.data)?;

    let vcpus = settings.vcpus.unwrap_or(settings.online_cpus);
    if vcpus > settings.online_cpus {
        return Err(format!("dom0.vcpus={vcpus}, but only {} physical CPUs are online", settings.online_cpus));
    }
    let size = settings.memory.unwrap_or(DEFAULT_MEMORY).next_multiple_of(2 << 20);
    let pages = (size / PAGE_SIZE) as usize;
    let base = machine_frames::alloc_aligned(pages, 2 << 20).ok_or_else(|| format!("no contiguous {} MiB block for dom0's RAM", size >> 20))?;
    let ram = MemRegion { base, size };
    info!("dom0: {} MiB RAM at {}..{:#x}, {} vCPU(s)", size >> 20, base, base.as_u64() + size, vcpus);
    // Freshly allocated, mapped read-write at EL2, dom0's from now on.
    cpu::zero(base, size);

    if text_offset + image_size.max(kernel.data.len() as u64) > size / 2 {
        return Err(format!("dom0.img needs {image_size} bytes at offset {text_offset:#x}: more than half of dom0's RAM"));
    }
    let entry = base.as_u64() + text_offset;
    // SAFETY: the destination lies inside dom0's RAM (checked above).
    unsafe { core::ptr::copy_nonoverlapping(kernel.data.as_ptr(), entry as *mut u8, kernel.data.len()) };

    let gic_view = match platform.gic.version {
        GicVersion::V2 => {
            let gicc = platform.gic.gicc.ok_or("GICv2 without a GICC frame")?;
            let gicv = platform.gic.gicv.ok_or("GICv2 without a GICV frame: the CPU cannot virtualise interrupts")?;
            GicView::V2 { gicd: platform.gic.gicd, gicc: MemRegion { base: gicc.base, size: gicv.size.min(gicc.size.max(0x2000)) } }
        }
        GicVersion::V3 => {
            let gicr_base = platform.gic.gicr.first().ok_or("GICv3 without redistributors")?.base;
            GicView::V3 { gicd: platform.gic.gicd, gicr: MemRegion { base: gicr_base, size: GICR_FRAME_PAIR * vcpus as u64 } }
        }
    };
    let config = Dom0Config { vcpus, memory: &[ram], bootargs: settings.args, initrd: Some(initrd), gic: gic_view };
    let tree = derive_dom0_tree(host_dtb, &config).map_err(|e| format!("dom0 device tree: {e}"))?;
    let dtb_ipa = (base.as_u64() + size - (2 << 20)).next_multiple_of(8);
    if tree.blob.len() as u64 > 2 << 20 {
        return Err("dom0 device tree larger than 2 MiB".into());
    }
    // SAFETY: the last 2 MiB of dom0's RAM; the blob fits (checked above).
    unsafe { core::ptr::copy_nonoverlapping(tree.blob.as_ptr(), dtb_ipa as *mut u8, tree.blob.len()) };
    debug!("dom0: kernel at {entry:#x} ({} bytes), device tree at {dtb_ipa:#x} ({} bytes)", kernel.data.len(), tree.blob.len());

    // Stage 2: RAM, the bundle read-only, passed-through devices, and for
    // GICv2 the virtual CPU interface where dom0 expects its GICC. The
    // distributor (and GICv3 redistributors) stay unmapped: they trap.
    let mut stage2 = Stage2Tables::new().map_err(|e| format!("stage-2 tables: {e:?}"))?;
    let identity = |s2: &mut Stage2Tables, r: MemRegion, attrs| {
        s2.map(Ipa::new(r.base.as_u64()), r.base, r.size, attrs).map_err(|e| format!("stage 2: mapping {}+{:#x}: {e:?}", r.base, r.size))
    };
    identity(&mut stage2, ram, Attributes::RWX)?;
    let bundle_pages = page_span(initrd);
    identity(&mut stage2, bundle_pages, Attributes::RO_DATA)?;
    for r in &tree.passthrough_mmio {
        identity(&mut stage2, *r, Attributes::DEVICE)?;
    }
    // The distributor traps over a whole GICv3 frame (64 KiB) on both
    // versions; on GICv2 the vGIC answers accesses past its 4 KiB frame
    // with an abort (`vgic::V2_DIST_SIZE`).
    let gicd = EmulatedRegion { base: Ipa::new(platform.gic.gicd.base.as_u64()), size: crate::vgic::V3_DIST_SIZE, device: EmulatedDevice::GicDistributor };
    let mut regions = vec![gicd];
    match gic_view {
        GicView::V2 { gicc, .. } => {
            let gicv = platform.gic.gicv.ok_or("no GICV")?;
            stage2
                .map(Ipa::new(gicc.base.as_u64()), gicv.base, gicc.size, Attributes::DEVICE)
                .map_err(|e| format!("stage 2: GICV: {e:?}"))?;
        }
        GicView::V3 { gicr, .. } => {
            regions.push(EmulatedRegion { base: Ipa::new(gicr.base.as_u64()), size: gicr.size, device: EmulatedDevice::GicRedistributors });
        }
    }
    info!("dom0: {} device window(s) and {} SPI(s) passed through", tree.passthrough_mmio.len(), tree.passthrough_spis.len());

    // vCPUs take the MPIDRs of the physical CPUs they run on, as the tree says.
    let mpidrs: Vec<u64> = platform.cpus.iter().take(vcpus).map(|c| c.mpidr).collect();
    let version = match platform.gic.version {
        GicVersion::V2 => VgicVersion::V2,
        GicVersion::V3 => VgicVersion::V3,
    };
    let spis = (gic::lines() as u32).saturating_sub(32);
    let spis = (spis / 32 * 32).min(960);
    let mut vgic = Vgic::new(version, vcpus, spis, |i| mpidrs.get(i).copied().unwrap_or(i as u64))
        .map_err(|e| format!("vGIC: {e:?}"))?;
    for v in 0..vcpus {
        vgic.link_hw(VTIMER_PPI, Some(v), VTIMER_PPI).map_err(|e| format!("vGIC: timer: {e:?}"))?;
    }
    for &spi in &tree.passthrough_spis {
        if (spi as usize) < gic::lines() {
            vgic.link_hw(spi, None, spi).map_err(|e| format!("vGIC: SPI {spi}: {e:?}"))?;
        }
    }
    // Dom0's vCPU i runs on physical CPU i.
    crate::ioreq::set_dom0_placement(&(0..mpidrs.len()).collect::<Vec<_>>());
    let vcpu_list: Vec<Vcpu> = mpidrs
        .iter()
        .enumerate()
        .map(|(i, &mpidr)| {
            crate::sched::place_fixed(i);
            Vcpu::new(i, mpidr, i, 0)
        })
        .collect();
    let vm = Arc::new(Vm::new(VmSpec {
        id: VmId(0),
        name: "dom0".into(),
        kind: VmKind::Dom0,
        stage2,
        ram: vec![RamChunk { ipa: Ipa::new(base.as_u64()), pa: base, size }],
        regions,
        hw_ppis: vec![VTIMER_PPI],
        pv_time: None,
        vgic,
        vcpus: vcpu_list,
        cntvoff: 0,
        weight: crate::schedpolicy::DEFAULT_WEIGHT,
        state: VmState::Running,
    }));
    // vCPU 0 starts at the kernel's entry with x0 = its device tree.
    *vm.vcpus[0].start.lock() = VcpuStart { entry, context: dtb_ipa };
    vm.vcpus[0].power.store(power::ON_PENDING, Ordering::Release);
    for &spi in &tree.passthrough_spis {
        crate::irq::set_spi_owner(spi, VmId(0));
    }
    vm::insert(vm.clone()).map_err(|_| String::from("VM slot 0 taken"))?;
    Ok(vm)
}

/// `(text_offset, image_size)` from an arm64 Image header.
fn parse_image_header(image: &[u8]) -> Result<(u64, u64), Dom0Error> {
    let word = |at: usize| image.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let magic = image.get(56..60).map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])));
    match (magic, word(8), word(16)) {
        (Some(IMAGE_MAGIC), Some(text_offset), Some(image_size)) if text_offset % PAGE_SIZE == 0 => Ok((text_offset, image_size)),
        _ => Err("dom0.img is not an arm64 Image (no ARM\\x64 magic, or a bad text_offset)".into()),
    }
}

fn page_span(r: MemRegion) -> MemRegion {
    let start = r.base.align_down(PAGE_SIZE);
    let end = r.base.as_u64().saturating_add(r.size).next_multiple_of(PAGE_SIZE);
    MemRegion { base: start, size: end - start.as_u64() }
}
