//! Tensor names between the original CompVis/LDM single-file layout and diffusers / transformers.
//! Both directions follow diffusers' `loaders/single_file_utils.py` (`convert_ldm_unet_checkpoint`,
//! `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`, `convert_open_clip_checkpoint`, and
//! the `DIFFUSERS_TO_LDM_MAPPING` table); the reverse direction is what makes a file that
//! `from_single_file` reads back to the same state dicts (tests/suite/single_file.rs checks it).
//! Names here are without the component prefixes (`model.diffusion_model.`, ...).

/// Prefixes of the three components in an SD 1.x/2.x single file.
pub const UNET_PREFIX: &str = "model.diffusion_model.";
pub const VAE_PREFIX: &str = "first_stage_model.";
/// SD 1.x: a transformers `CLIPTextModel` under this prefix (`text_model.` follows).
pub const CLIP_PREFIX: &str = "cond_stage_model.transformer.";
/// SD 2.x: an OpenCLIP text tower.
pub const OPEN_CLIP_PREFIX: &str = "cond_stage_model.model.";

/// UNet ResNet sub-layers: (LDM, diffusers).
const UNET_RESNET: [(&str, &str); 6] = [
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
];
/// Top-level UNet layers: (LDM, diffusers).
const UNET_TOP: [(&str, &str); 5] = [
    ("time_embed.0.", "time_embedding.linear_1."),
    ("time_embed.2.", "time_embedding.linear_2."),
    ("input_blocks.0.0.", "conv_in."),
    ("out.0.", "conv_norm_out."),
    ("out.2.", "conv_out."),
];

fn swap_prefix(s: &str, pairs: &[(&str, &str)], reverse: bool) -> Option<String> {
    pairs.iter().find_map(|&(ldm, dif)| {
        let (from, to) = if reverse { (dif, ldm) } else { (ldm, dif) };
        s.strip_prefix(from).map(|rest| format!("{to}{rest}"))
    })
}

fn resnet(rest: &str, reverse: bool) -> String {
    let with_dot: Vec<(String, String)> = UNET_RESNET
        .iter()
        .map(|(a, b)| (format!("{a}."), format!("{b}.")))
        .collect();
    let pairs: Vec<(&str, &str)> = with_dot
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    swap_prefix(rest, &pairs, reverse).unwrap_or_else(|| rest.to_string())
}

/// `"a.7.rest"` with `a` given → (7, "rest").
fn index_after<'a>(key: &'a str, head: &str) -> Option<(usize, &'a str)> {
    let rest = key.strip_prefix(head)?.strip_prefix('.')?;
    let (n, rest) = rest.split_once('.')?;
    Some((n.parse().ok()?, rest))
}

/// An LDM UNet name → the diffusers name (`None`: not a UNet weight diffusers reads).
pub fn unet_to_diffusers(key: &str, layers_per_block: usize) -> Option<String> {
    if let Some(k) = swap_prefix(key, &UNET_TOP, false) {
        return Some(k);
    }
    let per = layers_per_block + 1;
    if let Some((i, rest)) = index_after(key, "input_blocks") {
        let i = i.checked_sub(1)?;
        let (b, j) = (i / per, i % per);
        let (part, rest) = rest.split_once('.')?;
        return Some(match (part, rest.strip_prefix("op.")) {
            ("0", Some(op)) => format!("down_blocks.{b}.downsamplers.0.conv.{op}"),
            ("0", None) => format!("down_blocks.{b}.resnets.{j}.{}", resnet(rest, false)),
            ("1", None) => format!("down_blocks.{b}.attentions.{j}.{rest}"),
            _ => return None,
        });
    }
    if let Some((i, rest)) = index_after(key, "middle_block") {
        return Some(match i {
            0 | 2 => format!("mid_block.resnets.{}.{}", i / 2, resnet(rest, false)),
            1 => format!("mid_block.attentions.0.{rest}"),
            _ => return None,
        });
    }
    if let Some((i, rest)) = index_after(key, "output_blocks") {
        let (b, j) = (i / per, i % per);
        let (part, rest) = rest.split_once('.')?;
        // The upsampler sits after the ResNet (index 1) or after the ResNet and attention (2).
        if let Some(conv) = rest.strip_prefix("conv.") {
            if part != "0" {
                return Some(format!("up_blocks.{b}.upsamplers.0.conv.{conv}"));
            }
        }
        return Some(match part {
            "0" => format!("up_blocks.{b}.resnets.{j}.{}", resnet(rest, false)),
            "1" => format!("up_blocks.{b}.attentions.{j}.{rest}"),
            _ => return None,
        });
    }
    None
}

/// A diffusers UNet name → the LDM name. `up_has_attention(b)`: whether up block `b` has attentions
/// (then its upsampler is the third layer of the block's last output block, else the second).
pub fn unet_to_ldm(
    key: &str,
    layers_per_block: usize,
    up_has_attention: &dyn Fn(usize) -> bool,
) -> Option<String> {
    if let Some(k) = swap_prefix(key, &UNET_TOP, true) {
        return Some(k);
    }
    let per = layers_per_block + 1;
    if let Some((b, rest)) = index_after(key, "down_blocks") {
        if let Some(conv) = rest.strip_prefix("downsamplers.0.conv.") {
            return Some(format!(
                "input_blocks.{}.0.op.{conv}",
                1 + b * per + layers_per_block
            ));
        }
        if let Some((j, r)) = index_after(rest, "resnets") {
            return Some(format!(
                "input_blocks.{}.0.{}",
                1 + b * per + j,
                resnet(r, true)
            ));
        }
        let (j, r) = index_after(rest, "attentions")?;
        return Some(format!("input_blocks.{}.1.{r}", 1 + b * per + j));
    }
    if let Some(rest) = key.strip_prefix("mid_block.") {
        if let Some((j, r)) = index_after(rest, "resnets") {
            return Some(format!("middle_block.{}.{}", 2 * j, resnet(r, true)));
        }
        let r = rest.strip_prefix("attentions.0.")?;
        return Some(format!("middle_block.1.{r}"));
    }
    if let Some((b, rest)) = index_after(key, "up_blocks") {
        if let Some(conv) = rest.strip_prefix("upsamplers.0.conv.") {
            let part = if up_has_attention(b) { 2 } else { 1 };
            return Some(format!(
                "output_blocks.{}.{part}.conv.{conv}",
                b * per + layers_per_block
            ));
        }
        if let Some((j, r)) = index_after(rest, "resnets") {
            return Some(format!(
                "output_blocks.{}.0.{}",
                b * per + j,
                resnet(r, true)
            ));
        }
        let (j, r) = index_after(rest, "attentions")?;
        return Some(format!("output_blocks.{}.1.{r}", b * per + j));
    }
    None
}

/// VAE layers whose names only differ by the `norm_out` / `conv_norm_out` spelling.
const VAE_TOP: [(&str, &str); 2] = [
    ("encoder.norm_out.", "encoder.conv_norm_out."),
    ("decoder.norm_out.", "decoder.conv_norm_out."),
];
/// Mid-block attention sub-layers: (LDM, diffusers).
const VAE_ATTN: [(&str, &str); 5] = [
    ("norm.", "group_norm."),
    ("q.", "to_q."),
    ("k.", "to_k."),
    ("v.", "to_v."),
    ("proj_out.", "to_out.0."),
];

fn vae_resnet(rest: &str, reverse: bool) -> String {
    let (a, b) = ("nin_shortcut.", "conv_shortcut.");
    let (from, to) = if reverse { (b, a) } else { (a, b) };
    match rest.strip_prefix(from) {
        Some(r) => format!("{to}{r}"),
        None => rest.to_string(),
    }
}

/// `encoder.mid.*` / `decoder.mid.*` (LDM) ⇄ `*.mid_block.*` (diffusers).
fn vae_mid(rest: &str, reverse: bool) -> Option<String> {
    if !reverse {
        if let Some(r) = rest.strip_prefix("block_1.") {
            return Some(format!("mid_block.resnets.0.{}", vae_resnet(r, false)));
        }
        if let Some(r) = rest.strip_prefix("block_2.") {
            return Some(format!("mid_block.resnets.1.{}", vae_resnet(r, false)));
        }
        let r = rest.strip_prefix("attn_1.")?;
        return Some(format!(
            "mid_block.attentions.0.{}",
            swap_prefix(r, &VAE_ATTN, false)?
        ));
    }
    if let Some((j, r)) = index_after(rest, "resnets") {
        return Some(format!("mid.block_{}.{}", j + 1, vae_resnet(r, true)));
    }
    let r = rest.strip_prefix("attentions.0.")?;
    Some(format!("mid.attn_1.{}", swap_prefix(r, &VAE_ATTN, true)?))
}

/// An LDM VAE name → the diffusers name; `n_up`: the number of decoder blocks (LDM numbers them
/// from the bottom, diffusers from the top).
pub fn vae_to_diffusers(key: &str, n_up: usize) -> Option<String> {
    if let Some(k) = swap_prefix(key, &VAE_TOP, false) {
        return Some(k);
    }
    let (side, rest) = key.split_once('.')?;
    match side {
        "quant_conv" | "post_quant_conv" => return Some(key.to_string()),
        "encoder" | "decoder" => {}
        _ => return None,
    }
    if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
        return Some(key.to_string());
    }
    if let Some(m) = rest.strip_prefix("mid.") {
        return Some(format!("{side}.{}", vae_mid(m, false)?));
    }
    let (i, r) = index_after(rest, if side == "encoder" { "down" } else { "up" })?;
    let (blocks, b) = if side == "encoder" {
        ("down_blocks", i)
    } else {
        ("up_blocks", n_up.checked_sub(1 + i)?)
    };
    if let Some(c) = r
        .strip_prefix("downsample.conv.")
        .or_else(|| r.strip_prefix("upsample.conv."))
    {
        let s = if side == "encoder" {
            "downsamplers"
        } else {
            "upsamplers"
        };
        return Some(format!("{side}.{blocks}.{b}.{s}.0.conv.{c}"));
    }
    let (j, r) = index_after(r, "block")?;
    Some(format!(
        "{side}.{blocks}.{b}.resnets.{j}.{}",
        vae_resnet(r, false)
    ))
}

/// A diffusers VAE name → the LDM name.
pub fn vae_to_ldm(key: &str, n_up: usize) -> Option<String> {
    if let Some(k) = swap_prefix(key, &VAE_TOP, true) {
        return Some(k);
    }
    let (side, rest) = key.split_once('.')?;
    match side {
        "quant_conv" | "post_quant_conv" => return Some(key.to_string()),
        "encoder" | "decoder" => {}
        _ => return None,
    }
    if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
        return Some(key.to_string());
    }
    if let Some(m) = rest.strip_prefix("mid_block.") {
        return Some(format!("{side}.{}", vae_mid(m, true)?));
    }
    let (b, r) = index_after(
        rest,
        if side == "encoder" {
            "down_blocks"
        } else {
            "up_blocks"
        },
    )?;
    let (blocks, i) = if side == "encoder" {
        ("down", b)
    } else {
        ("up", n_up.checked_sub(1 + b)?)
    };
    if let Some(c) = r
        .strip_prefix("downsamplers.0.conv.")
        .or_else(|| r.strip_prefix("upsamplers.0.conv."))
    {
        let s = if side == "encoder" {
            "downsample"
        } else {
            "upsample"
        };
        return Some(format!("{side}.{blocks}.{i}.{s}.conv.{c}"));
    }
    let (j, r) = index_after(r, "resnets")?;
    Some(format!(
        "{side}.{blocks}.{i}.block.{j}.{}",
        vae_resnet(r, true)
    ))
}

/// Whether a diffusers VAE weight is a mid-block attention projection, stored as a 1×1 conv in LDM.
pub fn vae_is_attention_projection(diffusers_key: &str) -> bool {
    diffusers_key.contains("mid_block.attentions.0.")
        && diffusers_key.ends_with(".weight")
        && !diffusers_key.contains("group_norm")
}

/// OpenCLIP top-level tensors: (OpenCLIP, transformers).
const OPEN_CLIP_TOP: [(&str, &str); 5] = [
    (
        "positional_embedding",
        "text_model.embeddings.position_embedding.weight",
    ),
    (
        "token_embedding.weight",
        "text_model.embeddings.token_embedding.weight",
    ),
    ("ln_final.weight", "text_model.final_layer_norm.weight"),
    ("ln_final.bias", "text_model.final_layer_norm.bias"),
    ("text_projection", "text_projection.weight"),
];
/// Inside one OpenCLIP residual block: (OpenCLIP, transformers).
const OPEN_CLIP_BLOCK: [(&str, &str); 5] = [
    ("ln_1.", "layer_norm1."),
    ("ln_2.", "layer_norm2."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
    ("attn.out_proj.", "self_attn.out_proj."),
];

/// Where an OpenCLIP tensor goes in transformers' `CLIPTextModel`.
#[derive(Debug, Clone, PartialEq)]
pub enum OpenClipTarget {
    /// One tensor, same shape (`transpose`: `text_projection`, stored [width, dim] by OpenCLIP).
    Plain { name: String, transpose: bool },
    /// `in_proj_weight` / `in_proj_bias` of block `layer`: q, k, v stacked on dim 0 (`suffix`: `weight`
    /// or `bias`).
    InProj { layer: usize, suffix: String },
}

/// An OpenCLIP name (without prefix) → its target (`None`: not a text-tower tensor).
pub fn open_clip_to_transformers(key: &str) -> Option<OpenClipTarget> {
    if let Some(&(_, t)) = OPEN_CLIP_TOP.iter().find(|(o, _)| *o == key) {
        return Some(OpenClipTarget::Plain {
            name: t.to_string(),
            transpose: key == "text_projection",
        });
    }
    let (layer, rest) = index_after(key, "transformer.resblocks")?;
    if let Some(suffix) = rest.strip_prefix("attn.in_proj_") {
        return Some(OpenClipTarget::InProj {
            layer,
            suffix: suffix.to_string(),
        });
    }
    let r = swap_prefix(rest, &OPEN_CLIP_BLOCK, false)?;
    Some(OpenClipTarget::Plain {
        name: format!("text_model.encoder.layers.{layer}.{r}"),
        transpose: false,
    })
}

/// A transformers name → the OpenCLIP name; q/k/v projections map to `in_proj_*` with their
/// position in the stack (0, 1, 2).
pub fn transformers_to_open_clip(key: &str) -> Option<(String, Option<usize>)> {
    if let Some(&(o, _)) = OPEN_CLIP_TOP.iter().find(|(_, t)| *t == key) {
        return Some((o.to_string(), None));
    }
    let (layer, rest) = index_after(key, "text_model.encoder.layers")?;
    for (i, p) in ["q_proj.", "k_proj.", "v_proj."].iter().enumerate() {
        if let Some(suffix) = rest
            .strip_prefix("self_attn.")
            .and_then(|r| r.strip_prefix(p))
        {
            return Some((
                format!("transformer.resblocks.{layer}.attn.in_proj_{suffix}"),
                Some(i),
            ));
        }
    }
    let r = swap_prefix(rest, &OPEN_CLIP_BLOCK, true)?;
    Some((format!("transformer.resblocks.{layer}.{r}"), None))
}

/// The encoder layer a transformers name belongs to (`text_model.encoder.layers.N.*`).
pub fn transformers_layer(name: &str) -> Option<usize> {
    index_after(name, "text_model.encoder.layers").map(|(l, _)| l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unet_names_round_trip() {
        let has_attn = |b: usize| b > 0;
        for key in [
            "time_embed.0.weight",
            "input_blocks.0.0.bias",
            "input_blocks.1.0.in_layers.2.weight",
            "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight",
            "input_blocks.3.0.op.weight",
            "input_blocks.4.0.skip_connection.bias",
            "middle_block.0.emb_layers.1.weight",
            "middle_block.1.proj_in.weight",
            "middle_block.2.out_layers.3.bias",
            "output_blocks.2.1.conv.weight",
            "output_blocks.5.2.conv.bias",
            "output_blocks.5.1.norm.weight",
            "out.2.weight",
        ] {
            let d = unet_to_diffusers(key, 2).unwrap();
            assert_eq!(unet_to_ldm(&d, 2, &has_attn).unwrap(), key, "{key} -> {d}");
        }
        assert_eq!(
            unet_to_diffusers("input_blocks.3.0.op.weight", 2).unwrap(),
            "down_blocks.0.downsamplers.0.conv.weight"
        );
        assert_eq!(
            unet_to_diffusers("output_blocks.11.0.skip_connection.weight", 2).unwrap(),
            "up_blocks.3.resnets.2.conv_shortcut.weight"
        );
    }

    #[test]
    fn vae_names_round_trip() {
        for key in [
            "encoder.down.0.block.1.nin_shortcut.weight",
            "encoder.down.1.downsample.conv.bias",
            "encoder.mid.attn_1.proj_out.weight",
            "decoder.mid.block_2.norm1.weight",
            "decoder.up.0.block.2.conv2.weight",
            "decoder.up.3.upsample.conv.weight",
            "decoder.norm_out.bias",
            "post_quant_conv.weight",
        ] {
            let d = vae_to_diffusers(key, 4).unwrap();
            assert_eq!(vae_to_ldm(&d, 4).unwrap(), key, "{key} -> {d}");
        }
        assert_eq!(
            vae_to_diffusers("decoder.up.3.upsample.conv.weight", 4).unwrap(),
            "decoder.up_blocks.0.upsamplers.0.conv.weight"
        );
    }

    #[test]
    fn open_clip_names_round_trip() {
        for key in [
            "transformer.resblocks.3.ln_1.weight",
            "transformer.resblocks.0.mlp.c_proj.bias",
            "transformer.resblocks.1.attn.out_proj.weight",
            "positional_embedding",
            "ln_final.bias",
        ] {
            let Some(OpenClipTarget::Plain { name, .. }) = open_clip_to_transformers(key) else {
                panic!("{key}")
            };
            assert_eq!(transformers_to_open_clip(&name).unwrap().0, key);
        }
        assert_eq!(
            transformers_to_open_clip("text_model.encoder.layers.2.self_attn.k_proj.bias").unwrap(),
            ("transformer.resblocks.2.attn.in_proj_bias".into(), Some(1))
        );
    }
}
