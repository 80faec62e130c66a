//! How many consumers a pipeline should run: a pure function of the queue depth, the spec and the
//! recent past, so that it can be tested alone.
//!
//! - The recommendation follows KEDA's queueLength semantics: ceil(depth / targetQueueDepthPerReplica),
//!   clamped to [minReplicas, maxReplicas]; at or below activationQueueDepth, minReplicas (which may be
//!   0: scale to zero).
//! - Like the HPA, scaling up happens at once, and scaling down takes the highest recommendation seen
//!   within the stabilization window, so a brief dip, or input that flaps, does not remove consumers.

use std::{collections::VecDeque, time::Duration};

use crate::crd::ConsumerSpec;

/// The part of the spec that drives scaling, checked and in native types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub min: i32,
    pub max: i32,
    pub target_per_replica: i64,
    pub activation: i64,
    pub stabilization: Duration,
}

impl Policy {
    /// `None` when the spec fixes the replica count. Values that slipped past the API server's
    /// validation are put in range rather than trusted: min ≤ max, target ≥ 1.
    pub fn from_spec(spec: &ConsumerSpec) -> Option<Self> {
        if spec.replicas.is_some() {
            return None;
        }
        let max = spec.max_replicas.max(1);
        Some(Self {
            min: spec.min_replicas.clamp(0, max),
            max,
            target_per_replica: spec.target_queue_depth_per_replica.max(1),
            activation: spec.activation_queue_depth.max(0),
            stabilization: Duration::from_secs(u64::try_from(spec.scale_down_stabilization_seconds).unwrap_or(0)),
        })
    }

    /// What the depth alone asks for.
    pub fn recommend(&self, depth: i64) -> i32 {
        if depth <= self.activation {
            return self.min;
        }
        // Both are positive here: depth > activation >= 0 and target >= 1.
        let wanted = depth.unsigned_abs().div_ceil(self.target_per_replica.unsigned_abs());
        let wanted = i32::try_from(wanted).unwrap_or(i32::MAX);
        wanted.clamp(self.min.max(1), self.max)
    }
}

/// The recommendations of the last stabilization window, oldest first, with the time each was made.
/// `T` is the clock's instant type, so tests can use plain numbers of seconds.
#[derive(Debug, Clone)]
pub struct Stabilizer<T> {
    history: VecDeque<(T, i32)>,
}

impl<T> Default for Stabilizer<T> {
    fn default() -> Self {
        Self { history: VecDeque::new() }
    }
}

impl<T: Copy + PartialOrd + std::ops::Sub<Output = Duration>> Stabilizer<T> {
    /// The replica count to run now, given the current one and the queue depth observed at `now`.
    pub fn decide(&mut self, policy: &Policy, current: i32, depth: i64, now: T) -> i32 {
        let recommendation = policy.recommend(depth);
        while self.history.front().is_some_and(|(at, _)| now - *at > policy.stabilization) {
            self.history.pop_front();
        }
        self.history.push_back((now, recommendation));
        if recommendation >= current {
            return recommendation;
        }
        // Down only as far as the highest recommendation still inside the window allows.
        let highest = self.history.iter().map(|(_, r)| *r).max().unwrap_or(recommendation);
        highest.min(current).clamp(policy.min, policy.max)
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Sub;

    use super::*;

    /// Seconds since an arbitrary start.
    #[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
    struct At(u64);

    impl Sub for At {
        type Output = Duration;
        fn sub(self, earlier: At) -> Duration {
            Duration::from_secs(self.0.saturating_sub(earlier.0))
        }
    }

    fn policy(min: i32, max: i32, target: i64, activation: i64, window: u64) -> Policy {
        Policy { min, max, target_per_replica: target, activation, stabilization: Duration::from_secs(window) }
    }

    #[test]
    fn the_recommendation_is_the_depth_over_the_target_rounded_up_and_clamped() {
        let p = policy(1, 10, 100, 0, 300);
        assert_eq!(p.recommend(1), 1);
        assert_eq!(p.recommend(100), 1);
        assert_eq!(p.recommend(101), 2);
        assert_eq!(p.recommend(950), 10);
        assert_eq!(p.recommend(1_000_000), 10, "clamped to max");
        assert_eq!(policy(3, 10, 100, 0, 300).recommend(50), 3, "clamped to min");
    }

    #[test]
    fn below_the_activation_threshold_the_minimum_runs_even_zero() {
        let p = policy(0, 10, 100, 50, 300);
        assert_eq!(p.recommend(0), 0);
        assert_eq!(p.recommend(50), 0);
        assert_eq!(p.recommend(51), 1, "above activation at least one consumer runs");
        assert_eq!(p.recommend(250), 3);
    }

    #[test]
    fn scaling_up_is_immediate() {
        let p = policy(1, 10, 100, 0, 300);
        let mut s = Stabilizer::default();
        assert_eq!(s.decide(&p, 1, 50, At(0)), 1);
        assert_eq!(s.decide(&p, 1, 700, At(1)), 7);
    }

    #[test]
    fn scaling_down_waits_for_the_stabilization_window() {
        let p = policy(1, 10, 100, 0, 300);
        let mut s = Stabilizer::default();
        assert_eq!(s.decide(&p, 1, 800, At(0)), 8);
        assert_eq!(s.decide(&p, 8, 100, At(60)), 8, "the high recommendation is still in the window");
        assert_eq!(s.decide(&p, 8, 100, At(299)), 8);
        assert_eq!(s.decide(&p, 8, 100, At(301)), 1, "the window has passed");
    }

    #[test]
    fn flapping_depth_keeps_the_highest_recent_count() {
        let p = policy(1, 10, 100, 0, 120);
        let mut s = Stabilizer::default();
        let mut replicas = 1;
        for (i, depth) in [600, 50, 600, 20, 590, 10, 600, 0].into_iter().enumerate() {
            replicas = s.decide(&p, replicas, depth, At(i as u64 * 10));
            assert_eq!(replicas, 6, "step {i}: depth {depth}");
        }
        // Once it stays low for the whole window, it comes down.
        replicas = s.decide(&p, replicas, 0, At(300));
        assert_eq!(replicas, 1);
    }

    #[test]
    fn a_fixed_replica_count_turns_autoscaling_off_and_bad_specs_are_put_in_range() {
        let fixed = ConsumerSpec { replicas: Some(3), ..ConsumerSpec::default() };
        assert_eq!(Policy::from_spec(&fixed), None);
        let inverted = ConsumerSpec {
            min_replicas: 9,
            max_replicas: 4,
            target_queue_depth_per_replica: 0,
            ..ConsumerSpec::default()
        };
        let policy = Policy::from_spec(&inverted).unwrap();
        assert_eq!((policy.min, policy.max, policy.target_per_replica), (4, 4, 1));
    }
}
