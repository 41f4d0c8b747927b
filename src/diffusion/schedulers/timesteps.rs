//! Inference timesteps for each `timestep_spacing`, with the exact numpy recipes of diffusers.
use super::config::TimestepSpacing;
use super::numpy;
use crate::error::Result;
use crate::input_bail;

/// Check a requested step count against the training schedule.
pub fn check_steps(num_inference_steps: usize, num_train_timesteps: usize) -> Result<()> {
    if num_inference_steps == 0 {
        input_bail!("the number of inference steps must be at least 1");
    }
    if num_inference_steps > num_train_timesteps {
        input_bail!(
            "{num_inference_steps} inference steps exceed the {num_train_timesteps} training timesteps of the scheduler; \
             use at most {num_train_timesteps}"
        );
    }
    Ok(())
}

/// Descending timesteps of DDIM, PNDM (reversed there), Euler and Euler ancestral. `linspace` is rounded
/// to integers except for the Euler family (`round_linspace = false`), which keeps fractional values.
pub fn spaced(
    n: usize,
    num_train_timesteps: usize,
    spacing: TimestepSpacing,
    steps_offset: usize,
    round_linspace: bool,
) -> Vec<f64> {
    let train = num_train_timesteps as f64;
    match spacing {
        TimestepSpacing::Linspace => numpy::linspace(0.0, train - 1.0, n)
            .into_iter()
            .rev()
            .map(|t| if round_linspace { numpy::round(t) } else { t })
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = num_train_timesteps / n;
            (0..n)
                .rev()
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => numpy::arange(train, 0.0, -(train / n as f64))
            .into_iter()
            .map(|t| numpy::round(t) - 1.0)
            .collect(),
    }
}

/// DPM-Solver's timesteps: `n + 1` points of which the last is dropped, below `last_timestep` (the
/// `lambda_min_clipped` cut), always integers.
pub fn dpm_solver(
    n: usize,
    num_train_timesteps: usize,
    last_timestep: usize,
    spacing: TimestepSpacing,
    steps_offset: usize,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => {
            let mut points: Vec<f64> = numpy::linspace(0.0, last_timestep as f64 - 1.0, n + 1)
                .into_iter()
                .map(numpy::round)
                .rev()
                .collect();
            points.pop();
            points
        }
        TimestepSpacing::Leading => {
            let ratio = last_timestep / (n + 1);
            (1..=n)
                .rev()
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train_timesteps as f64 / n as f64;
            numpy::arange(last_timestep as f64, 0.0, -ratio)
                .into_iter()
                .map(|t| numpy::round(t) - 1.0)
                .collect()
        }
    }
}

/// Position of `timestep` in a schedule as diffusers' `index_for_timestep` finds it: the second match
/// when the value repeats (so a schedule that starts mid-way does not skip a sigma), `None` when absent.
pub fn index_of(timesteps: &[f64], timestep: f64) -> Option<usize> {
    let mut matches = timesteps
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == timestep)
        .map(|(i, _)| i);
    let first = matches.next()?;
    Some(matches.next().unwrap_or(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd1_leading_with_offset() {
        let t = spaced(10, 1000, TimestepSpacing::Leading, 1, true);
        assert_eq!(t[0], 901.0);
        assert_eq!(t[9], 1.0);
    }

    #[test]
    fn trailing_starts_at_last_train_step() {
        let t = spaced(10, 1000, TimestepSpacing::Trailing, 1, true);
        assert_eq!(t[0], 999.0);
        assert_eq!(t[9], 99.0);
    }

    #[test]
    fn dpm_leading_drops_zero() {
        let t = dpm_solver(10, 1000, 1000, TimestepSpacing::Leading, 1);
        assert_eq!(t.len(), 10);
        assert_eq!(t[0], 901.0);
        assert_eq!(t[9], 91.0);
    }
}
