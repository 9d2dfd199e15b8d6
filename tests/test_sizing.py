"""Generation sizes follow the reference's rules exactly (tests/data/reference_sizes.json was produced by running
the reference's own sizing functions on these requests), and the i2v first frame is stretched, not cropped."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ovi.imaging import first_frame, i2v_size, image_pixels, size_for_area, t2v_size

TABLE = json.loads((Path(__file__).parent / "data" / "reference_sizes.json").read_text())


def test_the_table_is_large_enough_to_mean_something() -> None:
    assert len(TABLE["t2v"]) + len(TABLE["i2v"]) >= 50
    assert any(t2v_size(h, w, a) != size_for_area(w, h, a) for h, w, a, *_ in TABLE["t2v"])  # floor differs


@pytest.mark.parametrize("h, w, area, eh, ew", TABLE["t2v"])
def test_text_to_video_size_equals_the_reference(h: int, w: int, area: int, eh: int, ew: int) -> None:
    assert t2v_size(h, w, area) == (eh, ew)


@pytest.mark.parametrize("h, w, area, eh, ew", TABLE["i2v"])
def test_image_to_video_size_equals_the_reference(h: int, w: int, area: int, eh: int, ew: int) -> None:
    assert i2v_size(h, w, area) == (eh, ew)


def test_the_issue_example_16_9_at_720_area_is_544x960() -> None:
    assert t2v_size(1080, 1920, 720 * 720) == (544, 960)
    assert t2v_size(720, 720, 720 * 720) == (704, 704)  # the released 720x720_5s runs at 704x704
    assert t2v_size(704, 1280, 704 * 1280) == (704, 1280)  # area = H*W gives exactly H x W


@pytest.mark.parametrize("bad", [(0, 9, 100), (9, 0, 100), (9, 16, 0)])
def test_nonpositive_sizes_are_refused(bad: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="positive"):
        t2v_size(*bad)
    with pytest.raises(ValueError, match="positive"):
        i2v_size(*bad)


def test_first_frame_is_stretched_with_plain_bicubic() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    frame = first_frame(Image.fromarray(rgb), 64 * 64)
    h, w = i2v_size(90, 160, 64 * 64)
    assert frame.shape == (3, 1, h, w)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0 * 2 - 1
    expected = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)  # whole image, no crop
    assert torch.allclose(frame[:, 0], expected[0], atol=1e-6)
    # A left-edge band stays at the left edge: a crop would have cut it away.
    band = np.zeros((90, 160, 3), np.uint8)
    band[:, :8] = 255
    left = first_frame(band, 64 * 64)[0, 0, :, :2]
    assert float(left.mean()) > 0.9


def test_every_image_kind_gives_the_same_pixels(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    ref = image_pixels(Image.fromarray(rgb))
    as_float = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0 * 2 - 1
    for image in (tmp_path / "x.png", str(tmp_path / "x.png"), rgb, torch.from_numpy(rgb), as_float):
        assert torch.allclose(image_pixels(image), ref, atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        image_pixels(rgb.astype(np.float64))
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        image_pixels(torch.zeros(4, 8, 8))


def test_a_corrupt_image_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ValueError, match="broken.png.*re-save"):
        image_pixels(bad)
