"""One resize-to-area: the i2v first frame at generation, a training clip's frames and packed frames are the
same pixels, and the size rule snaps to the released sizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ovi.imaging import frames_to_pixels, load_image, resize_cover, resize_frames, size_for_area, unit_to_uint8


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth gradient plus noise: uint8 [H, W, 3] with detail at every scale."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], -1) * 200
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


def test_size_for_area_matches_the_released_sizes() -> None:
    assert size_for_area(1, 1, 720 * 720) == (704, 704)
    assert size_for_area(1, 1, 960 * 960) == (960, 960)
    assert size_for_area(1920, 1080, 720 * 720) == (512, 960)
    with pytest.raises(ValueError, match="positive"):
        size_for_area(0, 1, 100)


@pytest.mark.parametrize("src", [(90, 160), (160, 90), (64, 64), (33, 47)])
def test_generation_and_training_prepare_an_image_identically(src: tuple[int, int]) -> None:
    pixels = photo(*src)
    height, width = size_for_area(src[1], src[0], 64 * 64)
    first_frame = load_image(Image.fromarray(pixels), height, width)  # generation's i2v input
    clip = frames_to_pixels(torch.from_numpy(np.stack([pixels, pixels[::-1]])), height, width)  # training
    assert first_frame.shape == (3, 1, height, width) and first_frame.dtype == torch.float32
    assert torch.equal(first_frame, clip[:, :1])
    assert first_frame.min() >= -1 and first_frame.max() <= 1
    # Packing stores the same frame, rounded to uint8.
    packed = resize_frames(pixels[None], height, width)
    assert np.array_equal(packed, unit_to_uint8(first_frame.transpose(0, 1)).numpy())


def test_resize_covers_then_centre_crops() -> None:
    x = torch.full((1, 3, 40, 80), -1.0)
    x[..., 30:50] = 1.0  # a white band in the middle third of a wide image
    y = resize_cover(x, 32, 32)  # cover: 32x64 (band at 24..40), centre 32 columns: the band at 8..24
    assert y.shape == (1, 3, 32, 32)
    assert float(y[..., 10:22].mean()) == pytest.approx(1.0, abs=1e-3)
    assert float(y[..., :5].mean()) == pytest.approx(-1.0, abs=1e-3)
    assert float(y[..., -5:].mean()) == pytest.approx(-1.0, abs=1e-3)
    assert resize_cover(x, 40, 80) is x  # already the size: untouched


def test_shrinking_is_antialiased() -> None:
    stripes = torch.tensor([-1.0, 1.0]).repeat(32)[None, None, None].expand(1, 3, 64, 64).contiguous()
    small = resize_cover(stripes, 16, 16)  # 1-pixel stripes averaged away, not aliased into a pattern
    assert float(small.abs().max()) < 0.1
