"""The scene families of the robustness suite: what each one tests, its data, its slots.

`params` are knobs of scenes.py (its DEFAULTS say what each means); `photos` families
read real photos (photos.py). `slots` is the slot count the run uses (objects + 1 for the
background at the family's largest count, capped where scenes rarely reach it).
"""

FAMILIES = {
    "clean": dict(
        tests="control: irregular blobs, 2-8 objects, 2 background regions, low noise (F=384)",
        slots=9,
        params=dict(feat_dim=384, n_objects=(2, 8), noise=0.15),
    ),
    "noisy": dict(
        tests="'clean' scenes (the same layouts and codes) under heavy noise: iid 0.8, spatially smooth 0.4, stronger textures",
        slots=9,
        same_scenes_as="clean",
        params=dict(feat_dim=384, n_objects=(2, 8), noise=0.8, smooth_noise=0.4, obj_texture=0.35, bg_texture=0.35),
    ),
    "counts": dict(
        tests="1 to 15 objects per scene (one slot count for all), small to medium sizes",
        slots=16,
        params=dict(feat_dim=384, n_objects=(1, 15), area=(0.004, 0.06), noise=0.2),
    ),
    "sizes": dict(
        tests="object areas log-uniform from 0.3% (under one token) to 50% of the image, cut by the frame",
        slots=8,
        params=dict(feat_dim=256, n_objects=(2, 6), area=(0.003, 0.5), noise=0.2),
    ),
    "lowdim": dict(
        tests="64-dim tokens: class codes overlap (random cosines ~0.12), noise 0.35",
        slots=9,
        params=dict(feat_dim=64, n_objects=(2, 8), noise=0.35),
    ),
    "cnn1280": dict(
        tests="1280-dim CNN-like tokens: relu read-out (non-negative, sparse), large shared part, sharpened edge mixing",
        slots=11,
        params=dict(feat_dim=1280, n_objects=(3, 10), area=(0.006, 0.1), relu=0.8, shared=1.5, gamma=2.0, noise=0.3),
    ),
    "bg-clutter": dict(
        tests="correlated, textured, uneven background: 2-5 stuff regions coded like objects, strong texture, lighting",
        slots=9,
        params=dict(
            feat_dim=384, n_objects=(2, 8), bg_regions=(2, 5), bg_like_objects=0.6, bg_texture=0.6,
            texture_smooth=0.3, lighting=0.6, noise=0.25,
        ),
    ),
    "lookalike": dict(
        tests="look-alike, touching objects: 2 classes, small instance variation, 70% placed touching another",
        slots=11,
        params=dict(feat_dim=384, n_objects=(3, 10), n_classes=2, inst=0.15, parts=0.2, touch=0.7, noise=0.2),
    ),
    "photos-cnn": dict(
        tests="real photos (6 VOC/APC/ARC photos, crops) as YOLOv8n backbone tokens (448 dims)",
        slots=8,
        photos="cnn",
    ),
    "photos-rgb": dict(
        tests="the same photo crops as raw colour/texture tokens (64 dims, no learned backbone)",
        slots=8,
        photos="rgb",
    ),
}

# stable per-family tag for the generators' random streams
TAGS = {name: i + 1 for i, name in enumerate(FAMILIES)}
for _name, _spec in FAMILIES.items():
    if "same_scenes_as" in _spec:
        TAGS[_name] = TAGS[_spec["same_scenes_as"]]
