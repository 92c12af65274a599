//! A streaming baseline that needs no training beyond a warm-up: an exponentially weighted mean and
//! mean absolute deviation (a robust stand-in for the standard deviation: one outlier moves it far
//! less than it moves a variance). Scores are robust z-scores, `(x − mean) / (1.4826 · MAD)`, with a
//! floor so that a perfectly flat history does not turn the first wobble into an anomaly.

#[derive(Debug, Clone)]
pub struct Baseline {
    alpha: f64,
    mean: f64,
    deviation: f64,
    samples: u64,
}

impl Baseline {
    /// `half_life` in samples: after that many samples an old value weighs half as much.
    pub fn new(half_life: f64) -> Self {
        Self {
            alpha: 1.0 - 0.5f64.powf(1.0 / half_life.max(1.0)),
            mean: 0.0,
            deviation: 0.0,
            samples: 0,
        }
    }

    pub fn update(&mut self, value: f64) {
        if self.samples == 0 {
            self.mean = value;
        } else {
            let error = value - self.mean;
            self.mean += self.alpha * error;
            self.deviation += self.alpha * (error.abs() - self.deviation);
        }
        self.samples += 1;
    }

    pub fn mean(&self) -> f64 {
        self.mean
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// How unusual `value` is, with `floor` as the smallest spread assumed (e.g. √mean for counts,
    /// whose Poisson noise is that large even when the history happens to be flat).
    pub fn score(&self, value: f64, floor: f64) -> f64 {
        let spread = (1.4826 * self.deviation).max(floor).max(f64::EPSILON);
        (value - self.mean) / spread
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_series_scores_low_and_a_jump_scores_high() {
        let mut baseline = Baseline::new(60.0);
        for i in 0..600 {
            baseline.update(100.0 + f64::from(i % 7) - 3.0);
        }
        assert!((baseline.mean() - 100.0).abs() < 2.0);
        assert!(baseline.score(104.0, 10.0).abs() < 1.0);
        assert!(baseline.score(1000.0, 10.0) > 50.0);
    }

    #[test]
    fn one_outlier_barely_moves_the_spread() {
        let mut baseline = Baseline::new(60.0);
        for _ in 0..600 {
            baseline.update(50.0);
        }
        baseline.update(5000.0);
        assert!(baseline.score(60.0, 1.0) < 1.0, "{}", baseline.score(60.0, 1.0));
    }
}
