//! Counts over a sliding window, in a fixed number of slots of equal width held inline: a tracked
//! client costs the same few hundred bytes whatever it sends, no timestamp or path is kept, and
//! forgetting a client frees everything it cost. The window moves one slot at a time: an event is
//! counted for at least the configured window and at most one slot longer (never shorter, so a slow
//! attacker cannot slip between slots).

/// Slots of a [`SlidingCount`].
pub const COUNT_SLOTS: usize = 16;
/// Slots of a [`DistinctCount`].
pub const DISTINCT_SLOTS: usize = 8;
/// Bits of one slot's sketch. Linear counting over this many bits estimates up to about a thousand
/// distinct values; config validation keeps the scanning threshold below that.
const SKETCH_BITS: u64 = 256;
/// The largest threshold a [`DistinctCount`] can judge.
pub const MAX_DISTINCT: u32 = 1000;

/// Slot geometry shared by both kinds: `width` seconds per slot, `covered` slots in the window.
#[derive(Debug, Clone, Copy)]
struct Slots {
    width: u32,
    covered: u32,
    /// The slot number (second / width) the newest slot belongs to.
    newest: u32,
}

impl Slots {
    fn new(window_seconds: usize, slots: usize) -> Self {
        let window = u32::try_from(window_seconds.max(1)).unwrap_or(u32::MAX);
        let slots = u32::try_from(slots).unwrap_or(u32::MAX);
        // One slot more than the window needs: the oldest is partly outside it, so the window is
        // never cut short by the current slot being only partly filled.
        let width = window.div_ceil(slots - 1);
        Self {
            width,
            covered: window.div_ceil(width) + 1,
            newest: 0,
        }
    }

    fn slot_of(&self, second: u64) -> u32 {
        u32::try_from(second / u64::from(self.width)).unwrap_or(u32::MAX)
    }

    /// Moves the window to `second`; returns the slots (indices into a ring of `len`) that fell out
    /// and must be cleared, or `None` when the window did not move.
    fn advance(&mut self, second: u64, len: usize) -> Option<std::ops::RangeInclusive<u32>> {
        let slot = self.slot_of(second);
        if slot <= self.newest {
            return None;
        }
        let steps = (slot - self.newest).min(len as u32);
        self.newest = slot;
        Some(slot - (steps - 1)..=slot)
    }

    /// Whether ring slot `number` is inside the window ending at the newest slot.
    fn counts(&self, number: u32) -> bool {
        self.newest - number < self.covered
    }
}

/// Events in a sliding window: sixteen 16-bit slots. A slot saturates at 65,535, which is above any
/// threshold the config accepts, so saturation never hides an alert.
#[derive(Debug, Clone, Copy)]
pub struct SlidingCount {
    slots: [u16; COUNT_SLOTS],
    geometry: Slots,
}

impl SlidingCount {
    pub fn new(window_seconds: usize) -> Self {
        Self {
            slots: [0; COUNT_SLOTS],
            geometry: Slots::new(window_seconds, COUNT_SLOTS),
        }
    }

    fn advance(&mut self, second: u64) {
        if let Some(cleared) = self.geometry.advance(second, COUNT_SLOTS) {
            for number in cleared {
                self.slots[number as usize % COUNT_SLOTS] = 0;
            }
        }
    }

    pub fn add(&mut self, second: u64, amount: u32) {
        self.advance(second);
        let number = self.geometry.slot_of(second);
        if !self.geometry.counts(number) {
            return;
        }
        let slot = &mut self.slots[number as usize % COUNT_SLOTS];
        *slot = slot.saturating_add(u16::try_from(amount).unwrap_or(u16::MAX));
    }

    /// The total over the window ending at `second`.
    pub fn total(&mut self, second: u64) -> u32 {
        self.advance(second);
        let newest = self.geometry.newest;
        (0..self.geometry.covered.min(COUNT_SLOTS as u32))
            .filter_map(|back| newest.checked_sub(back))
            .map(|number| u32::from(self.slots[number as usize % COUNT_SLOTS]))
            .sum()
    }
}

/// Distinct values (hashes) in a sliding window: one 256-bit linear-counting sketch per slot, the
/// window's estimate read from their union. Hashes must be keyed per process (see
/// [`crate::hash_path`]) so a client cannot pick values that share a bit.
#[derive(Debug, Clone, Copy)]
pub struct DistinctCount {
    slots: [[u64; (SKETCH_BITS / 64) as usize]; DISTINCT_SLOTS],
    geometry: Slots,
}

impl DistinctCount {
    pub fn new(window_seconds: usize) -> Self {
        Self {
            slots: [[0; (SKETCH_BITS / 64) as usize]; DISTINCT_SLOTS],
            geometry: Slots::new(window_seconds, DISTINCT_SLOTS),
        }
    }

    fn advance(&mut self, second: u64) {
        if let Some(cleared) = self.geometry.advance(second, DISTINCT_SLOTS) {
            for number in cleared {
                self.slots[number as usize % DISTINCT_SLOTS] = [0; (SKETCH_BITS / 64) as usize];
            }
        }
    }

    pub fn add(&mut self, second: u64, hash: u64) {
        self.advance(second);
        let number = self.geometry.slot_of(second);
        if !self.geometry.counts(number) {
            return;
        }
        let bit = hash % SKETCH_BITS;
        self.slots[number as usize % DISTINCT_SLOTS][(bit / 64) as usize] |= 1 << (bit % 64);
    }

    /// The estimated number of distinct values in the window ending at `second` (saturating a little
    /// above [`MAX_DISTINCT`]).
    pub fn estimate(&mut self, second: u64) -> u32 {
        self.advance(second);
        let newest = self.geometry.newest;
        let mut union = [0u64; (SKETCH_BITS / 64) as usize];
        for number in (0..self.geometry.covered.min(DISTINCT_SLOTS as u32)).filter_map(|back| newest.checked_sub(back))
        {
            for (word, slot) in union.iter_mut().zip(&self.slots[number as usize % DISTINCT_SLOTS]) {
                *word |= slot;
            }
        }
        let set: u32 = union.iter().map(|word| word.count_ones()).sum();
        let empty = SKETCH_BITS as f64 - f64::from(set);
        if empty < 1.0 {
            // Every bit set: more than the sketch can tell apart, and more than any threshold.
            return MAX_DISTINCT + 1;
        }
        let bits = SKETCH_BITS as f64;
        let estimate = (-bits * (empty / bits).ln()).round();
        // Bounded above by the value for one empty bit (about 1,420), so the cast cannot overflow.
        estimate as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_seconds_fall_out_of_the_window() {
        let mut window = SlidingCount::new(60);
        for second in 0..30 {
            window.add(1000 + second, 1);
        }
        assert_eq!(window.total(1029), 30);
        // Slots of 4 s, 16 of them: at 1075 the window holds seconds 1012..=1075.
        assert_eq!(window.total(1075), 18, "seconds 1012..=1029 remain");
        assert_eq!(window.total(2000), 0);
    }

    #[test]
    fn an_event_older_than_the_window_is_not_counted() {
        let mut window = SlidingCount::new(60);
        window.add(5000, 1);
        window.add(100, 7);
        assert_eq!(window.total(5000), 1);
    }

    #[test]
    fn a_saturated_slot_stays_above_every_accepted_threshold() {
        let mut window = SlidingCount::new(60);
        for _ in 0..70_000 {
            window.add(10, 1);
        }
        window.add(10, u32::MAX);
        assert_eq!(window.total(10), 65_535);
    }

    #[test]
    fn windows_of_any_length_cover_at_least_their_span() {
        for window_seconds in [1u64, 7, 15, 16, 17, 60, 61, 300, 3600] {
            for start in 1_000_000..1_000_000 + 300 {
                let mut window = SlidingCount::new(window_seconds as usize);
                let mut distinct = DistinctCount::new(window_seconds as usize);
                window.add(start, 1);
                distinct.add(start, 1);
                // Still counted at the window's last second, wherever in its slot it fell...
                let last = start + window_seconds - 1;
                assert_eq!(window.total(last), 1, "{window_seconds} from {start}");
                assert_eq!(distinct.estimate(last), 1, "{window_seconds} from {start}");
                // ...and gone once the window and two slots have passed.
                let count_slot = window_seconds.div_ceil(COUNT_SLOTS as u64 - 1);
                assert_eq!(window.total(start + window_seconds + 2 * count_slot), 0);
                let distinct_slot = window_seconds.div_ceil(DISTINCT_SLOTS as u64 - 1);
                assert_eq!(distinct.estimate(start + window_seconds + 2 * distinct_slot), 0);
            }
        }
    }

    /// SipHash with fixed keys: what the keyed hash gives the detector, but the same every run.
    fn spread(value: u64) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::hash::DefaultHasher::new();
        value.hash(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn distinct_counts_are_close_and_repeats_do_not_count() {
        for truth in [1u64, 10, 50, 200, 500] {
            let mut window = DistinctCount::new(60);
            for round in 0..3 {
                for value in 0..truth {
                    window.add(1000 + round, spread(value));
                }
            }
            let estimate = f64::from(window.estimate(1002));
            let error = (estimate - truth as f64).abs() / truth as f64;
            assert!(error < 0.2, "{truth} distinct estimated as {estimate}");
        }
    }

    #[test]
    fn distinct_values_leave_with_their_slot() {
        let mut window = DistinctCount::new(60);
        for value in 0..40 {
            window.add(1000, spread(value));
        }
        for value in 40..50 {
            window.add(1040, spread(value));
        }
        assert!(window.estimate(1040) >= 45);
        let later = window.estimate(1090);
        assert!((8..=12).contains(&later), "only the later ten remain: {later}");
        assert_eq!(window.estimate(5000), 0);
    }

    #[test]
    fn a_full_sketch_reads_above_every_threshold() {
        let mut window = DistinctCount::new(60);
        for value in 0..100_000 {
            window.add(7, spread(value));
        }
        assert!(window.estimate(7) > MAX_DISTINCT);
    }
}
