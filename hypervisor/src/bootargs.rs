//! The hypervisor's command line (`/chosen/bootargs`).
//!
//! Words are separated by spaces. The hypervisor reads:
//! - `loglevel=error|warn|info|debug|trace` (default `info`);
//! - `hv.until_idle`: power the machine off once nothing is left to run;
//! - `hv.selftest=panic|fault`: exercise the crash paths (used by the boot
//!   tests to prove that a crash is reported, never a silent hang).
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
    pub selftest: Option<SelfTest>,
    line: &'a str,
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
        let mut args = BootArgs { log_level: LevelFilter::Info, until_idle: false, selftest: None, line };
        for word in line.split_ascii_whitespace() {
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
                ("hv.selftest", Some("panic")) => args.selftest = Some(SelfTest::Panic),
                ("hv.selftest", Some("fault")) => args.selftest = Some(SelfTest::Fault),
                ("hv.selftest", _) => on_error(BadArg { word, reason: "expected hv.selftest=panic or hv.selftest=fault" }),
                ("hv.until_idle", Some(_)) | ("loglevel", None) => {
                    on_error(BadArg { word, reason: "malformed" })
                }
                _ => {}
            }
        }
        args
    }

    /// Words not meant for the hypervisor itself.
    pub fn unknown(&self) -> impl Iterator<Item = &'a str> {
        self.line.split_ascii_whitespace().filter(|w| {
            let key = w.split_once('=').map_or(*w, |(k, _)| k);
            !matches!(key, "loglevel" | "hv.until_idle" | "hv.selftest")
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
        let (args, errors) = parse("  loglevel=debug hv.until_idle   hv.selftest=fault console=ttyAMA0 ");
        assert_eq!(args.log_level, LevelFilter::Debug);
        assert!(args.until_idle);
        assert_eq!(args.selftest, Some(SelfTest::Fault));
        assert!(errors.is_empty());
        assert_eq!(args.unknown().collect::<Vec<_>>(), ["console=ttyAMA0"]);
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
