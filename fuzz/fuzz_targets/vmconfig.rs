//! VM configuration files (TOML) as mkbundle and dom0 read them: parsing
//! never panics, an accepted configuration survives `to_toml` → `parse`
//! unchanged, and the guest device tree dom0 builds from it is built.
#![no_main]

use hv_devtree::guest::{build_tree, GuestGic, GuestTreeConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (loaded, _errors) = hv_vmconfig::load_all([("a.toml", text), ("b.toml", text)]);
    let Ok(vms) = hv_vmconfig::parse("vm.toml", text) else { return };
    assert_eq!(loaded.len(), vms.len(), "the second copy only repeats names");
    for vm in &vms {
        let again = hv_vmconfig::parse("again.toml", &vm.to_toml()).unwrap_or_else(|e| panic!("{vm:?} written back is refused: {e:?}"));
        assert_eq!(again.len(), 1);
        let mut back = again[0].clone();
        back.line = vm.line;
        assert_eq!(&back, vm, "written back as\n{}", vm.to_toml());
        let cfg = GuestTreeConfig {
            memory: vm.memory,
            vcpus: vm.vcpus as usize,
            gic: GuestGic::V3,
            bootargs: &vm.cmdline,
            initrd: None,
            virtio_slots: (vm.disks.len() + vm.nets.len() + 1) as u32,
            test_device: true,
        };
        build_tree(&cfg).unwrap_or_else(|e| panic!("an accepted VM's tree: {e}"));
    }
});
