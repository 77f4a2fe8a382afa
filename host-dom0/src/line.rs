//! The shell's line editor: turns received bytes into a line, saying what to echo.
#![forbid(unsafe_code)]

/// Longest line accepted, in bytes. Further characters are refused (bell),
/// never silently dropped from the middle or end of what was typed.
pub const MAX_LINE: usize = 120;

/// What the terminal should show after a byte was fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing to show.
    None,
    /// Echo this printable character.
    Echo(u8),
    /// Erase the last character on screen (`"\x08 \x08"`).
    EraseOne,
    /// Erase this many characters on screen (Ctrl-U).
    EraseAll(usize),
    /// The line is full: ring the bell (`"\x07"`), the byte was not stored.
    Refused,
    /// Enter: the line is complete; read it with [`LineEditor::line`], then `clear`.
    Submit,
    /// Ctrl-C: the line was discarded (show `^C` and a new prompt).
    Cancel,
}

/// Escape-sequence state: arrow keys and the like send `ESC [ ... final`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// Saw ESC.
    Start,
    /// Saw ESC `[` (CSI): skip parameters until a final byte 0x40..=0x7e.
    Csi,
}

/// A line being typed.
#[derive(Debug)]
pub struct LineEditor {
    buf: [u8; MAX_LINE],
    len: usize,
    /// The previous byte was CR, so an LF right after it is the same Enter.
    after_cr: bool,
    escape: Escape,
}

impl Default for LineEditor {
    fn default() -> Self {
        Self::new()
    }
}

impl LineEditor {
    pub const fn new() -> Self {
        Self {
            buf: [0; MAX_LINE],
            len: 0,
            after_cr: false,
            escape: Escape::None,
        }
    }

    /// The line typed so far (printable ASCII only).
    pub fn line(&self) -> &str {
        // Only bytes 0x20..=0x7e are ever stored, so this is always valid UTF-8.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    /// Forgets the line (after a submit).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Feeds one received byte.
    pub fn feed(&mut self, byte: u8) -> Action {
        let after_cr = core::mem::replace(&mut self.after_cr, false);
        match self.escape {
            Escape::Start => {
                self.escape = if byte == b'[' {
                    Escape::Csi
                } else {
                    Escape::None
                };
                return Action::None;
            }
            Escape::Csi => {
                if (0x40..=0x7e).contains(&byte) {
                    self.escape = Escape::None;
                }
                return Action::None;
            }
            Escape::None => {}
        }
        match byte {
            b'\r' => {
                self.after_cr = true;
                Action::Submit
            }
            b'\n' if after_cr => Action::None,
            b'\n' => Action::Submit,
            0x08 | 0x7f => {
                if self.len == 0 {
                    Action::None
                } else {
                    self.len -= 1;
                    Action::EraseOne
                }
            }
            0x15 => {
                // Ctrl-U
                let n = core::mem::take(&mut self.len);
                if n == 0 {
                    Action::None
                } else {
                    Action::EraseAll(n)
                }
            }
            0x03 => {
                // Ctrl-C
                self.len = 0;
                Action::Cancel
            }
            0x1b => {
                self.escape = Escape::Start;
                Action::None
            }
            0x20..=0x7e => {
                if self.len == MAX_LINE {
                    Action::Refused
                } else {
                    self.buf[self.len] = byte;
                    self.len += 1;
                    Action::Echo(byte)
                }
            }
            _ => Action::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(ed: &mut LineEditor, bytes: &[u8]) -> Vec<Action> {
        bytes.iter().map(|&b| ed.feed(b)).collect()
    }

    #[test]
    fn printable_characters_are_stored_and_echoed() {
        let mut ed = LineEditor::new();
        assert_eq!(
            feed_all(&mut ed, b"hi"),
            [Action::Echo(b'h'), Action::Echo(b'i')]
        );
        assert_eq!(ed.line(), "hi");
    }

    #[test]
    fn backspace_at_line_start_does_nothing() {
        let mut ed = LineEditor::new();
        assert_eq!(ed.feed(0x7f), Action::None);
        assert_eq!(ed.feed(0x08), Action::None);
        assert_eq!(ed.line(), "");
        ed.feed(b'a');
        assert_eq!(ed.feed(0x08), Action::EraseOne);
        assert_eq!(ed.feed(0x7f), Action::None);
        assert_eq!(ed.line(), "");
    }

    #[test]
    fn backspace_and_del_remove_the_last_character() {
        let mut ed = LineEditor::new();
        feed_all(&mut ed, b"abc");
        assert_eq!(ed.feed(0x7f), Action::EraseOne);
        assert_eq!(ed.feed(0x08), Action::EraseOne);
        assert_eq!(ed.line(), "a");
    }

    #[test]
    fn ctrl_u_clears_the_line_and_says_how_much_to_erase() {
        let mut ed = LineEditor::new();
        feed_all(&mut ed, b"peek 0x10");
        assert_eq!(ed.feed(0x15), Action::EraseAll(9));
        assert_eq!(ed.line(), "");
        assert_eq!(ed.feed(0x15), Action::None);
        feed_all(&mut ed, b"help");
        assert_eq!(ed.line(), "help");
    }

    #[test]
    fn ctrl_c_cancels_the_line() {
        let mut ed = LineEditor::new();
        feed_all(&mut ed, b"reboot");
        assert_eq!(ed.feed(0x03), Action::Cancel);
        assert_eq!(ed.line(), "");
    }

    #[test]
    fn cr_lf_and_crlf_each_submit_once() {
        let mut ed = LineEditor::new();
        feed_all(&mut ed, b"info");
        assert_eq!(ed.feed(b'\r'), Action::Submit);
        assert_eq!(ed.line(), "info");
        ed.clear();
        assert_eq!(
            ed.feed(b'\n'),
            Action::None,
            "LF right after CR is the same Enter"
        );
        assert_eq!(ed.feed(b'\n'), Action::Submit, "a lone LF is an Enter");
        assert_eq!(ed.line(), "");
    }

    #[test]
    fn other_control_characters_and_escape_sequences_are_ignored() {
        let mut ed = LineEditor::new();
        feed_all(&mut ed, b"a\x01\x02\t\x1b[A\x1b[1;5Cb\x80\xff");
        assert_eq!(ed.line(), "ab");
    }

    #[test]
    fn overlong_lines_are_refused_not_truncated_silently() {
        let mut ed = LineEditor::new();
        for _ in 0..MAX_LINE {
            assert_eq!(ed.feed(b'x'), Action::Echo(b'x'));
        }
        assert_eq!(ed.feed(b'y'), Action::Refused);
        assert_eq!(ed.feed(b'z'), Action::Refused);
        assert_eq!(ed.line().len(), MAX_LINE);
        assert!(ed.line().bytes().all(|b| b == b'x'));
        // Editing still works on a full line.
        assert_eq!(ed.feed(0x7f), Action::EraseOne);
        assert_eq!(ed.feed(b'y'), Action::Echo(b'y'));
        assert!(ed.line().ends_with('y'));
    }
}
