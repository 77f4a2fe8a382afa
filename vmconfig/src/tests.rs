use super::*;

fn one(text: &str) -> VmConfig {
    let mut vms = parse("t.toml", text).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(vms.len(), 1);
    vms.remove(0)
}

fn errors(text: &str) -> Vec<String> {
    parse("vms/hello.toml", text).unwrap_err().iter().map(ToString::to_string).collect()
}

const FULL: &str = r#"# a full example
[[vm]]
name = "hello"          # required
kernel = "hello.img"
initrd = "rootfs.cpio"
cmdline = "console=ttyAMA0 quiet"
vcpus = 2
memory = "64M"
pin = [1, 0]
weight = 512
autostart = true
"#;

#[test]
fn every_field_is_read() {
    let c = one(FULL);
    assert_eq!(c.name, "hello");
    assert_eq!(c.kernel, "hello.img");
    assert_eq!(c.initrd.as_deref(), Some("rootfs.cpio"));
    assert_eq!(c.cmdline, "console=ttyAMA0 quiet");
    assert_eq!(c.vcpus, 2);
    assert_eq!(c.memory, 64 << 20);
    assert_eq!(c.pin, [0, 1]);
    assert_eq!(c.pin_mask(), 0b11);
    assert_eq!(c.weight, 512);
    assert!(c.autostart);
    assert_eq!(c.line, 2);
}

#[test]
fn omitted_fields_take_their_defaults() {
    let c = one("[[vm]]\nname = \"a\"\nkernel = \"k\"\n");
    assert_eq!(c, VmConfig { line: 1, ..VmConfig::new("a", "k") });
    assert_eq!((c.vcpus, c.memory, c.weight, c.autostart), (1, 128 << 20, 256, false));
    assert_eq!((c.initrd.as_deref(), c.cmdline.as_str(), c.pin_mask()), (None, "", 0));
}

#[test]
fn memory_accepts_suffixes_and_integer_bytes() {
    let mem = |m: &str| one(&format!("[[vm]]\nname=\"a\"\nkernel=\"k\"\nmemory={m}\n")).memory;
    assert_eq!(mem("\"2M\""), 2 << 20);
    assert_eq!(mem("\"4096K\""), 4 << 20);
    assert_eq!(mem("\"1g\""), 1 << 30);
    assert_eq!(mem("\"4G\""), 4 << 30);
    assert_eq!(mem("\"6291456\""), 6 << 20);
    assert_eq!(mem("67108864"), 64 << 20);
}

#[test]
fn several_vms_in_one_file() {
    let vms = parse("t", "[[vm]]\nname=\"a\"\nkernel=\"k\"\n\n[[vm]]\nname=\"b\"\nkernel=\"k2\"\nvcpus=8\n").unwrap();
    assert_eq!(vms.iter().map(|v| (v.name.as_str(), v.line)).collect::<Vec<_>>(), [("a", 1), ("b", 5)]);
    assert_eq!(vms[1].vcpus, 8);
}

#[test]
fn an_empty_file_defines_no_vm() {
    assert_eq!(parse("t", "# nothing\n"), Ok(Vec::new()));
}

#[test]
fn out_of_range_values_name_the_key_and_the_line() {
    let base = "[[vm]]\nname = \"hello\"\nkernel = \"k\"\n";
    let err = |extra: &str| errors(&format!("{base}{extra}\n"));
    assert_eq!(err("vcpus = 0"), ["vms/hello.toml:4: vcpus: expected 1..=8, got 0"]);
    assert_eq!(err("vcpus = 9"), ["vms/hello.toml:4: vcpus: 9 vCPUs: at most 8 per VM"]);
    assert_eq!(err("weight = 0"), ["vms/hello.toml:4: weight: expected 1..=1024, got 0"]);
    assert_eq!(err("weight = 1025"), ["vms/hello.toml:4: weight: expected 1..=1024, got 1025"]);
    assert_eq!(err("memory = \"3M\""), ["vms/hello.toml:4: memory: must be a multiple of 2M, got 3M"]);
    assert_eq!(err("memory = \"1M\""), ["vms/hello.toml:4: memory: expected 2M..=4G, got 1M"]);
    assert_eq!(err("memory = \"8G\""), ["vms/hello.toml:4: memory: expected 2M..=4G, got 8G"]);
    assert_eq!(err("memory = -1"), ["vms/hello.toml:4: memory: expected 2M..=4G, got -1"]);
    assert_eq!(err("memory = \"64MB\""), ["vms/hello.toml:4: memory: expected a size like \"64M\", got \"64MB\""]);
    assert_eq!(err("memory = \"M\""), ["vms/hello.toml:4: memory: expected a size like \"64M\", got \"M\""]);
    assert_eq!(err("pin = [64]"), ["vms/hello.toml:4: pin: expected CPU numbers 0..=63, got 64"]);
    assert_eq!(err("pin = [1, 1]"), ["vms/hello.toml:4: pin: CPU 1 listed twice"]);
    assert_eq!(err("pin = 3"), ["vms/hello.toml:4: pin: expected an array of CPU numbers, got an integer"]);
    assert_eq!(err("pin = [\"0\"]"), ["vms/hello.toml:4: pin: expected CPU numbers, got a string"]);
    assert_eq!(err("cmdline = \"a\\u0000b\""), ["vms/hello.toml:4: cmdline: must not contain NUL"]);
    let long = "x".repeat(MAX_CMDLINE + 1);
    assert_eq!(err(&format!("cmdline = \"{long}\"")), ["vms/hello.toml:4: cmdline: at most 2047 bytes, got 2048"]);
    assert_eq!(err("initrd = \"\""), ["vms/hello.toml:4: initrd: must not be empty"]);
}

#[test]
fn wrong_types_are_errors() {
    let base = "[[vm]]\nname = \"hello\"\nkernel = \"k\"\n";
    let err = |extra: &str| errors(&format!("{base}{extra}\n"));
    assert_eq!(err("vcpus = \"2\""), ["vms/hello.toml:4: vcpus: expected an integer, got a string"]);
    assert_eq!(err("autostart = 1"), ["vms/hello.toml:4: autostart: expected true or false, got an integer"]);
    assert_eq!(err("cmdline = 5"), ["vms/hello.toml:4: cmdline: expected a string, got an integer"]);
    assert_eq!(err("memory = 1.5"), ["vms/hello.toml:4: memory: expected a size like \"64M\", got a float"]);
    assert_eq!(errors("[[vm]]\nname = 1\nkernel = \"k\"\n"), ["vms/hello.toml:2: name: expected a string, got an integer"]);
}

#[test]
fn names_must_be_short_and_plain() {
    let err = |name: &str| errors(&format!("[[vm]]\nkernel = \"k\"\nname = \"{name}\"\n"));
    assert_eq!(err(""), ["vms/hello.toml:3: name: expected 1..=31 characters [A-Za-z0-9_-], got \"\""]);
    assert_eq!(err("a b"), ["vms/hello.toml:3: name: expected 1..=31 characters [A-Za-z0-9_-], got \"a b\""]);
    assert_eq!(err(&"n".repeat(32)).len(), 1);
    assert!(valid_name(&"n".repeat(31)));
    assert!(valid_name("A-z_09"));
    assert!(!valid_name("a/b"));
}

#[test]
fn unknown_keys_and_missing_required_keys_are_errors() {
    assert_eq!(
        errors("[[vm]]\nname = \"a\"\nkernel = \"k\"\nvcpu = 2\n"),
        ["vms/hello.toml:4: unknown key `vcpu`"]
    );
    assert_eq!(
        errors("\n[[vm]]\nvcpus = 2\n"),
        ["vms/hello.toml:2: name: required key missing", "vms/hello.toml:2: kernel: required key missing"]
    );
    let e = errors("name = \"a\"\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("vms/hello.toml:1: unknown field `name`"), "{}", e[0]);
}

#[test]
fn all_errors_of_a_file_are_reported_and_it_defines_nothing() {
    let e = parse("f", "[[vm]]\nname = \"a\"\nkernel = \"k\"\n[[vm]]\nname = \"b\"\nkernel = \"k\"\nvcpus = 0\nweight = 0\n").unwrap_err();
    assert_eq!(e.iter().map(|e| e.line).collect::<Vec<_>>(), [7, 8]);
}

#[test]
fn malformed_toml_is_an_error_with_its_line() {
    let e = errors("[[vm]]\nname = \"a\"\nkernel = \"unterminated\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("vms/hello.toml:3: "), "{}", e[0]);
    let e = errors("[[vm]]\nname = \"a\"\nname = \"b\"\n");
    assert!(e[0].starts_with("vms/hello.toml:3: duplicate key"), "{}", e[0]);
    let e = errors("[[vm]]\nname = \"a\"\n= 3\n");
    assert!(e[0].starts_with("vms/hello.toml:3: "), "{}", e[0]);
    assert_eq!(
        errors("[vm]\nname = \"a\"\nkernel = \"k\"\n"),
        ["vms/hello.toml:1: each VM is a [[vm]] table (array of tables), not [vm]"]
    );
}

#[test]
fn duplicate_names_in_one_file_are_errors() {
    assert_eq!(
        errors("[[vm]]\nname = \"a\"\nkernel = \"k\"\n[[vm]]\nname = \"a\"\nkernel = \"k\"\n"),
        ["vms/hello.toml:4: name: `a` already defined at line 1"]
    );
}

#[test]
fn duplicate_names_across_files_reject_the_later_file() {
    let a = "[[vm]]\nname = \"a\"\nkernel = \"k\"\n";
    let b = "[[vm]]\nname = \"b\"\nkernel = \"k\"\n\n[[vm]]\nname = \"a\"\nkernel = \"k\"\n";
    let bad = "[[vm]]\nname = \"c\"\n";
    let (vms, errors) = load_all([("vms/a.toml", a), ("vms/b.toml", b), ("vms/c.toml", bad)]);
    assert_eq!(vms.len(), 1);
    assert_eq!((vms[0].file.as_str(), vms[0].config.name.as_str()), ("vms/a.toml", "a"));
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        ["vms/b.toml:5: name: `a` already defined at vms/a.toml:1", "vms/c.toml:1: kernel: required key missing"]
    );
}

#[test]
fn normalised_text_parses_back_to_the_same_config() {
    let mut c = one(FULL);
    c.cmdline = "quote \" backslash \\ tab\t".to_string();
    let again = one(&c.to_toml());
    assert_eq!(again, VmConfig { line: 1, ..c.clone() });
    let d = VmConfig { line: 1, ..VmConfig::new("d", "vms/d/d.img") };
    assert_eq!(one(&d.to_toml()), d);
    assert!(d.to_toml().contains("memory = \"128M\"\n"));
    let g = VmConfig { memory: 2 << 30, line: 1, ..VmConfig::new("g", "k") };
    assert!(g.to_toml().contains("memory = \"2G\"\n"));
    assert_eq!(one(&g.to_toml()), g);
}

#[test]
fn sizes_parse_and_print() {
    assert_eq!(parse_size("64M"), Some(64 << 20));
    assert_eq!(parse_size("0"), Some(0));
    assert_eq!(parse_size(""), None);
    assert_eq!(parse_size("1T"), None);
    assert_eq!(parse_size("99999999999999999999G"), None);
    assert_eq!(parse_size("17179869184G"), None);
    assert_eq!(Size(3 << 20).to_string(), "3M");
    assert_eq!(Size(1 << 30).to_string(), "1G");
    assert_eq!(Size(1536).to_string(), "1536");
}

const DEVICES: &str = r#"[[vm]]
name = "web"
kernel = "k"
virtio_console = true

[[vm.disk]]
size = "64M"

[[vm.disk]]
offset = "64M"
size = 1024
readonly = true

[[vm.net]]
mac = "52:54:00:AB:cd:01"

[[vm.net]]
"#;

#[test]
fn disks_nets_and_the_virtio_console_are_read() {
    let c = one(DEVICES);
    assert!(c.virtio_console);
    assert_eq!(
        c.disks,
        [
            DiskConfig { offset: 0, size: Some(64 << 20), readonly: false },
            DiskConfig { offset: 64 << 20, size: Some(1024), readonly: true }
        ]
    );
    assert_eq!(c.nets[0].mac, [0x52, 0x54, 0, 0xab, 0xcd, 1]);
    // The second port's MAC is made from the name and index: stable, unicast, distinct.
    assert_eq!(c.nets[1].mac, default_mac("web", 1));
    assert_eq!(&c.nets[1].mac[..3], &[0x52, 0x54, 0]);
    assert_ne!(default_mac("web", 1), default_mac("web", 2));
    assert_ne!(default_mac("web", 1), default_mac("db", 1));
    // Inline tables mean the same.
    let inline = one("[[vm]]\nname = \"a\"\nkernel = \"k\"\ndisk = [{ offset = \"1M\" }]\nnet = [{ mac = \"02:00:00:00:00:09\" }]\n");
    assert_eq!(inline.disks, [DiskConfig { offset: 1 << 20, size: None, readonly: false }]);
    assert_eq!(inline.nets[0].mac, [2, 0, 0, 0, 0, 9]);
    // And the normalised text keeps them.
    assert_eq!(one(&c.to_toml()), VmConfig { line: 1, ..c.clone() });
    assert_eq!(one(&inline.to_toml()), VmConfig { line: 1, ..inline.clone() });
}

#[test]
fn bad_disks_and_nets_are_errors_with_lines() {
    let base = "[[vm]]\nname = \"a\"\nkernel = \"k\"\n";
    let err = |extra: &str| errors(&format!("{base}{extra}"));
    assert_eq!(err("disk = [{ size = \"1000\" }]\n"), ["vms/hello.toml:4: disk: disk 1: size: must be a multiple of 512, got 1000"]);
    assert_eq!(err("disk = [{ size = 0 }]\n"), ["vms/hello.toml:4: disk: disk 1: size: must not be 0"]);
    assert_eq!(err("disk = [{ offset = \"1X\" }]\n")[0], "vms/hello.toml:4: disk: disk 1: offset: expected a size like \"64M\", got \"1X\"");
    assert_eq!(err("disk = [{ sise = 512 }]\n"), ["vms/hello.toml:4: disk: disk 1: unknown key `sise` (offset, size, readonly)"]);
    assert_eq!(err("disk = [{ readonly = 1 }]\n"), ["vms/hello.toml:4: disk: disk 1: readonly: expected true or false, got an integer"]);
    assert_eq!(err("disk = 3\n"), ["vms/hello.toml:4: disk: expected [[vm.disk]] tables, got an integer"]);
    assert_eq!(err("disk = [1]\n"), ["vms/hello.toml:4: disk: disk 1: expected a table, got an integer"]);
    assert_eq!(err(&format!("disk = [{}]\n", vec!["{}"; 9].join(", "))), ["vms/hello.toml:4: disk: at most 8, got 9"]);
    assert_eq!(
        err("disk = [{ offset = \"18446744073709551104\", size = 1024 }]\n"),
        ["vms/hello.toml:4: disk: disk 1: offset + size overflows"]
    );
    assert_eq!(err("net = [{ mac = \"01:00:5e:00:00:01\" }]\n"), ["vms/hello.toml:4: net: net 1: mac: 01:00:5e:00:00:01 is not a unicast address"]);
    assert_eq!(err("net = [{ mac = \"52:54:00:00:00\" }]\n"), ["vms/hello.toml:4: net: net 1: mac: expected aa:bb:cc:dd:ee:ff, got \"52:54:00:00:00\""]);
    assert_eq!(
        err("net = [{ mac = \"02:00:00:00:00:01\" }, { mac = \"02:00:00:00:00:01\" }]\n"),
        ["vms/hello.toml:4: net: net 2: mac: 02:00:00:00:00:01 used twice"]
    );
    assert_eq!(err("virtio_console = \"yes\"\n"), ["vms/hello.toml:4: virtio_console: expected true or false, got a string"]);
}

#[test]
fn macs_parse_and_print() {
    assert_eq!(parse_mac("52:54:00:12:34:56"), Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
    assert_eq!(Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]).to_string(), "52:54:00:12:34:56");
    for bad in ["", "52:54:00:12:34", "52:54:00:12:34:56:78", "5:54:00:12:34:56", "zz:54:00:12:34:56", "52-54-00-12-34-56"] {
        assert_eq!(parse_mac(bad), None, "{bad}");
    }
}

#[test]
fn a_made_up_mac_equal_to_a_given_one_is_an_error() {
    let taken = Mac(default_mac("a", 1)).to_string();
    let text = format!("[[vm]]\nname = \"a\"\nkernel = \"k\"\nnet = [{{ mac = \"{taken}\" }}, {{}}]\n");
    assert_eq!(errors(&text), [format!("vms/hello.toml:1: net: port 2 has MAC {taken}, as an earlier port: give it one")]);
}

#[test]
fn on_fault_is_abort_by_default_stop_on_request_and_nothing_else() {
    assert_eq!(one("[[vm]]\nname = \"a\"\nkernel = \"k\"\n").on_fault, OnFault::Abort);
    let stop = one("[[vm]]\nname = \"a\"\nkernel = \"k\"\non_fault = \"stop\"\n");
    assert_eq!(stop.on_fault, OnFault::Stop);
    assert_eq!(one(&stop.to_toml()), stop);
    assert!(stop.to_toml().contains("on_fault = \"stop\"\n"));
    assert_eq!(
        errors("[[vm]]\nname = \"a\"\nkernel = \"k\"\non_fault = \"destroy\"\n"),
        ["vms/hello.toml:4: on_fault: expected \"abort\" or \"stop\", got \"destroy\""]
    );
    assert_eq!(errors("[[vm]]\nname = \"a\"\nkernel = \"k\"\non_fault = true\n").len(), 1);
}
