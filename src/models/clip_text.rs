//! transformers' `CLIPTextModel` / `CLIPTextModelWithProjection`, one struct per upstream class, with
//! `VarStore` paths equal to the safetensors keys (`text_model.encoder.layers.0.self_attn.q_proj.weight`).
use tch::{nn, nn::Module, Kind, Tensor};

use super::activation::Activation;
use super::clip_text_config::CLIPTextConfig;

/// `CLIPTextEmbeddings`: token + learned absolute position embeddings.
#[derive(Debug)]
pub struct CLIPTextEmbeddings {
    token_embedding: nn::Embedding,
    position_embedding: nn::Embedding,
}

impl CLIPTextEmbeddings {
    pub fn new(p: nn::Path, c: &CLIPTextConfig) -> Self {
        let cfg = nn::EmbeddingConfig { ws_init: nn::Init::Randn { mean: 0., stdev: 0.02 }, ..Default::default() };
        Self {
            token_embedding: nn::embedding(&p / "token_embedding", c.vocab_size, c.hidden_size, cfg),
            position_embedding: nn::embedding(&p / "position_embedding", c.max_position_embeddings, c.hidden_size, cfg),
        }
    }

    pub fn forward(&self, input_ids: &Tensor) -> Tensor {
        let seq = input_ids.size()[1];
        let pos = Tensor::arange(seq, (Kind::Int64, input_ids.device())).unsqueeze(0);
        self.token_embedding.forward(input_ids) + self.position_embedding.forward(&pos)
    }
}

/// `CLIPAttention`: multi-head self-attention through `scaled_dot_product_attention`.
#[derive(Debug)]
pub struct CLIPAttention {
    q_proj: nn::Linear,
    k_proj: nn::Linear,
    v_proj: nn::Linear,
    out_proj: nn::Linear,
    heads: i64,
    head_dim: i64,
}

fn linear(p: nn::Path, i: i64, o: i64, bias: bool) -> nn::Linear {
    // transformers' CLIP init: normal(0, 0.02) weights and zero biases (scaled by initializer_factor=1).
    let cfg = nn::LinearConfig { ws_init: nn::Init::Randn { mean: 0., stdev: 0.02 }, bs_init: Some(nn::Init::Const(0.)), bias };
    nn::linear(p, i, o, cfg)
}

fn layer_norm(p: nn::Path, dim: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(p, vec![dim], nn::LayerNormConfig { eps, ..Default::default() })
}

impl CLIPAttention {
    pub fn new(p: nn::Path, c: &CLIPTextConfig) -> Self {
        let h = c.hidden_size;
        Self {
            q_proj: linear(&p / "q_proj", h, h, true),
            k_proj: linear(&p / "k_proj", h, h, true),
            v_proj: linear(&p / "v_proj", h, h, true),
            out_proj: linear(&p / "out_proj", h, h, true),
            heads: c.num_attention_heads,
            head_dim: h / c.num_attention_heads,
        }
    }

    /// `mask`: additive float mask broadcastable to [B, heads, T, T]; `None` means causal only.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let (b, t, _) = x.size3().expect("[B, T, C] input");
        let split = |y: Tensor| y.view([b, t, self.heads, self.head_dim]).transpose(1, 2);
        let q = split(self.q_proj.forward(x));
        let k = split(self.k_proj.forward(x));
        let v = split(self.v_proj.forward(x));
        let y = match mask {
            None => Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, true, None, false),
            Some(m) => Tensor::scaled_dot_product_attention(&q, &k, &v, Some(m), 0.0, false, None, false),
        };
        self.out_proj.forward(&y.transpose(1, 2).reshape([b, t, self.heads * self.head_dim]))
    }
}

/// `CLIPMLP`: fc1 → activation → fc2.
#[derive(Debug)]
pub struct CLIPMLP {
    fc1: nn::Linear,
    fc2: nn::Linear,
    act: Activation,
}

impl CLIPMLP {
    pub fn new(p: nn::Path, c: &CLIPTextConfig) -> Self {
        Self {
            fc1: linear(&p / "fc1", c.hidden_size, c.intermediate_size, true),
            fc2: linear(&p / "fc2", c.intermediate_size, c.hidden_size, true),
            act: Activation::parse(&c.hidden_act).expect("validated config"),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.fc2.forward(&self.act.apply(&self.fc1.forward(x)))
    }
}

/// `CLIPEncoderLayer`: pre-norm attention and MLP blocks with residuals.
#[derive(Debug)]
pub struct CLIPEncoderLayer {
    self_attn: CLIPAttention,
    layer_norm1: nn::LayerNorm,
    mlp: CLIPMLP,
    layer_norm2: nn::LayerNorm,
}

impl CLIPEncoderLayer {
    pub fn new(p: nn::Path, c: &CLIPTextConfig) -> Self {
        Self {
            self_attn: CLIPAttention::new(&p / "self_attn", c),
            layer_norm1: layer_norm(&p / "layer_norm1", c.hidden_size, c.layer_norm_eps),
            mlp: CLIPMLP::new(&p / "mlp", c),
            layer_norm2: layer_norm(&p / "layer_norm2", c.hidden_size, c.layer_norm_eps),
        }
    }

    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let x = x + self.self_attn.forward(&self.layer_norm1.forward(x), mask);
        &x + self.mlp.forward(&self.layer_norm2.forward(&x))
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
        Self {
            embeddings: CLIPTextEmbeddings::new(&p / "embeddings", c),
            layers: (0..c.num_hidden_layers).map(|i| CLIPEncoderLayer::new(&enc / i, c)).collect(),
            final_layer_norm: layer_norm(&p / "final_layer_norm", c.hidden_size, c.layer_norm_eps),
            eos_token_id: c.eos_token_id,
        }
    }

    /// `attention_mask`: optional [B, T] of 1 (attend) / 0 (padding), combined with the causal mask as
    /// transformers does. Stable Diffusion and the Rickrolling reference pass none.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>, all_hidden: bool) -> CLIPTextOutput {
        let mut x = self.embeddings.forward(input_ids);
        let mask = attention_mask.map(|m| combined_mask(m, x.kind()));
        let mut hidden = vec![];
        for layer in &self.layers {
            if all_hidden {
                hidden.push(x.shallow_clone());
            }
            x = layer.forward(&x, mask.as_ref());
        }
        if all_hidden {
            hidden.push(x.shallow_clone());
        }
        let last = self.final_layer_norm.forward(&x);
        let pooled = pool(&last, input_ids, self.eos_token_id);
        CLIPTextOutput { last_hidden_state: last, hidden_states: hidden, pooled_output: pooled, text_embeds: None }
    }
}

/// Causal + padding additive mask [B, 1, T, T] in `kind` (the minimum of the kind where masked).
fn combined_mask(attention_mask: &Tensor, kind: Kind) -> Tensor {
    let (b, t) = attention_mask.size2().expect("[B, T] attention mask");
    let dev = attention_mask.device();
    let causal = Tensor::ones([t, t], (Kind::Bool, dev)).tril(0);
    let keep = causal.view([1, 1, t, t]).logical_and(&attention_mask.to_kind(Kind::Bool).view([b, 1, 1, t]));
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
        input_ids.eq(eos_token_id).to_kind(Kind::Int).argmax(-1, false)
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
        let text_projection = with_projection.then(|| linear(&root / "text_projection", c.hidden_size, c.projection_dim, false));
        Self { text_model: CLIPTextTransformer::new(&root / "text_model", c), text_projection }
    }

    pub fn forward(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>, all_hidden: bool) -> CLIPTextOutput {
        let mut out = self.text_model.forward(input_ids, attention_mask, all_hidden);
        out.text_embeds = self.text_projection.as_ref().map(|p| p.forward(&out.pooled_output));
        out
    }
}
