//! Where a training step spends its time: wall-clock laps per phase (tokenising and batching, teacher
//! forward, student forward and losses, backward, optimiser, logging), summed over steps.
//! `clipdoor bench train-step` reports them next to the same phases of the PyTorch loop, which is the
//! profile issue 16 asks for before any speed work.
//!
//! On CUDA a lap synchronises the device first, so each phase is charged its own kernels; that costs
//! a little, so laps are only taken when profiling is switched on ([`StepTimer::enabled`]). On CPU
//! kernels run synchronously and a lap is just a clock read.
use std::time::Instant;
use tch::Device;

/// A step's phases, in order.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    /// Drawing the prompts, poisoning them, tokenising.
    Batching,
    TeacherForward,
    StudentForwardAndLoss,
    Backward,
    /// The global gradient norm (clipping, the NaN guard, the logged `grad_norm`) and the read-back
    /// of the step's losses (on a GPU: the wait for the queued work).
    GradNorm,
    /// The AdamW update.
    Optimizer,
    /// TensorBoard scalars; the step ends here.
    Logging,
}

/// Phase names, in step order (the JSON keys of the profile).
pub const PHASES: [&str; 7] = [
    "batching",
    "teacher_forward",
    "student_forward_and_loss",
    "backward",
    "grad_norm",
    "optimizer",
    "logging",
];

pub struct StepTimer {
    device: Device,
    enabled: bool,
    totals: [f64; PHASES.len()],
    steps: u64,
    last: Instant,
}

impl StepTimer {
    pub fn new(device: Device, enabled: bool) -> Self {
        Self {
            device,
            enabled,
            totals: [0.0; PHASES.len()],
            steps: 0,
            last: Instant::now(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Switch profiling on or off; totals restart.
    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
        self.totals = [0.0; PHASES.len()];
        self.steps = 0;
    }

    /// A step begins.
    pub fn start(&mut self) {
        if self.enabled {
            self.sync();
            self.last = Instant::now();
        }
    }

    /// Charge the time since the previous lap to `phase`.
    pub fn lap(&mut self, phase: Phase) {
        let phase = phase as usize;
        if !self.enabled {
            return;
        }
        self.sync();
        let now = Instant::now();
        self.totals[phase] += (now - self.last).as_secs_f64();
        self.last = now;
        if phase == PHASES.len() - 1 {
            self.steps += 1;
        }
    }

    fn sync(&self) {
        if let Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
    }

    /// Mean seconds per completed step for each phase.
    pub fn per_step(&self) -> serde_json::Map<String, serde_json::Value> {
        let n = self.steps.max(1) as f64;
        PHASES
            .iter()
            .zip(self.totals)
            .map(|(name, t)| (name.to_string(), serde_json::json!(t / n)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_add_up_per_phase_and_per_step() {
        let mut t = StepTimer::new(Device::Cpu, true);
        for _ in 0..2 {
            t.start();
            std::thread::sleep(std::time::Duration::from_millis(20));
            t.lap(Phase::TeacherForward);
            for p in [
                Phase::Batching,
                Phase::StudentForwardAndLoss,
                Phase::Backward,
                Phase::GradNorm,
                Phase::Optimizer,
                Phase::Logging,
            ] {
                t.lap(p);
            }
        }
        let p = t.per_step();
        let teacher = p["teacher_forward"].as_f64().unwrap();
        assert!((0.019..0.2).contains(&teacher), "{teacher}");
        assert!(p["backward"].as_f64().unwrap() < 0.01);
        let mut off = StepTimer::new(Device::Cpu, false);
        off.start();
        off.lap(Phase::TeacherForward);
        off.lap(Phase::Logging);
        assert_eq!(off.per_step()["teacher_forward"], 0.0);
    }
}
