//! Learned token embeddings (textual inversion, Gal et al. 2022): a file of new words and their
//! input embeddings, in diffusers' learned-embeds format — a safetensors file whose one tensor is
//! named by its token (`{"<s*>": [H]}`), the format `pipe.load_textual_inversion` reads — and the way
//! they enter a text encoder: a new tokenizer entry and a new row of the token-embedding table.
use std::path::Path;
use tch::{Kind, Tensor};

use crate::error::Result;
use crate::input_bail;
use crate::io::weights::{save_tensors, SafetensorsFile};
use crate::models::text_encoder::TextEncoder;

/// One learned word.
pub struct LearnedEmbedding {
    pub token: String,
    /// `[H]`, float.
    pub vector: Tensor,
}

/// Read a learned-embeds file: every tensor is one token (diffusers writes one per file).
pub fn load(path: &Path) -> Result<Vec<LearnedEmbedding>> {
    let file = SafetensorsFile::open(path)?;
    let names = file.names();
    if names.is_empty() {
        input_bail!("{}: holds no embedding", path.display());
    }
    names
        .into_iter()
        .map(|token| {
            let t = file.tensor(&token)?.to_kind(Kind::Float);
            let vector = match t.size()[..] {
                [_] => t,
                [1, _] => t.squeeze_dim(0),
                ref s => input_bail!(
                    "{}: embedding `{token}` has shape {s:?}: clipdoor reads one vector per token ([H] or [1, H]); multi-vector embeddings are not supported",
                    path.display()
                ),
            };
            Ok(LearnedEmbedding { token, vector })
        })
        .collect()
}

/// Write `embeddings` as diffusers' learned-embeds safetensors (f32), atomically.
pub fn save(path: &Path, embeddings: &[LearnedEmbedding]) -> Result<()> {
    let list: Vec<(String, Tensor)> = embeddings
        .iter()
        .map(|e| (e.token.clone(), e.vector.detach().to_kind(Kind::Float)))
        .collect();
    save_tensors(path, &list, Some(Kind::Float))
}

impl TextEncoder {
    /// Add a learned word: the tokenizer gets `token` (after its vocabulary, as transformers'
    /// `add_tokens`), the token-embedding table a row holding `vector`. Returns the new id.
    pub fn add_embedding(&mut self, token: &str, vector: &Tensor) -> Result<i64> {
        let width = self.config.hidden_size;
        if vector.size() != [width] {
            input_bail!(
                "the embedding of {token:?} has shape {:?}, but this text encoder's tokens are {width} wide: it was learned for another model",
                vector.size()
            );
        }
        let id = self.tokenizer.add_token(token)? as i64;
        let mut table = self
            .model
            .text_model
            .embeddings()
            .token_embedding_weight()
            .shallow_clone();
        let rows = table.size()[0];
        if id != rows {
            input_bail!(
                "the tokenizer gives {token:?} id {id}, but the embedding table has {rows} rows: the tokenizer and the weights disagree"
            );
        }
        let grown = tch::no_grad(|| {
            Tensor::cat(
                &[
                    table.detach(),
                    vector
                        .to_device(table.device())
                        .to_kind(table.kind())
                        .unsqueeze(0),
                ],
                0,
            )
        });
        // set_data swaps the tensor behind every handle of this variable (the module's and the
        // VarStore's), so the forward pass and saving both see the grown table.
        table.set_data(&grown);
        self.config.vocab_size = (rows + 1) as _;
        Ok(id)
    }

    /// [`Self::add_embedding`] for every word of a learned-embeds file.
    pub fn add_embeddings_from(&mut self, path: &Path) -> Result<Vec<String>> {
        let mut added = vec![];
        for e in load(path)? {
            self.add_embedding(&e.token, &e.vector)
                .map_err(|err| crate::input_err!("{}: {err}", path.display()))?;
            added.push(e.token);
        }
        Ok(added)
    }
}
