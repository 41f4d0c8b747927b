//! Settings with a fixed set of values (loss, LR schedule, precision, judge, scheduler, dtype):
//! enums parsed once — from an experiment file or a flag — so the code that uses them matches on
//! variants, never on strings. Each lists its names ([`Choice::NAMES`]) for error messages and for
//! the CLI's `--help`; aliases are accepted on input, the canonical name is written back.
/// A setting chosen by name from a fixed list.
pub trait Choice: Sized + Copy + 'static {
    /// Canonical names, in the order `--help` lists them.
    const NAMES: &'static [&'static str];
    /// What the setting is called in messages (`training.loss`).
    const WHAT: &'static str;
    /// The value of a canonical name or alias.
    fn from_name(s: &str) -> Option<Self>;
    /// The canonical name.
    fn name(self) -> &'static str;
}

/// "a, b or c".
pub fn list_names(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Parse `s` as a `T` (trimmed, in any case), with the message every caller shows for an unknown
/// value. Experiment files (through serde) and flags (through the CLI) both parse here.
pub fn parse_choice<T: Choice>(s: &str) -> Result<T, String> {
    let t = s.trim();
    T::from_name(t)
        .or_else(|| T::from_name(&t.to_lowercase()))
        .ok_or_else(|| format!("unknown {} `{s}`: use {}", T::WHAT, list_names(T::NAMES)))
}

/// Declares a [`Choice`] enum with serde (as its name), `FromStr`/`Display`, `ALL` (every value,
/// in `NAMES` order) and an inherent `name()`. Used for every fixed-choice setting of the crate.
macro_rules! choice_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $var:ident = $canon:literal $(| $alias:literal)* ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name { $( $(#[$vmeta])* $var ),+ }

        impl $name {
            /// Every value, in the order of its names.
            pub const ALL: [Self; [$(stringify!($var)),+].len()] = [$(Self::$var),+];

            /// The canonical name.
            pub fn name(self) -> &'static str {
                match self { $( Self::$var => $canon ),+ }
            }
        }

        impl $crate::settings::Choice for $name {
            const NAMES: &'static [&'static str] = &[$($canon),+];
            const WHAT: &'static str = $what;
            fn from_name(s: &str) -> Option<Self> {
                match s {
                    $( $canon $(| $alias)* => Some(Self::$var), )+
                    _ => None,
                }
            }
            fn name(self) -> &'static str {
                match self { $( Self::$var => $canon ),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                $crate::settings::parse_choice(s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::settings::Choice::name(*self))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str($crate::settings::Choice::name(*self))
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                $crate::settings::parse_choice(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use choice_enum;

choice_enum! {
    /// The Rickrolling distance between student and teacher embeddings (`training.loss`).
    pub enum Distance ("loss") {
        /// `SimilarityLoss`: −cosine similarity per sample (the reference's default).
        Cosine = "cosine" | "similarity",
        /// Mean squared error over all elements.
        Mse = "mse",
        /// Mean absolute error over all elements.
        Mae = "mae",
        /// `PoincareLoss`: arccosh(1 + δ) on L1-normalised embeddings.
        Poincare = "poincare",
    }
}

choice_enum! {
    /// The learning-rate schedule (`training.lr_schedule`).
    pub enum LrScheduleKind ("lr schedule") {
        /// MultiStepLR at `lr_milestones` with factor `lr_gamma` (the reference).
        MultiStep = "multistep",
        /// Linear warm-up then cosine decay to 0.
        Cosine = "cosine",
        /// Linear warm-up then constant.
        Constant = "constant",
    }
}

choice_enum! {
    /// Compute precision of training (`training.precision`, `clipdoor train --precision`). Master
    /// weights, optimiser state and saved encoders stay f32 whichever is chosen.
    pub enum Precision ("precision") {
        /// Plain f32 (float32 matmuls at "highest" precision).
        F32 = "f32" | "fp32" | "float32",
        /// f32 tensors with TF32 tensor-core matmuls (CUDA only; CPUs have no TF32).
        Tf32 = "tf32" | "tensorfloat32",
        /// Autocast to bfloat16 (CPU or CUDA); no loss scaling needed.
        Bf16 = "bf16" | "bfloat16",
        /// Autocast to float16 (CPU or CUDA) with dynamic loss scaling.
        F16 = "f16" | "fp16" | "float16" | "half",
    }
}

impl Precision {
    /// The kind autocast computes in, for the precisions that autocast.
    pub fn autocast_kind(self) -> Option<tch::Kind> {
        match self {
            Self::F32 | Self::Tf32 => None,
            Self::Bf16 => Some(tch::Kind::BFloat16),
            Self::F16 => Some(tch::Kind::Half),
        }
    }

    /// Whether gradients need dynamic loss scaling (f16's narrow exponent range underflows them).
    pub fn scales_loss(self) -> bool {
        self == Self::F16
    }
}

choice_enum! {
    /// How AdamW applies its update (`training.adamw`). The state it saves is the same for every
    /// choice, so a run can resume with another one.
    pub enum AdamWChoice ("adamw implementation") {
        /// `single-tensor` on CPU (bit-exact with torch's default CPU path), `fused` on CUDA.
        Auto = "auto",
        /// One parameter at a time with ATen's elementwise kernels: `torch.optim.AdamW(foreach=False)`,
        /// bit for bit.
        SingleTensor = "single-tensor" | "single_tensor" | "single",
        /// One kernel over every parameter of a device and dtype: `torch.optim.AdamW(fused=True)`
        /// (`torch._fused_adamw_`); rounds differently from `single-tensor`.
        Fused = "fused",
    }
}

choice_enum! {
    /// Who judges whether an image shows what its set's success means (`evaluation.judge`).
    pub enum JudgeKind ("judge") {
        /// The shapes world's exact oracle: colour and shape read from the pixels.
        Oracle = "oracle",
        /// Zero-shot CLIP: the image is closer to the expected text than to the clean prompt.
        Clip = "clip",
    }
}

choice_enum! {
    /// A sampler (`--scheduler`), each a port of the diffusers class named in
    /// [`SchedulerKind::class_name`].
    pub enum SchedulerKind ("scheduler") {
        Ddim = "ddim",
        Pndm = "pndm",
        Euler = "euler",
        EulerAncestral = "euler-a",
        /// DPM-Solver++ 2M.
        DpmPlusPlus = "dpm++",
    }
}

impl SchedulerKind {
    /// The diffusers class it stands for (`_class_name` in `scheduler_config.json`).
    pub fn class_name(self) -> &'static str {
        match self {
            Self::Ddim => "DDIMScheduler",
            Self::Pndm => "PNDMScheduler",
            Self::Euler => "EulerDiscreteScheduler",
            Self::EulerAncestral => "EulerAncestralDiscreteScheduler",
            Self::DpmPlusPlus => "DPMSolverMultistepScheduler",
        }
    }
}

choice_enum! {
    /// Floating-point dtype of inference weights and activations (`--dtype`).
    pub enum Dtype ("dtype") {
        F32 = "f32" | "float32" | "fp32",
        F16 = "f16" | "float16" | "fp16",
        Bf16 = "bf16" | "bfloat16",
    }
}

impl Dtype {
    /// The dtype of a libtorch kind (`None` for non-float kinds).
    pub fn of(kind: tch::Kind) -> Option<Self> {
        match kind {
            tch::Kind::Float => Some(Self::F32),
            tch::Kind::Half => Some(Self::F16),
            tch::Kind::BFloat16 => Some(Self::Bf16),
            _ => None,
        }
    }

    pub fn kind(self) -> tch::Kind {
        match self {
            Self::F32 => tch::Kind::Float,
            Self::F16 => tch::Kind::Half,
            Self::Bf16 => tch::Kind::BFloat16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_and_errors() {
        assert_eq!("similarity".parse::<Distance>(), Ok(Distance::Cosine));
        assert_eq!(Distance::Cosine.to_string(), "cosine");
        assert_eq!(
            " DPM++ ".parse::<SchedulerKind>(),
            Ok(SchedulerKind::DpmPlusPlus)
        );
        assert_eq!(
            "l2".parse::<Distance>().unwrap_err(),
            "unknown loss `l2`: use cosine, mse, mae or poincare"
        );
        assert_eq!("FP16".parse::<Precision>(), Ok(Precision::F16));
        assert_eq!("half".parse::<Precision>(), Ok(Precision::F16));
        assert_eq!("bfloat16".parse::<Precision>(), Ok(Precision::Bf16));
        assert_eq!(Precision::Tf32.to_string(), "tf32");
        assert_eq!(
            "f8".parse::<Precision>().unwrap_err(),
            "unknown precision `f8`: use f32, tf32, bf16 or f16"
        );
        assert_eq!(Precision::F16.autocast_kind(), Some(tch::Kind::Half));
        assert_eq!(Precision::Tf32.autocast_kind(), None);
        assert_eq!(SchedulerKind::NAMES.len(), SchedulerKind::ALL.len());
        for k in SchedulerKind::ALL {
            assert_eq!(SchedulerKind::from_name(k.name()), Some(k));
        }
        #[derive(serde::Deserialize, serde::Serialize)]
        struct T {
            judge: JudgeKind,
        }
        let t: T = toml::from_str("judge = \"oracle\"").unwrap();
        assert_eq!(t.judge, JudgeKind::Oracle);
        assert_eq!(toml::to_string(&t).unwrap().trim(), "judge = \"oracle\"");
        let e = toml::from_str::<T>("judge = \"human\"").err().unwrap();
        assert!(e.to_string().contains("use oracle or clip"), "{e}");
    }
}
