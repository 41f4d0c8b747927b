//! How weights start, and the one random generator they start from.
//!
//! libtorch draws every `randn`/`uniform_` without an explicit generator from one process-wide CPU
//! generator, and tch exposes no other. clipdoor reproduces Python's seeded numbers by seeding that
//! generator and drawing (diffusers' noise is replayed this way, [`crate::diffusion::rng`]), so a
//! draw made by another thread between the seed and the draw silently changes the numbers: two
//! pipelines used from two threads gave different images for the same seed (a test run in CI saw an
//! image 0.85 off diffusers'). Hence two rules, kept by every constructor in the crate:
//! - a seeded sequence (seed, then draws) runs inside [`seeded`] (or [`with_global_generator`]),
//!   which holds a process-wide lock for its whole length;
//! - a model whose every weight is then read from a file is built inside [`without_random_init`]:
//!   its layers start at zero and draw nothing (also faster: an SD UNet is ~860M numbers).
//!
//! Code outside clipdoor that draws from libtorch's default generator on another thread without the
//! lock can still interleave with a seeded sequence.
use std::cell::Cell;
use std::sync::Mutex;
use tch::nn;

static GLOBAL_GENERATOR: Mutex<()> = Mutex::new(());

thread_local! {
    static SKIP_RANDOM_INIT: Cell<bool> = const { Cell::new(false) };
    /// This thread holds [`GLOBAL_GENERATOR`] already (a seeded constructor calling another).
    static HOLDS_GENERATOR: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` while no other thread of this process can draw from libtorch's default generator
/// through clipdoor. Re-entrant on one thread.
pub fn with_global_generator<T>(f: impl FnOnce() -> T) -> T {
    if HOLDS_GENERATOR.with(|h| h.get()) {
        return f();
    }
    // A panic inside another holder leaves nothing half-done that matters here: recover the lock.
    let _guard = GLOBAL_GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            HOLDS_GENERATOR.with(|h| h.set(false));
        }
    }
    HOLDS_GENERATOR.with(|h| h.set(true));
    let _release = Release;
    f()
}

/// `torch.manual_seed(seed)` followed by `f`'s draws, as one uninterrupted sequence.
pub fn seeded<T>(seed: i64, f: impl FnOnce() -> T) -> T {
    with_global_generator(|| {
        tch::manual_seed(seed);
        f()
    })
}

/// Run `build` with zero-initialised weights (for models whose every weight is loaded afterwards).
pub fn without_random_init<T>(build: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SKIP_RANDOM_INIT.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SKIP_RANDOM_INIT.with(|s| s.replace(true)));
    build()
}

/// `init`, or zero inside [`without_random_init`]. Every random initialiser of a layer goes through
/// this.
pub(crate) fn random(init: nn::Init) -> nn::Init {
    if SKIP_RANDOM_INIT.with(|s| s.get()) {
        nn::Init::Const(0.)
    } else {
        init
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    fn draw() -> Tensor {
        Tensor::randn([16], (Kind::Float, Device::Cpu))
    }

    fn layer() -> nn::VarStore {
        let vs = nn::VarStore::new(Device::Cpu);
        let init = random(nn::Init::Randn {
            mean: 0.,
            stdev: 1.,
        });
        let _ = vs.root().var("w", &[32, 32], init);
        vs
    }

    /// A layer built inside `without_random_init` starts at zero and draws nothing: the numbers
    /// after it are those right after the seed. Outside, it does draw (so the comparison can fail).
    #[test]
    fn layers_built_without_random_init_draw_nothing() {
        let alone = seeded(7, draw);
        let (zeros, after) = seeded(7, || {
            let vs = without_random_init(layer);
            (vs.root().get("w").unwrap().abs().sum(Kind::Float), draw())
        });
        assert_eq!(zeros.double_value(&[]), 0.0);
        assert!(after.equal(&alone), "building without random init drew");
        let drawn = seeded(7, || {
            let _ = layer();
            draw()
        });
        assert!(
            !drawn.equal(&alone),
            "a randomly initialised layer drew nothing"
        );
        // The rule ends with the closure: the next build draws again.
        assert!(
            layer()
                .root()
                .get("w")
                .unwrap()
                .abs()
                .sum(Kind::Float)
                .double_value(&[])
                > 0.0
        );
    }
}
