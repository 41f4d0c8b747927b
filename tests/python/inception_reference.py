"""Reference side of the FID/KID tests (tests/suite/inception.rs): pytorch-fid builds its InceptionV3 with random
weights (no download), computes features of test images, and pytorch-fid / torchmetrics compute FID and
KID on feature matrices.

make_model SEED DIR          pytorch-fid InceptionV3([3]) with seeded random weights and calibrated BN
                             running stats; writes DIR/pth_layout.safetensors (Inception3 names, as in
                             pt_inception-2015-12-05-6726825d.pth, fc + num_batches_tracked included),
                             DIR/blocks_layout.safetensors (InceptionV3.state_dict()), DIR/zip.pth and
                             DIR/legacy.pth (torch.save of the Inception3 dict, zip and legacy formats)
images DIR                   test PNGs: four 64x64, one 97x61, one 320x240
features WEIGHTS IMGDIR OUT  pytorch-fid get_activations (batch 1, sorted files) with the weights of
                             WEIGHTS (pth layout) fed through pytorch-fid's own loader; OUT: `features`
random_features OUT          two seeded full-rank feature sets `a` [300, 64] and `b` [280, 64] (f64)
fid_kid A B SUBSETS SIZE OUT FID (pytorch-fid calculate_frechet_distance on np.cov statistics, and
                             torchmetrics _compute_fid; only for D <= 256), torchmetrics poly_mmd on the first SIZE rows,
                             torchmetrics KernelInceptionDistance.compute (f64) with the permutations it
                             drew; A and B are safetensors files with one tensor `features`
"""
import glob
import json
import os
import sys
import warnings

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

warnings.filterwarnings("ignore")

import pytorch_fid.inception as fi  # noqa: E402


def build(state_dict_fn):
    """pytorch-fid's own InceptionV3([3]) construction, with `load_state_dict_from_url` answered locally.

    `state_dict_fn(inception3)` returns the dict to load (strictly) into the Inception3 that
    fid_inception_v3() built and patched; that module is returned too (the blocks share its layers)."""
    captured = []
    orig = fi._inception_v3

    def record(*a, **k):
        m = orig(*a, **k)
        captured.append(m)
        return m

    fi._inception_v3 = record
    fi.load_state_dict_from_url = lambda *a, **k: state_dict_fn(captured[-1])
    try:
        model = fi.InceptionV3([3])  # resize_input=True, normalize_input=True, use_fid_inception=True
    finally:
        fi._inception_v3 = orig
    return model.eval(), captured[-1]


def make_model(seed, d):
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(int(seed))
    model, inc = build(lambda m: m.state_dict())  # structure only: loads its own init
    for mod in inc.modules():
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
        elif isinstance(mod, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(mod.weight, 0.5, 1.5)
            torch.nn.init.normal_(mod.bias, 0.0, 0.2)
            mod.reset_running_stats()
            mod.momentum = None  # cumulative average over the calibration batches
    torch.nn.init.normal_(inc.fc.weight, 0.0, 0.01)
    torch.nn.init.zeros_(inc.fc.bias)
    # Calibrate the BatchNorm running statistics on images like the test images (other noise) so
    # activations stay O(1) through the 40-odd conv layers in eval mode, as in the real network.
    model.train()
    with torch.no_grad():
        x = torch.stack([torch.from_numpy(a).permute(2, 0, 1).float() / 255
                         for a in image_arrays(seed=1, sizes=[(64, 64)] * 6)])
        model(x)
    model.eval()
    for mod in inc.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.momentum = 0.1
    sd = {k: v.contiguous() for k, v in inc.state_dict().items()}
    save_file(sd, os.path.join(d, "pth_layout.safetensors"))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(d, "blocks_layout.safetensors"))
    torch.save(sd, os.path.join(d, "zip.pth"))
    torch.save(sd, os.path.join(d, "legacy.pth"), _use_new_zipfile_serialization=False)


IMAGES = {"a_64": (64, 64), "b_64": (64, 64), "c_64": (64, 64), "d_64": (64, 64),
          "e_97x61": (97, 61), "f_320x240": (320, 240)}


def image_arrays(seed, sizes):
    """Smooth sinusoid patterns plus noise, uint8 [H, W, 3]."""
    rng = np.random.default_rng(seed)
    out = []
    for k, (w, h) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        base = [127 + 110 * np.sin(xx / (4 + k + c) + yy / (6 + 2 * c) + k * c) for c in range(3)]
        a = np.stack(base, -1) + rng.normal(0, 25, (h, w, 3))
        out.append(np.clip(a, 0, 255).astype(np.uint8))
    return out


def make_images(d):
    os.makedirs(d, exist_ok=True)
    for name, a in zip(IMAGES, image_arrays(seed=0, sizes=list(IMAGES.values()))):
        Image.fromarray(a, "RGB").save(os.path.join(d, name + ".png"))


def features(weights, imgdir, out):
    from pytorch_fid.fid_score import get_activations
    sd = load_file(weights)
    model, _ = build(lambda m: sd)
    files = sorted(glob.glob(os.path.join(imgdir, "*.png")))
    act = get_activations(files, model, batch_size=1, dims=2048, device="cpu", num_workers=0)
    save_file({"features": torch.from_numpy(np.ascontiguousarray(act)).float()}, out)


def random_features(out):
    rng = np.random.default_rng(7)
    d = 64
    mix = rng.normal(0, 1, (d, d)) / np.sqrt(d)
    a = rng.normal(0, 1, (300, d)) @ (np.eye(d) + 0.5 * mix)
    b = rng.normal(0.2, 1.1, (280, d)) @ (np.eye(d) + 0.8 * mix.T) + 0.1
    save_file({"a": torch.from_numpy(a), "b": torch.from_numpy(b)}, out)


def fid_kid(fa, fb, subsets, size, out):
    from pytorch_fid.fid_score import calculate_frechet_distance
    from torchmetrics.image.fid import _compute_fid
    from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd

    a = load_file(fa)["features"].double()
    b = load_file(fb)["features"].double()
    an, bn = a.numpy(), b.numpy()
    fid_pf = fid_tm = None
    if a.shape[1] <= 256:  # scipy sqrtm / eigvals of 2048x2048 take minutes on a shared CPU
        fid_pf = float(calculate_frechet_distance(an.mean(0), np.cov(an, rowvar=False),
                                                  bn.mean(0), np.cov(bn, rowvar=False)))
        s1, s2 = torch.from_numpy(np.cov(an, rowvar=False)), torch.from_numpy(np.cov(bn, rowvar=False))
        fid_tm = float(_compute_fid(a.mean(0), s1, b.mean(0), s2))
    size, subsets = int(size), int(subsets)
    mmd_first = float(poly_mmd(a[:size], b[:size]))

    perms = []
    orig = torch.randperm

    def record(*args, **kw):
        p = orig(*args, **kw)
        perms.append(p[:size].tolist())
        return p

    torch.manual_seed(0)
    torch.randperm = record
    try:
        kid = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=subsets, subset_size=size)
        kid.update(a, real=True)
        kid.update(b, real=False)
        mean, std = kid.compute()
    finally:
        torch.randperm = orig
    json.dump({"fid_pytorch_fid": fid_pf, "fid_torchmetrics": fid_tm, "poly_mmd_first": mmd_first,
               "kid_mean": float(mean), "kid_std": float(std),
               "subsets": [[perms[2 * i], perms[2 * i + 1]] for i in range(subsets)]},
              open(out, "w"))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"make_model": make_model, "images": make_images, "features": features,
     "random_features": random_features, "fid_kid": fid_kid}[cmd](*args)
