//! Which part of a long list (switch records, epochs) a query asks for:
//! the control API parses it, the lists' owners (`switch::history`, the
//! runner's latency pages) cut their pages by it.

/// Which part of a long list a query returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    /// The newest `n` entries.
    Last(u64),
    /// At most `limit` entries from number `since` on, oldest first.
    Since { since: u64, limit: u64 },
}
