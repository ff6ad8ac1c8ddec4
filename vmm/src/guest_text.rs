//! The one way a string the guest wrote reaches a person: escaped.
//!
//! Everything the guest provides is hostile input (a panic's file and
//! message, lock and task names, the kernel version): printed raw, an
//! escape sequence could erase the VMM's lines and print false ones
//! (`\x1b[2K\r`), set the terminal's clipboard (OSC 52) or reorder the
//! text (Unicode bidi overrides). So wherever a guest string goes into the
//! VMM's stderr, a QMP reply or `ctl` output, it goes through [`escape`]
//! (bytes) or [`name`] (a NUL-padded field) first:
//!
//! - printable ASCII and printable Unicode stay as they are;
//! - `\\` becomes `\\\\`, so every escape below reads one way;
//! - `\n`, `\r`, `\t` become `\n`, `\r`, `\t`; other C0 controls, DEL
//!   and ESC become `\xNN`;
//! - C1 controls (U+0080..U+009F, e.g. the one-character CSI U+009B),
//!   bidi overrides and isolates (U+202A..U+202E, U+2066..U+2069) and other
//!   invisible format characters (U+200B..U+200F, U+2028, U+2029, U+FEFF)
//!   become `\u{NNNN}`;
//! - a byte that is not UTF-8 becomes `\xNN`.
//!
//! The result is one line of plain text whatever the input. The guest's
//! console is not a string of this kind: it is the guest's own output
//! stream (`devices::console` says what it does on a terminal).

use std::fmt::Write;

/// `bytes` as one line of printable text (the module comment's rules).
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(&mut out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// A `str` the guest provided (already UTF-8, e.g. decoded lossily).
pub fn escape_str(s: &str) -> String {
    escape(s.as_bytes())
}

/// A NUL-padded name field: the bytes before the first NUL, escaped.
pub fn name(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    escape(&field[..end])
}

/// The guest console's bytes for a terminal (`devices::console`): as
/// [`escape`], but newlines and tabs stay (the console is text in lines)
/// and a backslash stays itself.
pub fn escape_console(bytes: &[u8]) -> Vec<u8> {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' | '\t' | '\\' => out.push(c),
                c => push_char(&mut out, c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.into_bytes()
}

/// Whether `c` must be escaped (the module comment's list).
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}')
        || matches!(c, '\u{2066}'..='\u{2069}' | '\u{feff}')
}

fn push_char(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x80 && hidden(c) => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if hidden(c) => {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_attacks_of_the_review_come_out_inert() {
        let fake = b"boom\x1b[2K\r\nrtswitch: result: ok";
        assert_eq!(escape(fake), "boom\\x1b[2K\\r\\nrtswitch: result: ok");
        let osc52 = b"\x1b]52;c;ZXZpbA==\x07";
        assert_eq!(escape(osc52), "\\x1b]52;c;ZXZpbA==\\x07");
        // C1 CSI as UTF-8 (U+009B), a bidi override, invalid UTF-8, DEL.
        assert_eq!(escape("\u{9b}31m\u{202e}x".as_bytes()), "\\u{009b}31m\\u{202e}x");
        assert_eq!(escape(b"a\xffb\x7f"), "a\\xffb\\x7f");
        assert_eq!(escape(b"back\\slash"), "back\\\\slash");
    }

    #[test]
    fn names_end_at_their_nul_and_keep_printable_text() {
        assert_eq!(name(b"worker/1\0\x1b junk"), "worker/1");
        assert_eq!(name("tâche 💡".as_bytes()), "tâche 💡");
        assert_eq!(name(b""), "");
    }

    #[test]
    fn the_console_keeps_its_lines_and_loses_its_escapes() {
        let shown = escape_console(b"ok\tdone\n\x1b[2J\r\x1b]52;c;eA==\x07\n");
        assert_eq!(String::from_utf8(shown).unwrap(), "ok\tdone\n\\x1b[2J\\r\\x1b]52;c;eA==\\x07\n");
    }

    proptest! {
        /// Whatever the bytes, the output has no control character, no
        /// C1 or bidi character, and no line break: one inert line.
        #[test]
        fn any_bytes_escape_to_one_inert_line(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let s = escape(&bytes);
            prop_assert!(!s.chars().any(hidden), "{s:?}");
            prop_assert!(!s.contains('\n') && !s.contains('\r'));
        }

        /// Printable text without backslashes comes out unchanged.
        #[test]
        fn printable_text_is_unchanged(s in "[ -\\[\\]-~\u{a0}-\u{2000}]{0,64}") {
            prop_assert_eq!(escape_str(&s), s);
        }
    }
}
