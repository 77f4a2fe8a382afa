//! The guest's `/chosen/bootargs`: whitespace-separated `key=value` words (or
//! bare `key` flags), e.g. `expect.memory=64M expect.vcpus=2 timer.hz=100`.

/// A parsed view of the bootargs string.
#[derive(Debug, Clone, Copy)]
pub struct Cmdline<'a> {
    text: &'a str,
}

impl<'a> Cmdline<'a> {
    pub fn new(text: &'a str) -> Self {
        Self { text }
    }

    /// The value of the last `key=value` word (a bare `key` gives `""`).
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.text
            .split_ascii_whitespace()
            .filter_map(|word| match word.split_once('=') {
                Some((k, v)) if k == key => Some(v),
                None if word == key => Some(""),
                _ => None,
            })
            .next_back()
    }

    /// A number (decimal, or hex with `0x`), with an optional K/M/G suffix
    /// (binary multiples). `Err` carries the malformed text.
    pub fn get_u64(&self, key: &str) -> Option<Result<u64, &'a str>> {
        self.get(key).map(|v| parse_size(v).ok_or(v))
    }

    /// `key`, `key=1`, `key=yes`, `key=true` are true; absent or anything else false.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("" | "1" | "yes" | "true"))
    }
}

/// Parses `123`, `0x7b`, `64M`, `2G`, `512k`. `None` on garbage or overflow.
pub fn parse_size(text: &str) -> Option<u64> {
    let (digits, shift) = match text.as_bytes().last()? {
        b'k' | b'K' => (&text[..text.len() - 1], 10),
        b'm' | b'M' => (&text[..text.len() - 1], 20),
        b'g' | b'G' => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let value = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => digits.parse::<u64>().ok()?,
    };
    value.checked_mul(1u64 << shift)
}

/// Renders a byte count the way the toolstack writes it (`64M`, `1536K`, `7`).
pub struct Size(pub u64);

impl core::fmt::Display for Size {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let v = self.0;
        if v != 0 && v.is_multiple_of(1 << 30) {
            write!(f, "{}G", v >> 30)
        } else if v != 0 && v.is_multiple_of(1 << 20) {
            write!(f, "{}M", v >> 20)
        } else if v != 0 && v.is_multiple_of(1 << 10) {
            write!(f, "{}K", v >> 10)
        } else {
            write!(f, "{v}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_flags_and_the_last_repeat() {
        let c = Cmdline::new("console=ttyAMA0 expect.memory=64M  spin.masked expect.vcpus=2 expect.vcpus=4");
        assert_eq!(c.get("expect.memory"), Some("64M"));
        assert_eq!(c.get("expect.vcpus"), Some("4"));
        assert_eq!(c.get("spin.masked"), Some(""));
        assert!(c.flag("spin.masked"));
        assert!(!c.flag("absent"));
        assert_eq!(c.get("expect"), None);
        assert_eq!(c.get_u64("expect.memory"), Some(Ok(64 << 20)));
        assert_eq!(c.get_u64("console"), Some(Err("ttyAMA0")));
    }

    #[test]
    fn sizes_parse_with_suffixes_and_reject_overflow() {
        assert_eq!(parse_size("0x40"), Some(64));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("99999999999999G"), None);
        assert_eq!(format!("{}", Size(64 << 20)), "64M");
        assert_eq!(format!("{}", Size(1536 << 10)), "1536K");
        assert_eq!(format!("{}", Size(7)), "7");
    }
}
