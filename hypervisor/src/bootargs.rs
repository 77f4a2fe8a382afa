//! The hypervisor's command line (`/chosen/bootargs`).
//!
//! Words are separated by spaces. The hypervisor reads:
//! - `loglevel=error|warn|info|debug|trace` (default `info`);
//! - `hv.until_idle`: power the machine off once nothing is left to run;
//! - `hv.selftest=panic|fault`: exercise the crash paths (used by the boot
//!   tests to prove that a crash is reported, never a silent hang);
//! - `hv.no_balance`: vCPUs stay on the CPU they were placed on (no load
//!   balancing; for comparisons);
//! - `hv.uart_log`: keep writing the log to the UART after dom0 starts
//!   (for debugging: dom0's output and the log then mix on the console);
//! - `dom0.mem=SIZE` (`256M`, `1G`, bytes; default 256 MiB): dom0's RAM;
//! - `dom0.vcpus=N` (default: one per physical CPU): dom0's vCPUs;
//! - `dom0.args="..."`: dom0's command line (double quotes keep spaces).
//!
//! Unknown words are kept for later consumers (e.g. dom0's arguments) and
//! listed by `unknown()` so the boot log can point out typos.

use log::LevelFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfTest {
    /// `panic!` on the boot CPU after the banner.
    Panic,
    /// Load from an unmapped address: an EL2 data abort.
    Fault,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootArgs<'a> {
    pub log_level: LevelFilter,
    pub until_idle: bool,
    pub no_balance: bool,
    pub uart_log: bool,
    pub selftest: Option<SelfTest>,
    pub dom0_mem: Option<u64>,
    pub dom0_vcpus: Option<usize>,
    pub dom0_args: &'a str,
    line: &'a str,
}

/// Splits a command line into words at spaces outside double quotes.
fn words(line: &str) -> impl Iterator<Item = &str> {
    let mut rest = line;
    core::iter::from_fn(move || {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
        if rest.is_empty() {
            return None;
        }
        let mut quoted = false;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                if c == '"' {
                    quoted = !quoted;
                }
                c.is_ascii_whitespace() && !quoted
            })
            .map_or(rest.len(), |(i, _)| i);
        let (word, tail) = rest.split_at(end);
        rest = tail;
        Some(word)
    })
}

fn unquote(value: &str) -> &str {
    value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value)
}

/// `256M`, `1G`, `64K` or plain bytes; `None` if malformed or overflowing.
pub fn parse_size(text: &str) -> Option<u64> {
    let (digits, shift) = match text.as_bytes().last()? {
        b'K' | b'k' => (&text[..text.len() - 1], 10),
        b'M' | b'm' => (&text[..text.len() - 1], 20),
        b'G' | b'g' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1u64 << shift)
}

/// A word of the command line that the hypervisor did not accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadArg<'a> {
    pub word: &'a str,
    pub reason: &'static str,
}

impl<'a> BootArgs<'a> {
    /// Parses `line`; words the hypervisor owns but cannot accept are
    /// returned in `errors` (their default stays in force).
    pub fn parse(line: &'a str, mut on_error: impl FnMut(BadArg<'a>)) -> Self {
        let mut args = BootArgs {
            log_level: LevelFilter::Info,
            until_idle: false,
            no_balance: false,
            uart_log: false,
            selftest: None,
            dom0_mem: None,
            dom0_vcpus: None,
            dom0_args: "",
            line,
        };
        for word in words(line) {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word, None),
            };
            match (key, value) {
                ("loglevel", Some(v)) => match parse_level(v) {
                    Some(level) => args.log_level = level,
                    None => on_error(BadArg { word, reason: "expected off, error, warn, info, debug or trace" }),
                },
                ("hv.until_idle", None) => args.until_idle = true,
                ("hv.uart_log", None) => args.uart_log = true,
                ("hv.no_balance", None) => args.no_balance = true,
                ("hv.selftest", Some("panic")) => args.selftest = Some(SelfTest::Panic),
                ("hv.selftest", Some("fault")) => args.selftest = Some(SelfTest::Fault),
                ("hv.selftest", _) => on_error(BadArg { word, reason: "expected hv.selftest=panic or hv.selftest=fault" }),
                ("dom0.mem", Some(v)) => match parse_size(v) {
                    Some(size) if size >= 16 << 20 => args.dom0_mem = Some(size),
                    _ => on_error(BadArg { word, reason: "expected a size of at least 16M, e.g. dom0.mem=256M" }),
                },
                ("dom0.vcpus", Some(v)) => match v.parse::<usize>() {
                    Ok(n) if n >= 1 => args.dom0_vcpus = Some(n),
                    _ => on_error(BadArg { word, reason: "expected a number of vCPUs, at least 1" }),
                },
                ("dom0.args", Some(v)) => args.dom0_args = unquote(v),
                ("hv.until_idle", Some(_)) | ("hv.no_balance", Some(_)) | ("hv.uart_log", Some(_)) | ("loglevel", None) | ("dom0.mem", None) | ("dom0.vcpus", None) | ("dom0.args", None) => {
                    on_error(BadArg { word, reason: "malformed" })
                }
                _ => {}
            }
        }
        args
    }

    /// Words not meant for the hypervisor itself.
    pub fn unknown(&self) -> impl Iterator<Item = &'a str> {
        words(self.line).filter(|w| {
            let key = w.split_once('=').map_or(*w, |(k, _)| k);
            !matches!(key, "loglevel" | "hv.until_idle" | "hv.no_balance" | "hv.uart_log" | "hv.selftest" | "dom0.mem" | "dom0.vcpus" | "dom0.args")
        })
    }
}

fn parse_level(v: &str) -> Option<LevelFilter> {
    Some(match v {
        "off" => LevelFilter::Off,
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> (BootArgs<'_>, Vec<BadArg<'_>>) {
        let mut errors = Vec::new();
        let args = BootArgs::parse(line, |e| errors.push(e));
        (args, errors)
    }

    #[test]
    fn defaults_when_empty() {
        let (args, errors) = parse("");
        assert_eq!(args.log_level, LevelFilter::Info);
        assert!(!args.until_idle);
        assert_eq!(args.selftest, None);
        assert!(errors.is_empty());
    }

    #[test]
    fn reads_level_idle_and_selftest() {
        let (args, errors) = parse("  loglevel=debug hv.until_idle   hv.selftest=fault console=ttyAMA0 hv.no_balance");
        assert_eq!(args.log_level, LevelFilter::Debug);
        assert!(args.until_idle);
        assert!(args.no_balance);
        assert_eq!(args.selftest, Some(SelfTest::Fault));
        assert!(errors.is_empty());
        assert_eq!(args.unknown().collect::<Vec<_>>(), ["console=ttyAMA0"]);
    }

    #[test]
    fn dom0_settings_with_quoted_arguments() {
        let (args, errors) = parse(r#"dom0.mem=512M dom0.vcpus=2 dom0.args="loglevel=debug shell=yes" loglevel=warn"#);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(args.dom0_mem, Some(512 << 20));
        assert_eq!(args.dom0_vcpus, Some(2));
        assert_eq!(args.dom0_args, "loglevel=debug shell=yes");
        assert_eq!(args.log_level, LevelFilter::Warn);
        let (_, errors) = parse("dom0.mem=1K dom0.vcpus=0 dom0.mem=99999999999G");
        assert_eq!(errors.len(), 3);
    }

    #[test]
    fn sizes_parse_with_suffixes_and_refuse_overflow() {
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("18446744073709551615G"), None);
    }

    #[test]
    fn bad_values_are_reported_and_defaults_kept() {
        let (args, errors) = parse("loglevel=loud hv.selftest=explode hv.until_idle=yes");
        assert_eq!(args.log_level, LevelFilter::Info);
        assert_eq!(args.selftest, None);
        assert!(!args.until_idle);
        let words: Vec<_> = errors.iter().map(|e| e.word).collect();
        assert_eq!(words, ["loglevel=loud", "hv.selftest=explode", "hv.until_idle=yes"]);
    }
}
