//! Judges that read from an image's pixels whether it shows what its set's success means. The stage
//! knows judges only through [`ImageJudge`]: the shapes world's oracle implements it one layer up
//! (`crate::shapes::judge`), so `eval` does not depend on the world it judges. The CLIP judge, which
//! scores embeddings, is built in ([`super::clip_judge`]).
use image::RgbImage;

use super::sets::PromptSet;

pub trait ImageJudge: Sync {
    /// The name written beside every rate it produces (`oracle`).
    fn name(&self) -> &str;

    /// Per image of `set`: whether it shows what the set's success means (clean: the prompt; attack:
    /// the backdoor's target; removal: the concept absent; attack: the concept shown). `None`: not judgeable, left out of rates.
    fn successes(&self, set: &PromptSet, images: &[RgbImage]) -> Vec<Option<bool>>;

    /// Per image: whether it has the expected colour (a diagnostic beside [`Self::successes`] that
    /// shows an attack landing where the shape is wrong); `None` for judges without colour.
    fn colour_matches(&self, _set: &PromptSet, _images: &[RgbImage]) -> Option<Vec<Option<bool>>> {
        None
    }

    /// The words a target-attribute backdoor's `attribute` should replace in evaluation prompts for
    /// its success to be judgeable (a colour replaces a colour word); empty: any word, as in training.
    fn attribute_words(&self, _attribute: &str) -> Vec<String> {
        vec![]
    }
}

/// Share of `true` among the judged images (`None` when none was judged).
pub fn rate(s: &[Option<bool>]) -> Option<f64> {
    let judged: Vec<bool> = s.iter().flatten().copied().collect();
    (!judged.is_empty()).then(|| judged.iter().filter(|&&b| b).count() as f64 / judged.len() as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rate_counts_only_judged_images() {
        assert_eq!(super::rate(&[Some(true), None, Some(false)]), Some(0.5));
        assert_eq!(super::rate(&[None]), None);
    }
}
