//! Guest VM configuration files, shared by `mkbundle` (which validates and
//! normalises them into the boot bundle) and dom0's toolstack (which reads
//! them from the bundle and creates the VMs).
//!
//! # Format
//!
//! TOML. A file holds one or more `[[vm]]` tables (an array of tables, even
//! for a single VM); nothing else may appear at the top level:
//!
//! ```toml
//! [[vm]]
//! name = "hello"          # required, 1..=31 characters [A-Za-z0-9_-]
//! kernel = "hello.img"    # required: path inside the bundle (mkbundle: relative to the config file)
//! initrd = "rootfs.cpio"  # optional, same rule as kernel
//! cmdline = "console=ttyAMA0"  # optional, default "", at most 2047 bytes, no NUL
//! vcpus = 2               # default 1, 1..=8
//! memory = "64M"          # default "128M"; a string with a K/M/G suffix (k/m/g too)
//!                         # or an integer number of bytes; multiple of 2M, 2M..=4G
//! pin = [0, 1]            # optional: the physical CPUs (0..=63) its vCPUs may run on; default any
//! weight = 256            # default 256, 1..=1024 (the scheduler's share)
//! autostart = true        # default false: dom0 creates and starts it at boot
//! virtio_console = false  # default false: a virtio console (hvc0) besides the PL011
//! on_fault = "abort"      # default "abort": when the guest touches an address with
//!                         # nothing behind it (a load, store, instruction fetch or its
//!                         # MMU's table walk) it takes a synchronous external abort, as
//!                         # on hardware, and runs on; "stop": the hypervisor stops the
//!                         # VM instead, reported as crashed (`info VM` shows the syndrome)
//!
//! [[vm.disk]]             # zero or more (at most 8): virtio-blk disks, slices of dom0's disk
//! offset = "0"            # default 0; a size string or bytes; multiple of 512
//! size = "64M"            # default: to the end of dom0's disk; multiple of 512, not 0
//! readonly = false        # default false
//!
//! [[vm.net]]              # zero or more (at most 8): virtio-net ports on dom0's switch
//! mac = "52:54:00:00:00:01"  # default: 52:54:00 and three bytes from the name and index
//! ```
//!
//! `disk` and `net` may also be written as arrays of inline tables
//! (`disk = [{ size = "64M" }]`). Guests see the virtio devices in this
//! order: the console, then the disks, then the network ports.
//!
//! Unknown keys, wrong types, out-of-range values, a missing `name` or
//! `kernel`, TOML syntax errors, and a name used twice (in one file or
//! across the files given to [`load_all`]) are errors. Each [`ConfigError`]
//! names the file and the 1-based line (`vms/hello.toml:4: vcpus: expected
//! 1..=8, got 0`). A file with any error contributes no VM at all.
//!
//! [`VmConfig::to_toml`] writes the normalised form (every key, defaults
//! filled in, sizes as `"<n>M"`/`"<n>G"`), which parses back to the same
//! configuration.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::{self, Write};

use serde::Deserialize;
use toml::{Spanned, Value};

/// Most vCPUs per VM (`VmCreate`'s limit).
pub const MAX_VCPUS: u32 = hv_abi::hypercall::MAX_VCPUS;
pub const DEFAULT_VCPUS: u32 = 1;
/// Guest RAM granule and limits (`VmCreate`'s).
pub const MEMORY_ALIGN: u64 = 2 << 20;
pub const MIN_MEMORY: u64 = 2 << 20;
pub const MAX_MEMORY: u64 = 4 << 30;
pub const DEFAULT_MEMORY: u64 = 128 << 20;
pub const DEFAULT_WEIGHT: u32 = 256;
pub const MAX_WEIGHT: u32 = 1024;
/// Pinning is a 64-bit mask of physical CPUs.
pub const MAX_PIN_CPU: u32 = 63;
/// Longest command line (arm64 Linux's `COMMAND_LINE_SIZE` minus the NUL).
pub const MAX_CMDLINE: usize = 2047;
/// Most disks, and most network ports, per VM.
pub const MAX_DISKS: usize = 8;
pub const MAX_NETS: usize = 8;
/// Disk offsets and sizes are whole sectors.
pub const SECTOR: u64 = 512;

/// A virtio-blk disk: a slice of dom0's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskConfig {
    /// Bytes from the start of dom0's disk (a multiple of [`SECTOR`]).
    pub offset: u64,
    /// Bytes (a non-zero multiple of [`SECTOR`]); `None`: to the end of the disk.
    pub size: Option<u64>,
    pub readonly: bool,
}

/// A virtio-net port on dom0's switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// A unicast MAC address.
    pub mac: [u8; 6],
}

/// What happens when the VM touches an address with nothing behind it
/// (`on_fault`; the hypervisor's `FaultPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFault {
    /// It takes a synchronous external abort, as on hardware.
    #[default]
    Abort,
    /// The hypervisor stops it (reported as crashed).
    Stop,
}

impl OnFault {
    pub const fn as_str(self) -> &'static str {
        match self {
            OnFault::Abort => "abort",
            OnFault::Stop => "stop",
        }
    }
}

/// One VM, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    pub name: String,
    pub kernel: String,
    pub initrd: Option<String>,
    /// Empty if not given.
    pub cmdline: String,
    pub vcpus: u32,
    /// Bytes.
    pub memory: u64,
    /// Physical CPUs allowed, ascending, no duplicates; empty = any.
    pub pin: Vec<u32>,
    pub weight: u32,
    pub autostart: bool,
    pub virtio_console: bool,
    pub on_fault: OnFault,
    pub disks: Vec<DiskConfig>,
    pub nets: Vec<NetConfig>,
    /// Line of its `[[vm]]` header (0 for configurations not read from text).
    pub line: usize,
}

impl VmConfig {
    /// A configuration with every default and the given required keys.
    pub fn new(name: &str, kernel: &str) -> Self {
        VmConfig {
            name: name.to_string(),
            kernel: kernel.to_string(),
            initrd: None,
            cmdline: String::new(),
            vcpus: DEFAULT_VCPUS,
            memory: DEFAULT_MEMORY,
            pin: Vec::new(),
            weight: DEFAULT_WEIGHT,
            autostart: false,
            virtio_console: false,
            on_fault: OnFault::Abort,
            disks: Vec::new(),
            nets: Vec::new(),
            line: 0,
        }
    }

    /// `VmCreate`'s pinning argument: bit i allows physical CPU i; 0 = any.
    pub fn pin_mask(&self) -> u64 {
        self.pin.iter().fold(0, |m, &c| m | (1u64 << c))
    }

    /// The normalised TOML text of this VM: one `[[vm]]` table with every key.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let _ = self.write_toml(&mut out);
        out
    }

    fn write_toml(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "[[vm]]")?;
        writeln!(out, "name = {}", Quoted(&self.name))?;
        writeln!(out, "kernel = {}", Quoted(&self.kernel))?;
        if let Some(initrd) = &self.initrd {
            writeln!(out, "initrd = {}", Quoted(initrd))?;
        }
        writeln!(out, "cmdline = {}", Quoted(&self.cmdline))?;
        writeln!(out, "vcpus = {}", self.vcpus)?;
        writeln!(out, "memory = \"{}\"", Size(self.memory))?;
        if !self.pin.is_empty() {
            write!(out, "pin = [")?;
            for (i, c) in self.pin.iter().enumerate() {
                write!(out, "{}{c}", if i == 0 { "" } else { ", " })?;
            }
            writeln!(out, "]")?;
        }
        writeln!(out, "weight = {}", self.weight)?;
        writeln!(out, "autostart = {}", self.autostart)?;
        writeln!(out, "virtio_console = {}", self.virtio_console)?;
        writeln!(out, "on_fault = \"{}\"", self.on_fault.as_str())?;
        for d in &self.disks {
            writeln!(out, "[[vm.disk]]")?;
            writeln!(out, "offset = \"{}\"", Size(d.offset))?;
            if let Some(size) = d.size {
                writeln!(out, "size = \"{}\"", Size(size))?;
            }
            writeln!(out, "readonly = {}", d.readonly)?;
        }
        for n in &self.nets {
            writeln!(out, "[[vm.net]]")?;
            writeln!(out, "mac = \"{}\"", Mac(n.mac))?;
        }
        Ok(())
    }
}

/// A size in bytes as the config file writes it: `"1G"`, `"64M"`, `"512K"`, or bytes.
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b != 0 && b.is_multiple_of(1 << 30) {
            write!(f, "{}G", b >> 30)
        } else if b != 0 && b.is_multiple_of(1 << 20) {
            write!(f, "{}M", b >> 20)
        } else if b != 0 && b.is_multiple_of(1 << 10) {
            write!(f, "{}K", b >> 10)
        } else {
            write!(f, "{b}")
        }
    }
}

/// A MAC address as `52:54:00:12:34:56`.
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (hex, either case).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The MAC a VM's network port `index` gets when the config names none:
/// QEMU's locally administered 52:54:00 prefix and three bytes of an FNV-1a
/// hash of the name and index, so it is stable across runs.
pub fn default_mac(name: &str, index: usize) -> [u8; 6] {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes().chain(core::iter::once(b'#')).chain((index as u32).to_le_bytes()) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let [a, b, c, _] = h.to_le_bytes();
    [0x52, 0x54, 0x00, a, b, c]
}

/// A TOML basic string.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\t' => f.write_str("\\t")?,
                c if (c as u32) < 0x20 || c == '\u{7f}' => write!(f, "\\u{:04X}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

/// A problem in a configuration file, at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

type RawVm = BTreeMap<Spanned<String>, Spanned<Value>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    vm: Vec<Spanned<RawVm>>,
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// Is `name` a valid VM name (1..=31 of `[A-Za-z0-9_-]`)?
pub fn valid_name(name: &str) -> bool {
    (1..=hv_abi::hypercall::MAX_NAME).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Parses a size: digits with an optional `K`, `M` or `G` suffix (either case).
pub fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1u64 << shift)
}

/// Checks a memory size against the `VmCreate` rules; the error is the message after `memory: `.
pub fn check_memory(bytes: u64) -> Result<u64, String> {
    if !(MIN_MEMORY..=MAX_MEMORY).contains(&bytes) {
        return Err(format!("expected 2M..=4G, got {}", Size(bytes)));
    }
    if !bytes.is_multiple_of(MEMORY_ALIGN) {
        return Err(format!("must be a multiple of 2M, got {}", Size(bytes)));
    }
    Ok(bytes)
}

/// Collects the errors of one file.
struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn error(&mut self, offset: usize, message: String) {
        let line = line_of(self.text, offset);
        self.errors.push(ConfigError { file: self.file.to_string(), line, message });
    }

    fn vm(&mut self, table: &Spanned<RawVm>) -> Option<VmConfig> {
        let header = table.span().start;
        let before = self.errors.len();
        let mut cfg = VmConfig::new("", "");
        cfg.line = line_of(self.text, header);
        let present = |k: &str| table.get_ref().keys().any(|key| key.get_ref() == k);
        let (has_name, has_kernel) = (present("name"), present("kernel"));
        let mut keys: Vec<_> = table.get_ref().iter().collect();
        keys.sort_by_key(|(k, _)| k.span().start);
        for (key, value) in keys {
            let at = key.span().start;
            let k = key.get_ref().as_str();
            let v = value.get_ref();
            let result: Result<(), String> = match k {
                "name" => string(v).and_then(|s| {
                    if valid_name(s) {
                        cfg.name = s.to_string();
                        Ok(())
                    } else {
                        Err(format!("expected 1..=31 characters [A-Za-z0-9_-], got {}", Quoted(s)))
                    }
                }),
                "kernel" => path(v).map(|s| cfg.kernel = s),
                "initrd" => path(v).map(|s| cfg.initrd = Some(s)),
                "cmdline" => string(v).and_then(|s| {
                    if s.contains('\0') {
                        Err("must not contain NUL".to_string())
                    } else if s.len() > MAX_CMDLINE {
                        Err(format!("at most {MAX_CMDLINE} bytes, got {}", s.len()))
                    } else {
                        cfg.cmdline = s.to_string();
                        Ok(())
                    }
                }),
                "vcpus" => match v {
                    Value::Integer(n) if *n > i64::from(MAX_VCPUS) => Err(format!("{n} vCPUs: at most {MAX_VCPUS} per VM")),
                    _ => ranged(v, 1, i64::from(MAX_VCPUS)).map(|n| cfg.vcpus = n as u32),
                },
                "weight" => ranged(v, 1, i64::from(MAX_WEIGHT)).map(|n| cfg.weight = n as u32),
                "memory" => memory(v).map(|m| cfg.memory = m),
                "pin" => pin(v).map(|p| cfg.pin = p),
                "virtio_console" => match v {
                    Value::Boolean(b) => {
                        cfg.virtio_console = *b;
                        Ok(())
                    }
                    other => Err(format!("expected true or false, got {}", type_name(other))),
                },
                "on_fault" => string(v).and_then(|s| match s {
                    "abort" => Ok(OnFault::Abort),
                    "stop" => Ok(OnFault::Stop),
                    other => Err(format!("expected \"abort\" or \"stop\", got {}", Quoted(other))),
                }).map(|f| cfg.on_fault = f),
                "disk" => disks(v).map(|d| cfg.disks = d),
                "net" => nets(v).map(|n| cfg.nets = n),
                "autostart" => match v {
                    Value::Boolean(b) => {
                        cfg.autostart = *b;
                        Ok(())
                    }
                    other => Err(format!("expected true or false, got {}", type_name(other))),
                },
                _ => {
                    self.error(at, format!("unknown key `{k}`"));
                    continue;
                }
            };
            if let Err(message) = result {
                self.error(at, format!("{k}: {message}"));
            }
        }
        if !has_name {
            self.error(header, "name: required key missing".to_string());
        }
        for (i, n) in cfg.nets.iter_mut().enumerate() {
            if n.mac == [0; 6] {
                n.mac = default_mac(&cfg.name, i);
            }
        }
        // A made-up MAC may, rarely, equal one given for another port.
        for (i, n) in cfg.nets.iter().enumerate() {
            if cfg.nets[..i].iter().any(|o| o.mac == n.mac) {
                self.error(header, format!("net: port {} has MAC {}, as an earlier port: give it one", i + 1, Mac(n.mac)));
            }
        }
        if !has_kernel {
            self.error(header, "kernel: required key missing".to_string());
        }
        (self.errors.len() == before).then_some(cfg)
    }
}

fn string(v: &Value) -> Result<&str, String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(format!("expected a string, got {}", type_name(other))),
    }
}

fn path(v: &Value) -> Result<String, String> {
    let s = string(v)?;
    if s.is_empty() {
        Err("must not be empty".to_string())
    } else if s.contains('\0') {
        Err("must not contain NUL".to_string())
    } else {
        Ok(s.to_string())
    }
}

fn ranged(v: &Value, lo: i64, hi: i64) -> Result<i64, String> {
    match v {
        Value::Integer(n) if (lo..=hi).contains(n) => Ok(*n),
        Value::Integer(n) => Err(format!("expected {lo}..={hi}, got {n}")),
        other => Err(format!("expected an integer, got {}", type_name(other))),
    }
}

fn memory(v: &Value) -> Result<u64, String> {
    let bytes = match v {
        Value::String(s) => parse_size(s).ok_or_else(|| format!("expected a size like \"64M\", got {}", Quoted(s)))?,
        Value::Integer(n) => u64::try_from(*n).map_err(|_| format!("expected 2M..=4G, got {n}"))?,
        other => return Err(format!("expected a size like \"64M\", got {}", type_name(other))),
    };
    check_memory(bytes)
}

fn pin(v: &Value) -> Result<Vec<u32>, String> {
    let Value::Array(items) = v else {
        return Err(format!("expected an array of CPU numbers, got {}", type_name(v)));
    };
    let mut cpus = Vec::new();
    for item in items {
        match item {
            Value::Integer(n) if (0..=i64::from(MAX_PIN_CPU)).contains(n) => {
                let c = *n as u32;
                if cpus.contains(&c) {
                    return Err(format!("CPU {c} listed twice"));
                }
                cpus.push(c);
            }
            Value::Integer(n) => return Err(format!("expected CPU numbers 0..={MAX_PIN_CPU}, got {n}")),
            other => return Err(format!("expected CPU numbers, got {}", type_name(other))),
        }
    }
    cpus.sort_unstable();
    Ok(cpus)
}

/// The tables of an array (`[[vm.disk]]` or `disk = [{..}]`), at most `max`.
fn tables(v: &Value, what: &str, max: usize) -> Result<Vec<toml::Table>, String> {
    let Value::Array(items) = v else {
        return Err(format!("expected [[vm.{what}]] tables, got {}", type_name(v)));
    };
    if items.len() > max {
        return Err(format!("at most {max}, got {}", items.len()));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Table(t) => Ok(t.clone()),
            other => Err(format!("{what} {}: expected a table, got {}", i + 1, type_name(other))),
        })
        .collect()
}

/// A byte count that must be whole sectors.
fn sectors(v: &Value) -> Result<u64, String> {
    let bytes = match v {
        Value::String(s) => parse_size(s).ok_or_else(|| format!("expected a size like \"64M\", got {}", Quoted(s)))?,
        Value::Integer(n) => u64::try_from(*n).map_err(|_| format!("expected a size, got {n}"))?,
        other => return Err(format!("expected a size like \"64M\", got {}", type_name(other))),
    };
    if !bytes.is_multiple_of(SECTOR) {
        return Err(format!("must be a multiple of {SECTOR}, got {bytes}"));
    }
    Ok(bytes)
}

fn disks(v: &Value) -> Result<Vec<DiskConfig>, String> {
    let mut out = Vec::new();
    for (i, t) in tables(v, "disk", MAX_DISKS)?.iter().enumerate() {
        let at = |m: String| format!("disk {}: {m}", i + 1);
        let mut d = DiskConfig { offset: 0, size: None, readonly: false };
        for (k, v) in t {
            match k.as_str() {
                "offset" => d.offset = sectors(v).map_err(|m| at(format!("offset: {m}")))?,
                "size" => {
                    let size = sectors(v).map_err(|m| at(format!("size: {m}")))?;
                    if size == 0 {
                        return Err(at("size: must not be 0".to_string()));
                    }
                    d.size = Some(size);
                }
                "readonly" => match v {
                    Value::Boolean(b) => d.readonly = *b,
                    other => return Err(at(format!("readonly: expected true or false, got {}", type_name(other)))),
                },
                other => return Err(at(format!("unknown key `{other}` (offset, size, readonly)"))),
            }
        }
        if d.size.is_some_and(|s| d.offset.checked_add(s).is_none()) {
            return Err(at("offset + size overflows".to_string()));
        }
        out.push(d);
    }
    Ok(out)
}

fn nets(v: &Value) -> Result<Vec<NetConfig>, String> {
    let mut out: Vec<NetConfig> = Vec::new();
    for (i, t) in tables(v, "net", MAX_NETS)?.iter().enumerate() {
        let at = |m: String| format!("net {}: {m}", i + 1);
        // All zeroes: filled in from the name once it is known.
        let mut n = NetConfig { mac: [0; 6] };
        for (k, v) in t {
            match k.as_str() {
                "mac" => {
                    let s = string(v).map_err(|m| at(format!("mac: {m}")))?;
                    let mac = parse_mac(s).ok_or_else(|| at(format!("mac: expected aa:bb:cc:dd:ee:ff, got {}", Quoted(s))))?;
                    if mac[0] & 1 != 0 || mac == [0; 6] {
                        return Err(at(format!("mac: {} is not a unicast address", Mac(mac))));
                    }
                    n.mac = mac;
                }
                other => return Err(at(format!("unknown key `{other}` (mac)"))),
            }
        }
        if n.mac != [0; 6] && out.iter().any(|o| o.mac == n.mac) {
            return Err(at(format!("mac: {} used twice", Mac(n.mac))));
        }
        out.push(n);
    }
    Ok(out)
}

/// Parses and validates one file. `file` is the name used in errors.
/// Any error rejects the whole file; all errors found are returned.
pub fn parse(file: &str, text: &str) -> Result<Vec<VmConfig>, Vec<ConfigError>> {
    let raw: RawFile = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            let message = e.message().trim_end().to_string();
            let message = if message.contains("expected a sequence") {
                String::from("each VM is a [[vm]] table (array of tables), not [vm]")
            } else if message.starts_with("unknown field") {
                format!("{message} (each VM is a [[vm]] table)")
            } else {
                message
            };
            return Err(alloc::vec![ConfigError { file: file.to_string(), line, message }]);
        }
    };
    let mut checker = Checker { file, text, errors: Vec::new() };
    let mut vms: Vec<VmConfig> = Vec::new();
    for table in &raw.vm {
        if let Some(cfg) = checker.vm(table) {
            if let Some(first) = vms.iter().find(|v| v.name == cfg.name) {
                let message = format!("name: `{}` already defined at line {}", cfg.name, first.line);
                checker.error(table.span().start, message);
            } else {
                vms.push(cfg);
            }
        }
    }
    if checker.errors.is_empty() {
        Ok(vms)
    } else {
        Err(checker.errors)
    }
}

/// A VM and the file that defined it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub file: String,
    pub config: VmConfig,
}

/// Parses every `(file name, text)` in order. A file with any error
/// (including a VM name an earlier accepted file already defined)
/// contributes nothing. Returns the accepted VMs and every error.
pub fn load_all<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> (Vec<Loaded>, Vec<ConfigError>) {
    let mut vms: Vec<Loaded> = Vec::new();
    let mut errors = Vec::new();
    for (file, text) in files {
        match parse(file, text) {
            Err(mut e) => errors.append(&mut e),
            Ok(configs) => {
                let before = errors.len();
                for cfg in &configs {
                    if let Some(prev) = vms.iter().find(|l| l.config.name == cfg.name) {
                        errors.push(ConfigError {
                            file: file.to_string(),
                            line: cfg.line,
                            message: format!("name: `{}` already defined at {}:{}", cfg.name, prev.file, prev.config.line),
                        });
                    }
                }
                if errors.len() == before {
                    vms.extend(configs.into_iter().map(|config| Loaded { file: file.to_string(), config }));
                }
            }
        }
    }
    (vms, errors)
}

#[cfg(test)]
mod tests;
