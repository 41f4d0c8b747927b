//! The few numpy routines diffusers builds timestep and sigma schedules with, reproduced to the bit
//! (same formulas, same f64/f32 roundings), so schedules match diffusers exactly.

/// `np.linspace(start, stop, num)` (float64): `i * ((stop - start) / (num - 1)) + start`, last = `stop`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut values: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = values.last_mut() {
        *last = stop;
    }
    values
}

/// `np.arange(start, stop, step)` for float arguments: numpy fills `start + i * delta` with
/// `delta = (start + step) - start`, which may differ from `step` in the last bit.
pub fn arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    if len == 0 {
        return vec![];
    }
    let delta = (start + step) - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => start + step,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `np.round`: halves go to the even neighbour.
pub fn round(x: f64) -> f64 {
    x.round_ties_even()
}

/// `np.interp(x, arange(len(fp)), fp)`: piecewise-linear interpolation on the integer grid, computed in
/// f64 as numpy does (`slope * (x - xp[j]) + fp[j]`, exact at grid points, clamped at both ends).
pub fn interp_on_index_grid(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x.is_nan() {
        return x;
    }
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let j = x.floor() as usize;
    if x == j as f64 {
        return fp[j] as f64;
    }
    let slope = (fp[j + 1] as f64 - fp[j] as f64) / 1.0;
    slope * (x - j as f64) + fp[j] as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arange_has_numpy_length() {
        assert_eq!(arange(1000.0, 0.0, -1000.0 / 3.0).len(), 3);
        assert_eq!(arange(1000.0, 0.0, -100.0).len(), 10);
    }

    #[test]
    fn round_is_half_even() {
        assert_eq!(round(0.5), 0.0);
        assert_eq!(round(1.5), 2.0);
        assert_eq!(round(2.5), 2.0);
    }

    #[test]
    fn interp_is_exact_on_grid() {
        let fp = [1.0f32, 3.0, 7.0];
        assert_eq!(interp_on_index_grid(1.0, &fp), 3.0);
        assert_eq!(interp_on_index_grid(0.5, &fp), 2.0);
        assert_eq!(interp_on_index_grid(5.0, &fp), 7.0);
    }
}
