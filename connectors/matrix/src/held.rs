//! Encrypted events whose room key has not arrived yet: held a bounded time and number, tried
//! again after every sync (keys often come a moment after the message, in a later sync's
//! to-device events), and dropped, counted, once they are too old or when too many wait.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// At most this many events are held at once.
pub const MAX_HELD: usize = 1000;

/// The held items, oldest first.
pub struct Held<T> {
    items: VecDeque<(Instant, T)>,
    hold: Duration,
    max: usize,
}

/// What a round of retries left over.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expired {
    /// Items given up on: held longer than the hold time.
    pub too_old: usize,
}

impl<T> Held<T> {
    /// Holding items for `hold`, [`MAX_HELD`] at most.
    pub fn new(hold: Duration) -> Self {
        Self::with_max(hold, MAX_HELD)
    }

    /// Holding at most `max` items.
    pub fn with_max(hold: Duration, max: usize) -> Self {
        Self {
            items: VecDeque::new(),
            hold,
            max,
        }
    }

    /// Holds `item` seen at `now`; `Err(item)` when the hold time is zero or `max` are held.
    pub fn hold(&mut self, now: Instant, item: T) -> Result<(), T> {
        if self.hold.is_zero() || self.items.len() >= self.max {
            return Err(item);
        }
        self.items.push_back((now, item));
        Ok(())
    }

    /// Every held item, to try again; what still fails goes back with [`Self::put_back`].
    pub fn take_all(&mut self) -> Vec<(Instant, T)> {
        self.items.drain(..).collect()
    }

    /// Puts back the items that still failed, keeping their first-seen time, except those held
    /// longer than the hold time at `now`, which are given up on (and counted).
    pub fn put_back(&mut self, now: Instant, failed: Vec<(Instant, T)>) -> Expired {
        let mut expired = Expired::default();
        for (seen, item) in failed {
            if now.saturating_duration_since(seen) >= self.hold {
                expired.too_old += 1;
            } else {
                self.items.push_back((seen, item));
            }
        }
        expired
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_held_until_its_key_comes_or_its_time_runs_out() {
        let start = Instant::now();
        let mut held = Held::with_max(Duration::from_secs(600), 3);
        for id in ["$a", "$b", "$c"] {
            assert!(held.hold(start, id).is_ok());
        }
        assert_eq!(held.hold(start, "$d"), Err("$d"), "no more than max");
        // A minute later, the key of $b came: it is taken out; the others still fail.
        let round = held.take_all();
        assert_eq!(round.len(), 3);
        let still: Vec<_> = round.into_iter().filter(|(_, id)| *id != "$b").collect();
        let later = start + Duration::from_secs(60);
        assert_eq!(held.put_back(later, still), Expired::default());
        assert_eq!(held.len(), 2);
        // Ten minutes after they were seen, the rest is given up on.
        let round = held.take_all();
        let end = start + Duration::from_secs(600);
        assert_eq!(held.put_back(end, round), Expired { too_old: 2 });
        assert!(held.is_empty());
        // A hold time of zero holds nothing.
        let mut none = Held::new(Duration::ZERO);
        assert_eq!(none.hold(start, 1), Err(1));
    }
}
