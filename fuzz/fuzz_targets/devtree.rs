//! Device trees as the hypervisor reads them from the boot loader: the
//! platform description, the console-only fallback, the tree writer's
//! parser, and dom0's tree derived as `dom0.rs` does it. Whatever the blob,
//! nothing panics, and a derived tree is one the hypervisor itself accepts.
#![no_main]

use hv_devtree::addr::PhysAddr;
use hv_devtree::dom0::{derive_dom0_tree, Dom0Config, GicView, DOM0_FDT_MAX, GICR_FRAME_PAIR};
use hv_devtree::platform::{GicVersion, MemRegion, Platform};
use hv_devtree::writer::Fdt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Platform::console_from_fdt(data);
    let _ = Fdt::parse(data);
    let Ok(platform) = Platform::from_fdt(data) else { return };
    let _ = platform.ram_size();
    // Dom0's share as `dom0.rs` carves it: 16 MiB at the start of the
    // first RAM region, one vCPU per CPU node (at most 4).
    let Some(first) = platform.memory.first() else { return };
    let Some(ram) = MemRegion::checked(PhysAddr::new(first.base.as_u64().next_multiple_of(2 << 20)), 16 << 20) else { return };
    let vcpus = platform.cpus.len().clamp(1, 4);
    let gic = match platform.gic.version {
        GicVersion::V2 => {
            let (Some(gicc), Some(gicv)) = (platform.gic.gicc, platform.gic.gicv) else { return };
            GicView::V2 { gicd: platform.gic.gicd, gicc: MemRegion { base: gicc.base, size: gicv.size.min(gicc.size.max(0x2000)) } }
        }
        GicVersion::V3 => {
            let Some(gicr) = platform.gic.gicr.first() else { return };
            GicView::V3 { gicd: platform.gic.gicd, gicr: MemRegion { base: gicr.base, size: GICR_FRAME_PAIR * vcpus as u64 } }
        }
    };
    let memory = [ram];
    let cfg = Dom0Config { vcpus, memory: &memory, bootargs: "console=ttyAMA0", initrd: None, gic };
    let Ok(tree) = derive_dom0_tree(data, &cfg) else { return };
    assert!(tree.blob.len() <= DOM0_FDT_MAX && tree.blob.len() % 8 == 0);
    assert!(tree.passthrough_spis.iter().all(|&s| (32..1020).contains(&s)));
    assert!(tree.passthrough_spis.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
    assert!(tree.passthrough_mmio.iter().all(|w| w.base.as_u64() % 4096 == 0 && w.size % 4096 == 0));
    // Dom0's own boot reads the derived tree with the same parser.
    Fdt::parse(&tree.blob).expect("the derived tree parses");
});
