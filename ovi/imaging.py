"""Images and frames -> model pixels: the one resize-to-area used by generation, packing and training.

    size_for_area(aspect, area)          -> (H, W): the aspect ratio at about ``area`` pixels, sides snapped to 32
    resize_cover(pixels, H, W)           bicubic (antialiased) resize to cover (H, W), then centre crop
    frames_to_pixels(uint8 [T, h, w, 3]) -> [3, T, H, W] in [-1, 1]   training clips (train/data/media.py)
    load_image(PIL image, H, W)          -> [3, 1, H, W] in [-1, 1]   the i2v first frame (ovi/pipeline.py)
    resize_frames(uint8 [T, h, w, 3])    -> uint8 [T, H, W, 3]         packing (data_pipeline/stages/pack.py)

Training and packing go through ``resize_cover`` on [-1, 1] floats (floored sizes, centre crop), so a packed
frame equals a training clip's frame up to uint8 rounding.

Generation follows the reference's own rules instead (the same prompt and seed then give the reference's
video), which round to the *nearest* multiple of 32 and stretch rather than crop:

    t2v_size(H, W, area)                 -> (H, W): the request's aspect ratio scaled to ``area``, nearest 32
    i2v_size(h, w, area)                 -> (H, W): the multiple-of-32 size closest to ``area``, then aspect
    first_frame(image, H, W)             -> [3, 1, H, W] in [-1, 1]: bicubic stretch, no antialias, no crop
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ovi.geometry import SIZE_MULTIPLE, snap

RESIZE_CHUNK = 16  # frames resized at once: bounds float32 memory for long high-resolution clips


def size_for_area(aspect_w: float, aspect_h: float, area: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """(height, width) with the given aspect ratio and about ``area`` pixels, sides floored to ``multiple``.

    A square at area 720*720 gives 704x704, as the released 720x720_5s model runs; 1920x1080 at 720*720
    gives 512x960.
    """
    if aspect_w <= 0 or aspect_h <= 0:
        raise ValueError(f"aspect ratio must be positive, got {aspect_w}:{aspect_h}")
    scale = math.sqrt(area / (aspect_w * aspect_h))
    return snap(aspect_h * scale, multiple), snap(aspect_w * scale, multiple)


def cover_size(src_h: int, src_w: int, height: int, width: int) -> tuple[int, int]:
    """The smallest (h, w) with the source's aspect ratio that covers (height, width)."""
    scale = max(height / src_h, width / src_w)
    return max(height, round(src_h * scale)), max(width, round(src_w * scale))


def resize_cover(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[N, C, h, w] float in [-1, 1] -> [N, C, height, width]: resize to cover, centre-crop, clamp.

    Bicubic with antialiasing (a proper low-pass when shrinking), in float32; the clamp removes bicubic
    overshoot. A source already at (height, width) is returned unchanged.
    """
    _, _, h, w = pixels.shape
    if (h, w) == (height, width):
        return pixels
    nh, nw = cover_size(h, w, height, width)
    x = F.interpolate(pixels.float(), size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    top, left = (nh - height) // 2, (nw - width) // 2
    return x[:, :, top : top + height, left : left + width].clamp(-1.0, 1.0)


def uint8_to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float32 [..., 3, H, W] in [-1, 1]."""
    return frames.movedim(-1, -3).float() / 127.5 - 1.0


def unit_to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """float [..., 3, H, W] in [-1, 1] -> uint8 [..., H, W, 3], rounded."""
    return ((pixels.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).movedim(-3, -1)


def frames_to_pixels(frames: torch.Tensor, height: int | None, width: int | None) -> torch.Tensor:
    """uint8 [T, h, w, 3] -> float32 [3, T, height, width] in [-1, 1]; None keeps the frames' own size."""
    x = uint8_to_unit(frames)  # [T, 3, h, w]
    if height is not None and width is not None:
        x = resize_cover(x, height, width)
    return x.transpose(0, 1).contiguous()


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [T, h, w, 3] -> uint8 [T, height, width, 3] through ``resize_cover`` (in chunks of frames)."""
    out = [unit_to_uint8(resize_cover(uint8_to_unit(torch.from_numpy(frames[i : i + RESIZE_CHUNK])), height, width))
           for i in range(0, len(frames), RESIZE_CHUNK)]
    return torch.cat(out).numpy() if out else np.zeros((0, height, width, 3), np.uint8)


def open_image(image: str | Path | Image.Image) -> Image.Image:
    """A decoded PIL image from a path (or the image itself); a corrupt file raises ValueError naming it."""
    if isinstance(image, Image.Image):
        return image
    if not Path(image).is_file():
        raise FileNotFoundError(f"image not found: {image}")
    try:
        with Image.open(image) as im:
            im.load()  # decode now: a truncated or corrupt file fails here, not inside the VAE
            return im.copy()
    except (OSError, SyntaxError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"image {image} cannot be decoded ({e}); re-save it as PNG or JPEG") from None


def load_image(image: Image.Image, height: int, width: int) -> torch.Tensor:
    """An image as the i2v first frame: RGB, resized to cover (height, width), centre-cropped -> [3, 1, H, W]
    float32 in [-1, 1]. The same pixels a training clip's first frame gets (``frames_to_pixels``)."""
    rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy())  # [h, w, 3]
    return frames_to_pixels(rgb[None], height, width)


def _nearest_multiple(x: float, multiple: int) -> int:
    # Python's round() (half to even), as the reference's int(round(x / 32)) * 32
    return max(multiple, int(round(x / multiple)) * multiple)


def t2v_size(height: float, width: float, area: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """Text-to-video (height, width) as the reference computes it from ``video_frame_height_width``.

    The request only gives the aspect ratio: it is scaled to ``area`` (sides rounded to integers), then each
    side goes to the nearest multiple of 32. [720, 720] at 720*720 gives 704x704; a 16:9 request at 720*720
    gives 544x960 (flooring would give 512x960). A size whose area equals ``area`` comes back unchanged.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    if area <= 0:
        raise ValueError(f"area must be positive, got {area}")
    scale = math.sqrt(area / float(height * width))
    return (_nearest_multiple(int(round(height * scale)), multiple),
            _nearest_multiple(int(round(width * scale)), multiple))


def i2v_size(height: int, width: int, area: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """Image-to-video (height, width) for an image of ``height x width``, by the reference's rule.

    Candidates: heights of p +- 3 multiples around the one that fits ``area`` with the image's width/height
    ratio (width rounded to keep it), plus the image scaled to ``area`` and rounded; the winner is the one
    closest to ``area``, ties broken by the closest aspect ratio, then by candidate order.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if area <= 0:
        raise ValueError(f"area must be positive, got {area}")
    ratio = width / float(height)
    units = max(1, area // (multiple * multiple))
    p0 = max(1, int(round(math.sqrt(units / max(ratio, 1e-8)))))
    candidates = []
    for p in (max(1, p0 + dp) for dp in range(-3, 4)):
        candidates.append((p * multiple, max(1, int(round(p * ratio))) * multiple))
    scale = math.sqrt(area / (height * float(width)))
    candidates.append((_nearest_multiple(height * scale, multiple), _nearest_multiple(width * scale, multiple)))
    return min(candidates, key=lambda hw: (abs(hw[0] * hw[1] - area), abs(hw[1] / hw[0] - ratio)))


ImageInput = str | Path | Image.Image | np.ndarray | torch.Tensor


def image_pixels(image: ImageInput) -> torch.Tensor:
    """Any supported image -> float32 [1, 3, h, w] in [-1, 1].

    Accepts a path, a PIL image, uint8 numpy/torch [h, w, 3] (or [h, w]: grey), or a float torch tensor
    [3, h, w] already in [-1, 1] (used as is).
    """
    if isinstance(image, torch.Tensor) and image.is_floating_point():
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"a float image tensor must be [3, H, W] in [-1, 1], got shape {tuple(image.shape)}")
        return image.detach().float().cpu()[None]
    if isinstance(image, (str, Path, Image.Image)):
        rgb = np.asarray(open_image(image).convert("RGB"))
    else:
        rgb = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        if rgb.dtype != np.uint8:
            raise ValueError(f"an image array must be uint8 [H, W, 3]; got dtype {rgb.dtype} (float images: "
                             "pass a torch tensor [3, H, W] in [-1, 1])")
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=-1)
        if rgb.ndim != 3 or rgb.shape[-1] != 3:
            raise ValueError(f"an image array must be uint8 [H, W, 3], got shape {rgb.shape}")
    x = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None]  # [1, 3, h, w] in [0, 1]
    return x * 2.0 - 1.0  # the reference's order of operations: /255, then *2 - 1


def first_frame(image: ImageInput, area: int) -> torch.Tensor:
    """The i2v first frame as the reference prepares it: float32 [3, 1, H, W], (H, W) = ``i2v_size``.

    The image is stretched (not cropped) with bicubic interpolation, without antialiasing and without a
    clamp, exactly as the reference's ``preprocess_image_tensor``; it computes in the model dtype, here it
    is float32 and the caller casts.
    """
    x = image_pixels(image)
    height, width = i2v_size(x.shape[2], x.shape[3], area)
    if x.shape[2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False)
    return x[0].unsqueeze(1)  # [3, 1, H, W]
