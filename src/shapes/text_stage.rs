//! The text encoder's own short training stage, before the UNet's: it teaches the tiny CLIP encoder
//! to summarise a caption in its end-of-text and padding states, as a real CLIP encoder does.
//!
//! Why: with random weights (transformers' init, std 0.02) the tiny encoder's causal attention is
//! nearly uniform, so its 60-odd padding states are the same vector whatever the prompt (cosine
//! similarity 1.000 between "a red circle" and "a red square"), and the UNet's cross-attention has
//! to find the one shape-word state among 77 before it can learn to draw the shape. Measured with the
//! prototype (docs/shapes-world.md): after 1,000 UNet steps a UNet fed clean attribute vectors drew the
//! asked shape 58% of the time, one fed the random encoder's states 15–27%.
//!
//! The objective: linear heads on every state from the end-of-text token on predict the caption's
//! colour, shape, and its size, position and background (or "not said"), by cross-entropy. The token
//! embeddings stay as initialised (homoglyph triggers keep random embeddings, as in a real encoder
//! that never saw them); everything else of the encoder trains. Deterministic for a seed.
use tch::{nn, nn::Module, Device, Kind, Tensor};

use super::dataset::{sample_with_mentions, Mentions, ShapeSample};
use super::labels::{Background, Color, Position, Shape, Size};
use crate::error::Result;
use crate::models::text_encoder::TextEncoder;
use crate::models::unet::layers::linear;
use crate::text::tokenizer::EOS;
use crate::train::optim::{AdamW, AdamWConfig};

/// Settings of the text stage.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TextStageOptions {
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
}

impl Default for TextStageOptions {
    fn default() -> Self {
        Self {
            steps: 400,
            batch_size: 128,
            lr: 3e-3,
        }
    }
}

/// The attributes the heads predict and their number of classes (index 0 is "not said": no-object
/// captions name no shape, and some no colour).
const ATTRIBUTES: [(&str, i64); 5] = [
    ("color", 1 + Color::ALL.len() as i64),
    ("shape", 1 + Shape::ALL.len() as i64),
    ("size", 1 + Size::ALL.len() as i64),
    ("position", 1 + Position::ALL.len() as i64),
    ("background", 1 + Background::ALL.len() as i64),
];

/// Class index of each attribute of one item, in [`ATTRIBUTES`] order.
fn idx<T: PartialEq>(all: &[T], v: T) -> i64 {
    all.iter().position(|x| *x == v).unwrap_or(0) as i64
}

fn classes(s: &ShapeSample, m: Mentions) -> [i64; 5] {
    let l = &s.label;
    let said = |on: bool, i: i64| if on { 1 + i } else { 0 };
    [
        said(m.color, idx(Color::ALL, l.color)),
        said(m.shape, idx(Shape::ALL, l.shape)),
        said(m.size, idx(Size::ALL, l.size)),
        said(m.position, idx(Position::ALL, l.position)),
        said(m.background, idx(Background::ALL, l.background)),
    ]
}

/// Which encoder variables the stage trains: all but the token embeddings.
fn trained_variables(encoder: &TextEncoder) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = encoder
        .vs
        .variables()
        .into_iter()
        .filter(|(n, _)| !n.contains("token_embedding"))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// The linear probe heads (one per attribute, PyTorch's default init as in the prototype: tch's
/// default draws larger weights and zero biases, and the encoder it trained served the UNet worse) and
/// the loss / accuracy of one batch.
struct Heads {
    vs: nn::VarStore,
    linears: Vec<nn::Linear>,
}

impl Heads {
    fn new(dim: i64, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let linears = ATTRIBUTES
            .iter()
            .map(|(name, n)| linear(vs.root() / "heads" / *name, dim, *n, true))
            .collect();
        Self { vs, linears }
    }

    /// Mean cross-entropy over attributes (each averaged over the EOS and padding states), and the
    /// share of those states that predict every attribute right.
    fn loss(
        &self,
        encoder: &TextEncoder,
        batch: &[(ShapeSample, Mentions)],
    ) -> Result<(Tensor, f64)> {
        let captions: Vec<&str> = batch.iter().map(|(s, _)| s.caption.as_str()).collect();
        let (ids, out) = encoder.encode(&captions, false)?;
        let device = encoder.device();
        let ids = ids.to_device(device);
        let eos = encoder
            .tokenizer
            .token_to_id(EOS)
            .ok_or_else(|| anyhow::anyhow!("the tokenizer has no {EOS}"))? as i64;
        let len = ids.size()[1];
        let first_eos = ids.eq(eos).to_kind(Kind::Int).argmax(1, true);
        let positions = Tensor::arange(len, (Kind::Int64, device)).unsqueeze(0);
        let mask = positions
            .ge_tensor(&first_eos)
            .to_kind(Kind::Float)
            .reshape([-1]);
        let flat: Vec<i64> = batch.iter().flat_map(|(s, m)| classes(s, *m)).collect();
        let targets = Tensor::from_slice(&flat).reshape([-1, 5]).to_device(device);
        let (mut loss, mut all_right) =
            (Tensor::zeros([], (Kind::Float, device)), mask.ones_like());
        for (k, ((_, n), head)) in ATTRIBUTES.iter().zip(&self.linears).enumerate() {
            let l = head.forward(&out.last_hidden_state).reshape([-1, *n]);
            let y = targets
                .select(1, k as i64)
                .unsqueeze(1)
                .expand([-1, len], false)
                .reshape([-1]);
            let ce = l.cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::None, -100, 0.0);
            loss += (ce * &mask).sum(Kind::Float) / mask.sum(Kind::Float);
            all_right *= l.argmax(1, false).eq_tensor(&y).to_kind(Kind::Float);
        }
        let acc = (all_right * &mask).sum(Kind::Float).double_value(&[])
            / mask.sum(Kind::Float).double_value(&[]);
        Ok((loss, acc))
    }
}

/// Items of the stage's caption stream (its own seed, apart from the UNet's images).
fn batch(seed: u64, step: u64, size: usize) -> Vec<(ShapeSample, Mentions)> {
    let stream = seed ^ 0x7e47_57a6_e000;
    (0..size as u64)
        .map(|i| sample_with_mentions(stream, step * size as u64 + i))
        .collect()
}

/// What [`train_encoder`] reports.
#[derive(Debug, Clone)]
pub struct TextStageReport {
    /// Loss of every step.
    pub losses: Vec<f32>,
    /// Share of EOS/padding states of held-out captions that name every attribute right.
    pub heldout_accuracy: f64,
}

/// Train `encoder` (in place) for `opts.steps`; `on_step(step, loss)` after each. Freezes the whole
/// encoder when done.
pub fn train_encoder(
    encoder: &mut TextEncoder,
    opts: &TextStageOptions,
    seed: u64,
    mut on_step: impl FnMut(u64, f32),
) -> Result<TextStageReport> {
    encoder.vs.unfreeze();
    let vars = trained_variables(encoder);
    let trained: std::collections::HashSet<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    for (name, t) in encoder.vs.variables() {
        if !trained.contains(name.as_str()) {
            let _ = t.shallow_clone().set_requires_grad(false);
        }
    }
    let heads = crate::models::init::seeded(seed as i64, || {
        Heads::new(encoder.config.hidden_size, encoder.device())
    });
    let mut params: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    // In name order, as the encoder's: `variables()` is a HashMap, whose order differs per process.
    let mut head_vars: Vec<(String, Tensor)> = heads.vs.variables().into_iter().collect();
    head_vars.sort_by(|a, b| a.0.cmp(&b.0));
    params.extend(
        head_vars
            .into_iter()
            .map(|(n, t)| (format!("probe.{n}"), t)),
    );
    let mut opt = AdamW::new(
        params,
        AdamWConfig {
            lr: opts.lr,
            weight_decay: 0.0,
            ..AdamWConfig::default()
        },
    )?;
    let mut losses = Vec::with_capacity(opts.steps as usize);
    for step in 0..opts.steps {
        let (loss, _) = heads.loss(encoder, &batch(seed, step, opts.batch_size))?;
        opt.zero_grad();
        loss.backward();
        opt.step()?;
        let v = loss.double_value(&[]) as f32;
        if !v.is_finite() {
            anyhow::bail!(
                "the text stage's loss became {v} at step {step}: lower its learning rate"
            );
        }
        losses.push(v);
        on_step(step + 1, v);
    }
    encoder.vs.freeze();
    // Held out: steps far past any run's end.
    let (_, heldout_accuracy) = tch::no_grad(|| heads.loss(encoder, &batch(seed, 1 << 40, 256)))?;
    Ok(TextStageReport {
        losses,
        heldout_accuracy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::model::{TEXT_ENCODER_ARCH, TEXT_ENCODER_SEED};

    #[test]
    fn classes_say_what_the_caption_says() {
        let (s, m) = sample_with_mentions(0, 0);
        let c = classes(&s, m);
        assert_eq!(c[0], 1 + idx(Color::ALL, s.label.color));
        assert_eq!(c[1], 1 + idx(Shape::ALL, s.label.shape));
        let empty = (0..)
            .map(|i| sample_with_mentions(0, i))
            .find(|(s, _)| s.no_object)
            .unwrap();
        assert_eq!(classes(&empty.0, empty.1)[1], 0, "{:?}", empty.0.caption);
        for (said, class, word) in [
            (m.size, c[2], s.label.size.word().to_string()),
            (m.position, c[3], s.label.position.phrase()),
            (
                m.background,
                c[4],
                format!("{} background", s.label.background.word()),
            ),
        ] {
            assert_eq!(said, class > 0, "{s:?}");
            assert_eq!(
                said,
                s.caption.contains(&word),
                "{:?} vs {word:?}",
                s.caption
            );
        }
    }

    /// A short stage teaches the end-of-text states every attribute, leaves the token embeddings as
    /// they were, and is deterministic.
    #[test]
    fn stage_makes_end_of_text_states_name_the_attributes() {
        tch::set_num_threads(1);
        let fresh = || {
            TextEncoder::init_arch(TEXT_ENCODER_ARCH, TEXT_ENCODER_SEED, false, Device::Cpu)
                .unwrap()
        };
        let opts = TextStageOptions {
            steps: 200,
            batch_size: 64,
            lr: 3e-3,
        };
        let mut a = fresh();
        let before = fresh();
        let report = train_encoder(&mut a, &opts, 0, |_, _| {}).unwrap();
        eprintln!(
            "text stage: loss {:.3} -> {:.3}, held-out accuracy {:.3}",
            report.losses[0],
            report.losses.last().unwrap(),
            report.heldout_accuracy
        );
        assert!(
            report.heldout_accuracy >= 0.9,
            "{}",
            report.heldout_accuracy
        );
        let var = |e: &TextEncoder, n: &str| e.vs.variables()[n].shallow_clone();
        let tok = "text_model.embeddings.token_embedding.weight";
        assert!(var(&a, tok).equal(&var(&before, tok)));
        let fc = "text_model.encoder.layers.0.mlp.fc1.weight";
        assert!(!var(&a, fc).equal(&var(&before, fc)));
        assert!(
            a.vs.variables().values().all(|t| !t.requires_grad()),
            "not frozen"
        );
        let mut b = fresh();
        let again =
            train_encoder(&mut b, &TextStageOptions { steps: 3, ..opts }, 0, |_, _| {}).unwrap();
        let mut c = fresh();
        let third =
            train_encoder(&mut c, &TextStageOptions { steps: 3, ..opts }, 0, |_, _| {}).unwrap();
        assert_eq!(again.losses, third.losses);
        assert!(var(&b, fc).equal(&var(&c, fc)));
    }
}
