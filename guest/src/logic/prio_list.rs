//! A fixed-capacity priority-ordered list of ids: highest priority first,
//! FIFO among equal priorities.
//!
//! Used for rtmutex waiter lists (ids are tasks, keyed by each waiter's
//! effective priority), for a task's set of top waiters of the locks it holds
//! (ids are locks, keyed by each lock's top waiter priority: Linux's
//! `pi_waiters`), and it fits a run queue as well.
//!
//! # Algorithm
//!
//! The ids are `0..N` (the capacity); each id is in the list at most once.
//! A priority is a `u8`, higher = more important, so there are 256 priority
//! levels. The list is an array of 256 buckets, one per level (the O(1)
//! scheduler's `prio_array`, Linux `rt_prio_array`):
//!
//! - each non-empty bucket is a circular doubly-linked list of the ids queued
//!   at that level, in arrival order; `head[p]` is its oldest id and
//!   `prev[head[p]]` its newest, so a bucket needs no tail pointer;
//! - a 256-bit bitmap has bit `p` set exactly when bucket `p` is non-empty;
//! - the links (`next`, `prev`) and the queued priority live in per-id arrays
//!   indexed by the id (an intrusive list: no node allocation, no search).
//!
//! Operations:
//!
//! - `insert(id, p)`: link `id` at the tail of bucket `p`, set bit `p`. O(1).
//! - `remove(id)`: unlink `id` from its bucket (found through `prio[id]`);
//!   clear the bit when the bucket empties. O(1).
//! - `top()`: the highest set bit of the bitmap (at most 4 words, each a
//!   `leading_zeros`), then that bucket's head. O(1).
//! - `requeue(id, p)`: a priority change is `remove` + `insert`, so the id goes
//!   to the back of its new priority class: FIFO fairness among the tasks
//!   that were already queued at that level. Requeueing at the *same*
//!   priority is a no-op and keeps the id's place (a PI chain walk that
//!   recomputes an unchanged priority must not push a waiter back).
//! - `iter()`: buckets from the highest set bit down, each head to tail.
//!
//! FIFO among equals needs no sequence number: arrival order is the order of
//! the bucket's list.
//!
//! # Invariants (checked by the tests after every operation)
//!
//! - I1: `next[id] == NIL` exactly when `id` is not queued; then `prev[id] ==
//!   NIL` too.
//! - I2: a queued `id` is in bucket `prio[id]` and in no other.
//! - I3: bit `p` of the bitmap is set exactly when `head[p] != NIL`.
//! - I4: `len` is the number of queued ids.
//!
//! # Size
//!
//! `512 + 32 + 2` bytes of buckets, bitmap and length, plus 5 bytes per id of
//! capacity. `N` must be below `u16::MAX` (`u16::MAX` is the "no id" marker);
//! this is checked at compile time.

use core::fmt;

/// A priority: higher is more important.
pub type Prio = u8;

/// Number of distinct priorities (every `u8`).
pub const PRIO_LEVELS: usize = 256;

const BITMAP_WORDS: usize = PRIO_LEVELS / 64;

/// "No id": the end of nothing, the mark of a free slot.
const NIL: u16 = u16::MAX;

/// Why a list operation was refused. The list is unchanged when one is
/// returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListError {
    /// The id is not below the list's capacity.
    OutOfRange { id: usize, capacity: usize },
    /// `insert` of an id that is already queued.
    AlreadyQueued { id: usize },
    /// `remove`/`requeue` of an id that is not queued.
    NotQueued { id: usize },
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ListError::OutOfRange { id, capacity } => write!(f, "id {id} out of range (capacity {capacity})"),
            ListError::AlreadyQueued { id } => write!(f, "id {id} is already queued"),
            ListError::NotQueued { id } => write!(f, "id {id} is not queued"),
        }
    }
}

/// A priority-ordered list of the ids `0..N`. See the module documentation.
#[derive(Clone)]
pub struct PrioList<const N: usize> {
    /// Oldest id queued at each level, or `NIL`.
    head: [u16; PRIO_LEVELS],
    /// Bit `p` set when `head[p] != NIL`.
    bitmap: [u64; BITMAP_WORDS],
    /// Next id in the same bucket (circular), or `NIL` when not queued.
    next: [u16; N],
    /// Previous id in the same bucket (circular), or `NIL` when not queued.
    prev: [u16; N],
    /// The level an id is queued at (meaningless when not queued).
    prio: [Prio; N],
    len: u16,
}

impl<const N: usize> PrioList<N> {
    /// An empty list. `const`, so a list can live in a `static`.
    pub const fn new() -> Self {
        const { assert!(N < NIL as usize, "PrioList capacity must be below u16::MAX") };
        Self {
            head: [NIL; PRIO_LEVELS],
            bitmap: [0; BITMAP_WORDS],
            next: [NIL; N],
            prev: [NIL; N],
            prio: [0; N],
            len: 0,
        }
    }

    /// The largest id plus one.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// How many ids are queued.
    pub const fn len(&self) -> usize {
        self.len as usize
    }

    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `id` is queued (false for an id out of range).
    pub fn contains(&self, id: usize) -> bool {
        id < N && self.next[id] != NIL
    }

    /// The priority `id` is queued at, if it is queued.
    pub fn prio_of(&self, id: usize) -> Option<Prio> {
        if self.contains(id) { Some(self.prio[id]) } else { None }
    }

    /// The first id: highest priority, oldest among that priority. O(1).
    pub fn top(&self) -> Option<(usize, Prio)> {
        let level = self.highest_level_below(PRIO_LEVELS)?;
        Some((usize::from(self.head[level]), level as Prio))
    }

    /// The priority of the first id. O(1).
    pub fn top_prio(&self) -> Option<Prio> {
        self.highest_level_below(PRIO_LEVELS).map(|level| level as Prio)
    }

    /// The first id. O(1).
    pub fn top_id(&self) -> Option<usize> {
        self.top().map(|(id, _)| id)
    }

    /// Queues `id` at priority `prio`, behind every id already queued at
    /// that priority. O(1).
    pub fn insert(&mut self, id: usize, prio: Prio) -> Result<(), ListError> {
        self.check_range(id)?;
        if self.next[id] != NIL {
            return Err(ListError::AlreadyQueued { id });
        }
        self.link_tail(id, prio);
        self.len += 1;
        Ok(())
    }

    /// Dequeues `id`; returns the priority it was queued at. O(1).
    pub fn remove(&mut self, id: usize) -> Result<Prio, ListError> {
        self.check_range(id)?;
        if self.next[id] == NIL {
            return Err(ListError::NotQueued { id });
        }
        let prio = self.prio[id];
        self.unlink(id);
        self.len -= 1;
        Ok(prio)
    }

    /// Dequeues and returns the first id. O(1).
    pub fn pop(&mut self) -> Option<(usize, Prio)> {
        let (id, prio) = self.top()?;
        self.unlink(id);
        self.len -= 1;
        Some((id, prio))
    }

    /// Changes the priority of a queued `id`. At a new priority the id goes
    /// to the back of that priority class; at its current priority it keeps
    /// its place. O(1).
    pub fn requeue(&mut self, id: usize, prio: Prio) -> Result<(), ListError> {
        self.check_range(id)?;
        if self.next[id] == NIL {
            return Err(ListError::NotQueued { id });
        }
        if self.prio[id] != prio {
            self.unlink(id);
            self.link_tail(id, prio);
        }
        Ok(())
    }

    /// Empties the list.
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    /// The queued ids with their priorities, first to last.
    pub fn iter(&self) -> Iter<'_, N> {
        match self.highest_level_below(PRIO_LEVELS) {
            Some(level) => Iter { list: self, level, cur: self.head[level] },
            None => Iter { list: self, level: 0, cur: NIL },
        }
    }

    fn check_range(&self, id: usize) -> Result<(), ListError> {
        if id < N { Ok(()) } else { Err(ListError::OutOfRange { id, capacity: N }) }
    }

    /// Links a non-queued `id` at the tail of bucket `prio`.
    fn link_tail(&mut self, id: usize, prio: Prio) {
        let level = usize::from(prio);
        // `id < N < NIL` (checked by the callers and at compile time).
        let id16 = id as u16;
        let head = self.head[level];
        if head == NIL {
            self.head[level] = id16;
            self.next[id] = id16;
            self.prev[id] = id16;
            self.bitmap[level / 64] |= 1 << (level % 64);
        } else {
            let tail = self.prev[usize::from(head)];
            self.next[usize::from(tail)] = id16;
            self.prev[id] = tail;
            self.next[id] = head;
            self.prev[usize::from(head)] = id16;
        }
        self.prio[id] = prio;
    }

    /// Unlinks a queued `id` from its bucket.
    fn unlink(&mut self, id: usize) {
        let level = usize::from(self.prio[id]);
        let next = self.next[id];
        if usize::from(next) == id {
            // The only id at this level.
            self.head[level] = NIL;
            self.bitmap[level / 64] &= !(1 << (level % 64));
        } else {
            let prev = self.prev[id];
            self.next[usize::from(prev)] = next;
            self.prev[usize::from(next)] = prev;
            if usize::from(self.head[level]) == id {
                self.head[level] = next;
            }
        }
        self.next[id] = NIL;
        self.prev[id] = NIL;
    }

    /// The highest non-empty level strictly below `limit` (`limit <=
    /// PRIO_LEVELS`).
    fn highest_level_below(&self, limit: usize) -> Option<usize> {
        if limit == 0 {
            return None;
        }
        let last = limit - 1;
        let mut word = last / 64;
        // Bits 0..=last%64 of the first word looked at.
        let mut mask = u64::MAX >> (63 - last % 64);
        loop {
            let bits = self.bitmap[word] & mask;
            if bits != 0 {
                return Some(word * 64 + 63 - bits.leading_zeros() as usize);
            }
            if word == 0 {
                return None;
            }
            word -= 1;
            mask = u64::MAX;
        }
    }
}

impl<const N: usize> Default for PrioList<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for PrioList<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a, const N: usize> IntoIterator for &'a PrioList<N> {
    type Item = (usize, Prio);
    type IntoIter = Iter<'a, N>;
    fn into_iter(self) -> Iter<'a, N> {
        self.iter()
    }
}

/// Iterator over a [`PrioList`], first to last: `(id, prio)`.
pub struct Iter<'a, const N: usize> {
    list: &'a PrioList<N>,
    /// The level `cur` is queued at.
    level: usize,
    /// The next id to yield, or `NIL` at the end.
    cur: u16,
}

impl<const N: usize> Iterator for Iter<'_, N> {
    type Item = (usize, Prio);

    fn next(&mut self) -> Option<(usize, Prio)> {
        if self.cur == NIL {
            return None;
        }
        let id = usize::from(self.cur);
        let item = (id, self.level as Prio);
        let next = self.list.next[id];
        if next == self.list.head[self.level] {
            // Wrapped around this bucket: go down to the next non-empty one.
            match self.list.highest_level_below(self.level) {
                Some(level) => {
                    self.level = level;
                    self.cur = self.list.head[level];
                }
                None => self.cur = NIL,
            }
        } else {
            self.cur = next;
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::test_rng::XorShift;

    /// The list's contents, in order, into a fixed buffer.
    fn contents<const N: usize>(list: &PrioList<N>) -> ([(usize, Prio); N], usize) {
        let mut buf = [(0, 0); N];
        let mut len = 0;
        for item in list {
            assert!(len < N, "iteration yields more than the capacity: a cycle");
            buf[len] = item;
            len += 1;
        }
        (buf, len)
    }

    fn assert_order<const N: usize>(list: &PrioList<N>, expected: &[(usize, Prio)]) {
        check_invariants(list);
        let (buf, len) = contents(list);
        assert_eq!(&buf[..len], expected);
        assert_eq!(list.len(), expected.len());
        assert_eq!(list.top(), expected.first().copied());
    }

    /// I1..I4 of the module documentation, plus the ordering of `iter`.
    fn check_invariants<const N: usize>(list: &PrioList<N>) {
        let mut seen = 0;
        for level in 0..PRIO_LEVELS {
            let bit = list.bitmap[level / 64] & (1 << (level % 64)) != 0;
            assert_eq!(bit, list.head[level] != NIL, "I3 at level {level}");
            let head = list.head[level];
            if head == NIL {
                continue;
            }
            let mut id = head;
            let mut steps = 0;
            loop {
                let i = usize::from(id);
                assert!(i < N);
                assert_eq!(usize::from(list.prio[i]), level, "I2: id {i}");
                assert_eq!(list.prev[usize::from(list.next[i])], id, "links of id {i}");
                seen += 1;
                steps += 1;
                assert!(steps <= N, "bucket {level} does not close");
                id = list.next[i];
                if id == head {
                    break;
                }
            }
        }
        let queued = (0..N).filter(|&i| list.next[i] != NIL).count();
        for i in 0..N {
            assert_eq!(list.next[i] == NIL, list.prev[i] == NIL, "I1: id {i}");
        }
        assert_eq!(seen, queued, "I2: every queued id is in exactly one bucket");
        assert_eq!(list.len(), queued, "I4");
        let (buf, len) = contents(list);
        assert_eq!(len, queued);
        for w in buf[..len].windows(2) {
            assert!(w[0].1 >= w[1].1, "iteration not by descending priority: {:?}", &buf[..len]);
        }
    }

    #[test]
    fn empty() {
        let list = PrioList::<4>::new();
        assert!(list.is_empty());
        assert_eq!(list.top(), None);
        assert_eq!(list.top_prio(), None);
        assert_eq!(list.iter().next(), None);
        assert_eq!(list.capacity(), 4);
        assert_order(&list, &[]);
    }

    #[test]
    fn priority_then_fifo() {
        let mut list = PrioList::<8>::new();
        list.insert(3, 10).unwrap();
        list.insert(1, 20).unwrap();
        list.insert(5, 10).unwrap();
        list.insert(0, 20).unwrap();
        list.insert(7, 5).unwrap();
        list.insert(2, 10).unwrap();
        assert_order(&list, &[(1, 20), (0, 20), (3, 10), (5, 10), (2, 10), (7, 5)]);
        assert_eq!(list.top_id(), Some(1));
        assert_eq!(list.prio_of(5), Some(10));
        assert_eq!(list.prio_of(4), None);
        assert!(list.contains(7) && !list.contains(6) && !list.contains(100));
    }

    #[test]
    fn remove_head_middle_tail_and_last() {
        let mut list = PrioList::<8>::new();
        for (id, prio) in [(0, 7), (1, 7), (2, 7), (3, 7), (4, 3)] {
            list.insert(id, prio).unwrap();
        }
        assert_eq!(list.remove(0), Ok(7)); // head of its bucket
        assert_order(&list, &[(1, 7), (2, 7), (3, 7), (4, 3)]);
        assert_eq!(list.remove(2), Ok(7)); // middle
        assert_order(&list, &[(1, 7), (3, 7), (4, 3)]);
        assert_eq!(list.remove(3), Ok(7)); // tail
        assert_order(&list, &[(1, 7), (4, 3)]);
        assert_eq!(list.remove(1), Ok(7)); // last at the level: the bit clears
        assert_order(&list, &[(4, 3)]);
        assert_eq!(list.pop(), Some((4, 3)));
        assert_order(&list, &[]);
        assert_eq!(list.pop(), None);
    }

    #[test]
    fn requeue_goes_to_the_back_of_the_new_class() {
        let mut list = PrioList::<8>::new();
        for (id, prio) in [(0, 5), (1, 9), (2, 9), (3, 5)] {
            list.insert(id, prio).unwrap();
        }
        // Boost 3 to 9: behind 1 and 2, which were at 9 first.
        list.requeue(3, 9).unwrap();
        assert_order(&list, &[(1, 9), (2, 9), (3, 9), (0, 5)]);
        // Deboost 1 to 5: behind 0.
        list.requeue(1, 5).unwrap();
        assert_order(&list, &[(2, 9), (3, 9), (0, 5), (1, 5)]);
        // Same priority: keeps its place.
        list.requeue(2, 9).unwrap();
        assert_order(&list, &[(2, 9), (3, 9), (0, 5), (1, 5)]);
        // Above everything.
        list.requeue(1, 200).unwrap();
        assert_order(&list, &[(1, 200), (2, 9), (3, 9), (0, 5)]);
    }

    #[test]
    fn errors_leave_the_list_unchanged() {
        let mut list = PrioList::<4>::new();
        list.insert(1, 1).unwrap();
        assert_eq!(list.insert(1, 2), Err(ListError::AlreadyQueued { id: 1 }));
        assert_eq!(list.insert(4, 2), Err(ListError::OutOfRange { id: 4, capacity: 4 }));
        assert_eq!(list.remove(2), Err(ListError::NotQueued { id: 2 }));
        assert_eq!(list.remove(9), Err(ListError::OutOfRange { id: 9, capacity: 4 }));
        assert_eq!(list.requeue(0, 3), Err(ListError::NotQueued { id: 0 }));
        assert_eq!(list.requeue(4, 3), Err(ListError::OutOfRange { id: 4, capacity: 4 }));
        assert_order(&list, &[(1, 1)]);
    }

    #[test]
    fn levels_across_bitmap_words() {
        let mut list = PrioList::<8>::new();
        let prios = [0, 63, 64, 127, 128, 191, 192, 255];
        for (id, &prio) in prios.iter().enumerate() {
            list.insert(id, prio).unwrap();
        }
        assert_order(&list, &[(7, 255), (6, 192), (5, 191), (4, 128), (3, 127), (2, 64), (1, 63), (0, 0)]);
        for id in (0..8).rev() {
            assert_eq!(list.pop(), Some((id, prios[id])));
        }
        assert!(list.is_empty());
    }

    #[test]
    fn clear_and_reuse() {
        let mut list = PrioList::<3>::new();
        list.insert(0, 1).unwrap();
        list.insert(2, 200).unwrap();
        list.clear();
        assert_order(&list, &[]);
        list.insert(2, 4).unwrap();
        assert_order(&list, &[(2, 4)]);
    }

    #[test]
    fn debug_prints_in_order() {
        let mut list = PrioList::<3>::new();
        list.insert(0, 1).unwrap();
        list.insert(2, 9).unwrap();
        // The tests run on the host, with std.
        assert_eq!(format!("{list:?}"), "[(2, 9), (0, 1)]");
    }

    /// Random operations against a reference: each queued id carries the
    /// sequence number of its last (re)queue at a new priority; the expected
    /// order is by priority descending, then sequence ascending.
    #[test]
    fn random_operations_match_a_reference() {
        const N: usize = 12;
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for round in 0..200 {
            let mut list = PrioList::<N>::new();
            let mut reference: [Option<(Prio, u64)>; N] = [None; N];
            let mut seq = 0u64;
            // Few distinct priorities, so FIFO ties are common.
            let levels: [Prio; 4] = [0, 1 + (round % 3) as Prio, 64, 255];
            for _ in 0..300 {
                let id = rng.below(N);
                let prio = levels[rng.below(levels.len())];
                seq += 1;
                match rng.below(4) {
                    0 | 1 => {
                        let r = list.insert(id, prio);
                        if reference[id].is_some() {
                            assert_eq!(r, Err(ListError::AlreadyQueued { id }));
                        } else {
                            assert_eq!(r, Ok(()));
                            reference[id] = Some((prio, seq));
                        }
                    }
                    2 => {
                        let r = list.remove(id);
                        match reference[id].take() {
                            Some((p, _)) => assert_eq!(r, Ok(p)),
                            None => assert_eq!(r, Err(ListError::NotQueued { id })),
                        }
                    }
                    _ => {
                        let r = list.requeue(id, prio);
                        match &mut reference[id] {
                            Some(entry) => {
                                assert_eq!(r, Ok(()));
                                if entry.0 != prio {
                                    *entry = (prio, seq);
                                }
                            }
                            None => assert_eq!(r, Err(ListError::NotQueued { id })),
                        }
                    }
                }
                check_invariants(&list);
                // Expected order: selection by (prio desc, seq asc).
                let mut expected = [(0usize, 0 as Prio); N];
                let mut len = 0;
                let mut taken = [false; N];
                loop {
                    let mut best: Option<(usize, Prio, u64)> = None;
                    for (i, entry) in reference.iter().enumerate() {
                        let Some((p, s)) = *entry else { continue };
                        if !taken[i] && best.is_none_or(|(_, bp, bs)| p > bp || (p == bp && s < bs)) {
                            best = Some((i, p, s));
                        }
                    }
                    let Some((i, p, _)) = best else { break };
                    taken[i] = true;
                    expected[len] = (i, p);
                    len += 1;
                }
                assert_order(&list, &expected[..len]);
            }
        }
    }
}
