//! The two pieces of NumPy the reference WEAT code leans on, reproduced bit for bit so that a seed
//! gives the reference's permutations and sums: the legacy `np.random.seed(s)` + `np.random.shuffle`
//! stream (MT19937 with `random_interval`'s masked rejection), and `np.sum`'s pairwise summation.
//! Both are checked against NumPy in tests/suite/weat.rs.

/// The MT19937 generator as `np.random.seed(s)` (an integer seed: `init_genrand`) leaves it.
pub struct LegacyRandomState {
    mt: [u32; 624],
    index: usize,
}

impl LegacyRandomState {
    /// `np.random.seed(seed)` for `0 <= seed < 2**32`.
    pub fn seed(seed: u32) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Self { mt, index: 624 }
    }

    fn twist(&mut self) {
        for i in 0..624 {
            let y = (self.mt[i] & 0x8000_0000) | (self.mt[(i + 1) % 624] & 0x7fff_ffff);
            let mut next = self.mt[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                next ^= 0x9908_b0df;
            }
            self.mt[i] = next;
        }
        self.index = 0;
    }

    /// One 32-bit output (`genrand_int32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// `random_interval(max)`: uniform on `0..=max` by masking to the next power of two and
    /// rejecting what lies above `max` (32-bit draws; WEAT sets never need more).
    fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16] {
            mask |= mask >> shift;
        }
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `np.random.shuffle(x)` of a 1-d array: Fisher–Yates from the end.
    pub fn shuffle<T>(&mut self, x: &mut [T]) {
        for i in (1..x.len()).rev() {
            let j = self.interval(i as u32) as usize;
            x.swap(i, j);
        }
    }
}

/// `np.sum` of a float64 array: the identity 0 plus NumPy's pairwise sum (8 accumulators up to 128
/// elements, halves above).
pub fn sum(a: &[f64]) -> f64 {
    0.0 + pairwise(a)
}

/// `np.mean` of a float64 array.
pub fn mean(a: &[f64]) -> f64 {
    sum(a) / a.len() as f64
}

/// `np.std(a, ddof)`.
pub fn std(a: &[f64], ddof: usize) -> f64 {
    let m = mean(a);
    let sq: Vec<f64> = a
        .iter()
        .map(|x| {
            let d = x - m;
            d * d
        })
        .collect();
    (sum(&sq) / (a.len() - ddof) as f64).sqrt()
}

fn pairwise(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for x in a {
            res += x;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for x in &a[i..] {
            res += x;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise(&a[..n2]) + pairwise(&a[n2..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_stream() {
        // The first outputs of init_genrand(5489), the generator's published default seed.
        let mut r = LegacyRandomState::seed(5489);
        assert_eq!(r.next_u32(), 3_499_211_612);
        assert_eq!(r.next_u32(), 581_869_302);
        assert_eq!(r.next_u32(), 3_890_346_734);
    }

    #[test]
    fn pairwise_sum_groups_like_numpy() {
        // 0.1 added nine times sequentially differs from the 8-accumulator grouping in the last bit.
        let a = vec![0.1; 9];
        let seq = a.iter().fold(0.0, |s, x| s + x);
        let grouped = ((0.2 + 0.2) + (0.2 + 0.2)) + 0.1;
        assert_eq!(sum(&a), 0.0 + grouped);
        assert_ne!(seq, grouped);
    }
}
