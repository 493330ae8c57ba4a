"""An independent NumPy model of what the compositor should draw, for pixel comparisons.

It knows nothing of the renderer's code: it maps every output pixel centre
back into each layer (inverse rotation about the rect centre, mirror, crop
window), samples the source bilinearly as OpenGL's GL_LINEAR with
CLAMP_TO_EDGE does, premultiplies, applies the circle mask and opacity, and
composites "over" in premultiplied alpha, bottom layer first.

``edge_band`` marks pixels within a few pixels of any layer edge or circle
edge, where rasterization rules and anti-aliasing legitimately differ; tests
compare the rest, within ``TOLERANCE`` (:func:`assert_close`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The pixel tests' contract (docs/RENDERING.md): within 2/255 of the model outside a 3-pixel band around every edge.
TOLERANCE = 2.0  # code values out of 255
EDGE_BAND = 3.0  # pixels masked on each side of every edge


def assert_close(got: np.ndarray, want: np.ndarray, masked: np.ndarray, min_compared: float = 0.5) -> None:
    """``got`` within ``TOLERANCE`` of ``want`` (both in code values 0..255) wherever ``masked`` is False,
    and at least ``min_compared`` of the pixels compared."""
    difference = np.abs(got.astype(np.float64) - want)
    difference[masked] = 0.0
    compared = (~masked).mean()
    assert compared >= min_compared, f"only {compared:.0%} of pixels compared"
    worst = np.unravel_index(np.argmax(difference), difference.shape)
    assert difference.max() <= TOLERANCE, (
        f"max abs error {difference.max():.2f}/255 at (y, x, channel) {worst}: got {got[worst]}, expected {want[worst]:.2f}"
    )


@dataclass(frozen=True)
class RefLayer:
    pixels: np.ndarray  # (h, w, 4) uint8, straight alpha unless premultiplied
    x: float
    y: float
    width: float
    height: float
    rotation_degrees: float = 0.0
    mirror_horizontal: bool = False
    mirror_vertical: bool = False
    crop: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # u0, v0, u1, v1
    circle: bool = False
    opacity: float = 1.0
    premultiplied: bool = False


def sample_bilinear(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """GL_LINEAR + CLAMP_TO_EDGE of ``image`` (h, w, c float) at normalized (u, v)."""
    height, width = image.shape[:2]
    x = u * width - 0.5
    y = v * height - 0.5
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    x0i = np.clip(x0.astype(int), 0, width - 1)
    x1i = np.clip(x0.astype(int) + 1, 0, width - 1)
    y0i = np.clip(y0.astype(int), 0, height - 1)
    y1i = np.clip(y0.astype(int) + 1, 0, height - 1)
    top = image[y0i, x0i] * (1 - fx) + image[y0i, x1i] * fx
    bottom = image[y1i, x0i] * (1 - fx) + image[y1i, x1i] * fx
    return top * (1 - fy) + bottom * fy


def composite(
    width: int, height: int, background: tuple[float, float, float, float], layers: list[RefLayer], band: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """(premultiplied RGBA float (h, w, 4) in 0..1, edge-band mask (h, w) bool)."""
    r, g, b, a = background
    out = np.empty((height, width, 4), dtype=np.float64)
    out[...] = (r * a, g * a, b * a, a)
    edges = np.zeros((height, width), dtype=bool)
    px, py = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    for layer in layers:
        theta = math.radians(layer.rotation_degrees)
        dx = px - (layer.x + layer.width / 2)
        dy = py - (layer.y + layer.height / 2)
        # Undo a clockwise-on-screen (y down) rotation.
        local_x = dx * math.cos(theta) + dy * math.sin(theta)
        local_y = -dx * math.sin(theta) + dy * math.cos(theta)
        s = local_x / layer.width + 0.5
        t = local_y / layer.height + 0.5
        inside = (s >= 0) & (s < 1) & (t >= 0) & (t < 1)
        u0, v0, u1, v1 = layer.crop
        u = u1 - s * (u1 - u0) if layer.mirror_horizontal else u0 + s * (u1 - u0)
        v = v1 - t * (v1 - v0) if layer.mirror_vertical else v0 + t * (v1 - v0)
        color = sample_bilinear(layer.pixels.astype(np.float64) / 255.0, u, v)
        if not layer.premultiplied:
            color[..., :3] *= color[..., 3:4]
        coverage = np.full((height, width), layer.opacity)
        half_w, half_h = layer.width / 2, layer.height / 2
        near_x = (np.abs(np.abs(local_x) - half_w) < band) & (np.abs(local_y) < half_h + band)
        near_y = (np.abs(np.abs(local_y) - half_h) < band) & (np.abs(local_x) < half_w + band)
        edges |= near_x | near_y
        if layer.circle:
            radius = min(layer.width, layer.height) / 2
            distance = np.hypot(local_x, local_y)
            coverage *= np.clip(radius - distance + 0.5, 0.0, 1.0)
            edges |= np.abs(distance - radius) < band
        color *= coverage[..., None]
        color[~inside] = 0.0
        out = color + out * (1.0 - color[..., 3:4])
    return out, edges


def rgb_to_ycbcr_limited(rgb: np.ndarray, matrix: str) -> np.ndarray:
    """(…, 3) float RGB in 0..1 -> (…, 3) float Y'CbCr in 8-bit code values (limited range)."""
    kr, kb = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}[matrix]
    kg = 1 - kr - kb
    y = kr * rgb[..., 0] + kg * rgb[..., 1] + kb * rgb[..., 2]
    cb = (rgb[..., 2] - y) / (2 * (1 - kb))
    cr = (rgb[..., 0] - y) / (2 * (1 - kr))
    return np.stack([16 + 219 * y, 128 + 224 * cb, 128 + 224 * cr], axis=-1)


def ycbcr_limited_to_rgb(ycbcr: np.ndarray, matrix: str) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr_limited`, clipped to 0..1."""
    kr, kb = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}[matrix]
    kg = 1 - kr - kb
    y = (ycbcr[..., 0] - 16) / 219
    cb = (ycbcr[..., 1] - 128) / 224
    cr = (ycbcr[..., 2] - 128) / 224
    r = y + 2 * (1 - kr) * cr
    b = y + 2 * (1 - kb) * cb
    g = (y - kr * r - kb * b) / kg
    return np.clip(np.stack([r, g, b], axis=-1), 0.0, 1.0)


def subsample_2x2(plane: np.ndarray) -> np.ndarray:
    """Mean of each 2x2 block (even sizes)."""
    h, w = plane.shape[:2]
    return plane.reshape(h // 2, 2, w // 2, 2, *plane.shape[2:]).mean(axis=(1, 3))


def gradient(width: int, height: int, alpha: int = 255, seed: int = 0) -> np.ndarray:
    """A smooth, asymmetric test image: R rises left to right, G top to bottom, B along a diagonal.

    Smooth content keeps bilinear rounding differences far below the tolerance,
    and no two mirror images or rotations of it are alike.
    """
    x = np.linspace(0.0, 1.0, width)[None, :]
    y = np.linspace(0.0, 1.0, height)[:, None]
    image = np.empty((height, width, 4), dtype=np.float64)
    image[..., 0] = 30 + 200 * x + 0 * y
    image[..., 1] = 20 + 210 * y + 0 * x
    image[..., 2] = 60 + 120 * (0.7 * x + 0.3 * (1 - y)) + 20 * seed
    image[..., 3] = alpha
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
