//! transformers' `CLIPTextModel` / `CLIPTextModelWithProjection`, one struct per upstream class, with
//! `VarStore` paths equal to the safetensors keys (`text_model.encoder.layers.0.self_attn.q_proj.weight`).
use tch::{nn, nn::Module, Kind, Tensor};

use super::clip_layers::{layer_norm, linear, CLIPEncoderLayer, Mask};
use super::clip_text_config::CLIPTextConfig;
use super::init::random;

/// `CLIPTextEmbeddings`: token + learned absolute position embeddings.
#[derive(Debug)]
pub struct CLIPTextEmbeddings {
    token_embedding: nn::Embedding,
    position_embedding: nn::Embedding,
}

impl CLIPTextEmbeddings {
    pub fn new(p: nn::Path, c: &CLIPTextConfig) -> Self {
        let cfg = nn::EmbeddingConfig {
            ws_init: random(nn::Init::Randn {
                mean: 0.,
                stdev: 0.02,
            }),
            ..Default::default()
        };
        Self {
            token_embedding: nn::embedding(
                &p / "token_embedding",
                c.vocab_size,
                c.hidden_size,
                cfg,
            ),
            position_embedding: nn::embedding(
                &p / "position_embedding",
                c.max_position_embeddings,
                c.hidden_size,
                cfg,
            ),
        }
    }

    pub fn forward(&self, input_ids: &Tensor) -> Tensor {
        self.with_positions(&self.token_embedding.forward(input_ids))
    }

    /// Token embeddings (`[B, T, hidden]`, e.g. with a free vector in some rows) plus positions.
    pub fn with_positions(&self, token_embeds: &Tensor) -> Tensor {
        let seq = token_embeds.size()[1];
        let pos = Tensor::arange(seq, (Kind::Int64, token_embeds.device())).unsqueeze(0);
        token_embeds + self.position_embedding.forward(&pos)
    }

    /// The token embedding matrix `[vocab, hidden]`.
    pub fn token_embedding_weight(&self) -> &Tensor {
        &self.token_embedding.ws
    }
}

/// What one forward pass returns (field names as transformers' `BaseModelOutputWithPooling`).
#[derive(Debug)]
pub struct CLIPTextOutput {
    /// After `final_layer_norm`: [B, T, hidden].
    pub last_hidden_state: Tensor,
    /// Embedding output followed by every layer's output (before the final norm): `layers + 1` entries.
    /// Empty unless requested. `hidden_states[len-2]` is the "clip skip" penultimate layer.
    pub hidden_states: Vec<Tensor>,
    /// `last_hidden_state` at the end-of-text position: [B, hidden].
    pub pooled_output: Tensor,
    /// `text_projection(pooled_output)` for `CLIPTextModelWithProjection`: [B, projection_dim].
    pub text_embeds: Option<Tensor>,
}

/// `CLIPTextTransformer` (the `text_model.` prefix).
#[derive(Debug)]
pub struct CLIPTextTransformer {
    embeddings: CLIPTextEmbeddings,
    layers: Vec<CLIPEncoderLayer>,
    final_layer_norm: nn::LayerNorm,
    eos_token_id: i64,
}

impl CLIPTextTransformer {
    pub fn new(p: nn::Path, c: &CLIPTextConfig) -> Self {
        let enc = &p / "encoder" / "layers";
        let dims = c.layer_dims();
        Self {
            embeddings: CLIPTextEmbeddings::new(&p / "embeddings", c),
            layers: (0..c.num_hidden_layers)
                .map(|i| CLIPEncoderLayer::new(&enc / i, &dims))
                .collect(),
            final_layer_norm: layer_norm(&p / "final_layer_norm", c.hidden_size, c.layer_norm_eps),
            eos_token_id: c.eos_token_id,
        }
    }

    /// `attention_mask`: optional [B, T] of 1 (attend) / 0 (padding), combined with the causal mask as
    /// transformers does. Stable Diffusion and the Rickrolling reference pass none.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        all_hidden: bool,
    ) -> CLIPTextOutput {
        let x = self.embeddings.forward(input_ids);
        self.forward_embedded(x, input_ids, attention_mask, all_hidden)
    }

    /// The forward pass from token embeddings (`[B, T, hidden]`, before positions are added) instead
    /// of ids; `input_ids` only locates the end-of-text token for pooling. Trigger inversion puts a
    /// free vector in one row.
    pub fn forward_token_embeds(
        &self,
        token_embeds: &Tensor,
        input_ids: &Tensor,
    ) -> CLIPTextOutput {
        let x = self.embeddings.with_positions(token_embeds);
        self.forward_embedded(x, input_ids, None, false)
    }

    pub fn embeddings(&self) -> &CLIPTextEmbeddings {
        &self.embeddings
    }

    fn forward_embedded(
        &self,
        mut x: Tensor,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        all_hidden: bool,
    ) -> CLIPTextOutput {
        let mask = attention_mask.map(|m| combined_mask(m, x.kind()));
        let mut hidden = vec![];
        for layer in &self.layers {
            if all_hidden {
                hidden.push(x.shallow_clone());
            }
            x = layer.forward(&x, mask.as_ref().map_or(Mask::Causal, Mask::Additive));
        }
        if all_hidden {
            hidden.push(x.shallow_clone());
        }
        let last = self.final_layer_norm.forward(&x);
        let pooled = pool(&last, input_ids, self.eos_token_id);
        CLIPTextOutput {
            last_hidden_state: last,
            hidden_states: hidden,
            pooled_output: pooled,
            text_embeds: None,
        }
    }
}

/// Causal + padding additive mask [B, 1, T, T] in `kind` (the minimum of the kind where masked).
fn combined_mask(attention_mask: &Tensor, kind: Kind) -> Tensor {
    let (b, t) = attention_mask.size2().expect("[B, T] attention mask");
    let dev = attention_mask.device();
    let causal = Tensor::ones([t, t], (Kind::Bool, dev)).tril(0);
    let keep = causal
        .view([1, 1, t, t])
        .logical_and(&attention_mask.to_kind(Kind::Bool).view([b, 1, 1, t]));
    let min = match kind {
        Kind::Half => -65504.0,
        Kind::BFloat16 => -3.3895e38,
        Kind::Double => f64::MIN,
        _ => f32::MIN as f64,
    };
    Tensor::zeros([b, 1, t, t], (kind, dev)).masked_fill(&keep.logical_not(), min)
}

/// transformers' pooling rule: the first `eos_token_id` position, or argmax of the ids for configs
/// with the legacy `eos_token_id == 2` (where the EOS id is the largest in the vocabulary).
fn pool(last: &Tensor, input_ids: &Tensor, eos_token_id: i64) -> Tensor {
    let b = last.size()[0];
    let idx = if eos_token_id == 2 {
        input_ids.to_kind(Kind::Int).argmax(-1, false)
    } else {
        input_ids
            .eq(eos_token_id)
            .to_kind(Kind::Int)
            .argmax(-1, false)
    };
    let rows = Tensor::arange(b, (Kind::Int64, last.device()));
    last.index(&[Some(rows), Some(idx.to_kind(Kind::Int64))])
}

/// `CLIPTextModel` (`text_projection` absent) or `CLIPTextModelWithProjection`.
#[derive(Debug)]
pub struct CLIPTextModel {
    pub text_model: CLIPTextTransformer,
    pub text_projection: Option<nn::Linear>,
}

impl CLIPTextModel {
    pub fn new(root: nn::Path, c: &CLIPTextConfig, with_projection: bool) -> Self {
        let text_projection = with_projection.then(|| {
            linear(
                &root / "text_projection",
                c.hidden_size,
                c.projection_dim,
                false,
            )
        });
        Self {
            text_model: CLIPTextTransformer::new(&root / "text_model", c),
            text_projection,
        }
    }

    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        all_hidden: bool,
    ) -> CLIPTextOutput {
        let mut out = self
            .text_model
            .forward(input_ids, attention_mask, all_hidden);
        out.text_embeds = self
            .text_projection
            .as_ref()
            .map(|p| p.forward(&out.pooled_output));
        out
    }
}
