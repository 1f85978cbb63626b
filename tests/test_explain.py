"""Explanations: saliency and Grad-CAM against hand-computed models, geometry back to the
photograph, overlays, lesion-focus scores (synthetic and real HAM10000 masks), t-SNE output."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from dermlearn.data.synthetic import render_lesion
from dermlearn.errors import DermlearnError
from dermlearn.explain import (
    METHODS,
    Explanation,
    crop_geometry,
    embed,
    explain_images,
    explain_to_dir,
    extract_embeddings,
    gradcam_map,
    lesion_focus_scores,
    overlay,
    pointing_game_hit,
    saliency_in_mask,
    saliency_map,
    summarise_focus,
    to_original,
    tsne_2d,
    visible_region,
)
from dermlearn.inference import Predictor, score_images
from dermlearn.models import PreprocessConfig, create_backbone, eval_transform
from dermlearn.models.lesion_classifier import LesionClassifier
from dermlearn.taxonomy import load_taxonomy

CLASSES = ["nv", "bkl", "mel"]
SIZE = 32


# --------------------------------------------------------------------------- tiny models


class RegionBackbone(nn.Module):
    """Features = mean over pixels of ``conv1x1(x) * spatial``: the output depends on pixel
    (i, j) only through ``spatial[i, j]`` (zero outside a region), so the input gradient is
    known in closed form."""

    def __init__(self, spatial: torch.Tensor, channels: int = 4, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, channels, 1)
        self.register_buffer("spatial", spatial[None, None].float())
        self.num_features = channels

    def forward_features(self, x):
        return self.conv(x) * self.spatial

    def forward_head(self, x, pre_logits: bool = False):
        return x.mean(dim=(2, 3))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


class CamBackbone(nn.Module):
    """Channel k of the 8x8 feature map is ReLU(colour channel k), average-pooled by 4."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3)[:, :, None, None])
        self.act = nn.ReLU()
        self.pool = nn.AvgPool2d(4)
        self.num_features = 3

    def forward_features(self, x):
        return self.pool(self.act(self.conv(x)))

    def forward_head(self, x, pre_logits: bool = False):
        return x.mean(dim=(2, 3))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def region_spatial() -> torch.Tensor:
    """Zero except rows 4..11, columns 18..29, where it ramps from 1 to 2."""
    spatial = torch.zeros(SIZE, SIZE)
    ramp = torch.linspace(1.0, 2.0, 12)
    spatial[4:12, 18:30] = ramp[None, :]
    return spatial


def region_model(seed: int = 0) -> LesionClassifier:
    model = LesionClassifier(RegionBackbone(region_spatial(), seed=seed), num_classes=3)
    with torch.no_grad():
        torch.manual_seed(seed + 100)
        model.head.weight.normal_()
        model.head.bias.normal_()
    return model.eval()


def cam_model() -> LesionClassifier:
    """Class 0: red evidence; class 1: green evidence; class 2: *against* red."""
    model = LesionClassifier(CamBackbone(), num_classes=3)
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [-1.0, 0, 0]]))
        model.head.bias.zero_()
    return model.eval()


def hand_region_gradient(models, x: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """L1-over-RGB of d(-log mean_m p_m[target]) / dx for RegionBackbone models, in closed form.

    z_m = W_m (K_m mean_ij(x_ij * s_ij) + b_m) + c_m, so dz_m / dx[c, i, j] = W_m K_m[:, c] s_ij / HW;
    d p_m,t / d z_m = p_m,t (e_t - p_m); d L / d x = -(1 / mean_m p_m,t) mean_m (d p_m,t / d x).
    """
    n = len(x)
    s = region_spatial().numpy()
    area = s.size
    dp = np.zeros((n, 3))
    pbar_t = np.zeros(n)
    for m in models:
        with torch.no_grad():
            p = torch.softmax(m(x), dim=1).double().numpy()
        W = m.head.weight.detach().double().numpy()
        K = m.backbone.conv.weight.detach().double().numpy()[:, :, 0, 0]
        onehot = np.eye(3)[target.numpy()]
        p_t = p[np.arange(n), target.numpy()]
        dp += (p_t[:, None] * (onehot - p)) @ W @ K / len(models)  # d mean p_t / d (channel sum)
        pbar_t += p_t / len(models)
    per_channel = -dp / pbar_t[:, None]  # (N, 3)
    return np.abs(per_channel).sum(axis=1)[:, None, None] * np.abs(s)[None] / area


def tiny_timm_model(seed: int = 0) -> LesionClassifier:
    torch.manual_seed(seed)
    return LesionClassifier(create_backbone("test_efficientnet", weights="none", num_classes=0),
                            num_classes=3).eval()


def make_predictor(members, input_size=(3, 64, 64), crop_pct: float = 0.875) -> Predictor:
    config = {"classes": CLASSES, "taxonomy": load_taxonomy("dermatology").to_dict(),
              "preprocess": PreprocessConfig(input_size=input_size, crop_pct=crop_pct).to_dict()}
    return Predictor(members, config)


@pytest.fixture(scope="module")
def timm_model() -> LesionClassifier:
    return tiny_timm_model(0)


@pytest.fixture(scope="module")
def predictor(timm_model) -> Predictor:
    return make_predictor([timm_model])


@pytest.fixture(scope="module")
def ensemble_predictor() -> Predictor:
    return make_predictor([tiny_timm_model(1), tiny_timm_model(2)])


def lesion_images(n: int, size: int = 72, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [render_lesion(("mel", "nv", "bkl")[i % 3], rng, size=size) for i in range(n)]


# --------------------------------------------------------------------------- saliency


def test_saliency_is_the_l1_norm_of_the_loss_gradient():
    model = region_model()
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        predicted = model(x).argmax(1)
    raw = saliency_map(model, x, normalise=False)
    np.testing.assert_allclose(raw, hand_region_gradient([model], x, predicted), rtol=1e-4,
                               atol=1e-9)
    target = torch.tensor([2, 0, 1])
    raw = saliency_map(model, x, target=[2, 0, 1], normalise=False)
    np.testing.assert_allclose(raw, hand_region_gradient([model], x, target), rtol=1e-4,
                               atol=1e-9)
    # Normalised: divided by the 99th percentile and clipped; concentrated on the region.
    maps = saliency_map(model, x, target=[2, 0, 1])
    assert maps.shape == (3, SIZE, SIZE) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    expected = np.clip(raw / np.percentile(raw, 99, axis=(1, 2))[:, None, None], 0, 1)
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-7)
    outside = region_spatial().numpy() == 0
    assert np.all(maps[:, outside] == 0) and np.all(maps[:, ~outside] > 0.4)


def test_saliency_of_an_ensemble_uses_the_mean_probability():
    members = [region_model(0), region_model(1)]
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        mean_p = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0)
    raw = saliency_map(members, x, normalise=False)
    np.testing.assert_allclose(raw, hand_region_gradient(members, x, mean_p.argmax(1)),
                               rtol=1e-4, atol=1e-9)
    # Not the mean of the members' own saliencies.
    single = np.mean([saliency_map(m, x, normalise=False) for m in members], axis=0)
    assert not np.allclose(raw, single, rtol=1e-3)


def test_saliency_pixel_std_rescales_channels():
    model = region_model()
    x = torch.randn(1, 3, SIZE, SIZE)
    grad_norm = saliency_map(model, x, normalise=False)
    scaled = saliency_map(model, x, normalise=False, pixel_std=(1.0, 1.0, 1.0))
    np.testing.assert_allclose(grad_norm, scaled, rtol=1e-6)
    halved = saliency_map(model, x, normalise=False, pixel_std=(0.5, 0.5, 0.5))
    np.testing.assert_allclose(halved, 2 * grad_norm, rtol=1e-5)


def test_frozen_channels_last_model_keeps_flags_and_mode(timm_model):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    reference = saliency_map(timm_model, x)
    model = tiny_timm_model(0).to(memory_format=torch.channels_last)
    model.requires_grad_(False)
    model.head.weight.requires_grad_(True)  # mixed flags must survive as they are
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    xc = x.contiguous(memory_format=torch.channels_last)
    for maps in (saliency_map(model, xc), gradcam_map(model, xc)):
        assert maps.shape == (2, 64, 64) and maps.max() > 0 and np.isfinite(maps).all()
    np.testing.assert_allclose(saliency_map(model, xc), reference, atol=1e-4)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert not any(m.training for m in model.modules())


def test_model_in_training_mode_is_explained_in_eval_mode_and_left_training(timm_model):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    model = tiny_timm_model(0)
    model.train()
    model.backbone.bn1.eval()  # a mixed state, as partial fine-tuning leaves it
    before = {n: m.training for n, m in model.named_modules()}
    np.testing.assert_allclose(saliency_map(model, x), saliency_map(timm_model, x), atol=1e-4)
    np.testing.assert_allclose(gradcam_map(model, x), gradcam_map(timm_model, x), atol=1e-4)
    assert {n: m.training for n, m in model.named_modules()} == before


def test_maps_work_inside_inference_mode(timm_model):
    with torch.inference_mode():
        x = torch.randn(1, 3, 64, 64)
        assert saliency_map(timm_model, x).max() > 0
        assert gradcam_map(timm_model, x).shape == (1, 64, 64)


def test_bad_targets_are_refused(timm_model):
    x = torch.randn(2, 3, 64, 64)
    with pytest.raises(DermlearnError, match="out of range"):
        saliency_map(timm_model, x, target=3)
    with pytest.raises(DermlearnError, match="3 targets for 2 images"):
        gradcam_map(timm_model, x, target=[0, 1, 2])
    with pytest.raises(DermlearnError, match="N, 3, H, W"):
        saliency_map(timm_model, x[0])


# --------------------------------------------------------------------------- Grad-CAM


def red_patch_batch() -> torch.Tensor:
    x = torch.zeros(1, 3, SIZE, SIZE)
    x[:, 0, 4:12, 20:28] = 1.0  # red patch, top right
    x[:, 1] = 0.5  # green everywhere
    return x


def test_gradcam_highlights_the_evidence_of_the_target_class():
    model, x = cam_model(), red_patch_batch()
    cam = gradcam_map(model, x, target=0)[0]
    assert cam.shape == (SIZE, SIZE) and cam.max() == pytest.approx(1.0)
    patch = np.zeros((SIZE, SIZE), bool)
    patch[4:12, 20:28] = True
    y, x_ = np.unravel_index(cam.argmax(), cam.shape)
    assert patch[y, x_]
    near = np.zeros_like(patch)
    near[2:14, 18:30] = True  # the patch plus the bilinear upsampling's spill
    assert cam[near].sum() / cam.sum() > 0.9
    # Class 1's evidence (green) is uniform; class 2 is evidence *against* red: ReLU -> 0.
    assert np.allclose(gradcam_map(model, x, target=1)[0], 1.0)
    assert np.all(gradcam_map(model, x, target=2)[0] == 0)


def test_gradcam_on_a_named_or_given_layer_matches_the_default():
    model, x = cam_model(), red_patch_batch()
    default = gradcam_map(model, x, target=0)
    np.testing.assert_allclose(gradcam_map(model, x, target=0, layer=model.backbone.pool),
                               default, atol=1e-6)
    np.testing.assert_allclose(gradcam_map(model, x, target=0, layer="backbone.pool"),
                               default, atol=1e-6)
    with pytest.raises(DermlearnError, match="not part of the model"):
        gradcam_map(model, x, layer=nn.ReLU())


def test_gradcam_of_an_ensemble(timm_model):
    members = [timm_model, tiny_timm_model(5)]
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    maps = gradcam_map(members, x)
    assert maps.shape == (3, 64, 64) and maps.dtype == np.float32
    assert maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1.0)
    assert saliency_map(members, x, target=1).shape == (3, 64, 64)


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("image_size", [(120, 80), (80, 120), (64, 64), (250, 77)])
@pytest.mark.parametrize("input_size,crop_pct", [((3, 64, 64), 0.875), ((3, 48, 64), 0.9),
                                                 ((3, 64, 64), 1.0)])
def test_maps_go_back_to_where_the_crop_came_from(image_size, input_size, crop_pct):
    cfg = PreprocessConfig(input_size=input_size, mean=(0, 0, 0), std=(1, 1, 1),
                           interpolation="bilinear", crop_pct=crop_pct)
    w, h = image_size
    # Red = column, green = row, as fractions: the crop shows which original pixel it holds.
    ramp = np.zeros((h, w, 3), np.uint8)
    ramp[..., 0] = np.round(255 * (np.arange(w) + 0.5) / w)[None, :]
    ramp[..., 1] = np.round(255 * (np.arange(h) + 0.5) / h)[:, None]
    crop = eval_transform(cfg)(Image.fromarray(ramp)).numpy()
    geo = crop_geometry(image_size, cfg)
    assert crop.shape[1:] == (input_size[1], input_size[2]) == (geo.crop[1], geo.crop[0])
    visible = visible_region(image_size, cfg)
    inner = visible.copy()  # away from the crop's edges, where bilinear mixes in the zeros
    ys, xs = np.nonzero(visible)
    inner[:, :xs.min() + 3] = inner[:, xs.max() - 2:] = False
    inner[:ys.min() + 3] = inner[ys.max() - 2:] = False
    for channel, extent in ((0, w), (1, h)):
        back = to_original(crop[channel], image_size, cfg)
        assert back.shape == (h, w)
        # Where each pixel came from, in original pixels: within 3/4 px (uint8 steps included).
        error_px = np.abs(back[inner] - ramp[..., channel][inner] / 255) * extent
        assert error_px.max() < 0.75
        assert np.all(back[~visible & ~_dilate(visible, 2)] == 0)


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def test_crop_geometry_of_the_default_224_transform():
    geo = crop_geometry((600, 450), PreprocessConfig())
    assert geo.resized == (341, 256) and geo.offset == (58, 16) and geo.crop == (224, 224)
    left, top, right, bottom = geo.box
    assert (left, top) == (pytest.approx(58 * 600 / 341), pytest.approx(16 * 450 / 256))
    assert (right, bottom) == (pytest.approx(282 * 600 / 341), pytest.approx(240 * 450 / 256))


# --------------------------------------------------------------------------- explain_images


def test_explain_images_at_the_original_size(predictor):
    images = lesion_images(2, size=72)
    images[1] = images[1].resize((120, 80))  # not square
    out = explain_images(predictor, images)
    assert [e.heatmap.shape for e in out] == [(72, 72), (80, 120)]
    probs = predictor.predict_images(images)
    for e, p, image in zip(out, probs, images):
        assert isinstance(e, Explanation) and e.method == "saliency"
        assert e.heatmap.dtype == np.float32 and 0 <= e.heatmap.min() and e.heatmap.max() <= 1
        assert e.heatmap.max() > 0.5
        np.testing.assert_allclose(e.probs, p, atol=1e-5)
        assert e.target == int(np.argmax(p)) and e.label == CLASSES[e.target]
        visible = visible_region(image.size, predictor.preprocess)
        assert np.all(e.heatmap[~_dilate(visible, 1)] == 0)
    cams = explain_images(predictor, images, method="gradcam", target="mel")
    assert all(c.target == 2 and c.label == "mel" and c.method == "gradcam" for c in cams)
    assert cams[1].heatmap.shape == (80, 120)
    assert [e.target for e in explain_images(predictor, images, target=1)] == [1, 1]


def test_explain_images_refuses_unknown_methods_and_classes(predictor):
    image = lesion_images(1)
    with pytest.raises(DermlearnError, match="saliency, gradcam"):
        explain_images(predictor, image, method="lime")
    with pytest.raises(DermlearnError, match="unknown class 'bcc'"):
        explain_images(predictor, image, target="bcc")
    with pytest.raises(DermlearnError, match="out of range"):
        explain_images(predictor, image, target=7)
    assert METHODS == ("saliency", "gradcam")


def test_explain_images_with_an_ensemble(ensemble_predictor):
    images = lesion_images(3)
    out = explain_images(ensemble_predictor, images, method="gradcam", batch_size=2)
    np.testing.assert_allclose(np.stack([e.probs for e in out]),
                               ensemble_predictor.predict_images(images), atol=1e-5)
    assert all(e.heatmap.shape == (72, 72) for e in out)


def test_explain_to_dir_writes_overlays_and_panels(predictor, tmp_path):
    paths = []
    for i, folder in enumerate(("a", "b")):
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / "lesion.jpg"  # the same stem twice
        lesion_images(1, seed=i)[0].resize((90, 70)).save(path)
        paths.append(str(path))
    written = explain_to_dir(predictor, paths, tmp_path / "out", method="gradcam")
    assert [p.name for p in written] == ["lesion_gradcam.png", "lesion-2_gradcam.png"]
    for p in written:
        with Image.open(p) as im:
            assert im.size == (90, 70) and im.mode == "RGB"
        assert p.with_name(p.stem + "_panel.png").is_file()


# --------------------------------------------------------------------------- overlay


def test_overlay_blends_at_the_image_size():
    image = Image.new("RGB", (40, 30), (10, 200, 30))
    heat = np.zeros((30, 40), np.float32)
    heat[:, 20:] = 1.0
    out = overlay(image, heat, alpha=0.5)
    assert out.size == (40, 30) and out.mode == "RGB"
    assert np.array_equal(np.asarray(overlay(image, heat, alpha=0.0)), np.asarray(image))
    full = np.asarray(overlay(image, heat, alpha=1.0))
    assert tuple(full[0, 0]) == (0, 0, 128) and tuple(full[0, 39]) == (128, 0, 0)  # jet ends
    small = overlay(image.convert("L"), np.ones((3, 4)), cmap="viridis")
    assert small.size == (40, 30) and small.mode == "RGB"
    with pytest.raises(DermlearnError, match="colormap"):
        overlay(image, heat, cmap="no-such-map")
    with pytest.raises(DermlearnError, match="alpha"):
        overlay(image, heat, alpha=1.5)


# --------------------------------------------------------------------------- lesion focus


def test_saliency_in_mask_and_pointing_game_on_hand_made_maps():
    mask = np.zeros((10, 10), bool)
    mask[2:5, 2:5] = True
    heat = np.zeros((10, 10))
    heat[3, 3] = 3.0
    heat[8, 8] = 1.0
    assert saliency_in_mask(heat, mask) == pytest.approx(0.75)
    assert pointing_game_hit(heat, mask)
    heat[8, 8] = 5.0  # the peak moves out, 3 px below and right of the mask's corner (4, 4)
    assert not pointing_game_hit(heat, mask)
    assert not pointing_game_hit(heat, mask, tolerance_px=5)  # distance sqrt(32) > 5
    assert pointing_game_hit(heat, mask, tolerance_px=6)
    assert np.isnan(saliency_in_mask(np.zeros((10, 10)), mask))
    assert not pointing_game_hit(np.ones((10, 10)), mask)  # a constant map points nowhere
    plateau = np.zeros((10, 10))
    plateau[2:5, 2:4] = 1.0  # 6 tied peaks inside ...
    plateau[9, 0:3] = 1.0  # ... 3 outside: most are inside
    assert pointing_game_hit(plateau, mask)
    plateau[9, 3:9] = 1.0  # now 9 outside
    assert not pointing_game_hit(plateau, mask)
    with pytest.raises(DermlearnError, match="same shape"):
        saliency_in_mask(heat, mask[:5])


def _region_predictor() -> Predictor:
    """A predictor whose saliency lies exactly in rows 4..11, columns 18..29 of a 32 px image."""
    return make_predictor([region_model()], input_size=(3, SIZE, SIZE), crop_pct=1.0)


def test_lesion_focus_scores_a_model_that_looks_only_at_the_lesion(tmp_path):
    predictor = _region_predictor()
    rows = []
    for i, label in enumerate(["mel", "nv", "mel", "bkl", "nv"]):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), np.uint8)).save(tmp_path / f"i{i}.png")
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[4:12, 18:30] = 255
        if label == "nv":
            mask = 255 - mask  # the "lesion" is everywhere but where the model looks
        Image.fromarray(mask).resize((64, 64), Image.Resampling.NEAREST).save(tmp_path / f"m{i}.png")
        rows.append({"image_id": f"i{i}", "path": str(tmp_path / f"i{i}.png"), "label": label,
                     "mask_path": str(tmp_path / f"m{i}.png")})
    table = pd.DataFrame(rows)
    frame = lesion_focus_scores(predictor, table)
    assert list(frame.columns) == ["image_id", "label", "predicted", "correct", "mass_in_mask",
                                   "pointing_hit", "mask_fraction"]
    assert frame["image_id"].tolist() == ["i0", "i1", "i2", "i3", "i4"]
    mel = frame[frame["label"] != "nv"]
    nv = frame[frame["label"] == "nv"]
    assert np.allclose(mel["mass_in_mask"], 1.0) and mel["pointing_hit"].all()
    assert np.allclose(nv["mass_in_mask"], 0.0) and not nv["pointing_hit"].any()
    assert np.allclose(mel["mask_fraction"], 96 / 1024)
    assert np.allclose(nv["mask_fraction"], 1 - 96 / 1024)
    assert (frame["correct"] == (frame["label"] == frame["predicted"])).all()
    summary = summarise_focus(frame)
    assert list(summary.index) == ["mel", "nv", "bkl", "all"]
    assert summary.loc["mel", "n"] == 2 and summary.loc["all", "n"] == 5
    assert summary.loc["mel", "pointing_hit_rate"] == 1.0 and summary.loc["nv", "pointing_hit_rate"] == 0
    assert summary.loc["mel", "lift"] == pytest.approx(1024 / 96)
    limited = lesion_focus_scores(predictor, table, method="gradcam", limit_per_class=1)
    assert limited["image_id"].tolist() == ["i0", "i1", "i3"]
    table.loc[3, "mask_path"] = str(tmp_path / "gone.png")
    with pytest.raises(DermlearnError, match="gone.png"):
        lesion_focus_scores(predictor, table)
    with pytest.raises(DermlearnError, match="mask_path"):
        lesion_focus_scores(predictor, table.drop(columns="mask_path"))


def test_lesion_focus_on_real_ham10000_masks(ham10000_dir, predictor):
    meta = pd.read_csv(ham10000_dir / "HAM10000_metadata.csv", nrows=400)
    meta = meta.groupby("dx").head(1).head(4)
    table = pd.DataFrame({
        "image_id": meta["image_id"],
        "path": [str(ham10000_dir / "images" / f"{i}.jpg") for i in meta["image_id"]],
        "label": meta["dx"],
        "mask_path": [str(ham10000_dir / "masks" / f"{i}_segmentation.png")
                      for i in meta["image_id"]],
    })
    frame = lesion_focus_scores(predictor, table, method="saliency")
    assert len(frame) == len(table) and frame["image_id"].tolist() == table["image_id"].tolist()
    assert frame["mass_in_mask"].between(0, 1).all() and frame["mask_fraction"].between(0, 1).all()
    assert (frame["mask_fraction"] > 0).all()
    # Labels outside the model's three classes have no 'correct'.
    outside = ~frame["label"].isin(CLASSES)
    assert frame.loc[outside, "correct"].isna().all()
    assert len(summarise_focus(frame, overall=False)) == frame["label"].nunique()


# --------------------------------------------------------------------------- embeddings


def test_extract_embeddings_average_the_members(ensemble_predictor, tmp_path):
    paths = []
    for i, image in enumerate(lesion_images(3)):
        image.save(tmp_path / f"x{i}.png")
        paths.append(str(tmp_path / f"x{i}.png"))
    feats = extract_embeddings(ensemble_predictor, paths, batch_size=2)
    assert feats.shape == (3, 256) and feats.dtype == np.float32
    batch = torch.stack([ensemble_predictor.transform(Image.open(p).convert("RGB"))
                         for p in paths])
    with torch.no_grad():
        expected = torch.stack([m.features(batch) for m in ensemble_predictor.members]).mean(0)
    np.testing.assert_allclose(feats, expected.numpy(), atol=1e-4)


def test_tsne_small_sets_and_seed():
    feats = np.random.default_rng(0).normal(size=(7, 5))
    a, b = tsne_2d(feats, seed=3), tsne_2d(feats, seed=3)
    assert a.shape == (7, 2) and np.isfinite(a).all() and np.array_equal(a, b)
    assert tsne_2d(feats[:2]).shape == (2, 2)
    assert np.array_equal(tsne_2d(feats[:1]), np.zeros((1, 2)))
    # identical features (a model that outputs one vector): one point, not a crash of the process
    assert np.array_equal(tsne_2d(np.ones((6, 1280))), np.zeros((6, 2)))
    one_apart = np.ones((6, 1280))
    one_apart[0, 0] = 2.0
    assert np.isfinite(tsne_2d(one_apart)).all()


def test_embed_writes_the_table_and_both_figures(predictor, tmp_path):
    labels = ["mel", "nv", "bkl", "nv", "mel", "df", "nv", "bkl"]
    paths = []
    for i, label in enumerate(labels):
        render_lesion(label, np.random.default_rng(i), size=64).save(tmp_path / f"s{i}.jpg")
        paths.append(str(tmp_path / f"s{i}.jpg"))
    written = embed(predictor, paths, tmp_path / "tsne", labels=labels, seed=0)
    table = pd.read_csv(written["csv"])
    assert list(table.columns) == ["image_id", "label", "predicted", "correct", "x", "y"]
    assert len(table) == len(labels) and table["image_id"].tolist() == [f"s{i}" for i in range(8)]
    assert table["label"].tolist() == labels and set(table["predicted"]) <= set(CLASSES)
    assert table.loc[table["label"] == "df", "correct"].isna().all()  # df is not a model class
    probs = score_images(predictor, paths).probabilities
    assert table["predicted"].tolist() == [CLASSES[i] for i in probs.argmax(1)]
    assert np.isfinite(table[["x", "y"]].to_numpy()).all()
    for key in ("by_class", "by_correctness"):
        with Image.open(written[key]) as im:
            assert im.format == "PNG" and im.width > 500
            assert round(im.info["dpi"][0]) == 150
    with pytest.raises(DermlearnError, match="labels"):
        embed(predictor, paths, tmp_path / "again")
