//! Image safety classifiers on CLIP features: the Stable Diffusion safety checker (diffusers'
//! `StableDiffusionSafetyChecker`, the `CompVis/stable-diffusion-safety-checker` layout) and Q16.
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

use crate::error::Result;
use crate::eval::clip::processor::CLIPImageProcessor;
use crate::eval::clip::vision::{
    check_pixel_values, resolve_folder, vision_prefix, vision_rename, CLIPVisionModelWithProjection,
};
use crate::eval::clip::vision_config::CLIPVisionConfig;
use crate::io::weights::{self, SafetensorsFile};
use crate::models::init::without_random_init;
use crate::models::text_encoder::weight_file;
use crate::{input_bail, input_err};

/// Number of concept / special-care embeddings in the released checker.
pub const N_CONCEPTS: i64 = 17;
pub const N_SPECIAL: i64 = 3;
/// What diffusers adds to every concept score once a special-care concept fired.
pub const SPECIAL_CARE_ADJUSTMENT: f32 = 0.01;

/// One image's verdict, as diffusers' `result_img` dict.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyVerdict {
    /// cos − threshold (+ adjustment), rounded to 3 decimals, per special-care concept.
    pub special_scores: Vec<f32>,
    /// Indices of special-care concepts with a positive score.
    pub special_care: Vec<usize>,
    /// cos − threshold + adjustment, rounded to 3 decimals, per concept.
    pub concept_scores: Vec<f32>,
    /// Indices of concepts that fired (score > 0): which filter concept blocked the image.
    pub bad_concepts: Vec<usize>,
    /// diffusers' `has_nsfw_concept`: any concept fired.
    pub has_nsfw_concept: bool,
}

/// numpy's `round(np.float32(x), 3)`: `rint(x * 1000) / 1000` in f32.
fn round3_f32(x: f32) -> f32 {
    (x * 1000.0f32).round_ties_even() / 1000.0f32
}

/// diffusers' `StableDiffusionSafetyChecker.forward` decision on cosine similarities, in f32 as numpy 2
/// computes it (`np.float32 − float` stays f32).
pub fn safety_verdict(
    special_cos: &[f32],
    special_thr: &[f32],
    concept_cos: &[f32],
    concept_thr: &[f32],
) -> SafetyVerdict {
    let mut adjustment = 0.0f32;
    let mut special_scores = vec![];
    let mut special_care = vec![];
    for (i, (c, t)) in special_cos.iter().zip(special_thr).enumerate() {
        let s = round3_f32(c - t + adjustment);
        special_scores.push(s);
        if s > 0.0 {
            special_care.push(i);
            adjustment = SPECIAL_CARE_ADJUSTMENT;
        }
    }
    let mut concept_scores = vec![];
    let mut bad_concepts = vec![];
    for (i, (c, t)) in concept_cos.iter().zip(concept_thr).enumerate() {
        let s = round3_f32(c - t + adjustment);
        concept_scores.push(s);
        if s > 0.0 {
            bad_concepts.push(i);
        }
    }
    let has_nsfw_concept = !bad_concepts.is_empty();
    SafetyVerdict {
        special_scores,
        special_care,
        concept_scores,
        bad_concepts,
        has_nsfw_concept,
    }
}

/// diffusers' `StableDiffusionSafetyChecker`: CLIP vision + `visual_projection`, `concept_embeds`
/// [17, P], `special_care_embeds` [3, P] and their thresholds.
pub struct SafetyChecker {
    pub vs: nn::VarStore,
    pub model: CLIPVisionModelWithProjection,
    pub concept_embeds: Tensor,
    pub special_care_embeds: Tensor,
    pub concept_embeds_weights: Tensor,
    pub special_care_embeds_weights: Tensor,
    pub config: CLIPVisionConfig,
    pub processor: CLIPImageProcessor,
}

impl SafetyChecker {
    /// Load a checker folder (`config.json` = full `CLIPConfig`, `model.safetensors`), a diffusers pipeline
    /// folder (its `safety_checker/`, with `feature_extractor/preprocessor_config.json`), or a cached hub id.
    pub fn load(model: &str, device: Device, kind: Kind) -> Result<Self> {
        let dir = resolve_folder(model, Some("safety_checker"))?;
        let config = CLIPVisionConfig::load(&dir.join("config.json"))?;
        let file = SafetensorsFile::open(&weight_file(&dir, "model")?)?;
        for k in [
            "concept_embeds",
            "special_care_embeds",
            "concept_embeds_weights",
            "special_care_embeds_weights",
        ] {
            if !file.names().iter().any(|n| n == k) {
                input_bail!(
                    "{} has no `{k}`: this is not a StableDiffusionSafetyChecker checkpoint (CompVis/stable-diffusion-safety-checker layout)",
                    file.path().display()
                );
            }
        }
        let prefix = vision_prefix(&file)?;
        // The concept tables' sizes come from the file (17 and 3 in the release); their width must be
        // the projection width.
        let rows = |k: &str| -> Result<i64> { Ok(file.tensor(k)?.size()[0]) };
        let (nc, ns) = (rows("concept_embeds")?, rows("special_care_embeds")?);
        let mut vs = nn::VarStore::new(device);
        let root = vs.root();
        let model =
            without_random_init(|| CLIPVisionModelWithProjection::new(root.clone(), &config));
        let z = nn::Init::Const(1.0);
        let concept_embeds = root.var("concept_embeds", &[nc, config.projection_dim], z);
        let special_care_embeds = root.var("special_care_embeds", &[ns, config.projection_dim], z);
        let concept_embeds_weights = root.var("concept_embeds_weights", &[nc], z);
        let special_care_embeds_weights = root.var("special_care_embeds_weights", &[ns], z);
        vs.set_kind(kind);
        weights::load_var_store_renamed(
            &mut vs,
            &file,
            &["position_ids", "text_model.", "logit_scale"],
            &vision_rename(prefix),
        )?;
        vs.freeze();
        // The pipeline's feature extractor sits beside the checker.
        let fe = dir
            .parent()
            .map(|p| p.join("feature_extractor"))
            .filter(|p| p.join("preprocessor_config.json").exists());
        let processor = match fe {
            Some(p) => CLIPImageProcessor::load_or_default(&p)?,
            None => CLIPImageProcessor::load_or_default(&dir)?,
        };
        processor.check_fits(config.image_size, &dir.join("preprocessor_config.json"))?;
        Ok(Self {
            vs,
            model,
            concept_embeds,
            special_care_embeds,
            concept_embeds_weights,
            special_care_embeds_weights,
            config,
            processor,
        })
    }

    /// The projected image embeddings [N, P] (f32) of preprocessed pixels.
    pub fn image_embeds(&self, pixel_values: &Tensor) -> Result<Tensor> {
        check_pixel_values(pixel_values, &self.config)?;
        let px = pixel_values
            .to_device(self.vs.device())
            .to_kind(self.vs.kind());
        Ok(tch::no_grad(|| self.model.forward(&px).image_embeds))
    }

    /// Verdicts for projected image embeddings [N, P] (e.g. from [`SafetyChecker::image_embeds`]).
    pub fn check_embeds(&self, image_embeds: &Tensor) -> Result<Vec<SafetyVerdict>> {
        let p = self.concept_embeds.size()[1];
        match image_embeds.size2() {
            Ok((_, d)) if d == p => {}
            _ => input_bail!(
                "image embeddings have shape {:?}; the safety checker compares [N, {p}]",
                image_embeds.size()
            ),
        }
        let cos = |e: &Tensor| -> Result<Vec<Vec<f32>>> {
            // torch.nn.functional.normalize (eps 1e-12), in the model's kind, then `.float()`.
            let norm = |t: &Tensor| t / t.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12);
            let img = image_embeds
                .to_device(self.vs.device())
                .to_kind(self.vs.kind());
            let m = norm(&img)
                .mm(&norm(e).tr())
                .to_kind(Kind::Float)
                .to_device(Device::Cpu);
            Ok(Vec::<Vec<f32>>::try_from(&m)?)
        };
        let thr = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(Vec::<f32>::try_from(
                &t.to_kind(Kind::Float).to_device(Device::Cpu),
            )?)
        };
        let (sc, cc) = tch::no_grad(|| -> Result<_> {
            Ok((cos(&self.special_care_embeds)?, cos(&self.concept_embeds)?))
        })?;
        let (st, ct) = (
            thr(&self.special_care_embeds_weights)?,
            thr(&self.concept_embeds_weights)?,
        );
        Ok(sc
            .iter()
            .zip(&cc)
            .map(|(s, c)| safety_verdict(s, &st, c, &ct))
            .collect())
    }

    /// Verdicts for preprocessed pixels [N, 3, S, S] (diffusers' `clip_input`).
    pub fn check_pixels(&self, pixel_values: &Tensor) -> Result<Vec<SafetyVerdict>> {
        self.check_embeds(&self.image_embeds(pixel_values)?)
    }

    /// Verdicts for images (preprocessed with the checker's feature extractor), in batches.
    pub fn check_images(
        &self,
        images: &[image::DynamicImage],
        batch_size: usize,
    ) -> Result<Vec<SafetyVerdict>> {
        let mut out = vec![];
        for chunk in images.chunks(batch_size.max(1)) {
            out.extend(self.check_pixels(&self.processor.preprocess_batch(chunk)?)?);
        }
        Ok(out)
    }
}

/// One image's Q16 result.
#[derive(Debug, Clone, PartialEq)]
pub struct Q16Verdict {
    /// cos(image embedding, prompt row) for rows 0 (appropriate) and 1 (inappropriate).
    pub cosine: [f32; 2],
    /// softmax(100 · cos)[1].
    pub p_inappropriate: f32,
    /// argmax = row 1.
    pub inappropriate: bool,
}

/// Q16 (Schramowski et al., FAccT 2022): CLIP image embedding vs two learned prompt embeddings;
/// softmax(100 · cos) over the two, argmax, row 1 = inappropriate. The embeddings must come from the
/// CLIP model the prompts were learned for (ViT-L/14 for the shared file).
pub struct Q16 {
    /// [2, D] f32, L2-normalised.
    pub prompts: Tensor,
}

impl Q16 {
    /// Read `prompt_embeddings` [2, D] from a safetensors file (e.g. `q16_vitl14_prompts.safetensors`).
    pub fn load(path: &Path) -> Result<Self> {
        let f = SafetensorsFile::open(path)?;
        let t = f.tensor("prompt_embeddings").map_err(|_| {
            input_err!("{} has no `prompt_embeddings` tensor: give Q16's prompt file ([2, D], row 1 = inappropriate)", path.display())
        })?;
        Self::from_prompts(&t).map_err(|e| input_err!("{}: {e}", path.display()))
    }

    pub fn from_prompts(t: &Tensor) -> Result<Self> {
        match t.size2() {
            Ok((2, d)) if d > 0 => {}
            _ => input_bail!("Q16 prompt embeddings must be [2, D], got {:?}", t.size()),
        }
        let t = t.to_device(Device::Cpu).to_kind(Kind::Float);
        Ok(Self {
            prompts: &t / t.norm_scalaropt_dim(2, [-1], true),
        })
    }

    pub fn width(&self) -> i64 {
        self.prompts.size()[1]
    }

    /// Classify image embeddings [N, D].
    pub fn classify(&self, image_embeds: &Tensor) -> Result<Vec<Q16Verdict>> {
        let d = self.width();
        match image_embeds.size2() {
            Ok((n, e)) if n > 0 && e == d => {}
            _ => input_bail!(
                "image embeddings have shape {:?} but the Q16 prompts are {d} wide: use the CLIP model the prompts were learned for (ViT-L/14: 768)",
                image_embeds.size()
            ),
        }
        let img = image_embeds.to_device(Device::Cpu).to_kind(Kind::Float);
        let img = &img / img.norm_scalaropt_dim(2, [-1], true);
        let cos = img.matmul(&self.prompts.tr());
        let probs = (&cos * 100.0).softmax(-1, Kind::Float);
        let cos: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&cos)?;
        let probs: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(&probs)?;
        Ok(cos
            .iter()
            .zip(&probs)
            .map(|(c, p)| Q16Verdict {
                cosine: [c[0], c[1]],
                p_inappropriate: p[1],
                inappropriate: p[1] > p[0],
            })
            .collect())
    }
}
