//! QMP framing: complete JSON texts cut out of a byte stream, the way
//! QEMU's JSON streamer (`qobject/json-streamer.c` over `json-lexer.c`)
//! does it. QMP is a stream of JSON values, not JSON lines: a value may
//! arrive split across reads, several may arrive in one read, with or
//! without whitespace or newlines between them (python's `qemu.qmp` sends
//! none).
//!
//! A value ends when its brackets balance: `{`/`[` open, `}`/`]` close,
//! counted outside strings only (string- and escape-aware, both `"` and
//! QEMU's `'` quotes). A bare top-level word (`123`, `true`, `hello`) ends
//! at the first byte that cannot continue it; a top-level string at its
//! closing quote. What a text *means* is judged later (`protocol`): the
//! framer only says where texts begin and end, and refuses what can never
//! become one.
//!
//! ```text
//!  Idle --'{' '['--> Value --brackets balance--> emit text, Idle
//!  Idle --'"' '\''--> Value (depth 0) --closing quote--> emit text, Idle
//!  Idle --[A-Za-z0-9+-.]--> Word --any other byte--> emit text, Idle (byte re-read)
//!  Idle --stray byte ('}' ',' 0x80...)--> error, Recover
//!  Value --control byte, or one inside a string--> error, Recover
//!  Value --longer than MAX_MESSAGE_BYTES / deeper than MAX_NESTING--> error, Skip
//!  Skip --its brackets balance--> Idle          (the rest of that value, unread)
//!  Recover --'{' '['--> Idle (byte re-read);  --'\n' '\r', control byte--> Idle
//!  any state --control byte (not \t \r \n) or 0xFE/0xFF--> ends what is pending (QMP's reset)
//! ```
//!
//! Every bad input gets exactly one error (QEMU often sends several for one
//! mistake, e.g. one per stray `}`): what follows it up to the next
//! resynchronisation point is skipped silently. As in QEMU (see the QMP
//! specification, "Forcing the JSON parser into known-good state"), a
//! control character other than tab, CR and LF, or a 0xFE/0xFF byte, always
//! resets the parser; it gets an error reply itself unless it ends input
//! that was already answered with one. Memory is bounded: a pending text is
//! at most [`MAX_MESSAGE_BYTES`], and skipping keeps only counters.

/// Longest JSON text accepted; a longer one gets an error and the rest of
/// it is skipped.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Deepest nesting of arrays and objects accepted.
pub const MAX_NESTING: u64 = 64;

/// Input that can never become a message, as the error reply says it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("JSON parse error, stray {0}; a QMP message is a JSON object, starting with '{{'")]
    Stray(String),
    #[error(
        "JSON parse error, {0} inside a JSON value; the incomplete message was discarded (send control characters \
         only to reset the parser, and escape them inside strings)"
    )]
    Interrupted(String),
    #[error(
        "JSON message longer than {MAX_MESSAGE_BYTES} bytes; it was skipped to its end (send at most \
         {MAX_MESSAGE_BYTES} bytes per message)"
    )]
    TooLong,
    #[error(
        "JSON message nested deeper than {MAX_NESTING} levels; it was skipped to its end (nest arrays and objects at \
         most {MAX_NESTING} deep)"
    )]
    TooDeep,
}

/// What the framer cut out of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// One complete JSON text (its bytes, not yet parsed).
    Text(Vec<u8>),
    /// Input that was refused; the error reply to send.
    Error(FrameError),
}

/// Where the scanner is inside a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Scan {
    /// Open brackets (0 for a top-level string).
    depth: u64,
    /// The quote of the string being read, if inside one.
    quote: Option<u8>,
    /// The previous byte was a backslash inside a string.
    escaped: bool,
}

impl Scan {
    /// Advances over `b` (not a reset byte). Returns whether the value is
    /// complete after it.
    fn step(&mut self, b: u8) -> bool {
        if let Some(q) = self.quote {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == q {
                self.quote = None;
                return self.depth == 0;
            }
            return false;
        }
        match b {
            b'"' | b'\'' => self.quote = Some(b),
            b'{' | b'[' => self.depth = self.depth.saturating_add(1),
            b'}' | b']' => {
                self.depth -= 1;
                return self.depth == 0;
            }
            _ => {}
        }
        false
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    /// Inside a value whose bytes are kept.
    Value(Scan),
    /// Inside a bare top-level word (number or keyword).
    Word,
    /// Inside a value already refused: counting to its end, keeping nothing.
    Skip(Scan),
    /// After a stray byte: skipping to a resynchronisation point.
    Recover,
}

/// The framer of one connection.
#[derive(Debug)]
pub struct Framer {
    state: State,
    text: Vec<u8>,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

/// A control character other than tab, CR and LF, or a byte that never
/// occurs in UTF-8: QMP's way to reset the parser.
fn is_reset(b: u8) -> bool {
    (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b >= 0xFE
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

/// A byte as an error message shows it.
fn shown(b: u8) -> String {
    if b.is_ascii_graphic() { format!("'{}'", b as char) } else { format!("byte 0x{b:02x}") }
}

impl Framer {
    pub fn new() -> Self {
        Self { state: State::Idle, text: Vec::new() }
    }

    /// Whether a text is partly read (bytes are pending).
    pub fn in_message(&self) -> bool {
        !matches!(self.state, State::Idle | State::Recover)
    }

    /// Feeds one byte; what it completed or refused goes to `out` (at most
    /// two frames: a word ended by a stray byte).
    pub fn push(&mut self, b: u8, out: &mut Vec<Frame>) {
        match self.state {
            State::Idle => self.idle(b, out),
            State::Value(mut scan) => {
                let in_string = scan.quote.is_some();
                if is_reset(b) || (in_string && b < 0x20) {
                    let what = if in_string {
                        format!("control character 0x{b:02x} in a string")
                    } else {
                        format!("control byte 0x{b:02x}")
                    };
                    self.fail(FrameError::Interrupted(what), State::Recover, out);
                    return;
                }
                let opens = !in_string && matches!(b, b'{' | b'[');
                let done = scan.step(b);
                if opens && scan.depth > MAX_NESTING {
                    self.fail(FrameError::TooDeep, State::Skip(scan), out);
                    return;
                }
                if self.text.len() >= MAX_MESSAGE_BYTES {
                    let next = if done { State::Idle } else { State::Skip(scan) };
                    self.fail(FrameError::TooLong, next, out);
                    return;
                }
                self.text.push(b);
                if done {
                    out.push(Frame::Text(std::mem::take(&mut self.text)));
                    self.state = State::Idle;
                } else {
                    self.state = State::Value(scan);
                }
            }
            State::Word => {
                if is_word(b) {
                    if self.text.len() >= MAX_MESSAGE_BYTES {
                        self.fail(FrameError::TooLong, State::Recover, out);
                    } else {
                        self.text.push(b);
                    }
                    return;
                }
                out.push(Frame::Text(std::mem::take(&mut self.text)));
                self.state = State::Idle;
                self.idle(b, out);
            }
            State::Skip(mut scan) => {
                if is_reset(b) || (scan.quote.is_some() && b < 0x20) || scan.step(b) {
                    self.state = State::Idle;
                } else {
                    self.state = State::Skip(scan);
                }
            }
            State::Recover => match b {
                b'{' | b'[' => {
                    self.state = State::Idle;
                    self.idle(b, out);
                }
                b'\t' => {}
                _ if !(0x20..0xFE).contains(&b) => self.state = State::Idle,
                _ => {}
            },
        }
    }

    /// Feeds every byte of `data`.
    pub fn push_all(&mut self, data: &[u8], out: &mut Vec<Frame>) {
        for &b in data {
            self.push(b, out);
        }
    }

    fn idle(&mut self, b: u8, out: &mut Vec<Frame>) {
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => {}
            b'{' | b'[' => {
                self.text.push(b);
                self.state = State::Value(Scan { depth: 1, quote: None, escaped: false });
            }
            b'"' | b'\'' => {
                self.text.push(b);
                self.state = State::Value(Scan { depth: 0, quote: Some(b), escaped: false });
            }
            _ if is_word(b) => {
                self.text.push(b);
                self.state = State::Word;
            }
            // A reset byte with nothing pending: an error (QEMU's too),
            // and the parser is where it was.
            _ if is_reset(b) => out.push(Frame::Error(FrameError::Stray(shown(b)))),
            _ => self.fail(FrameError::Stray(shown(b)), State::Recover, out),
        }
    }

    fn fail(&mut self, e: FrameError, next: State, out: &mut Vec<Frame>) {
        self.text = Vec::new();
        out.push(Frame::Error(e));
        self.state = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> Vec<Frame> {
        let mut f = Framer::new();
        let mut out = Vec::new();
        f.push_all(input, &mut out);
        out
    }

    fn text(s: &str) -> Frame {
        Frame::Text(s.as_bytes().to_vec())
    }

    #[test]
    fn values_end_where_their_brackets_balance() {
        let q = r#"{"execute":"query-status"}"#;
        assert_eq!(frames(format!("{q}{q}").as_bytes()), vec![text(q), text(q)]);
        assert_eq!(frames(format!(" \n{q}\r\n\t {q} ").as_bytes()), vec![text(q), text(q)]);
        // Brackets and quotes inside strings do not count; escapes do.
        let tricky = r#"{"id":"}]{[\"\\","x":'a"}\''}"#;
        assert_eq!(frames(tricky.as_bytes()), vec![text(tricky)]);
        assert_eq!(frames(b"[1,[2]]"), vec![text("[1,[2]]")]);
        // Byte by byte is the same as all at once.
        let mut f = Framer::new();
        let mut out = Vec::new();
        for b in format!("{q}{q}").bytes() {
            f.push(b, &mut out);
        }
        assert_eq!(out, vec![text(q), text(q)]);
    }

    #[test]
    fn incomplete_values_wait_for_more() {
        let mut f = Framer::new();
        let mut out = Vec::new();
        f.push_all(br#"{"execute":"qu"#, &mut out);
        f.push_all(b"ery-status\"\n", &mut out);
        assert!(out.is_empty() && f.in_message());
        f.push_all(b"}", &mut out);
        assert_eq!(out, vec![text("{\"execute\":\"query-status\"\n}")]);
        assert!(!f.in_message());
    }

    #[test]
    fn top_level_words_and_strings_are_texts() {
        assert_eq!(frames(b"123 true\"s\"{}"), vec![text("123"), text("true"), text("\"s\""), text("{}")]);
        // A word ends at the byte after it, which is read again.
        assert_eq!(frames(b"hello{}"), vec![text("hello"), text("{}")]);
    }

    #[test]
    fn stray_bytes_get_one_error_then_resync_at_a_bracket_or_line_end() {
        let q = r#"{"execute":"quit"}"#;
        let got = frames(format!("}}}}]], ,{q}").as_bytes());
        assert_eq!(got, vec![Frame::Error(FrameError::Stray("'}'".into())), text(q)]);
        let got = frames(format!("\u{7f}garbage {q}").as_bytes());
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(got[0], Frame::Error(FrameError::Stray(_))));
        // A newline ends recovery: the word after it is a text again.
        assert_eq!(frames(b":x\nabc "), vec![Frame::Error(FrameError::Stray("':'".into())), text("abc")]);
        let got = frames(&[0x80, 0x81, b'{', b'}']);
        assert_eq!(got, vec![Frame::Error(FrameError::Stray("byte 0x80".into())), text("{}")]);
    }

    #[test]
    fn control_bytes_reset_the_parser() {
        let q = r#"{"execute":"quit"}"#;
        // Idle: an error of its own.
        assert_eq!(frames(b"\x01"), vec![Frame::Error(FrameError::Stray("byte 0x01".into()))]);
        // Inside a value or a string: the value is dropped with one error.
        for cut in [&b"{\"a\":\x01"[..], b"{\"a\":\"x\x1b", b"{\"a\":\"x\n", b"[1,\xff"] {
            let mut input = cut.to_vec();
            input.extend_from_slice(b"junk ");
            input.extend_from_slice(q.as_bytes());
            let got = frames(&input);
            assert_eq!(got.len(), 2, "{got:?}");
            assert!(matches!(got[0], Frame::Error(FrameError::Interrupted(_))), "{got:?}");
            assert_eq!(got[1], text(q));
        }
    }

    #[test]
    fn too_long_values_get_one_error_and_are_skipped_to_their_end() {
        let q = r#"{"execute":"quit"}"#;
        let mut big = b"{\"execute\":\"query-status\",\"id\":\"".to_vec();
        big.resize(3 * MAX_MESSAGE_BYTES, b'{');
        big.extend_from_slice(b"\"}");
        big.extend_from_slice(q.as_bytes());
        assert_eq!(frames(&big), vec![Frame::Error(FrameError::TooLong), text(q)]);
        // Exactly at the limit is fine.
        let mut exact = b"[\"".to_vec();
        exact.resize(MAX_MESSAGE_BYTES - 2, b'x');
        exact.extend_from_slice(b"\"]");
        assert_eq!(exact.len(), MAX_MESSAGE_BYTES);
        assert_eq!(frames(&exact), vec![Frame::Text(exact.clone())]);
        // A skip that never ends is ended by a reset byte.
        let mut open = vec![b'['];
        open.resize(MAX_MESSAGE_BYTES + 10, b' ');
        open.push(0x01);
        open.extend_from_slice(q.as_bytes());
        assert_eq!(frames(&open), vec![Frame::Error(FrameError::TooLong), text(q)]);
        // A word, too.
        let mut word = vec![b'1'; MAX_MESSAGE_BYTES + 1];
        word.extend_from_slice(b" {}");
        assert_eq!(frames(&word), vec![Frame::Error(FrameError::TooLong), text("{}")]);
    }

    #[test]
    fn too_deep_values_get_one_error_and_are_skipped_to_their_end() {
        let q = r#"{"execute":"quit"}"#;
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let ok = deep(MAX_NESTING as usize);
        assert_eq!(frames(ok.as_bytes()), vec![text(&ok)]);
        let got = frames(format!("{}{q}", deep(MAX_NESTING as usize + 1)).as_bytes());
        assert_eq!(got, vec![Frame::Error(FrameError::TooDeep), text(q)]);
        let got = frames(format!("{}{q}", deep(5000)).as_bytes());
        assert_eq!(got, vec![Frame::Error(FrameError::TooDeep), text(q)]);
    }

    #[test]
    fn memory_stays_bounded_whatever_comes() {
        let mut f = Framer::new();
        let mut out = Vec::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..(4 * MAX_MESSAGE_BYTES) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Mostly structure, so that values get deep and long.
            let b = b"{[\"'\\ax]} \n"[(seed % 11) as usize];
            f.push(b, &mut out);
            assert!(f.text.len() <= MAX_MESSAGE_BYTES);
        }
    }
}
