//! The boot bundle (cpio newc) as the hypervisor and dom0 read it from the
//! boot media: every entry it yields lies inside the archive.
#![no_main]

use hv_abi::bundle::{self, Reader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut names = Vec::new();
    for entry in Reader::new(data).take(10_000) {
        let Ok(entry) = entry else { break };
        let end = entry.offset.checked_add(entry.data.len()).expect("entry end");
        assert!(end <= data.len());
        assert_eq!(entry.offset % 4, 0);
        assert_eq!(&data[entry.offset..end], entry.data);
        names.push(entry.name);
    }
    let _ = bundle::find(data, bundle::DOM0_KERNEL);
    // What the reader accepted, written back, reads the same.
    if let Some(first) = names.first() {
        let found = bundle::find(data, first).ok().flatten().expect("a listed file is found");
        let rewritten = bundle::write(&[(first, found.data)]);
        let again = bundle::find(&rewritten, first).expect("a written bundle reads").expect("and has the file");
        assert_eq!(again.data, found.data);
    }
});
