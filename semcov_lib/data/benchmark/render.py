"""Pixel rendering of the benchmark: vectorised NumPy, channel-first float32, in fixed-size batches.

One small painter per class pattern and per concept, registered in ordered tables; the renderer
paints, back to front, the skin, the erythema halo, the lesion body, the class patterns and the
concepts over the lesion. Each painter runs only on the rows that carry its pattern or concept.
The order of the tables is the order of the random draws: part of the benchmark's identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from semcov_lib.data.benchmark.config import (
    APPEARANCE_FIELDS, CONCEPTS, REFERENCE_SPLIT, SKIN_TONES, SPLIT_ORDER, BenchmarkConfig,
)
from semcov_lib.data.benchmark.design import _design, _Design

# random stream of each split's pixels: the reference rows reuse the natural training stream, so
# their images are byte-identical to the natural benchmark's training images
_RENDER_STREAM = {"train": 0, "val": 1, "test": 2, "stress": 3, "val_stress": 4, REFERENCE_SPLIT: 0}
PATTERN_FIELDS = APPEARANCE_FIELDS[7:]  # the class patterns: appearance fields 7.. are their weights


# ------------------------------------------------------------------------------ drawing primitives
def _render_batch_size(size: int) -> int:
    """Images per render batch: fixed by the image size only, so results never depend on threads."""
    return int(max(16, min(512, 128 * (64 / size) ** 2)))


_F32 = np.float32


def _mix(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """In place: img += alpha * (colour - img); img (B,3,H,W) channel-first (fast broadcasting),
    alpha (B,H,W), colour (B,3)."""
    delta = colour[:, :, None, None] - img
    delta *= alpha[:, None]
    img += delta


def _mix_rows(img: np.ndarray, rows: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """:func:`_mix` on the given rows of ``img`` (alpha and colour hold those rows only)."""
    if len(rows) == len(img):  # rows are sorted and unique: all of them
        _mix(img, alpha, colour)
        return
    sub = img[rows]
    _mix(sub, alpha, colour)
    img[rows] = sub


def _const(rgb: tuple[float, float, float], n: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, dtype=_F32), (n, 3))


def _line_alpha(x: np.ndarray, p0: np.ndarray, angle: np.ndarray, curv: np.ndarray, half_width: np.ndarray,
                length: np.ndarray | None, px: float, one_sided: bool = False) -> np.ndarray:
    """Anti-aliased curved strokes, (B,H,W): the curve n = curv * t^2 through p0 along ``angle``."""
    ca, sa = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    dx = x[None, None, :] - p0[:, 0, None, None]
    dy = x[None, :, None] - p0[:, 1, None, None]
    t = dx * ca + dy * sa
    d = dy * ca - dx * sa
    d -= curv[:, None, None] * (t * t)
    np.abs(d, out=d)
    d *= (1.0 / half_width)[:, None, None]
    a = np.subtract(1.0, d, out=d)
    np.clip(a, 0.0, 1.0, out=a)
    if length is not None:
        lt = t if one_sided else np.abs(t)
        a *= np.clip((length[:, None, None] - lt) * (1.0 / px), 0.0, 1.0)
        if one_sided:
            a *= np.clip(t * (1.0 / px) + 1.0, 0.0, 1.0)
    return a


def _blob_sum(x: np.ndarray, cx: np.ndarray, cy: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B,H,W) sum of n separable Gaussian blobs as one batched matmul; cx, cy, w are (B, n), w = 0 disables a blob."""
    wj = np.maximum(w, 1e-6)[:, :, None]
    gx = np.exp(-np.square((x[None, None, :] - cx[:, :, None]) / wj)) * (w > 0)[:, :, None]  # (B, n, W)
    gy = np.exp(-np.square((x[None, None, :] - cy[:, :, None]) / wj))  # (B, n, H)
    return np.matmul(gy.transpose(0, 2, 1), gx)


def _smooth_noise(rng: np.random.Generator, b: int, size: int, octaves: list[tuple[int, np.ndarray | float]]) -> np.ndarray:
    """(B,H,W) sum of smooth noise fields, one per (cells, sd) octave (sd per image or scalar).

    Each octave is a coarse Gaussian grid (cells x cells) upsampled with a Gaussian kernel; all
    octaves together cost two small batched matmuls (block-diagonal coarse grid).
    """
    total = sum(cells for cells, _ in octaves)
    kernel = np.zeros((size, total), dtype=_F32)
    coarse = np.zeros((b, total, total), dtype=_F32)
    at = 0
    for cells, sd in octaves:
        grid = np.linspace(0, cells - 1, size)
        k = np.exp(-np.square(grid[:, None] - np.arange(cells)[None, :]) / 0.8)
        k /= k.sum(axis=1, keepdims=True)
        norm = 1.0 / float(np.square(k).sum(axis=1).mean())  # makes the field's sd about 1
        kernel[:, at:at + cells] = k
        block = rng.standard_normal((b, cells, cells), dtype=_F32)
        block *= np.asarray(sd, dtype=_F32).reshape(-1, 1, 1) * _F32(norm)
        coarse[:, at:at + cells, at:at + cells] = block
        at += cells
    return kernel @ coarse @ kernel.T



# ------------------------------------------------------------------------------ the canvas
@dataclass(frozen=True)
class _Canvas:
    """One batch being painted, and the lesion geometry every painter shares (B rows).

    Coordinates: the image spans [-1, 1]^2; arrays (B,H,W) are indexed [row, y, x]."""

    img: np.ndarray  # (B, 3, H, W) float32 in [0, 1], painted in place
    rng: np.random.Generator
    x: np.ndarray  # (H,) pixel centres (the same grid for y)
    px: float  # pixel size in those units
    texture: np.ndarray  # (B, H, W) smooth skin texture (also colours the crust)
    lightness: np.ndarray  # (B,) skin lightness relative to the lightest tone
    col: np.ndarray  # (B, 3) lesion body colour
    radius: np.ndarray  # (B,) lesion radius
    cx: np.ndarray  # (B,) lesion centre
    cy: np.ndarray
    u: np.ndarray  # (B, H, W) coordinate along the lesion's long axis
    rho: np.ndarray  # (B, H, W) elliptic distance from the centre
    rn: np.ndarray  # (B, H, W) normalised radius: 1 on the (irregular) border
    alpha: np.ndarray  # (B, H, W) lesion body opacity

    def take(self, a: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``a[rows]``, without a copy when the rows are all of them (batches are grouped by class)."""
        return a if len(rows) == len(self.img) else a[rows]

    def get(self, rows: np.ndarray) -> np.ndarray:
        """The image rows to paint on; :meth:`put` writes a copy back."""
        return self.take(self.img, rows)

    def put(self, rows: np.ndarray, sub: np.ndarray) -> None:
        if len(rows) != len(self.img):
            self.img[rows] = sub

    def inside(self, rows: np.ndarray) -> np.ndarray:
        """(n,H,W) 1 inside the lesion, fading to 0 just outside its border (rn from 1.1 to 0.95)."""
        return np.clip((1.1 - self.take(self.rn, rows)) / 0.15, 0, 1)

    def strokes(self, rows: np.ndarray, lo: int, hi: int, draw: Callable) -> np.ndarray:
        """(n,H,W) max over lo..hi-1 random strokes per row; ``draw(pos, j)`` gives stroke j of rows[pos].

        Rows are visited by decreasing stroke count, so stroke j is drawn on a prefix only."""
        count = self.rng.integers(lo, hi, len(rows))
        order = np.argsort(-count, kind="stable")
        count = count[order]
        size = len(self.x)
        acc = np.zeros((len(rows), size, size), dtype=_F32)
        for j in range(hi - 1):
            m = int((count > j).sum())
            if m == 0:
                break
            np.maximum(acc[:m], draw(order[:m], j), out=acc[:m])
        out = np.empty_like(acc)
        out[order] = acc
        return out


def _darken(c: _Canvas, rows: np.ndarray, amount: np.ndarray) -> None:
    """Multiply the rows' colours by 1 - amount (n,H,W)."""
    sub = c.get(rows)
    sub *= (1 - amount)[:, None]
    c.put(rows, sub)


def _blob_centres(c: _Canvas, rows: np.ndarray, spread: float, n_blobs: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, n_blobs) x and y of blobs scattered within +-spread lesion radii of the lesion centre."""
    rs = c.radius[rows, None]
    bx = c.cx[rows, None] + c.rng.uniform(-spread, spread, (len(rows), n_blobs)).astype(_F32) * rs
    by = c.cy[rows, None] + c.rng.uniform(-spread, spread, (len(rows), n_blobs)).astype(_F32) * rs
    return bx, by


def _stroke_layer(c: _Canvas, rows: np.ndarray, counts: tuple[int, int], draw: Callable, weight: np.ndarray,
                  rgb: tuple[float, float, float]) -> None:
    """Paint ``counts`` = (lo, hi) random strokes per row (see :meth:`_Canvas.strokes`) in one colour."""
    acc = c.strokes(rows, *counts, draw)
    acc *= weight
    _mix_rows(c.img, rows, acc, _const(rgb, len(rows)))


# ------------------------------------------------------------------------------ skin and lesion shape
def _paint_skin(rng: np.random.Generator, tone: np.ndarray, x: np.ndarray,
                clin: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B,3,H,W) skin: the tone's colour (jittered) times a shading field (fine grain, texture, a
    linear illumination gradient, the dermoscope's dark vignette); also the texture and lightness."""
    b, size = len(tone), len(x)
    skin = (SKIN_TONES[tone] * (1 + rng.normal(0, 0.03, (b, 3)))).astype(_F32)
    lightness = (SKIN_TONES[tone].mean(axis=1) / SKIN_TONES[-1].mean()).astype(_F32)
    texture = _smooth_noise(rng, b, size, [(size // 8 + 2, 0.2)])  # also drives the crust colour
    gx, gy = (rng.normal(0, 0.07, (2, b)) * (1 + clin)).astype(_F32)  # illumination gradient
    # vignette: dark outside the unit circle (none on a clinical photo)
    vig = np.clip((x[None, :] ** 2 + x[:, None] ** 2 - 1.0) / 0.8, 0, 1)[None] * (
        rng.uniform(0.4, 0.9, b).astype(_F32) * (1 - clin))[:, None, None]
    shade = rng.random((b, size, size), dtype=_F32)  # fine grain
    shade *= _F32(0.06)
    shade += texture * _F32(0.08)
    shade += (gx[:, None] * x[None] + _F32(0.97))[:, None, :] + (gy[:, None] * x[None])[:, :, None]
    shade -= shade * vig
    return shade[:, None] * skin[:, :, None, None], texture, lightness


def _lesion_shape(rng: np.random.Generator, app: np.ndarray, x: np.ndarray, clin: np.ndarray,
                  view_scale: np.ndarray) -> dict[str, np.ndarray]:
    """Lesion geometry (the :class:`_Canvas` fields radius .. alpha): a rotated ellipse (aspect ratio)
    with an irregular, noise-modulated border."""
    b = len(app)
    radius = app[:, 0] * view_scale
    cx, cy = (np.clip(rng.normal(0, 0.08, (2, b)), -0.2, 0.2) * view_scale).astype(_F32)
    ang = rng.uniform(0, np.pi, b).astype(_F32)
    ca, sa = np.cos(ang)[:, None, None], np.sin(ang)[:, None, None]
    dx = x[None, None, :] - cx[:, None, None]
    dy = x[None, :, None] - cy[:, None, None]
    u = dx * ca + dy * sa  # rotate into the lesion frame: u along the long axis, v across it
    v = dy * ca - dx * sa
    v *= app[:, 1, None, None]  # aspect ratio
    rho = u * u
    rho += v * v
    np.sqrt(rho, out=rho)
    rho += _F32(1e-4)
    # irregular border: the radius is modulated by smooth noise at two scales (lobes and notches)
    wobble = _smooth_noise(rng, b, len(x), [(6, app[:, 2] * 1.2), (11, app[:, 2] * 0.6)])
    wobble += _F32(1.0)
    np.maximum(wobble, _F32(0.3), out=wobble)
    wobble *= radius[:, None, None]
    rn = np.divide(rho, wobble, out=wobble)  # normalised radius: 1 on the lesion border
    # opacity 1 - rn over a soft edge of width ``soft``, 0.5 on the border
    soft = app[:, 3] * (1 + 0.5 * clin)
    alpha = np.subtract(1.0, rn)
    alpha *= (1.0 / soft)[:, None, None]
    alpha += _F32(0.5)
    np.clip(alpha, 0, 1, out=alpha)
    return {"radius": radius, "cx": cx, "cy": cy, "u": u, "rho": rho, "rn": rn, "alpha": alpha}


# ------------------------------------------------------------------------------ class patterns
# A painter takes the canvas, the rows that carry its pattern or concept, and their weight (n,).
def _paint_dark_centre(c: _Canvas, rows: np.ndarray, w: np.ndarray) -> None:
    """Darker centre, fading out at rn^2 = 0.35."""
    dark = np.clip(1 - c.take(c.rn, rows) ** 2 / 0.35, 0, 1) * (0.45 * w)[:, None, None] * c.take(c.alpha, rows)
    _darken(c, rows, dark)


def _paint_globules(c: _Canvas, rows: np.ndarray, w: np.ndarray) -> None:
    """Dark globules / dots on a jittered grid: the peaks of sin(f x + p) sin(f' y + p'),
    spaced relative to the lesion radius."""
    n = len(rows)
    f = c.rng.uniform(9, 15, (2, n)).astype(_F32) / np.maximum(c.radius[rows], 0.15)[None] * 0.35
    ph = c.rng.uniform(0, 2 * np.pi, (2, n)).astype(_F32)
    sx = np.sin(f[0, :, None] * c.x[None] + ph[0, :, None])
    sy = np.sin(f[1, :, None] * c.x[None] + ph[1, :, None])
    glob = np.clip((sx[:, None, :] * sy[:, :, None] - 0.45) * 4, 0, 1) * (0.5 * w)[:, None, None]
    glob *= c.take(c.alpha, rows)
    _darken(c, rows, glob)


def _paint_ridges(c: _Canvas, rows: np.ndarray, w: np.ndarray) -> None:
    """Pale cerebriform ridges: sin(a x + b y) = sin(a x) cos(b y) + cos(a x) sin(b y), separable."""
    n = len(rows)
    fr = c.rng.uniform(10, 18, n).astype(_F32)
    ra = c.rng.uniform(0, np.pi, n).astype(_F32)
    ax, ay = (fr * np.cos(ra))[:, None] * c.x[None], (fr * np.sin(ra))[:, None] * c.x[None]
    ridge = np.sin(ax)[:, None, :] * np.cos(ay)[:, :, None]
    ridge += np.cos(ax)[:, None, :] * np.sin(ay)[:, :, None]
    np.clip(ridge, 0, 1, out=ridge)
    ridge *= (0.35 * w)[:, None, None] * c.take(c.alpha, rows)
    _mix_rows(c.img, rows, ridge, _const((0.93, 0.85, 0.72), n))


def _paint_variegation(c: _Canvas, rows: np.ndarray, w: np.ndarray) -> None:
    """Low-frequency blue-grey (positive lobes) and black (negative lobes) zones."""
    n = len(rows)
    fv = c.rng.uniform(3, 6, (2, n)).astype(_F32)
    pv = c.rng.uniform(0, 2 * np.pi, (2, n)).astype(_F32)
    var = (np.cos(fv[0, :, None] * c.x[None] + pv[0, :, None])[:, None, :]
           * np.cos(fv[1, :, None] * c.x[None] + pv[1, :, None])[:, :, None])
    var *= 2.0
    w_var = w[:, None, None] * c.take(c.alpha, rows)
    sub = c.get(rows)
    grey = np.array([0.42, 0.46, 0.58], dtype=_F32) * c.col[rows].mean(1, keepdims=True) * 2.2
    _mix(sub, np.clip(var, 0, 1) * w_var * 0.8, grey)
    _mix(sub, np.clip(-var, 0, 1) * w_var * 0.7, _const((0.10, 0.07, 0.07), n))
    c.put(rows, sub)


def _paint_streaks(c: _Canvas, rows: np.ndarray, w: np.ndarray) -> None:
    """Radial streaks at the periphery: cos(9 theta) = T_9(cos theta), no trigonometry per pixel."""
    c1 = c.take(c.u, rows) / c.take(c.rho, rows)  # cos(theta) in the lesion frame
    c2 = c1 + c1
    t_a, t_b = np.ones_like(c1), c1
    for _ in range(8):  # Chebyshev recurrence T_{n+1} = 2 c T_n - T_{n-1}, from (T_0, T_1) to T_9
        t_a, t_b = t_b, c2 * t_b - t_a
    streak = np.clip(t_b, 0, 1)
    streak *= np.clip(1 - np.abs(c.take(c.rn, rows) - 0.95) / 0.25, 0, 1)  # a ring around the border
    streak *= (0.9 * w)[:, None, None]
    _mix_rows(c.img, rows, streak, _const((0.16, 0.10, 0.08), len(rows)))


def _paint_blobs(c: _Canvas, rows: np.ndarray, w: np.ndarray, n_blobs: int, widths: tuple[float, float],
                 rgb: tuple[float, float, float]) -> None:
    """Coloured Gaussian blobs inside the lesion (nests, lacunae), widths relative to its radius."""
    n = len(rows)
    bx, by = _blob_centres(c, rows, 0.6, n_blobs)
    bw = c.rng.uniform(*widths, (n, n_blobs)).astype(_F32) * c.radius[rows, None]
    a = np.clip(_blob_sum(c.x, bx, by, bw) * 1.6 - 0.3, 0, 1)
    a *= w[:, None, None] * c.take(c.alpha, rows)
    _mix_rows(c.img, rows, a, np.array(rgb, dtype=_F32)[None] * (0.6 + 0.4 * c.lightness[rows])[:, None])


def _paint_keratin(c: _Canvas, rows: np.ndarray, w: np.ndarray) -> None:
    """White keratin centre (SCCKA/DF-like), fading out at rn^2 = 0.3."""
    ker = np.clip(1 - c.take(c.rn, rows) ** 2 / 0.3, 0, 1) * (0.85 * w)[:, None, None]
    _mix_rows(c.img, rows, ker, _const((0.95, 0.92, 0.84), len(rows)))


# ------------------------------------------------------------------------------ concepts
def _paint_erythema(c: _Canvas, rows: np.ndarray, w: np.ndarray) -> None:
    """Red halo on the skin around the lesion, fading over a random width beyond rn = 0.9."""
    width = c.rng.uniform(0.4, 0.9, len(rows)).astype(_F32)
    halo = np.clip(1 - (c.take(c.rn, rows) - 0.9) / width[:, None, None], 0, 1)
    halo *= np.minimum(0.6 * w, 0.85)[:, None, None]
    red = np.array([0.90, 0.33, 0.36], dtype=_F32) * (0.55 + 0.45 * c.lightness[rows])[:, None]
    _mix_rows(c.img, rows, halo, red)


def _paint_pigment(c: _Canvas, rows: np.ndarray, w: np.ndarray) -> None:
    """Dark brown network (|sin| valleys along x and y) darkening the lesion."""
    n = len(rows)
    fp = c.rng.uniform(14, 22, (2, n)).astype(_F32)
    pp = c.rng.uniform(0, 2 * np.pi, (2, n)).astype(_F32)
    lx = np.clip(1 - np.abs(np.sin(fp[0, :, None] * c.x[None] + pp[0, :, None])) / 0.35, 0, 1)
    ly = np.clip(1 - np.abs(np.sin(fp[1, :, None] * c.x[None] + pp[1, :, None])) / 0.35, 0, 1)
    region = c.inside(rows) * w[:, None, None]
    net = np.maximum(lx[:, None, :], ly[:, :, None])
    net *= region * _F32(0.75)
    sub = c.get(rows)
    sub *= (1 - 0.3 * region)[:, None]
    _mix(sub, net, _const((0.20, 0.11, 0.06), n))
    c.put(rows, sub)


def _paint_vessels(c: _Canvas, rows: np.ndarray, w: np.ndarray) -> None:
    """Thin red branching lines from a point near the centre, 3-5 per lesion, about 72 degrees apart."""
    n, rng = len(rows), c.rng
    origin = np.stack([c.cx[rows], c.cy[rows]], 1) + rng.normal(0, 0.25, (n, 2)).astype(_F32) * c.radius[rows, None]
    base_angle = rng.uniform(0, 2 * np.pi, n)

    def vessel(pos: np.ndarray, j: int) -> np.ndarray:
        m = len(pos)
        return _line_alpha(c.x, origin[pos], (base_angle[pos] + j * 2 * np.pi / 5 + rng.normal(0, 0.3, m)).astype(_F32),
                           rng.normal(0, 4.0, m).astype(_F32), np.full(m, 0.9 * c.px, _F32),
                           (c.radius[rows[pos]] * rng.uniform(0.6, 1.1, m)).astype(_F32), c.px, one_sided=True)

    _stroke_layer(c, rows, (3, 6), vessel, c.inside(rows) * (0.95 * w)[:, None, None], (0.80, 0.08, 0.12))


def _paint_ulcer(c: _Canvas, rows: np.ndarray, w: np.ndarray) -> None:
    """Crusted dark-red patches (1-3 blobs) inside the lesion, yellow where the skin texture is high."""
    n, nb = len(rows), 3
    bx, by = _blob_centres(c, rows, 0.5, nb)
    keep = np.arange(nb)[None] < c.rng.integers(1, nb + 1, (n, 1))  # first 1..nb blobs of each row
    bw = c.rng.uniform(0.25, 0.5, (n, nb)).astype(_F32) * c.radius[rows, None] * keep
    a = np.clip(_blob_sum(c.x, bx, by, bw) * 2.0 - 0.5, 0, 1)
    a *= (0.4 + 0.6 * c.inside(rows)) * (0.95 * w)[:, None, None]
    yellow = np.clip(c.take(c.texture, rows) * 4.0 + 0.5, 0, 1)
    sub = c.get(rows)
    _mix(sub, a, _const((0.42, 0.09, 0.06), n))
    _mix(sub, a * yellow, _const((0.82, 0.65, 0.28), n))
    c.put(rows, sub)


def _paint_hair(c: _Canvas, rows: np.ndarray, w: np.ndarray) -> None:
    """Thin dark curved strands across the whole image, 2-6 per image."""
    rng = c.rng

    def hair(pos: np.ndarray, j: int) -> np.ndarray:
        m = len(pos)
        return _line_alpha(c.x, rng.uniform(-0.8, 0.8, (m, 2)).astype(_F32), rng.uniform(0, np.pi, m).astype(_F32),
                           rng.normal(0, 0.4, m).astype(_F32), (rng.uniform(0.7, 1.2, m) * c.px).astype(_F32), None,
                           c.px)

    _stroke_layer(c, rows, (2, 7), hair, (0.9 * w)[:, None, None], (0.07, 0.05, 0.04))


def _paint_gel(c: _Canvas, rows: np.ndarray, w: np.ndarray) -> None:
    """Bright round bubbles (2-5): a ring (outer - inner Gaussian) with a specular highlight up-left."""
    n, nb, rng = len(rows), 5, c.rng
    bx = rng.uniform(-0.85, 0.85, (n, nb)).astype(_F32)
    by = rng.uniform(-0.85, 0.85, (n, nb)).astype(_F32)
    keep = np.arange(nb)[None] < rng.integers(2, nb + 1, (n, 1))
    br = rng.uniform(0.07, 0.2, (n, nb)).astype(_F32) * keep
    outer = _blob_sum(c.x, bx, by, br)
    inner = _blob_sum(c.x, bx, by, br * 0.7)
    a = outer - inner
    a *= 3.2
    a += _blob_sum(c.x, bx - 0.35 * br, by - 0.35 * br, br * 0.22)
    a += 0.25 * inner
    np.clip(a, 0, 1, out=a)
    a *= (0.85 * w)[:, None, None]
    _mix_rows(c.img, rows, a, _const((0.97, 0.98, 1.0), n))


def _paint_pen(c: _Canvas, rows: np.ndarray, w: np.ndarray) -> None:
    """Purple pen strokes (1-2) just outside the lesion border, roughly tangent to it."""
    rng = c.rng

    def pen(pos: np.ndarray, j: int) -> np.ndarray:
        m, r = len(pos), rows[pos]
        om = rng.uniform(0, 2 * np.pi, m)
        dist = c.radius[r] * rng.uniform(1.15, 1.5, m) + 0.05
        p0 = np.stack([c.cx[r] + dist * np.cos(om), c.cy[r] + dist * np.sin(om)], 1).astype(_F32)
        return _line_alpha(c.x, p0, (om + np.pi / 2 + rng.normal(0, 0.3, m)).astype(_F32),
                           rng.normal(0, 1.0, m).astype(_F32), (rng.uniform(1.2, 2.0, m) * c.px).astype(_F32),
                           rng.uniform(0.15, 0.4, m).astype(_F32), c.px)

    _stroke_layer(c, rows, (1, 3), pen, (0.9 * w)[:, None, None], (0.44, 0.17, 0.62))


Painter = Callable[[_Canvas, np.ndarray, np.ndarray], None]

# Painting order = the order of the random draws (do not reorder: it would change every image).
# class pattern (appearance field) -> painter, drawn inside the lesion body when its weight > 0.08
PATTERN_PAINTERS: dict[str, Painter] = {
    "dark_centre": _paint_dark_centre,
    "globules": _paint_globules,
    "ridges": _paint_ridges,
    "variegation": _paint_variegation,
    "streaks": _paint_streaks,
    "nests": partial(_paint_blobs, n_blobs=4, widths=(0.18, 0.30), rgb=(0.40, 0.44, 0.55)),  # blue-grey, BCC-like
    "lacunae": partial(_paint_blobs, n_blobs=6, widths=(0.12, 0.20), rgb=(0.45, 0.06, 0.20)),  # red-purple, VASC-like
    "keratin": _paint_keratin,
}
# concept -> painter: on the skin under the lesion body, and over the lesion (when present)
SKIN_CONCEPT_PAINTERS: dict[str, Painter] = {"erythema": _paint_erythema}
CONCEPT_PAINTERS: dict[str, Painter] = {
    "pigment": _paint_pigment,
    "vessels": _paint_vessels,
    "ulcer": _paint_ulcer,
    "hair": _paint_hair,
    "gel": _paint_gel,
    "pen": _paint_pen,
}


# ------------------------------------------------------------------------------ the renderer
def _paint_where(c: _Canvas, weight: np.ndarray, threshold: float, paint: Painter) -> None:
    """Run ``paint`` on the rows whose weight (B,) exceeds the threshold."""
    rows = np.nonzero(weight > threshold)[0]
    if len(rows):
        paint(c, rows, weight[rows])


def _render_batch(app: np.ndarray, tone: np.ndarray, intensity: np.ndarray, clinical: np.ndarray,
                  size: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Render one batch of images: uint8 (B, size, size, 3) (computed channel-first).

    Layers, back to front: skin (tone, illumination, texture, dermoscope vignette), erythema halo,
    lesion body and the class patterns, then the concepts (pigment network, vessels, crust, hair,
    gel bubbles, pen).
    """
    px = 2.0 / size
    x = np.linspace(-1 + px / 2, 1 - px / 2, size, dtype=_F32)
    clin = clinical.astype(_F32)
    app = app.astype(_F32)
    view_scale = np.where(clinical, 0.62, 1.0).astype(_F32)  # clinical close-ups: wider field of view
    pat = np.clip(app[:, 7:15] * np.where(clinical, 0.4, 1.0).astype(_F32)[:, None], 0, 1)  # pattern weights
    level = np.minimum(1.0, strength * intensity).astype(_F32)  # (B, K) concept visibility

    img, texture, lightness = _paint_skin(rng, tone, x, clin)
    shape = _lesion_shape(rng, app, x, clin, view_scale)
    col = app[:, 4:7] * (0.6 + 0.4 * lightness)[:, None]
    c = _Canvas(img, rng, x, px, texture, lightness, col, **shape)
    for name, paint in SKIN_CONCEPT_PAINTERS.items():
        _paint_where(c, level[:, CONCEPTS.index(name)], 0, paint)
    _mix(img, c.alpha, col)  # the lesion body
    for name, paint in PATTERN_PAINTERS.items():
        _paint_where(c, pat[:, PATTERN_FIELDS.index(name)], 0.08, paint)
    for name, paint in CONCEPT_PAINTERS.items():
        _paint_where(c, level[:, CONCEPTS.index(name)], 0, paint)

    img *= _F32(255)
    img += _F32(0.5)  # round to nearest
    np.clip(img, 0, 255, out=img)
    return np.ascontiguousarray(img.astype(np.uint8).transpose(0, 2, 3, 1))


# ------------------------------------------------------------------------------ batches
def _render_plan(design: _Design, cfg: BenchmarkConfig) -> list[tuple[int, int, np.ndarray]]:
    """Render batches as (stream, batch number, rows): each split on its own, grouped by class (so a
    batch mostly shares its class's patterns), so a split's pixels never depend on another split's
    content (the oracle's training split changes nothing else)."""
    bs = _render_batch_size(cfg.image_size)
    plan = []
    for name in (*SPLIT_ORDER, REFERENCE_SPLIT):
        rows = np.flatnonzero(design.split == name)
        rows = rows[np.argsort(design.label[rows], kind="stable")]
        plan += [(_RENDER_STREAM[name], j, rows[at:at + bs]) for j, at in enumerate(range(0, len(rows), bs))]
    return plan


def _render_rows(design: _Design, cfg: BenchmarkConfig, seed: int,
                 item: tuple[int, int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Render one batch of the plan: (row indices, uint8 images (B, H, W, 3))."""
    stream, batch, rows = item
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 23, stream, batch]))
    pixels = _render_batch(design.appearance[rows], design.tone[rows], design.intensity[rows],
                           design.clinical[rows], cfg.image_size, cfg.concept_strength, rng)
    return rows, pixels


def render_images(cfg: BenchmarkConfig, seed: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """The rendered (pre-JPEG) uint8 images (N, H, W, 3) of metadata rows ``start:stop``, without
    writing anything; for previews, tests and quick experiments. Same pixels as the written
    benchmark before JPEG compression."""
    design = _design(cfg.validate(), seed)
    n = len(design.label)
    stop = n if stop is None else min(stop, n)
    wanted = np.arange(start, stop)
    out = np.empty((len(wanted), cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    slot = np.full(n, -1, dtype=np.int64)
    slot[wanted] = np.arange(len(wanted))
    for item in _render_plan(design, cfg):
        if (slot[item[2]] >= 0).any():
            rows, pixels = _render_rows(design, cfg, seed, item)
            keep = slot[rows] >= 0
            out[slot[rows[keep]]] = pixels[keep]
    return out

