//! `mkbundle`: writes the boot bundle, a cpio newc archive (see
//! `hv_abi::bundle`) holding dom0's kernel, guest images and VM
//! configurations (see `hv_vmconfig`).
//!
//! ```text
//! mkbundle OUT [NAME=FILE]... [--vm SPEC]... [--config FILE]...
//! ```
//!
//! - `NAME=FILE`: FILE stored as NAME (scripts pass `dom0.img=...`).
//! - `--vm kernel=PATH[,initrd=PATH][,cmdline=STR][,vcpus=N][,memory=SIZE]
//!   [,name=NAME][,pin=A:B:...][,weight=N][,on_fault=abort|stop]`: one autostarted VM. `name`
//!   defaults to the kernel's file stem; `pin` lists CPUs separated by
//!   colons; `cmdline` may contain spaces but not commas (use `--config` for
//!   those). Paths are relative to the current directory.
//! - `--config FILE`: every `[[vm]]` of a config file (validated; errors
//!   are `FILE:LINE: message` and exit status 2); the kernel and initrd it
//!   names are resolved relative to FILE's directory.
//!
//! Each VM's files are stored as `vms/<name>/<file name>` and its
//! normalised configuration, with paths rewritten to those bundle paths, as
//! `vms/<name>.toml` (one VM per file), which dom0 reads at boot.
//!
//! Exit status: 0 success, 2 bad usage or invalid configuration, 1 a file
//! cannot be read or written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use hv_vmconfig::VmConfig;

const USAGE: &str = "usage: mkbundle OUT [NAME=FILE]... [--vm kernel=PATH[,initrd=PATH][,cmdline=STR][,vcpus=N][,memory=SIZE][,name=NAME][,pin=A:B][,weight=N][,on_fault=abort|stop]]... [--config FILE]...";

/// Why mkbundle stopped.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// Bad arguments or configuration (exit 2); one message per line.
    Usage(Vec<String>),
    /// I/O (exit 1).
    Io(String),
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure::Usage(vec![msg.into()])
}

/// A VM to put in the bundle, with host paths for its files.
#[derive(Debug)]
struct VmSource {
    config: VmConfig,
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    /// Where it came from, for error messages.
    origin: String,
}

/// Parses a `--vm` spec into a config with host paths (not yet rewritten).
fn parse_vm_spec(spec: &str) -> Result<VmSource, Failure> {
    let origin = format!("--vm {spec}");
    let bad = |msg: String| usage(format!("mkbundle: {origin}: {msg}"));
    let mut fields: Vec<(&str, &str)> = Vec::new();
    for item in spec.split(',') {
        let Some((k, v)) = item.split_once('=') else {
            return Err(bad(format!("`{item}`: expected KEY=VALUE (cmdline may not contain commas)")));
        };
        if fields.iter().any(|(seen, _)| *seen == k) {
            return Err(bad(format!("`{k}` given twice")));
        }
        fields.push((k, v));
    }
    let get = |k: &str| fields.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    let kernel = get("kernel").ok_or_else(|| bad("kernel=PATH is required".into()))?;
    let stem = Path::new(kernel).file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let name = get("name").unwrap_or(stem);
    // Build TOML and let hv_vmconfig validate it, so the rules live in one place.
    let quote = |s: &str| toml_string(s);
    let mut text = format!("[[vm]]\nname = {}\nkernel = {}\nautostart = true\n", quote(name), quote(kernel));
    for (k, v) in &fields {
        let line = match *k {
            "kernel" | "name" => continue,
            "initrd" | "cmdline" | "memory" | "on_fault" => format!("{k} = {}", quote(v)),
            "vcpus" | "weight" => match v.parse::<i64>() {
                Ok(n) => format!("{k} = {n}"),
                Err(_) => return Err(bad(format!("{k}: expected a number, got `{v}`"))),
            },
            "pin" => {
                let mut cpus = Vec::new();
                for c in v.split(':') {
                    match c.parse::<i64>() {
                        Ok(n) => cpus.push(n.to_string()),
                        Err(_) => return Err(bad(format!("pin: expected CPU numbers separated by ':', got `{v}`"))),
                    }
                }
                format!("pin = [{}]", cpus.join(", "))
            }
            other => return Err(bad(format!("unknown key `{other}` (kernel, initrd, cmdline, vcpus, memory, name, pin, weight, on_fault)"))),
        };
        text.push_str(&line);
        text.push('\n');
    }
    let mut vms = hv_vmconfig::parse(&origin, &text)
        .map_err(|errors| Failure::Usage(errors.iter().map(|e| format!("mkbundle: {origin}: {}", e.message)).collect()))?;
    let mut config = vms.remove(0);
    config.line = 0;
    let initrd = config.initrd.as_ref().map(PathBuf::from);
    Ok(VmSource { kernel: PathBuf::from(&config.kernel), initrd, config, origin })
}

/// The VMs of a `--config` file, with paths resolved against its directory.
fn read_config(path: &str) -> Result<Vec<VmSource>, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure::Io(format!("mkbundle: {path}: {e}")))?;
    let configs = hv_vmconfig::parse(path, &text)
        .map_err(|errors| Failure::Usage(errors.iter().map(|e| format!("mkbundle: {e}")).collect()))?;
    let dir = Path::new(path).parent().unwrap_or(Path::new(""));
    Ok(configs
        .into_iter()
        .map(|config| VmSource {
            kernel: dir.join(&config.kernel),
            initrd: config.initrd.as_ref().map(|i| dir.join(i)),
            origin: format!("{path}:{}", config.line),
            config,
        })
        .collect())
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The bundle path of a VM's file: `vms/<name>/<file name>`.
fn bundle_path(vm: &str, host: &Path) -> Result<String, Failure> {
    let file = host
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| usage(format!("mkbundle: {}: no usable file name", host.display())))?;
    Ok(format!("vms/{vm}/{file}"))
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::Io(format!("mkbundle: {}: {e}", path.display())))
}

/// Files for the bundle: (name inside it, contents).
type Files = Vec<(String, Vec<u8>)>;

/// The output path and everything the bundle will hold.
fn collect(args: &[String]) -> Result<(String, Files), Failure> {
    let Some((out, rest)) = args.split_first() else {
        return Err(usage(USAGE));
    };
    if out.starts_with("--") || out.contains('=') {
        return Err(usage(USAGE));
    }
    let mut files: Files = Vec::new();
    let mut vms: Vec<VmSource> = Vec::new();
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--vm" => vms.push(parse_vm_spec(it.next().ok_or_else(|| usage(USAGE))?)?),
            "--config" => vms.extend(read_config(it.next().ok_or_else(|| usage(USAGE))?)?),
            a if a.starts_with("--") => return Err(usage(format!("mkbundle: unknown option `{a}`\n{USAGE}"))),
            spec => {
                let Some((name, path)) = spec.split_once('=') else {
                    return Err(usage(format!("mkbundle: `{spec}`: expected NAME=FILE\n{USAGE}")));
                };
                files.push((name.to_string(), read(Path::new(path))?));
            }
        }
    }
    for (i, vm) in vms.iter().enumerate() {
        if let Some(prev) = vms[..i].iter().find(|p| p.config.name == vm.config.name) {
            return Err(usage(format!(
                "mkbundle: {}: VM name `{}` already used by {}",
                vm.origin, vm.config.name, prev.origin
            )));
        }
    }
    for mut vm in vms {
        let name = vm.config.name.clone();
        vm.config.kernel = bundle_path(&name, &vm.kernel)?;
        files.push((vm.config.kernel.clone(), read(&vm.kernel)?));
        if let Some(initrd) = &vm.initrd {
            let path = bundle_path(&name, initrd)?;
            if path == vm.config.kernel {
                return Err(usage(format!("mkbundle: {}: kernel and initrd have the same file name", vm.origin)));
            }
            files.push((path.clone(), read(initrd)?));
            vm.config.initrd = Some(path);
        }
        vm.config.line = 0;
        files.push((format!("vms/{name}.toml"), vm.config.to_toml().into_bytes()));
    }
    for (i, (name, _)) in files.iter().enumerate() {
        if files[..i].iter().any(|(n, _)| n == name) {
            return Err(usage(format!("mkbundle: `{name}` would be stored twice")));
        }
    }
    Ok((out.clone(), files))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, files) = match collect(&args) {
        Ok(x) => x,
        Err(Failure::Usage(lines)) => {
            lines.iter().for_each(|l| eprintln!("{l}"));
            return ExitCode::from(2);
        }
        Err(Failure::Io(msg)) => {
            eprintln!("{msg}");
            return ExitCode::FAILURE;
        }
    };
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    if let Err(e) = std::fs::write(&out, hv_abi::bundle::write(&refs)) {
        eprintln!("mkbundle: {out}: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mkbundle-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn s(p: &Path) -> String {
        p.to_str().unwrap().to_string()
    }

    #[test]
    fn vm_spec_fills_defaults_and_autostarts() {
        let vm = parse_vm_spec("kernel=out/hello.img,cmdline=console=ttyAMA0 quiet,vcpus=2,memory=64M,pin=0:3,weight=9").unwrap();
        let c = &vm.config;
        assert_eq!((c.name.as_str(), c.kernel.as_str()), ("hello", "out/hello.img"));
        assert_eq!(c.cmdline, "console=ttyAMA0 quiet");
        assert_eq!((c.vcpus, c.memory, c.weight, c.pin_mask()), (2, 64 << 20, 9, 0b1001));
        assert!(c.autostart);
        assert_eq!(parse_vm_spec("kernel=a.elf,name=other").unwrap().config.name, "other");
    }

    #[test]
    fn vm_spec_errors_are_usage_errors() {
        let msg = |spec: &str| match parse_vm_spec(spec).unwrap_err() {
            Failure::Usage(l) => l.join("\n"),
            Failure::Io(m) => panic!("{m}"),
        };
        assert_eq!(msg("initrd=x"), "mkbundle: --vm initrd=x: kernel=PATH is required");
        assert_eq!(msg("kernel=k,vcpus=0"), "mkbundle: --vm kernel=k,vcpus=0: vcpus: expected 1..=8, got 0");
        assert_eq!(msg("kernel=k,vcpus=x"), "mkbundle: --vm kernel=k,vcpus=x: vcpus: expected a number, got `x`");
        assert!(msg("kernel=k,cmdline=a,b").contains("`b`: expected KEY=VALUE (cmdline may not contain commas)"));
        assert!(msg("kernel=k,colour=red").contains("unknown key `colour`"));
        assert!(msg("kernel=k,kernel=j").contains("`kernel` given twice"));
        assert!(msg("kernel=k,memory=3M").contains("memory: must be a multiple of 2M"));
        assert!(msg("kernel=k,pin=0:x").contains("pin: expected CPU numbers"));
        assert!(msg("kernel=k,on_fault=explode").contains("on_fault: expected \"abort\" or \"stop\""));
        let stop = parse_vm_spec("kernel=k.img,on_fault=stop").unwrap();
        assert_eq!(stop.config.on_fault, hv_vmconfig::OnFault::Stop);
        assert!(msg("kernel=a b.img").contains("name: expected 1..=31 characters"));
    }

    #[test]
    fn config_files_are_rewritten_to_bundle_paths() {
        let d = tempdir("cfg");
        std::fs::create_dir_all(d.join("img")).unwrap();
        std::fs::write(d.join("img/k.bin"), b"kernel").unwrap();
        std::fs::write(d.join("rootfs.cpio"), b"initrd").unwrap();
        std::fs::write(d.join("dom0.img"), b"dom0").unwrap();
        std::fs::write(d.join("vms.toml"), "[[vm]]\nname = \"g\"\nkernel = \"img/k.bin\"\ninitrd = \"rootfs.cpio\"\nvcpus = 2\n").unwrap();
        let args = vec![
            s(&d.join("out.cpio")),
            format!("dom0.img={}", s(&d.join("dom0.img"))),
            "--config".into(),
            s(&d.join("vms.toml")),
            "--vm".into(),
            format!("kernel={},cmdline=a b", s(&d.join("img/k.bin"))),
        ];
        let (_, files) = collect(&args).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["dom0.img", "vms/g/k.bin", "vms/g/rootfs.cpio", "vms/g.toml", "vms/k/k.bin", "vms/k.toml"]);
        let g = hv_vmconfig::parse("g", std::str::from_utf8(&files[3].1).unwrap()).unwrap();
        assert_eq!((g[0].kernel.as_str(), g[0].initrd.as_deref(), g[0].vcpus, g[0].autostart), ("vms/g/k.bin", Some("vms/g/rootfs.cpio"), 2, false));
        let k = hv_vmconfig::parse("k", std::str::from_utf8(&files[5].1).unwrap()).unwrap();
        assert_eq!((k[0].cmdline.as_str(), k[0].autostart), ("a b", true));
        assert_eq!(files[1].1, b"kernel");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_configs_missing_files_and_duplicates_fail() {
        let d = tempdir("bad");
        std::fs::write(d.join("bad.toml"), "[[vm]]\nname = \"g\"\nkernel = \"k\"\nvcpus = 0\n").unwrap();
        let cfg = s(&d.join("bad.toml"));
        match collect(&["o".into(), "--config".into(), cfg.clone()]) {
            Err(Failure::Usage(l)) => assert_eq!(l, [format!("mkbundle: {cfg}:4: vcpus: expected 1..=8, got 0")]),
            other => panic!("{other:?}"),
        }
        std::fs::write(d.join("ok.toml"), "[[vm]]\nname = \"g\"\nkernel = \"missing.img\"\n").unwrap();
        match collect(&["o".into(), "--config".into(), s(&d.join("ok.toml"))]) {
            Err(Failure::Io(m)) => assert!(m.contains("missing.img"), "{m}"),
            other => panic!("{other:?}"),
        }
        match collect(&["o".into(), "--config".into(), s(&d.join("ok.toml")), "--vm".into(), "kernel=x/g.img".into()]) {
            Err(Failure::Usage(l)) => assert!(l[0].contains("VM name `g` already used"), "{l:?}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(collect(&["o".into(), "dom0.img=/nonexistent/x".into()]), Err(Failure::Io(_))));
        assert!(matches!(collect(&[]), Err(Failure::Usage(_))));
        assert!(matches!(collect(&["o".into(), "--bogus".into()]), Err(Failure::Usage(_))));
        let _ = std::fs::remove_dir_all(&d);
    }
}
