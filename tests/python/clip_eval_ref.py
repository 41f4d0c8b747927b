"""Reference side of the CLIP evaluation tests (tests/suite/clip_eval.rs): transformers, diffusers, torchmetrics,
Pillow and numpy build the tiny models and compute what clipdoor must reproduce.

images DIR                       write the test images (odd sizes, portrait/landscape, tiny, RGBA, L, LA)
make_clip DIR SEED PROJ          tiny random CLIPModel (text + vision) + tokenizer + preprocessor_config.json
make_vision DIR SEED             tiny random CLIPVisionModelWithProjection (+ preprocessor_config.json)
process IMGDIR OUT               CLIPImageProcessor pixel_values of every image (one tensor per file name)
embed MODEL PIXELS OUT           image_embeds of the given pixel_values (safetensors `pixel_values`)
clip_score MODEL IMGDIR PROMPTS OUT   torchmetrics clip_score (model + processor via its callable hook)
make_checker DIR SEED IMGDIR     tiny StableDiffusionSafetyChecker with concepts engineered to fire on some images
checker DIR PIXELS OUT           diffusers' safety checker on pixel_values: has_nsfw_concept + every score
fd_cmmd OUT                      random feature sets and numpy FD (general eig of S1·S2) and CMMD (reference formula)
q16 PROMPTS EMBEDS OUT           Q16: softmax(100 · cos) over the two prompt embeddings, argmax
"""
import json, os, sys

import numpy as np
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clip_text_ref import write_tokenizer  # noqa: E402

VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              image_size=224, patch_size=32, hidden_act="quick_gelu")
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407, pad_token_id=1)

# name: (width, height, mode)
IMAGES = {
    "a_landscape_301x199": (301, 199, "RGB"),
    "b_portrait_199x301": (199, 301, "RGB"),
    "c_odd_37x53": (37, 53, "RGB"),
    "d_almost_225x224": (225, 224, "RGB"),
    "e_exact_224x224": (224, 224, "RGB"),
    "f_big_640x481": (640, 481, "RGB"),
    "g_tiny_1x1": (1, 1, "RGB"),
    "h_thin_3x97": (3, 97, "RGB"),
    "i_tiny_2x5": (2, 5, "RGB"),
    "j_rgba_123x77": (123, 77, "RGBA"),
    "k_gray_65x90": (65, 90, "L"),
    "l_gray_alpha_50x51": (50, 51, "LA"),
    "m_noise_512x513": (512, 513, "RGB"),
}


def make_images(d):
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (w, h, mode) in IMAGES.items():
        c = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}[mode]
        if name.startswith("m_noise"):
            a = rng.integers(0, 256, (h, w, c), dtype=np.uint8)  # hard edges: exercises clipping
        else:
            # smooth gradients + blobs + some noise (both smooth and sharp content)
            yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
            base = [127 + 120 * np.sin(xx / (3 + k) + yy / (5 + 2 * k) + k) for k in range(c)]
            a = np.stack(base, -1) + rng.normal(0, 20, (h, w, c))
            a = np.clip(np.round(a), 0, 255).astype(np.uint8)
            if mode in ("RGBA", "LA"):
                a[..., -1] = rng.integers(0, 256, (h, w), dtype=np.uint8)
                a[0, :, -1] = 0
                a[-1, :, -1] = 255
        img = Image.fromarray(a[..., 0] if c == 1 else a, mode)
        img.save(os.path.join(d, name + ".png"))


def processor():
    return transformers.CLIPImageProcessorPil()


def image_files(d):
    return sorted(f for f in os.listdir(d) if f.endswith(".png"))


def perturb(model):
    # transformers initialises LayerNorms to 1/0 and the class embedding ~N(0,1); perturb norms so the
    # test sees their weights.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                p.add_(torch.randn_like(p) * 0.1)


def make_clip(d, seed, proj):
    write_tokenizer(d, "<|endoftext|>")
    torch.manual_seed(seed)
    # text_config.projection_dim is set to the top-level value as in the released OpenAI checkpoints
    # (clipdoor's CLIPTextConfig reads the nested value); vision_config keeps the default 512 so the
    # test sees the vision loader take the top-level projection_dim, as CLIPModel does.
    cfg = transformers.CLIPConfig(text_config=dict(TEXT, projection_dim=proj), vision_config=VISION, projection_dim=proj)
    m = transformers.CLIPModel(cfg).eval()
    perturb(m)
    m.save_pretrained(d)
    processor().save_pretrained(d)


def make_vision(d, seed):
    torch.manual_seed(seed)
    m = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(projection_dim=48, **VISION)).eval()
    perturb(m)
    m.save_pretrained(d)
    processor().save_pretrained(d)


def process(imgdir, out):
    p = processor()
    t = {}
    for f in image_files(imgdir):
        px = p(images=Image.open(os.path.join(imgdir, f)), return_tensors="pt")["pixel_values"]
        t[f] = px[0].contiguous()
    save_file(t, out)


def load_any(d):
    cfg = transformers.AutoConfig.from_pretrained(d)
    arch = cfg.architectures[0]
    if arch == "CLIPModel":
        return transformers.CLIPModel.from_pretrained(d).eval()
    return transformers.CLIPVisionModelWithProjection.from_pretrained(d).eval()


def image_embeds(m, px):
    with torch.no_grad():
        if isinstance(m, transformers.CLIPModel):
            pooled = m.vision_model(pixel_values=px).pooler_output
            return m.visual_projection(pooled)
        return m(pixel_values=px).image_embeds


def embed(d, pixels, out):
    px = load_file(pixels)["pixel_values"]
    save_file({"image_embeds": image_embeds(load_any(d), px).contiguous()}, out)


class TorchmetricsCompat(torch.nn.Module):
    """torchmetrics 1.9 expects get_*_features to return tensors; transformers 5 returns model outputs
    whose pooler_output is the projected embedding. Nothing else changes."""

    def __init__(self, m):
        super().__init__()
        self.m, self.config = m, m.config

    @staticmethod
    def _t(x):
        return x if torch.is_tensor(x) else x.pooler_output

    def get_image_features(self, *a, **k):
        f = self._t(self.m.get_image_features(*a, **k))
        assert torch.allclose(f, self.m.visual_projection(self.m.vision_model(*a, **k).pooler_output))
        return f

    def get_text_features(self, *a, **k):
        return self._t(self.m.get_text_features(*a, **k))


def clip_score(d, imgdir, prompts, out):
    from torchmetrics.functional.multimodal import clip_score as tm_clip_score
    from torchmetrics.functional.multimodal.clip_score import _clip_score_update
    model = TorchmetricsCompat(transformers.CLIPModel.from_pretrained(d).eval())
    proc = transformers.CLIPProcessor(image_processor=processor(), tokenizer=transformers.CLIPTokenizer.from_pretrained(d))
    texts = [l.rstrip("\n") for l in open(prompts, encoding="utf-8") if l.strip()]
    files = image_files(imgdir)[: len(texts)]
    # torchmetrics takes [C, H, W] uint8 tensors
    imgs = [torch.from_numpy(np.array(Image.open(os.path.join(imgdir, f)).convert("RGB"))).permute(2, 0, 1) for f in files]
    with torch.no_grad():
        score = tm_clip_score(imgs, texts, lambda: (model, proc))
        per, _ = _clip_score_update(imgs, texts, model, proc)
        # image–image (reversed order): a positive aggregate, so the floor is not what is compared
        score_ii = tm_clip_score(imgs, imgs[::-1], lambda: (model, proc))
    save_file({"score": score.reshape(1).float().contiguous(), "per_sample": per.float().contiguous(),
               "score_image_image": score_ii.reshape(1).float().contiguous()}, out)
    print(json.dumps(files))


def make_checker(d, seed, imgdir):
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    torch.manual_seed(seed)
    cfg = transformers.CLIPConfig(text_config=TEXT, vision_config=VISION, projection_dim=40)
    sc = StableDiffusionSafetyChecker(cfg).eval()
    perturb(sc)
    p = processor()
    files = image_files(imgdir)
    px = torch.cat([p(images=Image.open(os.path.join(imgdir, f)), return_tensors="pt")["pixel_values"] for f in files])
    with torch.no_grad():
        emb = sc.visual_projection(sc.vision_model(px)[1])
        sc.concept_embeds.copy_(torch.randn(17, 40))
        sc.special_care_embeds.copy_(torch.randn(3, 40))
        # Random rows never fire (threshold 1); engineered rows use thresholds half-way between an
        # image's own cosine (1) and the closest other image, since a tiny random ViT maps different
        # images to similar embeddings.
        sc.concept_embeds_weights.fill_(1.0)
        sc.special_care_embeds_weights.fill_(1.0)
        e = emb / emb.norm(dim=-1, keepdim=True)
        cos = e @ e.T

        def mid(i):
            others = torch.cat([cos[i, :i], cos[i, i + 1:]])
            return float((1 + others.max()) / 2)
        noise, tiny, odd = files.index("m_noise_512x513.png"), files.index("g_tiny_1x1.png"), files.index("c_odd_37x53.png")
        # the noise image fires concept 5 outright
        sc.concept_embeds[5] = emb[noise] * 2.0
        sc.concept_embeds_weights[5] = mid(noise)
        # the 1x1 image hits special-care concept 1 -> adjustment 0.01 -> concept 2 fires only because of it
        sc.special_care_embeds[1] = emb[tiny]
        sc.special_care_embeds_weights[1] = mid(tiny)
        sc.concept_embeds[2] = emb[tiny]
        sc.concept_embeds_weights[2] = 1.005
        # the odd-size image sits just below a threshold (no fire)
        sc.concept_embeds[9] = emb[odd]
        sc.concept_embeds_weights[9] = 1.002
    sc.save_pretrained(d)


def checker(d, pixels, out):
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    sc = StableDiffusionSafetyChecker.from_pretrained(d).eval()
    px = load_file(pixels)["pixel_values"]
    captured = {}

    def prof(frame, event, arg):
        if event == "return" and frame.f_code is StableDiffusionSafetyChecker.forward.__wrapped__.__code__ if hasattr(StableDiffusionSafetyChecker.forward, "__wrapped__") else frame.f_code is StableDiffusionSafetyChecker.forward.__code__:
            captured["result"] = frame.f_locals.get("result")

    sys.setprofile(prof)
    try:
        _, nsfw = sc(clip_input=px, images=[np.zeros((2, 2, 3)) for _ in range(px.shape[0])])
    finally:
        sys.setprofile(None)
    res = captured["result"]
    with torch.no_grad():
        emb = sc.visual_projection(sc.vision_model(px)[1])
    t = {
        "has_nsfw_concept": torch.tensor([int(x) for x in nsfw], dtype=torch.int64),
        "concept_scores": torch.tensor([[float(r["concept_scores"][i]) for i in range(17)] for r in res], dtype=torch.float32),
        "special_scores": torch.tensor([[float(r["special_scores"][i]) for i in range(3)] for r in res], dtype=torch.float32),
        "bad_concepts": torch.tensor([[int(i in r["bad_concepts"]) for i in range(17)] for r in res], dtype=torch.int64),
        "image_embeds": emb.contiguous(),
    }
    save_file(t, out)


def fd_cmmd(out):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (300, 16)) @ rng.normal(0, 0.5, (16, 16))
    y = rng.normal(0.3, 1, (250, 16)) @ rng.normal(0, 0.5, (16, 16)) + 0.1
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    ev = np.linalg.eigvals(s1 @ s2)  # tr sqrtm(A) = sum sqrt(eig(A)); A = S1 S2 is not symmetric
    tr_covmean = np.sqrt(ev.astype(np.complex128)).real.sum()
    fd = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean

    def mmd(a, b, sigma=10.0, scale=1000.0):  # google-research/cmmd distance.py, in numpy f64
        a = a / np.linalg.norm(a, axis=-1, keepdims=True)
        b = b / np.linalg.norm(b, axis=-1, keepdims=True)
        an, bn = np.diag(a @ a.T), np.diag(b @ b.T)
        g = 1 / (2 * sigma ** 2)
        kxx = np.mean(np.exp(-g * (-2 * a @ a.T + an[:, None] + an[None, :])))
        kxy = np.mean(np.exp(-g * (-2 * a @ b.T + an[:, None] + bn[None, :])))
        kyy = np.mean(np.exp(-g * (-2 * b @ b.T + bn[:, None] + bn[None, :])))
        return scale * (kxx + kyy - 2 * kxy)

    t = {"x": torch.from_numpy(x), "y": torch.from_numpy(y),
         "fd": torch.tensor([fd]), "cmmd": torch.tensor([mmd(x, y)]), "cmmd_self": torch.tensor([mmd(x, x)])}
    save_file(t, out)


def q16(prompts, embeds, out):
    p = load_file(prompts)["prompt_embeddings"].float()
    e = load_file(embeds)["image_embeds"].float()
    # Q16's ClipSimModel_Infer: 100 * normalised image @ normalised prompts.T; softmax; argmax
    tn = p / p.norm(dim=-1, keepdim=True)
    en = e / e.norm(dim=-1, keepdim=True)
    sim = 100.0 * en @ tn.T
    probs = sim.softmax(dim=-1)
    save_file({"cosine": (sim / 100.0).contiguous(), "probs": probs.contiguous(),
               "label": probs.argmax(-1).contiguous()}, out)


if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "images":
        make_images(a[0])
    elif cmd == "make_clip":
        make_clip(a[0], int(a[1]), int(a[2]))
    elif cmd == "make_vision":
        make_vision(a[0], int(a[1]))
    elif cmd == "process":
        process(a[0], a[1])
    elif cmd == "embed":
        embed(a[0], a[1], a[2])
    elif cmd == "clip_score":
        clip_score(a[0], a[1], a[2], a[3])
    elif cmd == "make_checker":
        make_checker(a[0], int(a[1]), a[2])
    elif cmd == "checker":
        checker(a[0], a[1], a[2])
    elif cmd == "fd_cmmd":
        fd_cmmd(a[0])
    elif cmd == "q16":
        q16(a[0], a[1], a[2])
    else:
        sys.exit(f"unknown command {cmd}")
