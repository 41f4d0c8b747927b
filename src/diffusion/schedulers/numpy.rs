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

/// `np.log` of a float32 array on an x86-64 AVX2/FMA numpy build (numpy's `simd_log_FLOAT`): the mantissa
/// in `(sqrt(1/2), sqrt(2)]`, a 5th/5th-order rational approximation of `log(1 + y)` evaluated with fused
/// multiply-adds, plus `exponent * ln 2`. Up to ~4 ulp from the true log, which is why `f32::ln` does not
/// reproduce diffusers' Karras timesteps. Inputs that are not positive normal floats (not met in sigma
/// schedules) take `f32::ln`.
// The coefficients are numpy's decimal literals, verbatim, so they can be checked against its source.
#[allow(clippy::excessive_precision)]
pub fn log_f32(x: f32) -> f32 {
    if !(x.is_normal() && x > 0.0) {
        return x.ln();
    }
    // Coefficients from numpy's npy_simd_data.h (NPY_COEFF_{P,Q}{0..5}_LOGf), highest degree first.
    const P: [f32; 6] = [
        2.589_979_117_907_922_693_523e-2,
        3.808_837_741_388_407_920_751e-1,
        1.480_000_633_576_506_585_156,
        2.112_677_543_073_053_063_722,
        9.999_999_999_999_998_702_752e-1,
        0.0,
    ];
    const Q: [f32; 6] = [
        5.875_095_403_124_574_342_950e-3,
        1.546_476_374_983_906_719_538e-1,
        9.864_942_958_519_418_960_339e-1,
        2.453_006_071_784_736_363_091,
        2.612_677_543_073_109_236_779,
        1.0,
    ];
    let bits = x.to_bits();
    let mut exponent = ((bits >> 23) as i32 - 126) as f32;
    let mut mantissa = f32::from_bits((bits & 0x007F_FFFF) | 0x3F00_0000);
    if mantissa <= std::f32::consts::FRAC_1_SQRT_2 {
        mantissa += mantissa;
        exponent -= 1.0;
    }
    let y = mantissa - 1.0;
    let horner = |c: &[f32; 6]| c[1..].iter().fold(c[0], |acc, &k| acc.mul_add(y, k));
    exponent.mul_add(std::f32::consts::LN_2, horner(&P) / horner(&Q))
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
    fn log_f32_is_close_to_ln() {
        for x in [1e-3f32, 0.029, 0.5, 1.0, 2.0, 14.6, 4096.0] {
            assert!(
                (log_f32(x) - x.ln()).abs() <= 4.0 * f32::EPSILON * x.ln().abs().max(1.0),
                "{x}"
            );
        }
        assert_eq!(log_f32(1.0), 0.0);
    }

    #[test]
    fn interp_is_exact_on_grid() {
        let fp = [1.0f32, 3.0, 7.0];
        assert_eq!(interp_on_index_grid(1.0, &fp), 3.0);
        assert_eq!(interp_on_index_grid(0.5, &fp), 2.0);
        assert_eq!(interp_on_index_grid(5.0, &fp), 7.0);
    }
}
