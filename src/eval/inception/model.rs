//! The network of pytorch-fid's `InceptionV3(output_blocks=[3], use_fid_inception=True)`: torchvision's
//! `Inception3` stem and `InceptionB`/`InceptionD`, with pytorch-fid's `FIDInceptionA`, `FIDInceptionC`,
//! `FIDInceptionE_1` and `FIDInceptionE_2` (the TensorFlow FID graph's pooling: average pools that
//! leave the zero padding out of the mean, and a max pool in the last block).
//!
//! `VarStore` paths are the state-dict keys of pytorch-fid's module (`blocks.0.0.conv.weight`,
//! `blocks.2.0.branch1x1.bn.running_mean`, ...); [`PTH_PREFIXES`] gives the `Inception3` names the
//! released weight file `pt_inception-2015-12-05-6726825d.pth` uses for the same tensors.
use tch::{nn, nn::Module, nn::ModuleT, Tensor};

use crate::models::init::random;

/// Input side of the network (pytorch-fid resizes every image to this, bilinear, no antialias).
pub const INPUT_SIZE: i64 = 299;
/// Width of the pool3 features.
pub const FEATURE_DIM: i64 = 2048;
/// torchvision's `BasicConv2d` BatchNorm eps.
pub const BN_EPS: f64 = 0.001;

/// `blocks.i.j.` (pytorch-fid `InceptionV3`) ⇄ the `Inception3` attribute (the `.pth` file's keys).
pub const PTH_PREFIXES: [(&str, &str); 16] = [
    ("blocks.0.0.", "Conv2d_1a_3x3."),
    ("blocks.0.1.", "Conv2d_2a_3x3."),
    ("blocks.0.2.", "Conv2d_2b_3x3."),
    ("blocks.1.0.", "Conv2d_3b_1x1."),
    ("blocks.1.1.", "Conv2d_4a_3x3."),
    ("blocks.2.0.", "Mixed_5b."),
    ("blocks.2.1.", "Mixed_5c."),
    ("blocks.2.2.", "Mixed_5d."),
    ("blocks.2.3.", "Mixed_6a."),
    ("blocks.2.4.", "Mixed_6b."),
    ("blocks.2.5.", "Mixed_6c."),
    ("blocks.2.6.", "Mixed_6d."),
    ("blocks.2.7.", "Mixed_6e."),
    ("blocks.3.0.", "Mixed_7a."),
    ("blocks.3.1.", "Mixed_7b."),
    ("blocks.3.2.", "Mixed_7c."),
];

/// torchvision `BasicConv2d`: conv (no bias) → BatchNorm (eps 0.001, eval) → ReLU.
#[derive(Debug)]
struct BasicConv2d {
    conv: nn::Conv<[i64; 2]>,
    bn: nn::BatchNorm,
}

impl BasicConv2d {
    fn new(p: nn::Path, cin: i64, cout: i64, k: [i64; 2], stride: i64, pad: [i64; 2]) -> Self {
        let cfg = nn::ConvConfigND {
            stride: [stride, stride],
            padding: pad,
            dilation: [1, 1],
            groups: 1,
            bias: false,
            ws_init: random(nn::init::DEFAULT_KAIMING_UNIFORM),
            bs_init: nn::Init::Const(0.),
            padding_mode: nn::PaddingMode::Zeros,
        };
        let bn = nn::BatchNormConfig {
            eps: BN_EPS,
            ..Default::default()
        };
        Self {
            conv: nn::conv(&p / "conv", cin, cout, k, cfg),
            bn: nn::batch_norm2d(&p / "bn", cout, bn),
        }
    }

    /// Square kernel.
    fn sq(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, pad: i64) -> Self {
        Self::new(p, cin, cout, [k, k], stride, [pad, pad])
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.bn.forward_t(&self.conv.forward(x), false).relu()
    }
}

/// 3×3, stride 1, padding 1 average pool without the padded zeros (`count_include_pad=False`).
fn avg_pool_tf(x: &Tensor) -> Tensor {
    x.avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None)
}

fn max_pool_3s2(x: &Tensor) -> Tensor {
    x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false)
}

/// `FIDInceptionA`.
#[derive(Debug)]
struct BlockA {
    b1: BasicConv2d,
    b5_1: BasicConv2d,
    b5_2: BasicConv2d,
    b3_1: BasicConv2d,
    b3_2: BasicConv2d,
    b3_3: BasicConv2d,
    pool: BasicConv2d,
}

impl BlockA {
    fn new(p: nn::Path, cin: i64, pool_features: i64) -> Self {
        Self {
            b1: BasicConv2d::sq(&p / "branch1x1", cin, 64, 1, 1, 0),
            b5_1: BasicConv2d::sq(&p / "branch5x5_1", cin, 48, 1, 1, 0),
            b5_2: BasicConv2d::sq(&p / "branch5x5_2", 48, 64, 5, 1, 2),
            b3_1: BasicConv2d::sq(&p / "branch3x3dbl_1", cin, 64, 1, 1, 0),
            b3_2: BasicConv2d::sq(&p / "branch3x3dbl_2", 64, 96, 3, 1, 1),
            b3_3: BasicConv2d::sq(&p / "branch3x3dbl_3", 96, 96, 3, 1, 1),
            pool: BasicConv2d::sq(&p / "branch_pool", cin, pool_features, 1, 1, 0),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let b5 = self.b5_2.forward(&self.b5_1.forward(x));
        let b3 = self.b3_3.forward(&self.b3_2.forward(&self.b3_1.forward(x)));
        let bp = self.pool.forward(&avg_pool_tf(x));
        Tensor::cat(&[self.b1.forward(x), b5, b3, bp], 1)
    }
}

/// torchvision `InceptionB` (`Mixed_6a`).
#[derive(Debug)]
struct BlockB {
    b3: BasicConv2d,
    b3d_1: BasicConv2d,
    b3d_2: BasicConv2d,
    b3d_3: BasicConv2d,
}

impl BlockB {
    fn new(p: nn::Path, cin: i64) -> Self {
        Self {
            b3: BasicConv2d::sq(&p / "branch3x3", cin, 384, 3, 2, 0),
            b3d_1: BasicConv2d::sq(&p / "branch3x3dbl_1", cin, 64, 1, 1, 0),
            b3d_2: BasicConv2d::sq(&p / "branch3x3dbl_2", 64, 96, 3, 1, 1),
            b3d_3: BasicConv2d::sq(&p / "branch3x3dbl_3", 96, 96, 3, 2, 0),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let b3d = self
            .b3d_3
            .forward(&self.b3d_2.forward(&self.b3d_1.forward(x)));
        Tensor::cat(&[self.b3.forward(x), b3d, max_pool_3s2(x)], 1)
    }
}

/// `FIDInceptionC`.
#[derive(Debug)]
struct BlockC {
    b1: BasicConv2d,
    b7: [BasicConv2d; 3],
    b7d: [BasicConv2d; 5],
    pool: BasicConv2d,
}

impl BlockC {
    fn new(p: nn::Path, cin: i64, c7: i64) -> Self {
        let row = |n: &str, i, o| BasicConv2d::new(&p / n, i, o, [1, 7], 1, [0, 3]);
        let col = |n: &str, i, o| BasicConv2d::new(&p / n, i, o, [7, 1], 1, [3, 0]);
        Self {
            b1: BasicConv2d::sq(&p / "branch1x1", cin, 192, 1, 1, 0),
            b7: [
                BasicConv2d::sq(&p / "branch7x7_1", cin, c7, 1, 1, 0),
                row("branch7x7_2", c7, c7),
                col("branch7x7_3", c7, 192),
            ],
            b7d: [
                BasicConv2d::sq(&p / "branch7x7dbl_1", cin, c7, 1, 1, 0),
                col("branch7x7dbl_2", c7, c7),
                row("branch7x7dbl_3", c7, c7),
                col("branch7x7dbl_4", c7, c7),
                row("branch7x7dbl_5", c7, 192),
            ],
            pool: BasicConv2d::sq(&p / "branch_pool", cin, 192, 1, 1, 0),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let chain = |convs: &[BasicConv2d]| {
            let mut y = convs[0].forward(x);
            for c in &convs[1..] {
                y = c.forward(&y);
            }
            y
        };
        let bp = self.pool.forward(&avg_pool_tf(x));
        Tensor::cat(
            &[self.b1.forward(x), chain(&self.b7), chain(&self.b7d), bp],
            1,
        )
    }
}

/// torchvision `InceptionD` (`Mixed_7a`).
#[derive(Debug)]
struct BlockD {
    b3_1: BasicConv2d,
    b3_2: BasicConv2d,
    b7: [BasicConv2d; 4],
}

impl BlockD {
    fn new(p: nn::Path, cin: i64) -> Self {
        Self {
            b3_1: BasicConv2d::sq(&p / "branch3x3_1", cin, 192, 1, 1, 0),
            b3_2: BasicConv2d::sq(&p / "branch3x3_2", 192, 320, 3, 2, 0),
            b7: [
                BasicConv2d::sq(&p / "branch7x7x3_1", cin, 192, 1, 1, 0),
                BasicConv2d::new(&p / "branch7x7x3_2", 192, 192, [1, 7], 1, [0, 3]),
                BasicConv2d::new(&p / "branch7x7x3_3", 192, 192, [7, 1], 1, [3, 0]),
                BasicConv2d::sq(&p / "branch7x7x3_4", 192, 192, 3, 2, 0),
            ],
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let b3 = self.b3_2.forward(&self.b3_1.forward(x));
        let mut b7 = self.b7[0].forward(x);
        for c in &self.b7[1..] {
            b7 = c.forward(&b7);
        }
        Tensor::cat(&[b3, b7, max_pool_3s2(x)], 1)
    }
}

/// `FIDInceptionE_1` (`max_pool == false`: average pool without padding) and `FIDInceptionE_2`
/// (`max_pool == true`: 3×3 max pool, stride 1, padding 1).
#[derive(Debug)]
struct BlockE {
    b1: BasicConv2d,
    b3_1: BasicConv2d,
    b3_2a: BasicConv2d,
    b3_2b: BasicConv2d,
    b3d_1: BasicConv2d,
    b3d_2: BasicConv2d,
    b3d_3a: BasicConv2d,
    b3d_3b: BasicConv2d,
    pool: BasicConv2d,
    max_pool: bool,
}

impl BlockE {
    fn new(p: nn::Path, cin: i64, max_pool: bool) -> Self {
        let row = |n: &str, i, o| BasicConv2d::new(&p / n, i, o, [1, 3], 1, [0, 1]);
        let col = |n: &str, i, o| BasicConv2d::new(&p / n, i, o, [3, 1], 1, [1, 0]);
        Self {
            b1: BasicConv2d::sq(&p / "branch1x1", cin, 320, 1, 1, 0),
            b3_1: BasicConv2d::sq(&p / "branch3x3_1", cin, 384, 1, 1, 0),
            b3_2a: row("branch3x3_2a", 384, 384),
            b3_2b: col("branch3x3_2b", 384, 384),
            b3d_1: BasicConv2d::sq(&p / "branch3x3dbl_1", cin, 448, 1, 1, 0),
            b3d_2: BasicConv2d::sq(&p / "branch3x3dbl_2", 448, 384, 3, 1, 1),
            b3d_3a: row("branch3x3dbl_3a", 384, 384),
            b3d_3b: col("branch3x3dbl_3b", 384, 384),
            pool: BasicConv2d::sq(&p / "branch_pool", cin, 192, 1, 1, 0),
            max_pool,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let b3 = self.b3_1.forward(x);
        let b3 = Tensor::cat(&[self.b3_2a.forward(&b3), self.b3_2b.forward(&b3)], 1);
        let b3d = self.b3d_2.forward(&self.b3d_1.forward(x));
        let b3d = Tensor::cat(&[self.b3d_3a.forward(&b3d), self.b3d_3b.forward(&b3d)], 1);
        let pooled = if self.max_pool {
            x.max_pool2d([3, 3], [1, 1], [1, 1], [1, 1], false)
        } else {
            avg_pool_tf(x)
        };
        let bp = self.pool.forward(&pooled);
        Tensor::cat(&[self.b1.forward(x), b3, b3d, bp], 1)
    }
}

/// pytorch-fid's `InceptionV3` up to block 3 (final average pool), resize and normalisation included.
#[derive(Debug)]
pub struct FIDInceptionV3 {
    stem0: [BasicConv2d; 3],
    stem1: [BasicConv2d; 2],
    mixed_5: [BlockA; 3],
    mixed_6a: BlockB,
    mixed_6: [BlockC; 4],
    mixed_7a: BlockD,
    mixed_7b: BlockE,
    mixed_7c: BlockE,
}

impl FIDInceptionV3 {
    /// Variables under `p` named as pytorch-fid's state dict (`p / "blocks" / i / j`).
    pub fn new(p: nn::Path) -> Self {
        let b = &p / "blocks";
        let (b0, b1, b2, b3) = (&b / 0, &b / 1, &b / 2, &b / 3);
        Self {
            stem0: [
                BasicConv2d::sq(&b0 / 0, 3, 32, 3, 2, 0),
                BasicConv2d::sq(&b0 / 1, 32, 32, 3, 1, 0),
                BasicConv2d::sq(&b0 / 2, 32, 64, 3, 1, 1),
            ],
            stem1: [
                BasicConv2d::sq(&b1 / 0, 64, 80, 1, 1, 0),
                BasicConv2d::sq(&b1 / 1, 80, 192, 3, 1, 0),
            ],
            mixed_5: [
                BlockA::new(&b2 / 0, 192, 32),
                BlockA::new(&b2 / 1, 256, 64),
                BlockA::new(&b2 / 2, 288, 64),
            ],
            mixed_6a: BlockB::new(&b2 / 3, 288),
            mixed_6: [
                BlockC::new(&b2 / 4, 768, 128),
                BlockC::new(&b2 / 5, 768, 160),
                BlockC::new(&b2 / 6, 768, 160),
                BlockC::new(&b2 / 7, 768, 192),
            ],
            mixed_7a: BlockD::new(&b3 / 0, 768),
            mixed_7b: BlockE::new(&b3 / 1, 1280, false),
            mixed_7c: BlockE::new(&b3 / 2, 2048, true),
        }
    }

    /// `x`: [B, 3, H, W] in 0..1 (any H, W ≥ 1) → pool3 features [B, 2048]. As pytorch-fid's forward:
    /// bilinear resize to 299×299 (`align_corners=False`, no antialias), then 2x − 1.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let x = x.upsample_bilinear2d([INPUT_SIZE, INPUT_SIZE], false, None, None);
        let mut x = x * 2.0 - 1.0;
        for c in &self.stem0 {
            x = c.forward(&x);
        }
        x = max_pool_3s2(&x);
        for c in &self.stem1 {
            x = c.forward(&x);
        }
        x = max_pool_3s2(&x);
        for blk in &self.mixed_5 {
            x = blk.forward(&x);
        }
        x = self.mixed_6a.forward(&x);
        for blk in &self.mixed_6 {
            x = blk.forward(&x);
        }
        x = self.mixed_7a.forward(&x);
        x = self.mixed_7b.forward(&x);
        x = self.mixed_7c.forward(&x);
        x.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}
