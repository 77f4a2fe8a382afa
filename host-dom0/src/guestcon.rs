//! The console multiplexer: the guests' emulated UARTs share dom0's one
//! physical console.
//!
//! * **Output.** While dom0's shell has the input focus, each guest's output
//!   is printed line by line, prefixed with the VM's name (`web: booting`),
//!   so lines of different guests never mix. A partial line (a prompt
//!   without a newline) is shown once it has waited
//!   [`PARTIAL_LINE_MILLIS`]; when it is completed the whole line is
//!   printed again, so a line is never left split in two (a guest may be
//!   descheduled in the middle of one). A line longer than [`LINE_MAX`] is
//!   cut into pieces, never dropped. Control characters are shown as `?`,
//!   so a guest cannot drive the terminal behind the shell's back. While a
//!   guest has the focus its output goes to the terminal unchanged (it owns
//!   the terminal then, as with any serial console); the other guests'
//!   output is only kept in their logs.
//! * **Input.** [`ESCAPE`] (Ctrl-a) typed [`ESCAPE_COUNT`] times in a row
//!   moves the focus on: dom0 → first VM → next VM … → dom0. Fewer Ctrl-a
//!   followed by another key are passed on, so a guest still receives
//!   Ctrl-a. Every other byte goes to whoever has the focus.
//! * **Log.** The last [`HISTORY`] bytes each VM wrote are kept for
//!   `log VM`, whoever had the focus.
#![forbid(unsafe_code)]

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Bound::{Excluded, Unbounded};

/// The escape key: Ctrl-a.
pub const ESCAPE: u8 = 0x01;
/// How many escape keys in a row switch the focus.
pub const ESCAPE_COUNT: u8 = 3;
/// Longest line printed in one piece.
pub const LINE_MAX: usize = 512;
/// Bytes of output kept per VM for `log`.
pub const HISTORY: usize = 16 * 1024;

/// Who receives typed input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    Dom0,
    Vm(u16),
}

/// What a typed byte does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Held: part of a possible escape sequence.
    Held,
    /// For dom0's shell.
    Dom0(Vec<u8>),
    /// For this VM's console.
    Vm(u16, Vec<u8>),
    /// The focus moved.
    Switched(Focus),
}

#[derive(Debug)]
struct VmConsole {
    name: String,
    /// The line being assembled (already sanitised).
    line: Vec<u8>,
    /// When the last byte of `line` arrived (counter ticks).
    line_since: u64,
    /// How much of `line` was already shown as a partial line.
    shown: usize,
    history: VecDeque<u8>,
}

impl VmConsole {
    fn new(name: &str) -> Self {
        VmConsole { name: String::from(name), line: Vec::new(), line_since: 0, shown: 0, history: VecDeque::new() }
    }

    /// Emits the assembled line as `name: line` CR LF and starts a new one.
    fn emit_line(&mut self, out: &mut Vec<u8>) {
        self.show(out);
        self.line.clear();
        self.shown = 0;
    }

    /// Prints the line so far as `name: line` CR LF, keeping it.
    fn show(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&self.line);
        out.extend_from_slice(b"\r\n");
        self.shown = self.line.len();
    }
}

/// The multiplexer's state (the shell owns it).
#[derive(Debug)]
pub struct Mux {
    vms: BTreeMap<u16, VmConsole>,
    focus: Focus,
    escapes: u8,
    /// How long a partial line waits before it is printed anyway.
    partial_ticks: u64,
}

/// How long a partial line waits before it is printed anyway.
pub const PARTIAL_LINE_MILLIS: u64 = 200;

impl Mux {
    /// `counter_hz`: the frequency of the `now` values given to
    /// [`output`](Self::output) and [`flush_partial`](Self::flush_partial).
    pub fn new(counter_hz: u64) -> Self {
        Mux { vms: BTreeMap::new(), focus: Focus::Dom0, escapes: 0, partial_ticks: counter_hz * PARTIAL_LINE_MILLIS / 1000 }
    }

    /// A VM's console appears (its name prefixes its lines).
    pub fn add(&mut self, id: u16, name: &str) {
        self.vms.insert(id, VmConsole::new(name));
    }

    /// A VM is gone: its partial line is printed (if dom0 has the focus), its
    /// log dropped; a focus on it returns to dom0.
    pub fn remove(&mut self, id: u16, out: &mut Vec<u8>) {
        if let Some(mut c) = self.vms.remove(&id) {
            if !c.line.is_empty() && self.focus == Focus::Dom0 {
                c.emit_line(out);
            }
        }
        if self.focus == Focus::Vm(id) {
            self.focus = Focus::Dom0;
        }
    }

    pub fn focus(&self) -> Focus {
        self.focus
    }

    /// Gives `id` the focus (`console VM`). `false` if it has no console.
    pub fn attach(&mut self, id: u16) -> bool {
        if self.vms.contains_key(&id) {
            self.focus = Focus::Vm(id);
            self.escapes = 0;
            true
        } else {
            false
        }
    }

    /// The VM's name, if it has a console here.
    pub fn name(&self, id: u16) -> Option<&str> {
        self.vms.get(&id).map(|c| c.name.as_str())
    }

    /// The VM's recent output (raw bytes, oldest first).
    pub fn history(&self, id: u16) -> Option<Vec<u8>> {
        self.vms.get(&id).map(|c| c.history.iter().copied().collect())
    }

    /// Output bytes from VM `id`'s console; what to print goes to `out`.
    pub fn output(&mut self, id: u16, bytes: &[u8], now: u64, out: &mut Vec<u8>) {
        let focus = self.focus;
        let c = self.vms.entry(id).or_insert_with(|| VmConsole::new(&format!("vm{id}")));
        for &b in bytes {
            if c.history.len() == HISTORY {
                c.history.pop_front();
            }
            c.history.push_back(b);
        }
        if focus == Focus::Vm(id) {
            out.extend_from_slice(bytes);
            return;
        }
        let print = focus == Focus::Dom0;
        for &b in bytes {
            match b {
                b'\n' => {
                    if print {
                        c.emit_line(out);
                    } else {
                        c.line.clear();
                        c.shown = 0;
                    }
                    continue;
                }
                b'\r' => continue,
                _ => {}
            }
            c.line_since = now;
            c.line.push(match b {
                b'\t' => b,
                0..=0x1f | 0x7f => b'?',
                _ => b,
            });
            if c.line.len() >= LINE_MAX {
                if print {
                    c.emit_line(out);
                } else {
                    c.line.clear();
                    c.shown = 0;
                }
            }
        }
    }

    /// Shows partial lines that have waited long enough (dom0 focused).
    pub fn flush_partial(&mut self, now: u64, out: &mut Vec<u8>) {
        if self.focus != Focus::Dom0 {
            return;
        }
        for c in self.vms.values_mut() {
            if c.line.len() > c.shown && now.wrapping_sub(c.line_since) >= self.partial_ticks {
                c.show(out);
            }
        }
    }

    /// A typed byte.
    pub fn input(&mut self, byte: u8) -> Input {
        if byte == ESCAPE {
            self.escapes += 1;
            if self.escapes < ESCAPE_COUNT {
                return Input::Held;
            }
            self.escapes = 0;
            self.focus = self.next_focus();
            return Input::Switched(self.focus);
        }
        let mut bytes = alloc::vec![ESCAPE; usize::from(self.escapes)];
        self.escapes = 0;
        bytes.push(byte);
        match self.focus {
            Focus::Dom0 => Input::Dom0(bytes),
            Focus::Vm(id) => Input::Vm(id, bytes),
        }
    }

    fn next_focus(&self) -> Focus {
        let next = match self.focus {
            Focus::Dom0 => self.vms.keys().next(),
            Focus::Vm(id) => self.vms.range((Excluded(id), Unbounded)).next().map(|(k, _)| k),
        };
        next.map_or(Focus::Dom0, |&id| Focus::Vm(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn out_of(m: &mut Mux, id: u16, bytes: &[u8], now: u64) -> Vec<u8> {
        let mut out = vec![];
        m.output(id, bytes, now, &mut out);
        out
    }

    #[test]
    fn lines_are_prefixed_and_never_interleaved() {
        let mut m = Mux::new(1000);
        m.add(1, "a");
        m.add(2, "b");
        assert_eq!(out_of(&mut m, 1, b"hel", 0), b"");
        assert_eq!(out_of(&mut m, 2, b"one\ntw", 0), b"b: one\r\n");
        assert_eq!(out_of(&mut m, 1, b"lo\r\n", 0), b"a: hello\r\n");
        assert_eq!(out_of(&mut m, 2, b"o\n", 0), b"b: two\r\n");
    }

    #[test]
    fn control_characters_are_neutralised_and_long_lines_cut() {
        let mut m = Mux::new(1000);
        m.add(1, "a");
        assert_eq!(out_of(&mut m, 1, b"\x1b[2Jx\ty\x07\n", 0), b"a: ?[2Jx\ty?\r\n");
        let long = vec![b'z'; LINE_MAX + 3];
        let out = out_of(&mut m, 1, &long, 0);
        let mut want = b"a: ".to_vec();
        want.extend(vec![b'z'; LINE_MAX]);
        want.extend(b"\r\n");
        assert_eq!(out, want);
        assert_eq!(out_of(&mut m, 1, b"\n", 0), b"a: zzz\r\n");
    }

    #[test]
    fn partial_lines_wait_then_print() {
        let mut m = Mux::new(1000); // 1 tick = 1 ms
        m.add(1, "a");
        assert_eq!(out_of(&mut m, 1, b"login: ", 10), b"");
        let mut out = vec![];
        m.flush_partial(10 + PARTIAL_LINE_MILLIS - 1, &mut out);
        assert!(out.is_empty());
        m.flush_partial(10 + PARTIAL_LINE_MILLIS, &mut out);
        assert_eq!(out, b"a: login: \r\n");
        out.clear();
        m.flush_partial(10_000, &mut out);
        assert!(out.is_empty(), "shown once");
        // Completed later: the whole line is printed, never only its tail.
        assert_eq!(out_of(&mut m, 1, b"root", 20_000), b"");
        m.flush_partial(20_000 + PARTIAL_LINE_MILLIS, &mut out);
        assert_eq!(out, b"a: login: root\r\n");
        assert_eq!(out_of(&mut m, 1, b"\n", 30_000), b"a: login: root\r\n");
        assert_eq!(out_of(&mut m, 1, b"next\n", 30_000), b"a: next\r\n");
    }

    #[test]
    fn escape_three_times_cycles_focus_and_fewer_pass_through() {
        let mut m = Mux::new(1000);
        m.add(4, "x");
        m.add(2, "y");
        assert_eq!(m.input(b'l'), Input::Dom0(vec![b'l']));
        assert_eq!(m.input(ESCAPE), Input::Held);
        assert_eq!(m.input(ESCAPE), Input::Held);
        assert_eq!(m.input(ESCAPE), Input::Switched(Focus::Vm(2)));
        assert_eq!(m.input(b'a'), Input::Vm(2, vec![b'a']));
        // Two Ctrl-a then a key: the guest gets all three.
        m.input(ESCAPE);
        m.input(ESCAPE);
        assert_eq!(m.input(b'b'), Input::Vm(2, vec![ESCAPE, ESCAPE, b'b']));
        for _ in 0..3 {
            m.input(ESCAPE);
        }
        assert_eq!(m.focus(), Focus::Vm(4));
        for _ in 0..3 {
            m.input(ESCAPE);
        }
        assert_eq!(m.focus(), Focus::Dom0);
    }

    #[test]
    fn focused_vm_output_is_raw_and_others_only_logged() {
        let mut m = Mux::new(1000);
        m.add(1, "a");
        m.add(2, "b");
        assert!(m.attach(1));
        assert!(!m.attach(9));
        assert_eq!(out_of(&mut m, 1, b"\x1b[1mraw\r\n", 0), b"\x1b[1mraw\r\n");
        assert_eq!(out_of(&mut m, 2, b"quiet\n", 0), b"");
        assert_eq!(m.history(2).unwrap(), b"quiet\n");
        // Back at dom0, b's later lines print again.
        for _ in 0..3 {
            m.input(ESCAPE);
        }
        for _ in 0..3 {
            m.input(ESCAPE);
        }
        assert_eq!(m.focus(), Focus::Dom0);
        assert_eq!(out_of(&mut m, 2, b"loud\n", 0), b"b: loud\r\n");
    }

    #[test]
    fn history_keeps_the_last_bytes_and_goes_with_the_vm() {
        let mut m = Mux::new(1000);
        m.add(1, "a");
        let data: Vec<u8> = (0..HISTORY + 100).map(|i| b'a' + (i % 26) as u8).collect();
        let _ = out_of(&mut m, 1, &data, 0);
        assert_eq!(m.history(1).unwrap(), &data[100..]);
        m.attach(1);
        let mut out = vec![];
        m.remove(1, &mut out);
        assert_eq!(m.focus(), Focus::Dom0);
        assert_eq!(m.history(1), None);
    }

    #[test]
    fn removing_a_vm_prints_its_partial_line() {
        let mut m = Mux::new(1000);
        m.add(3, "c");
        let _ = out_of(&mut m, 3, b"bye", 0);
        let mut out = vec![];
        m.remove(3, &mut out);
        assert_eq!(out, b"c: bye\r\n");
    }

    #[test]
    fn unknown_vms_get_a_default_name() {
        let mut m = Mux::new(1000);
        assert_eq!(out_of(&mut m, 7, b"hi\n", 0), b"vm7: hi\r\n");
    }
}
