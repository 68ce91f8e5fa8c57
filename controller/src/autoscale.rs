//! Ray's default autoscaling policy (spec/ray-serve.md section 2.3) as plain data: load samples
//! in, a target replica count out. The controller feeds it the total of ongoing requests at
//! replicas and requests queued in the proxy's router, every control loop.

use std::collections::VecDeque;
use std::time::Duration;

use photon_config::AutoscalingConfig;
use tokio::time::Instant;

/// One deployment's autoscaling state.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    /// The replica count the deployment aims for now.
    pub target: u32,
    samples: VecDeque<(Instant, f64)>,
    upscale_since: Option<Instant>,
    downscale_since: Option<Instant>,
}

impl Autoscaler {
    /// Starts at `initial_replicas` (or `min_replicas`).
    pub fn new(config: &AutoscalingConfig) -> Self {
        Autoscaler {
            target: config.initial_replicas.unwrap_or(config.min_replicas),
            samples: VecDeque::new(),
            upscale_since: None,
            downscale_since: None,
        }
    }

    /// Records the total of ongoing and queued requests at `now`.
    pub fn record(&mut self, now: Instant, total_requests: f64, config: &AutoscalingConfig) {
        self.samples.push_back((now, total_requests));
        let window = Duration::from_secs_f64(config.look_back_period_s);
        while self.samples.len() > 1 && now.duration_since(self.samples[0].0) > window {
            self.samples.pop_front();
        }
    }

    /// The load over the look-back window, reduced by `aggregation_function` (time-weighted for
    /// `mean`).
    fn load(&self, now: Instant, config: &AutoscalingConfig) -> f64 {
        if self.samples.is_empty() {
            return 0.0;
        }
        match config.aggregation_function.as_str() {
            "max" => self.samples.iter().map(|s| s.1).fold(0.0, f64::max),
            "min" => self.samples.iter().map(|s| s.1).fold(f64::INFINITY, f64::min),
            _ => {
                // Each sample holds until the next one (a step function).
                let (mut weighted, mut total) = (0.0, 0.0);
                for (i, (t, v)) in self.samples.iter().enumerate() {
                    let end = self.samples.get(i + 1).map_or(now, |s| s.0);
                    let dt = end.duration_since(*t).as_secs_f64();
                    weighted += v * dt;
                    total += dt;
                }
                if total > 0.0 {
                    weighted / total
                } else {
                    self.samples.back().map_or(0.0, |s| s.1)
                }
            }
        }
    }

    /// Runs the policy with `running` replicas and the newest load; returns the new target.
    pub fn decide(&mut self, now: Instant, running: u32, config: &AutoscalingConfig) -> u32 {
        let t = self.target;
        let n = self.load(now, config);
        let newest = self.samples.back().map_or(0.0, |s| s.1);
        let up_factor = config.upscaling_factor.unwrap_or(config.smoothing_factor);
        let down_factor = config.downscaling_factor.unwrap_or(config.smoothing_factor);
        let (lower, upper) = (config.min_replicas, config.max_replicas);
        // Cold start: requests are waiting and nothing runs.
        if running == 0 && newest > 0.0 {
            self.target = ((1.0 * up_factor).ceil() as u32).max(t).max(1).min(upper.max(1));
            self.upscale_since = None;
            self.downscale_since = None;
            return self.target;
        }
        let proposed = if running == 0 {
            t
        } else {
            let desired = n / config.target_ongoing_requests;
            let r = f64::from(running);
            let factor = if desired > r { up_factor } else { down_factor };
            let mut new = (r + factor * (desired - r)).ceil() as u32;
            if desired < r && new == running {
                new = running.saturating_sub(1);
            }
            new
        };
        if proposed > t {
            self.downscale_since = None;
            let since = *self.upscale_since.get_or_insert(now);
            if now.duration_since(since) >= Duration::from_secs_f64(config.upscale_delay_s) {
                self.target = proposed;
                self.upscale_since = None;
            }
        } else if proposed < t {
            self.upscale_since = None;
            let (candidate, delay) = if t == 1 {
                (0, config.downscale_to_zero_delay_s.unwrap_or(config.downscale_delay_s))
            } else {
                (proposed.max(1), config.downscale_delay_s)
            };
            let since = *self.downscale_since.get_or_insert(now);
            if now.duration_since(since) >= Duration::from_secs_f64(delay) {
                self.target = candidate;
                self.downscale_since = None;
            }
        } else {
            self.upscale_since = None;
            self.downscale_since = None;
        }
        self.target = self.target.clamp(lower, upper);
        self.target
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests make their own instants
mod tests {
    use super::*;

    fn config() -> AutoscalingConfig {
        AutoscalingConfig {
            min_replicas: 1,
            initial_replicas: None,
            max_replicas: 8,
            target_ongoing_requests: 2.0,
            metrics_interval_s: 0.1,
            look_back_period_s: 1.0,
            smoothing_factor: 1.0,
            upscaling_factor: None,
            downscaling_factor: None,
            downscale_delay_s: 5.0,
            downscale_to_zero_delay_s: None,
            upscale_delay_s: 1.0,
            aggregation_function: "mean".into(),
            policy: None,
        }
    }

    #[test]
    fn scales_up_after_the_delay_and_down_after_its_own() {
        let c = config();
        let mut a = Autoscaler::new(&c);
        let mut now = Instant::now();
        for _ in 0..5 {
            a.record(now, 16.0, &c);
            assert_eq!(a.decide(now, 1, &c), 1, "no change before upscale_delay_s");
            now += Duration::from_millis(200);
        }
        a.record(now, 16.0, &c);
        assert_eq!(a.decide(now, 1, &c), 8);
        // Load gone: the mean over the 1 s window falls within a second; the decision to scale
        // down must then persist downscale_delay_s (5 s).
        let start = now;
        while now.duration_since(start) < Duration::from_secs(6) {
            now += Duration::from_millis(500);
            a.record(now, 0.0, &c);
            a.decide(now, 8, &c);
        }
        now += Duration::from_millis(500);
        a.record(now, 0.0, &c);
        assert_eq!(a.decide(now, 8, &c), 1);
    }

    #[test]
    fn cold_start_scales_from_zero_at_once() {
        let mut c = config();
        c.min_replicas = 0;
        let mut a = Autoscaler::new(&c);
        assert_eq!(a.target, 0);
        let now = Instant::now();
        a.record(now, 1.0, &c);
        assert_eq!(a.decide(now, 0, &c), 1);
    }

    #[test]
    fn never_leaves_the_bounds() {
        let c = config();
        let mut a = Autoscaler::new(&c);
        let mut now = Instant::now();
        for _ in 0..20 {
            a.record(now, 1000.0, &c);
            a.decide(now, 8, &c);
            now += Duration::from_millis(200);
        }
        assert_eq!(a.target, 8);
    }
}
