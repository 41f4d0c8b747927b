"""Reference side of tests/suite/nudenet.rs: the `nudenet` package (NudeNet v3, 320n.onnx) and OpenCV.

  make DIR     write synthetic test images (PNG/JPEG; some make the detector fire, some do not) and
               DIR/manifest.json listing them
  detect DIR   for every image in the manifest: NudeDetector().detect(path), plus raw dumps next to each
               image: cv2.imread pixels (<img>.bgr.u8), the network input (<img>.blob.f32) and output
               (<img>.out.f32); prints JSON {file: detections}
  post DIR     synthetic raw outputs (clustered boxes, scores around the 0.2 / 0.25 thresholds, ties)
               through nudenet's _postprocess for several image geometries, listed in DIR/post.json
  resize DIR   random square u8 images of many sizes and cv2.resize(..., (320, 320)) of each, as raw
               bytes, listed in DIR/resize.json

There are no real nude images here: skin-coloured blurred ellipses with a darker disc inside are
enough to make the detector report FEMALE_BREAST_EXPOSED and friends, which is all parity needs.
"""
import json
import os
import sys

import cv2
import numpy as np
from nudenet import NudeDetector
from nudenet.nudenet import _postprocess, _read_image


def skin_scene(rng, h, w):
    """Gradient background, a few blurred skin-tone ellipses with darker centres, mild noise (BGR)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, w)[None, :, None]
    img = (img * (0.5 + 0.5 * ramp)).astype(np.uint8)
    for _ in range(rng.integers(1, 6)):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(max(1, w // 10), max(2, w // 2))), int(rng.integers(max(1, h // 10), max(2, h // 2))))
        skin = [int(rng.integers(90, 180)), int(rng.integers(120, 200)), int(rng.integers(170, 255))]
        cv2.ellipse(img, centre, axes, float(rng.integers(0, 180)), 0, 360, skin, -1)
        if rng.random() < 0.7:
            cv2.circle(img, centre, max(2, axes[0] // 6), [int(c * 0.6) for c in skin], -1)
    sigma = max(0.5, min(h, w) / 100)
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def plain_scene(rng, h, w, kind):
    """Images that should not fire: a colour gradient, uniform noise, a flat colour."""
    if kind == "gradient":
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + y) * 127 // max(1, w + h - 2)], -1)
        return img.astype(np.uint8)
    if kind == "noise":
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    return img


def save(path, bgr, mode):
    if mode == "gray":
        bgr = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    elif mode == "rgba":
        alpha = np.linspace(0, 255, bgr.shape[1], dtype=np.uint8)[None, :].repeat(bgr.shape[0], 0)
        bgr = np.dstack([bgr, alpha])
    elif mode == "16bit":
        bgr = bgr.astype(np.uint16) * 257 + np.random.default_rng(0).integers(0, 257, bgr.shape).astype(np.uint16)
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if path.endswith(".jpg") else []
    assert cv2.imwrite(path, bgr, params), path


# (name, height, width, file extension, save mode). Firing specs search seeds until NudeNet reports
# something; sizes cover the fast 2x area path (640), generic down- and upscaling, non-square
# images padded right or below, and tiny ones.
FIRING = [
    ("fire_320", 320, 320, "png", "rgb"),
    ("fire_512", 512, 512, "png", "rgb"),
    ("fire_640", 640, 640, "png", "rgb"),
    ("fire_portrait", 600, 400, "png", "rgb"),
    ("fire_landscape", 300, 700, "png", "rgb"),
    ("fire_small", 150, 200, "png", "rgb"),
    ("fire_rgba", 400, 400, "png", "rgba"),
    ("fire_16bit", 384, 384, "png", "16bit"),
    ("fire_jpeg", 512, 512, "jpg", "rgb"),
    ("fire_jpeg_odd", 333, 517, "jpg", "rgb"),
]
QUIET = [
    ("quiet_gradient", 256, 256, "png", "rgb", "gradient"),
    ("quiet_noise", 321, 123, "png", "rgb", "noise"),
    ("quiet_flat", 512, 512, "jpg", "rgb", "flat"),
    ("quiet_tiny", 7, 3, "png", "rgb", "noise"),
    ("quiet_pixel", 1, 1, "png", "rgb", "flat"),
    ("quiet_gray", 200, 300, "png", "gray", "gradient"),
    ("quiet_gray_jpeg", 150, 90, "jpg", "gray", "gradient"),
]


def make(out):
    os.makedirs(out, exist_ok=True)
    detector = NudeDetector()
    files = []
    for name, h, w, ext, mode in FIRING:
        for seed in range(200):
            path = os.path.join(out, f"{name}.{ext}")
            save(path, skin_scene(np.random.default_rng(seed), h, w), mode)
            if detector.detect(path):
                break
        else:
            sys.exit(f"no seed made NudeNet fire for {name}")
        files.append(path)
    for i, (name, h, w, ext, mode, kind) in enumerate(QUIET):
        path = os.path.join(out, f"{name}.{ext}")
        save(path, plain_scene(np.random.default_rng(1000 + i), h, w, kind), mode)
        files.append(path)
    for ext in ["png", "jpg"]:
        with open(os.path.join(out, f"not_an_image.{ext}"), "w") as f:
            f.write("this is text, not an image\n")
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(files, f)


def detect(out):
    detector = NudeDetector()
    with open(os.path.join(out, "manifest.json")) as f:
        files = json.load(f)
    result = {}
    for path in files:
        result[os.path.basename(path)] = detector.detect(path)
        cv2.imread(path).tofile(path + ".bgr.u8")
        blob = _read_image(path, 320)[0]
        blob.astype(np.float32).tofile(path + ".blob.f32")
        out0 = detector.onnx_session.run(None, {detector.input_name: blob})[0]
        out0.astype(np.float32).tofile(path + ".out.f32")
    print(json.dumps(result))


def resize(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)
    cases = []
    for side in [1, 2, 3, 7, 100, 159, 160, 161, 319, 320, 321, 480, 512, 639, 640, 641, 960, 1000, 1280, 1281]:
        src = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        dst = cv2.resize(src, (320, 320), interpolation=cv2.INTER_LINEAR)
        src.tofile(os.path.join(out, f"resize_{side}.src.u8"))
        dst.tofile(os.path.join(out, f"resize_{side}.dst.u8"))
        cases.append(side)
    with open(os.path.join(out, "resize.json"), "w") as f:
        json.dump(cases, f)


def post(out):
    os.makedirs(out, exist_ok=True)
    cases = []
    for i, (w, h) in enumerate([(320, 320), (512, 768), (1000, 333), (7, 3)]):
        rng = np.random.default_rng(100 + i)
        rows = 2100
        raw = np.zeros((1, 22, rows), np.float32)
        centres = rng.uniform(0, 320, (6, 2))
        pick = rng.integers(0, 6, rows)
        raw[0, 0:2] = (centres[pick] + rng.normal(0, 8, (rows, 2))).T
        raw[0, 2:4] = rng.uniform(5, 200, (2, rows))
        raw[0, 4:] = rng.uniform(0, 0.35, (18, rows)) * (rng.random((18, rows)) < 0.1)
        raw[0, 4 + 3, :50] = np.float32(0.3)  # equal scores: NMS keeps index order
        raw[0, 4 + 5, 50:60] = np.float32(0.25)  # exactly the NMS threshold: dropped
        raw[0, 4 + 7, 60:70] = np.float32(0.2)  # exactly the candidate threshold
        side = max(w, h)
        dets = _postprocess([raw], side - w, side - h, side / w, side / h, w, h, 320, 320)
        raw.tofile(os.path.join(out, f"post_{i}.f32"))
        cases.append({"file": f"post_{i}.f32", "width": w, "height": h, "detections": dets})
    with open(os.path.join(out, "post.json"), "w") as f:
        json.dump(cases, f)


if __name__ == "__main__":
    {"make": make, "detect": detect, "resize": resize, "post": post}[sys.argv[1]](sys.argv[2])
