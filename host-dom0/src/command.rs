//! Shell command parsing: a typed line becomes a [`Command`] or a readable error.
#![forbid(unsafe_code)]

use core::fmt;

/// Longest `sleep` accepted, in seconds.
pub const MAX_SLEEP_SECONDS: u64 = 86_400;

/// A VM named on the command line: a number is an id, anything else a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmRef<'a> {
    Id(u32),
    Name(&'a str),
}

impl VmRef<'_> {
    pub fn parse(arg: &str) -> VmRef<'_> {
        match arg.parse::<u32>() {
            Ok(id) if arg.bytes().all(|b| b.is_ascii_digit()) => VmRef::Id(id),
            _ => VmRef::Name(arg),
        }
    }
}

impl fmt::Display for VmRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => write!(f, "{id}"),
            Self::Name(name) => f.write_str(name),
        }
    }
}

/// One shell command with its parsed arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// Blank line.
    Empty,
    Help,
    /// `info`: the machine.
    Info,
    /// `info VM`: one VM.
    VmInfo { vm: VmRef<'a> },
    /// `list`: every VM.
    List,
    /// `create NAME|FILE`: a VM of the bundle's configs by name, or every VM
    /// of a `.toml` file in the bundle.
    Create { what: &'a str },
    Destroy { vm: VmRef<'a> },
    /// `cycle N NAME`: create and destroy a configured VM N times, checking
    /// that the hypervisor's free memory comes back.
    Cycle { times: u32, name: &'a str },
    /// `spawn N NAME`: create up to N copies of a configured VM, until the
    /// hypervisor refuses one.
    Spawn { times: u32, name: &'a str },
    /// `unspawn`: destroy the copies, checking the free memory comes back.
    Unspawn,
    Pause { vm: VmRef<'a> },
    Unpause { vm: VmRef<'a> },
    /// `console VM`: give VM's console the input focus.
    Console { vm: VmRef<'a> },
    /// `log VM`: print VM's recent console output.
    Log { vm: VmRef<'a> },
    HvLog,
    /// `iostat`: IO forwarding counters.
    IoStat,
    Uptime,
    /// Sleep this many microseconds.
    Sleep {
        micros: u64,
    },
    /// Read the 64-bit word at this physical address.
    Peek {
        addr: u64,
    },
    /// Time hypervisor round trips (instruction counts under -icount),
    /// this many times each.
    Bench { iterations: u64 },
    /// `disk [read|selftest SECTOR]`: the virtio-blk disk.
    Disk { op: DiskOp },
    Poweroff,
    Reboot,
}

/// Name, argument synopsis and one-line description of every command, for `help`.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    ("help", "", "list the commands"),
    (
        "info",
        "[VM]",
        "memory, CPUs, GIC, console, timer, hypervisor and devices; or one VM",
    ),
    ("list", "", "list the guest VMs"),
    (
        "create",
        "NAME|FILE",
        "create and start a VM of the bundle's configs, or those of a .toml file in the bundle",
    ),
    ("destroy", "VM", "destroy a VM (id or name)"),
    (
        "cycle",
        "N NAME",
        "create and destroy VM NAME N times; check no memory is left behind",
    ),
    (
        "spawn",
        "N NAME",
        "create up to N copies of VM NAME (NAME-1, NAME-2, ...), until one is refused",
    ),
    ("unspawn", "", "destroy the spawned copies; check no memory is left behind"),
    ("pause", "VM", "stop running a VM's vCPUs"),
    ("unpause", "VM", "resume a paused VM"),
    (
        "console",
        "VM",
        "attach the terminal to VM's console (Ctrl-a three times: next console / back to dom0)",
    ),
    ("log", "VM", "print VM's recent console output"),
    (
        "hvlog",
        "",
        "print the hypervisor's log (only what is new since the last hvlog)",
    ),
    (
        "iostat",
        "",
        "IO forwarding: guest MMIO requests handled and errors",
    ),
    ("uptime", "", "time since dom0 started"),
    (
        "sleep",
        "SECONDS",
        "sleep on the timer interrupt (decimals allowed, e.g. 0.5)",
    ),
    (
        "peek",
        "ADDR",
        "read the 64-bit word at physical address ADDR (hex)",
    ),
    (
        "bench",
        "[N]",
        "cost of a null hypercall and a trapped GIC distributor read",
    ),
    ("poweroff", "", "power the machine off (PSCI SYSTEM_OFF)"),
    ("reboot", "", "reset the machine (PSCI SYSTEM_RESET, or the Pi's power-management watchdog)"),
    (
        "disk",
        "[read|selftest SECTOR|timeout [MS]]",
        "the data disk; hex-dump a sector; write, flush, check and restore one; request timeout",
    ),
];

/// What `disk` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskOp {
    /// Capacity, read-only, flush support.
    Status,
    /// Hex-dump the first 64 bytes of this sector.
    Read(u64),
    /// Write a pattern to this sector, flush, read back, restore.
    Selftest(u64),
    /// Show (`None`) or set the milliseconds a request may wait for the disk.
    Timeout(Option<u64>),
}

/// Why a line is not a valid command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError<'a> {
    Unknown(&'a str),
    MissingArgument {
        command: &'static str,
        usage: &'static str,
    },
    ExtraArgument {
        command: &'static str,
        arg: &'a str,
    },
    BadNumber {
        command: &'static str,
        arg: &'a str,
        why: NumberError,
    },
}

/// Why a number argument was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberError {
    Empty,
    BadDigit,
    TooLarge,
    TooManyDecimals,
    Unaligned,
    /// Outside the values the command takes.
    OutOfRange,
}

impl fmt::Display for NumberError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "no digits",
            Self::BadDigit => "not a number",
            Self::TooLarge => "too large",
            Self::TooManyDecimals => "at most 6 decimals",
            Self::Unaligned => "not 8-byte aligned",
            Self::OutOfRange => "out of range",
        })
    }
}

impl fmt::Display for ParseError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(name) => write!(f, "unknown command '{name}' (type 'help' for the list)"),
            Self::MissingArgument { command, usage } => write!(f, "usage: {command} {usage}"),
            Self::ExtraArgument { command, arg } => {
                write!(f, "{command}: unexpected argument '{arg}'")
            }
            Self::BadNumber {
                command: c @ "sleep",
                arg,
                why: NumberError::TooLarge,
            } => {
                write!(
                    f,
                    "{c}: '{arg}': too large (at most {MAX_SLEEP_SECONDS} seconds)"
                )
            }
            Self::BadNumber { command, arg, why } => write!(f, "{command}: '{arg}': {why}"),
        }
    }
}

/// Parses one line.
pub fn parse(line: &str) -> Result<Command<'_>, ParseError<'_>> {
    let mut words = line.split_ascii_whitespace();
    let Some(name) = words.next() else {
        return Ok(Command::Empty);
    };
    let (command, usage) = match COMMANDS.iter().find(|(n, _, _)| *n == name) {
        Some(&(n, usage, _)) => (n, usage),
        None => return Err(ParseError::Unknown(name)),
    };
    let mut arg = || {
        words
            .next()
            .ok_or(ParseError::MissingArgument { command, usage })
    };
    let cmd = match command {
        "help" => Command::Help,
        "info" => match words.next() {
            None => Command::Info,
            Some(a) => Command::VmInfo { vm: VmRef::parse(a) },
        },
        "list" => Command::List,
        "create" => Command::Create { what: arg()? },
        "destroy" => Command::Destroy { vm: VmRef::parse(arg()?) },
        "cycle" | "spawn" => {
            let n = arg()?;
            let times = match n.parse::<u32>() {
                Ok(t) if (1..=10_000).contains(&t) => t,
                _ => {
                    return Err(ParseError::BadNumber {
                        command,
                        arg: n,
                        why: NumberError::BadDigit,
                    })
                }
            };
            let name = arg()?;
            if command == "cycle" {
                Command::Cycle { times, name }
            } else {
                Command::Spawn { times, name }
            }
        }
        "unspawn" => Command::Unspawn,
        "pause" => Command::Pause { vm: VmRef::parse(arg()?) },
        "unpause" => Command::Unpause { vm: VmRef::parse(arg()?) },
        "console" => Command::Console { vm: VmRef::parse(arg()?) },
        "log" => Command::Log { vm: VmRef::parse(arg()?) },
        "hvlog" => Command::HvLog,
        "iostat" => Command::IoStat,
        "bench" => {
            let iterations = match words.next() {
                None => 20_000,
                Some(a) => match a.parse::<u64>() {
                    Ok(n) if (1..=10_000_000).contains(&n) => n,
                    _ => {
                        return Err(ParseError::BadNumber {
                            command,
                            arg: a,
                            why: NumberError::BadDigit,
                        })
                    }
                },
            };
            Command::Bench { iterations }
        }
        "uptime" => Command::Uptime,
        "poweroff" => Command::Poweroff,
        "reboot" => Command::Reboot,
        "disk" => match (words.next(), words.next()) {
            (None, _) => Command::Disk { op: DiskOp::Status },
            (Some(sub @ ("read" | "selftest")), Some(a)) => {
                let n = match a.strip_prefix("0x") {
                    Some(_) => parse_hex(a),
                    None => a.parse::<u64>().map_err(|_| NumberError::BadDigit),
                };
                let n = n.map_err(|why| ParseError::BadNumber { command, arg: a, why })?;
                let op = if sub == "read" { DiskOp::Read(n) } else { DiskOp::Selftest(n) };
                Command::Disk { op }
            }
            (Some("read" | "selftest"), None) => {
                return Err(ParseError::MissingArgument { command, usage })
            }
            (Some("timeout"), None) => Command::Disk { op: DiskOp::Timeout(None) },
            (Some("timeout"), Some(a)) => {
                let ms = a
                    .parse::<u64>()
                    .ok()
                    .filter(|&ms| (1..=3_600_000).contains(&ms))
                    .ok_or(ParseError::BadNumber { command, arg: a, why: NumberError::OutOfRange })?;
                Command::Disk { op: DiskOp::Timeout(Some(ms)) }
            }
            (Some(other), _) => return Err(ParseError::ExtraArgument { command, arg: other }),
        },
        "sleep" => {
            let a = arg()?;
            let micros = parse_seconds(a).map_err(|why| ParseError::BadNumber {
                command,
                arg: a,
                why,
            })?;
            Command::Sleep { micros }
        }
        "peek" => {
            let a = arg()?;
            let bad = |why| ParseError::BadNumber {
                command,
                arg: a,
                why,
            };
            let addr = parse_hex(a).map_err(bad)?;
            if !addr.is_multiple_of(8) {
                return Err(bad(NumberError::Unaligned));
            }
            Command::Peek { addr }
        }
        _ => return Err(ParseError::Unknown(name)),
    };
    match words.next() {
        Some(extra) => Err(ParseError::ExtraArgument {
            command,
            arg: extra,
        }),
        None => Ok(cmd),
    }
}

/// A hexadecimal number, with or without `0x`; `_` may separate digits.
pub fn parse_hex(s: &str) -> Result<u64, NumberError> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let mut value: u64 = 0;
    let mut any = false;
    for c in digits.chars() {
        if c == '_' {
            continue;
        }
        let d = c.to_digit(16).ok_or(NumberError::BadDigit)?;
        value = value
            .checked_mul(16)
            .and_then(|v| v.checked_add(u64::from(d)))
            .ok_or(NumberError::TooLarge)?;
        any = true;
    }
    if any {
        Ok(value)
    } else {
        Err(NumberError::Empty)
    }
}

/// Decimal seconds (`2`, `0.5`, `.25`, `1.`) to microseconds, at most
/// [`MAX_SLEEP_SECONDS`] and 6 decimals.
pub fn parse_seconds(s: &str) -> Result<u64, NumberError> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(NumberError::Empty);
    }
    if !whole
        .bytes()
        .chain(frac.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return Err(NumberError::BadDigit);
    }
    if frac.len() > 6 {
        return Err(NumberError::TooManyDecimals);
    }
    let mut secs: u64 = 0;
    for b in whole.bytes() {
        secs = secs.saturating_mul(10).saturating_add(u64::from(b - b'0'));
    }
    if secs > MAX_SLEEP_SECONDS {
        return Err(NumberError::TooLarge);
    }
    let mut micros: u64 = 0;
    for i in 0..6 {
        let digit = frac.as_bytes().get(i).map_or(0, |b| u64::from(b - b'0'));
        micros = micros * 10 + digit;
    }
    let total = secs * 1_000_000 + micros;
    if total > MAX_SLEEP_SECONDS * 1_000_000 {
        return Err(NumberError::TooLarge);
    }
    Ok(total)
}

/// `ticks` of a `freq` Hz counter as (seconds, milliseconds).
pub fn seconds_millis(ticks: u64, freq: u64) -> (u64, u64) {
    if freq == 0 {
        return (0, 0);
    }
    let secs = ticks / freq;
    let millis = (u128::from(ticks % freq) * 1000 / u128::from(freq)) as u64;
    (secs, millis)
}

/// `micros` microseconds in ticks of a `freq` Hz counter, rounded up.
pub fn micros_to_ticks(micros: u64, freq: u64) -> u64 {
    let t = (u128::from(micros) * u128::from(freq)).div_ceil(1_000_000);
    u64::try_from(t).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_without_arguments_parse() {
        assert_eq!(parse(""), Ok(Command::Empty));
        assert_eq!(parse("   "), Ok(Command::Empty));
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(parse("  info  "), Ok(Command::Info));
        assert_eq!(parse("hvlog"), Ok(Command::HvLog));
        assert_eq!(parse("uptime"), Ok(Command::Uptime));
        assert_eq!(parse("iostat"), Ok(Command::IoStat));
        assert_eq!(parse("poweroff"), Ok(Command::Poweroff));
        assert_eq!(parse("reboot"), Ok(Command::Reboot));
    }

    #[test]
    fn unknown_command_message_names_it_and_points_at_help() {
        let err = parse("xyz 1 2").unwrap_err();
        assert_eq!(err, ParseError::Unknown("xyz"));
        assert_eq!(
            err.to_string(),
            "unknown command 'xyz' (type 'help' for the list)"
        );
        assert_eq!(parse("HELP"), Err(ParseError::Unknown("HELP")));
    }

    #[test]
    fn extra_and_missing_arguments_are_errors() {
        assert_eq!(
            parse("info a b").unwrap_err().to_string(),
            "info: unexpected argument 'b'"
        );
        assert_eq!(
            parse("destroy").unwrap_err().to_string(),
            "usage: destroy VM"
        );
        assert_eq!(
            parse("create").unwrap_err().to_string(),
            "usage: create NAME|FILE"
        );
        assert_eq!(
            parse("sleep").unwrap_err().to_string(),
            "usage: sleep SECONDS"
        );
        assert_eq!(parse("peek").unwrap_err().to_string(), "usage: peek ADDR");
        assert!(matches!(
            parse("sleep 1 2"),
            Err(ParseError::ExtraArgument { arg: "2", .. })
        ));
    }

    #[test]
    fn sleep_accepts_integers_and_decimals() {
        assert_eq!(parse("sleep 1"), Ok(Command::Sleep { micros: 1_000_000 }));
        assert_eq!(parse("sleep 0.5"), Ok(Command::Sleep { micros: 500_000 }));
        assert_eq!(parse_seconds(".25"), Ok(250_000));
        assert_eq!(parse_seconds("2."), Ok(2_000_000));
        assert_eq!(parse_seconds("0.000001"), Ok(1));
        assert_eq!(parse_seconds("0"), Ok(0));
        assert_eq!(parse_seconds("86400"), Ok(86_400_000_000));
    }

    #[test]
    fn sleep_rejects_bad_input_with_a_clear_message() {
        assert_eq!(parse_seconds(""), Err(NumberError::Empty));
        assert_eq!(parse_seconds("."), Err(NumberError::Empty));
        assert_eq!(parse_seconds("-1"), Err(NumberError::BadDigit));
        assert_eq!(parse_seconds("1e3"), Err(NumberError::BadDigit));
        assert_eq!(parse_seconds("1.2.3"), Err(NumberError::BadDigit));
        assert_eq!(parse_seconds("0x10"), Err(NumberError::BadDigit));
        assert_eq!(
            parse_seconds("0.1234567"),
            Err(NumberError::TooManyDecimals)
        );
        assert_eq!(parse_seconds("86400.5"), Err(NumberError::TooLarge));
        assert_eq!(
            parse_seconds("99999999999999999999999"),
            Err(NumberError::TooLarge)
        );
        assert_eq!(
            parse("sleep abc").unwrap_err().to_string(),
            "sleep: 'abc': not a number"
        );
        assert_eq!(
            parse("sleep 100000").unwrap_err().to_string(),
            "sleep: '100000': too large (at most 86400 seconds)"
        );
    }

    #[test]
    fn peek_takes_an_aligned_hex_address() {
        assert_eq!(
            parse("peek 0x40000000"),
            Ok(Command::Peek { addr: 0x4000_0000 })
        );
        assert_eq!(
            parse("peek 9000000"),
            Ok(Command::Peek { addr: 0x900_0000 })
        );
        assert_eq!(
            parse("peek 0xffff_0000"),
            Ok(Command::Peek { addr: 0xffff_0000 })
        );
        assert_eq!(
            parse("peek 0x4").unwrap_err().to_string(),
            "peek: '0x4': not 8-byte aligned"
        );
        assert_eq!(
            parse("peek 0xg").unwrap_err().to_string(),
            "peek: '0xg': not a number"
        );
        assert_eq!(
            parse("peek 0x").unwrap_err().to_string(),
            "peek: '0x': no digits"
        );
        assert_eq!(
            parse_hex("0x1_0000_0000_0000_0000"),
            Err(NumberError::TooLarge)
        );
        assert_eq!(parse_hex("FFFFFFFFFFFFFFFF"), Ok(u64::MAX));
    }

    #[test]
    fn every_command_has_a_help_line_and_parses() {
        for (name, usage, desc) in COMMANDS {
            assert!(!desc.is_empty());
            let line = match *usage {
                "SECONDS" => format!("{name} 1"),
                "ADDR" => format!("{name} 0x0"),
                "VM" | "NAME|FILE" => format!("{name} x"),
                "N NAME" => format!("{name} 3 x"),
                _ => name.to_string(),
            };
            assert!(parse(&line).is_ok(), "{line}");
        }
    }

    #[test]
    fn vm_commands_take_an_id_or_a_name() {
        assert_eq!(parse("list"), Ok(Command::List));
        assert_eq!(parse("info"), Ok(Command::Info));
        assert_eq!(parse("info 3"), Ok(Command::VmInfo { vm: VmRef::Id(3) }));
        assert_eq!(parse("info hello"), Ok(Command::VmInfo { vm: VmRef::Name("hello") }));
        assert_eq!(parse("destroy 12"), Ok(Command::Destroy { vm: VmRef::Id(12) }));
        assert_eq!(parse("cycle 100 hello"), Ok(Command::Cycle { times: 100, name: "hello" }));
        assert!(parse("cycle 0 hello").is_err());
        assert!(parse("cycle 5").is_err());
        assert_eq!(parse("spawn 20 hog"), Ok(Command::Spawn { times: 20, name: "hog" }));
        assert!(parse("spawn x hog").is_err());
        assert_eq!(parse("unspawn"), Ok(Command::Unspawn));
        assert_eq!(parse("pause web-1"), Ok(Command::Pause { vm: VmRef::Name("web-1") }));
        assert_eq!(parse("unpause 1"), Ok(Command::Unpause { vm: VmRef::Id(1) }));
        assert_eq!(parse("console web"), Ok(Command::Console { vm: VmRef::Name("web") }));
        assert_eq!(parse("log 2"), Ok(Command::Log { vm: VmRef::Id(2) }));
        assert!(parse("console").is_err());
        assert_eq!(parse("create hello"), Ok(Command::Create { what: "hello" }));
        assert_eq!(parse("create vms/a.toml"), Ok(Command::Create { what: "vms/a.toml" }));
        assert_eq!(VmRef::parse("+1"), VmRef::Name("+1"));
        assert_eq!(VmRef::parse("99999999999"), VmRef::Name("99999999999"));
        assert!(matches!(parse("list all"), Err(ParseError::ExtraArgument { arg: "all", .. })));
        assert!(matches!(parse("destroy a b"), Err(ParseError::ExtraArgument { arg: "b", .. })));
    }

    #[test]
    fn disk_takes_an_optional_operation_and_sector() {
        assert_eq!(parse("disk"), Ok(Command::Disk { op: DiskOp::Status }));
        assert_eq!(parse("disk read 10"), Ok(Command::Disk { op: DiskOp::Read(10) }));
        assert_eq!(parse("disk selftest 0x14"), Ok(Command::Disk { op: DiskOp::Selftest(20) }));
        assert_eq!(parse("disk timeout"), Ok(Command::Disk { op: DiskOp::Timeout(None) }));
        assert_eq!(parse("disk timeout 250"), Ok(Command::Disk { op: DiskOp::Timeout(Some(250)) }));
        assert!(parse("disk timeout 0").is_err(), "a timeout of nothing");
        assert!(parse("disk timeout soon").is_err());
        assert_eq!(parse("disk read").unwrap_err().to_string(), "usage: disk [read|selftest SECTOR|timeout [MS]]");
        assert_eq!(parse("disk read -1").unwrap_err().to_string(), "disk: '-1': not a number");
        assert_eq!(parse("disk erase 1").unwrap_err().to_string(), "disk: unexpected argument 'erase'");
        assert!(matches!(parse("disk read 1 2"), Err(ParseError::ExtraArgument { arg: "2", .. })));
    }

    #[test]
    fn counter_conversions_round_sensibly() {
        assert_eq!(
            seconds_millis(62_500_000 * 3 + 31_250_000, 62_500_000),
            (3, 500)
        );
        assert_eq!(seconds_millis(u64::MAX, 1), (u64::MAX, 0));
        assert_eq!(seconds_millis(5, 0), (0, 0));
        assert_eq!(micros_to_ticks(500_000, 62_500_000), 31_250_000);
        assert_eq!(micros_to_ticks(1, 54_000_000), 54);
        assert_eq!(micros_to_ticks(1, 3), 1);
    }
}
