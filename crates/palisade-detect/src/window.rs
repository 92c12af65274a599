//! Counts over the last N seconds in N one-second slots: constant memory, no timestamps kept.

#[derive(Debug, Clone)]
pub struct SlidingCount {
    slots: Vec<u32>,
    /// The second the newest slot belongs to.
    newest: u64,
}

impl SlidingCount {
    pub fn new(seconds: usize) -> Self {
        Self {
            slots: vec![0; seconds.max(1)],
            newest: 0,
        }
    }

    fn advance(&mut self, second: u64) {
        if second <= self.newest {
            return;
        }
        let steps = (second - self.newest).min(self.slots.len() as u64);
        for step in 1..=steps {
            let index = ((self.newest + step) % self.slots.len() as u64) as usize;
            self.slots[index] = 0;
        }
        self.newest = second;
    }

    pub fn add(&mut self, second: u64, amount: u32) {
        self.advance(second);
        let index = (second % self.slots.len() as u64) as usize;
        self.slots[index] = self.slots[index].saturating_add(amount);
    }

    /// The total over the window ending at `second`.
    pub fn total(&mut self, second: u64) -> u32 {
        self.advance(second);
        self.slots.iter().sum()
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
        assert_eq!(window.total(1075), 14, "seconds 1016..=1029 remain");
        assert_eq!(window.total(2000), 0);
    }
}
