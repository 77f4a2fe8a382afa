//! Dom0's own device tree walk (`fdt_scan`): memory, the initrd, the
//! device list and property look-ups, over any blob.
#![no_main]

use host_dom0::fdt_scan::{self, Tree, Walker};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(walker) = Walker::new(data) {
        // Each token consumes at least four bytes of the structure block.
        assert!(walker.take(data.len() / 4 + 2).count() <= data.len() / 4 + 1);
    }
    let mut regions = 0;
    let count = fdt_scan::for_each_memory(data, |_, _| regions += 1);
    assert_eq!(count, regions);
    if let Some((start, size)) = fdt_scan::initrd(data) {
        assert!(size > 0 && start.checked_add(size).is_some());
    }
    let tree = Tree::new(data);
    for device in tree.devices() {
        let _ = tree.property(&device.path, "compatible");
        let _ = tree.is_compatible(&device.path, "arm,pl011");
    }
    let _ = tree.property("/chosen", "bootargs");
    let _ = tree.property("/hypervisor", "compatible");
});
