//! The switch history: the newest [`HISTORY_CAPACITY`] switch records in a
//! ring, and exact totals over every switch of the run (counts, and the
//! distribution of each timing), so that memory and every reply stay
//! bounded however long the VM runs.
//!
//! ```text
//!  seq:   1 ... F | F+1 ...................... N
//!         forgotten | retained (the ring, <= HISTORY_CAPACITY)
//!  page:              [ before | listed | after ]
//! ```
//! A page names what it leaves out: the records before it (of which the
//! forgotten ones cannot be listed any more) and after it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::SwitchRecord;
use super::distribution::{Distribution, Summary};
use crate::page::Page;

/// Switch records kept for listing (about 300 bytes each).
pub const HISTORY_CAPACITY: usize = 1024;

/// Every switch of the run, the newest in detail.
#[derive(Clone, Debug)]
pub struct SwitchHistory {
    records: VecDeque<SwitchRecord>,
    capacity: usize,
    completed: u64,
    failed: u64,
    /// Completed in one blackout (`fast`).
    fast: u64,
    /// Fast paths refused, by the check that failed first.
    refused_by: std::collections::BTreeMap<String, u64>,
    freeze: Distribution,
    blackout: Distribution,
    total: Distribution,
}

/// Exact figures over every switch of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwitchTotals {
    /// Switches that ended (completed + failed): seq 1 to this.
    pub recorded: u64,
    pub completed: u64,
    /// Failed switches (nothing changed).
    pub failed: u64,
    /// Records still kept for listing: the newest ones.
    pub retained: u64,
    /// Records no longer kept (the oldest, seq 1 to this).
    pub forgotten: u64,
    /// Completed switches that took the fast path (one blackout); the
    /// rest of `completed` took the cooperative one.
    #[serde(default)]
    pub fast: u64,
    /// Fast paths refused (then run cooperatively), by the first check
    /// that failed (`SwitchPath`'s `refused_by`), exact.
    #[serde(default)]
    pub fast_refused_by: std::collections::BTreeMap<String, u64>,
    /// Timings of the completed switches (`null` before the first).
    pub freeze_us: Option<Summary>,
    pub blackout_us: Option<Summary>,
    pub total_us: Option<Summary>,
}

/// What a page leaves out, in records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Omitted {
    /// Older than the page (forgotten ones included).
    pub before: u64,
    /// Newer than the page.
    pub after: u64,
    /// Asked for (at or after `since`) but forgotten: they can no longer
    /// be listed.
    pub unavailable: u64,
}

/// One page of records, oldest first.
#[derive(Clone, Debug)]
pub struct SwitchPage<'a> {
    pub records: Vec<&'a SwitchRecord>,
    pub omitted: Omitted,
}

impl Default for SwitchHistory {
    fn default() -> Self {
        Self::new(HISTORY_CAPACITY)
    }
}

impl SwitchHistory {
    pub fn new(capacity: usize) -> Self {
        Self {
            records: VecDeque::with_capacity(capacity.min(HISTORY_CAPACITY)),
            capacity: capacity.max(1),
            completed: 0,
            failed: 0,
            fast: 0,
            refused_by: std::collections::BTreeMap::new(),
            freeze: Distribution::new(),
            blackout: Distribution::new(),
            total: Distribution::new(),
        }
    }

    /// Adds the record of a switch that ended (in seq order).
    pub fn push(&mut self, r: SwitchRecord) {
        if let Some(check) = &r.path.refused_by {
            // Bounded: the names are [`super::fast::Refusal::check`]'s.
            *self.refused_by.entry(check.clone()).or_default() += 1;
        }
        if r.ok && r.path.fast {
            self.fast += 1;
        }
        if r.ok {
            self.completed += 1;
            self.freeze.add(r.timings.freeze_us);
            self.blackout.add(r.timings.blackout_us);
            self.total.add(r.timings.total_us);
        } else {
            self.failed += 1;
        }
        if self.records.len() == self.capacity {
            self.records.pop_front();
        }
        self.records.push_back(r);
    }

    /// Switches that ended.
    pub fn recorded(&self) -> u64 {
        self.completed + self.failed
    }

    pub fn forgotten(&self) -> u64 {
        self.recorded() - self.records.len() as u64
    }

    /// The retained records, oldest first.
    pub fn retained(&self) -> impl DoubleEndedIterator<Item = &SwitchRecord> + ExactSizeIterator {
        self.records.iter()
    }

    pub fn totals(&self) -> SwitchTotals {
        SwitchTotals {
            recorded: self.recorded(),
            completed: self.completed,
            failed: self.failed,
            retained: self.records.len() as u64,
            forgotten: self.forgotten(),
            fast: self.fast,
            fast_refused_by: self.refused_by.clone(),
            freeze_us: self.freeze.summary(),
            blackout_us: self.blackout.summary(),
            total_us: self.total.summary(),
        }
    }

    /// The distributions of the completed switches' freeze, blackout and
    /// total times.
    pub fn timings(&self) -> [(&'static str, &Distribution); 3] {
        [("freeze", &self.freeze), ("blackout", &self.blackout), ("total", &self.total)]
    }

    /// The records of `page`.
    pub fn page(&self, page: Page) -> SwitchPage<'_> {
        let retained = self.records.len() as u64;
        let forgotten = self.forgotten();
        match page {
            Page::Last(n) => {
                let take = n.min(retained);
                let records: Vec<&SwitchRecord> = self.records.iter().skip((retained - take) as usize).collect();
                SwitchPage { records, omitted: Omitted { before: self.recorded() - take, after: 0, unavailable: 0 } }
            }
            Page::Since { since, limit } => {
                let skipped = self.records.iter().take_while(|r| r.seq < since).count() as u64;
                let records: Vec<&SwitchRecord> =
                    self.records.iter().skip(skipped as usize).take(limit as usize).collect();
                let listed = records.len() as u64;
                // Forgotten records are seq 1..=forgotten.
                let unavailable = forgotten.saturating_sub(since.saturating_sub(1));
                SwitchPage {
                    records,
                    omitted: Omitted { before: forgotten + skipped, after: retained - skipped - listed, unavailable },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::SwitchTimings;
    use super::*;

    fn rec(seq: u64) -> SwitchRecord {
        let ok = !seq.is_multiple_of(10);
        SwitchRecord {
            seq,
            from: if seq % 2 == 1 { "mainline" } else { "rt" }.into(),
            to: if seq % 2 == 1 { "rt" } else { "mainline" }.into(),
            ok,
            reason: if ok { String::new() } else { "deadline".into() },
            timings: SwitchTimings { freeze_us: seq, blackout_us: 1, total_us: 2 * seq },
            sites_patched: if ok { 40 } else { 0 },
            requested_at_s: seq as f64,
            phases: None,
            path: crate::switch::SwitchPath::default(),
        }
    }

    fn seqs(p: &SwitchPage) -> Vec<u64> {
        p.records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn totals_stay_exact_when_records_are_forgotten() {
        let mut h = SwitchHistory::new(8);
        for seq in 1..=100 {
            h.push(rec(seq));
        }
        let t = h.totals();
        assert_eq!((t.recorded, t.completed, t.failed, t.retained, t.forgotten), (100, 90, 10, 8, 92));
        let total = t.total_us.unwrap();
        assert_eq!((total.count, total.min_us, total.max_us), (90, 2, 198));
        assert_eq!(h.retained().map(|r| r.seq).collect::<Vec<_>>(), (93..=100).collect::<Vec<_>>());
    }

    #[test]
    fn pages_list_what_was_asked_and_count_the_rest() {
        let mut h = SwitchHistory::new(8);
        for seq in 1..=20 {
            h.push(rec(seq));
        }
        // Retained: 13..=20.
        let p = h.page(Page::Last(3));
        assert_eq!((seqs(&p), p.omitted), (vec![18, 19, 20], Omitted { before: 17, after: 0, unavailable: 0 }));
        let p = h.page(Page::Last(50));
        assert_eq!((seqs(&p).len(), p.omitted.before), (8, 12));
        let p = h.page(Page::Since { since: 15, limit: 2 });
        assert_eq!((seqs(&p), p.omitted), (vec![15, 16], Omitted { before: 14, after: 4, unavailable: 0 }));
        // Asking for forgotten records: they are counted as unavailable.
        let p = h.page(Page::Since { since: 10, limit: 4 });
        assert_eq!((seqs(&p), p.omitted), (vec![13, 14, 15, 16], Omitted { before: 12, after: 4, unavailable: 3 }));
        let p = h.page(Page::Since { since: 0, limit: 100 });
        assert_eq!((seqs(&p).len(), p.omitted.unavailable), (8, 12));
        // Past the end: empty, everything is before.
        let p = h.page(Page::Since { since: 21, limit: 5 });
        assert_eq!((seqs(&p), p.omitted), (vec![], Omitted { before: 20, after: 0, unavailable: 0 }));
        // Every page accounts for every record.
        for since in 0..25 {
            for limit in 1..10 {
                let p = h.page(Page::Since { since, limit });
                assert_eq!(p.omitted.before + p.records.len() as u64 + p.omitted.after, 20);
            }
        }
    }
}
