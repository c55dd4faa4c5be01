"""Data loading: every awkward file kind a user folder holds, built in code with Pillow."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot.data import content_hash, demo_images, infer_resolution, load_images, sample_batch
from fewshot.errors import FewshotError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _jpeg_bytes(img: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=95, **kwargs)
    return buffer.getvalue()


def _png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def _left_red_right_blue(width: int = 40, height: int = 20) -> Image.Image:
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, : width // 2] = (255, 0, 0)
    array[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(array)


@pytest.fixture()
def messy_folder(tmp_path: Path) -> Path:
    """Eight good images of awkward kinds, three bad files, a non-image, a hidden file, a duplicate."""
    root = tmp_path / "messy"
    (root / "sub" / "deeper").mkdir(parents=True)
    good = _jpeg_bytes(_left_red_right_blue())
    (root / "a_plain.JPG").write_bytes(good)
    (root / "a_plain_copy.jpeg").write_bytes(good)  # an exact duplicate
    # A corrupt JPEG (its second half is missing) and a text file pretending to be a PNG.
    (root / "b_truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "c_text.png").write_text("this is not an image\n")
    (root / "c_empty.webp").write_bytes(b"")
    # CMYK JPEG: pure cyan.
    (root / "sub" / "d_cmyk.jpg").write_bytes(_jpeg_bytes(Image.new("CMYK", (24, 24), (255, 0, 0, 0))))
    # 8-bit grayscale PNG and a 16-bit one (mid grey 32768 must become 128, not white).
    (root / "sub" / "e_gray.png").write_bytes(_png_bytes(Image.new("L", (30, 30), 77)))
    gray16 = Image.fromarray(np.full((16, 16), 32768, dtype=np.uint16))
    (root / "sub" / "e_gray16.PNG").write_bytes(_png_bytes(gray16))
    # RGBA: fully transparent black must come out white (composited on white).
    (root / "sub" / "deeper" / "f_rgba.png").write_bytes(_png_bytes(Image.new("RGBA", (20, 20), (0, 0, 0, 0))))
    # Palette GIF: pure green.
    palette = Image.new("RGB", (20, 20), (0, 255, 0)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    buffer = io.BytesIO()
    palette.save(buffer, format="GIF")
    (root / "sub" / "deeper" / "g_palette.gif").write_bytes(buffer.getvalue())
    # EXIF orientation 6 (rotate 90 clockwise to display): stored 40x20 left red / right blue,
    # displayed 20x40 with red on top.
    exif = Image.Exif()
    exif[0x0112] = 6
    (root / "h_exif.jpg").write_bytes(_jpeg_bytes(_left_red_right_blue(), exif=exif.tobytes()))
    (root / "notes.txt").write_text("ignore me")
    (root / ".hidden.png").write_bytes(good)
    return root


def _mean_rgb(imageset, name: str) -> np.ndarray:
    return imageset.images[imageset.names.index(name)].float().mean(dim=(1, 2)).numpy()


def test_messy_folder_loads_good_files_and_reports_bad_ones(messy_folder: Path) -> None:
    data = load_images(messy_folder, resolution=16, progress=False)
    assert data.images.dtype == torch.uint8 and data.images.shape == (8, 3, 16, 16)
    # Sorted relative POSIX paths, hidden files and non-images left out.
    assert data.names == sorted(data.names)
    assert "sub/deeper/g_palette.gif" in data.names and ".hidden.png" not in data.names
    skipped = dict(data.summary.skipped)
    assert set(skipped) == {"b_truncated.jpg", "c_text.png", "c_empty.webp"}
    assert "truncated" in skipped["b_truncated.jpg"]
    assert "not a readable image" in skipped["c_text.png"]
    assert data.summary.ignored == ["notes.txt"]
    assert data.summary.duplicates == [["a_plain.JPG", "a_plain_copy.jpeg"]]
    # Conversions to RGB, checked by colour.
    assert np.allclose(_mean_rgb(data, "sub/d_cmyk.jpg"), [0, 255, 255], atol=6)
    assert np.allclose(_mean_rgb(data, "sub/e_gray.png"), [77, 77, 77], atol=1)
    assert np.allclose(_mean_rgb(data, "sub/e_gray16.PNG"), [128, 128, 128], atol=1)
    assert np.allclose(_mean_rgb(data, "sub/deeper/f_rgba.png"), [255, 255, 255], atol=0)
    assert np.allclose(_mean_rgb(data, "sub/deeper/g_palette.gif"), [0, 255, 0], atol=2)
    assert data.summary.converted.get("CMYK") == 1
    # EXIF applied: after the 90-degree turn, red is on top and blue at the bottom.
    exif = data.images[data.names.index("h_exif.jpg")].float()
    top, bottom = exif[:, :6].mean(dim=(1, 2)), exif[:, -6:].mean(dim=(1, 2))
    assert top[0] > 200 and top[2] < 50 and bottom[2] > 200 and bottom[0] < 50
    assert data.summary.min_size == (16, 16) and data.summary.max_size == (30, 30)  # by area
    text = data.describe()
    assert "8 images" in text and "c_text.png" in text and "duplicates" in text


def test_center_crop_and_pad(tmp_path: Path) -> None:
    folder = tmp_path / "wide"
    folder.mkdir()
    for i in range(2):
        (folder / f"{i}.png").write_bytes(_png_bytes(_left_red_right_blue(40, 20)))
    centre = load_images(folder, 8, crop="center", progress=False).images[0].float()
    # The centred 20x20 square is half red, half blue: the left column red, the right one blue.
    assert centre[0, :, 0].min() > 200 and centre[2, :, -1].min() > 200
    padded = load_images(folder, 8, crop="pad", progress=False).images[0].float()
    # Padding with black: a 40x40 canvas with the 40x20 picture in the middle rows.
    assert padded[:, 0].max() < 10 and padded[:, -1].max() < 10
    assert padded[0, 4, 0] > 200 and padded[2, 4, -1] > 200
    with pytest.raises(FewshotError, match="crop"):
        load_images(folder, 8, crop="stretch", progress=False)


def test_zip_input_matches_folder(messy_folder: Path, tmp_path: Path) -> None:
    archive = tmp_path / "messy.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(messy_folder.rglob("*")):
            if path.is_file():
                zf.write(path, "messy/" + path.relative_to(messy_folder).as_posix())
        zf.writestr("__MACOSX/messy/._a_plain.JPG", b"resource fork junk")
    from_zip = load_images(archive, 16, progress=False)
    from_folder = load_images(messy_folder, 16, progress=False)
    assert [n.removeprefix("messy/") for n in from_zip.names] == from_folder.names
    assert torch.equal(from_zip.images, from_folder.images)
    assert content_hash(from_zip) == content_hash(from_folder)
    assert len(from_zip.summary.skipped) == 3


def test_too_few_images_and_bad_sources(tmp_path: Path) -> None:
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "only.png").write_bytes(_png_bytes(Image.new("RGB", (8, 8))))
    (folder / "broken.png").write_text("nope")
    with pytest.raises(FewshotError, match="at least 2 usable images") as info:
        load_images(folder, 8, progress=False)
    assert "broken.png" in str(info.value)
    with pytest.raises(FewshotError, match="does not exist"):
        load_images(tmp_path / "missing", 8, progress=False)
    with pytest.raises(FewshotError, match="neither a folder nor a .zip"):
        load_images(folder / "only.png", 8, progress=False)
    (tmp_path / "fake.zip").write_text("not a zip")
    with pytest.raises(FewshotError, match="zip"):
        load_images(tmp_path / "fake.zip", 8, progress=False)
    with pytest.raises(FewshotError, match="resolution"):
        load_images(folder, 0, progress=False)


def test_max_images_keeps_the_first_in_sorted_order(messy_folder: Path) -> None:
    data = load_images(messy_folder, 8, max_images=3, progress=False)
    assert data.names == load_images(messy_folder, 8, progress=False).names[:3]


def test_a_set_too_large_for_memory_is_refused_before_decoding(messy_folder: Path, monkeypatch) -> None:
    from fewshot import host_memory

    full = load_images(messy_folder, 16)
    assert full.images.is_contiguous() and full.images.shape[1:] == (3, 16, 16)
    monkeypatch.setattr(host_memory, "available_bytes", lambda: 3 * 64 * 64 * 4)  # room for ~3 images at 64 px
    with pytest.raises(FewshotError, match=r"images at 64x64 need .* GiB in memory, more than the") as info:
        load_images(messy_folder, 64)
    assert "max_images=3" in info.value.hint
    assert len(load_images(messy_folder, 64, max_images=2)) == 2  # a subset that fits goes through
    monkeypatch.setattr(host_memory, "available_bytes", lambda: None)  # unknown (not Linux): no guard
    assert len(load_images(messy_folder, 64)) == len(full)


def test_image_stream_decodes_the_same_images_as_load_images(messy_folder: Path, tmp_path: Path) -> None:
    from fewshot.data import ImageStream

    whole = load_images(messy_folder, 16, progress=False)
    stream = ImageStream(messy_folder, 16)
    chunks = list(stream.chunks(3))
    assert [c.shape[0] for c in chunks] == [3, 3, 2]
    assert torch.equal(torch.cat(chunks), whole.images)  # same files, order and conversions
    assert stream.summary.count == whole.summary.count and stream.summary.skipped == whole.summary.skipped
    assert stream.summary.duplicates == whole.summary.duplicates and stream.candidates == 11

    key = stream.listing_key()
    assert key == ImageStream(messy_folder, 16).listing_key()
    assert key != ImageStream(messy_folder, 32).listing_key()  # other decoding, other key
    (messy_folder / "z_new.png").write_bytes((messy_folder / "sub" / "e_gray.png").read_bytes())
    assert ImageStream(messy_folder, 16).listing_key() != key
    with zipfile.ZipFile(tmp_path / "set.zip", "w") as archive:
        archive.writestr("a.png", (messy_folder / "sub" / "e_gray.png").read_bytes())
        archive.writestr("b.png", (messy_folder / "sub" / "deeper" / "f_rgba.png").read_bytes())
    zipped = ImageStream(tmp_path / "set.zip", 16)
    assert len(torch.cat(list(zipped.chunks(8)))) == 2
    assert zipped.listing_key() == ImageStream(tmp_path / "set.zip", 16).listing_key()

    single = tmp_path / "single"
    single.mkdir()
    (single / "one.png").write_bytes((messy_folder / "sub" / "e_gray.png").read_bytes())
    with pytest.raises(FewshotError, match="need at least 2 usable images"):
        list(ImageStream(single, 16).chunks(4))


def test_content_hash_tracks_pixels() -> None:
    a = demo_images(4, 8, seed=1)
    b = demo_images(4, 8, seed=1)
    assert content_hash(a.images) == content_hash(b.images)
    b.images[0, 0, 0, 0] ^= 1
    assert content_hash(a.images) != content_hash(b.images)
    with pytest.raises(FewshotError):
        content_hash(a.images.float())


def test_demo_images_are_deterministic_and_varied() -> None:
    a = demo_images(16, 32, seed=0)
    assert a.images.shape == (16, 3, 32, 32) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, demo_images(16, 32, seed=0).images)
    assert not torch.equal(a.images, demo_images(16, 32, seed=1).images)
    assert a.images.float().std(dim=0).mean() > 20  # images differ from each other
    assert len(set(a.names)) == 16


def test_sample_batch_range_flips_and_resume() -> None:
    data = demo_images(8, 16, seed=0)
    data.mirror = True
    gen = torch.Generator().manual_seed(3)
    first = sample_batch(data, 64, gen)
    state = gen.get_state()
    second = sample_batch(data, 64, gen)
    assert first.shape == (64, 3, 16, 16) and first.dtype == torch.float32
    assert first.min() >= -1 and first.max() <= 1
    # Restoring the generator state reproduces the next batch exactly.
    gen.set_state(state)
    assert torch.equal(sample_batch(data, 64, gen), second)
    # Every sample is a dataset image or its mirror, and both occur.
    reals = data.images.float() / 127.5 - 1
    plain = (first[:, None] == reals[None]).flatten(2).all(-1).any(-1)
    flipped = (first[:, None] == reals.flip(3)[None]).flatten(2).all(-1).any(-1)
    assert bool((plain | flipped).all()) and plain.any() and (flipped & ~plain).any()
    data.mirror = False
    unflipped = sample_batch(data, 64, torch.Generator().manual_seed(3))
    assert bool((unflipped[:, None] == reals[None]).flatten(2).all(-1).any(-1).all())


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATA / "haunted-house-10").is_dir(), reason="../shared/data is not present")
def test_haunted_house_real_images() -> None:
    data = load_images(SHARED_DATA / "haunted-house-10", 32, progress=False)
    assert data.images.shape == (10, 3, 32, 32)
    assert data.summary.skipped == [] and data.summary.duplicates == []
    assert any(n.endswith(".jpeg") for n in data.names) and any(n.endswith(".jpg") for n in data.names)
    width_min, _ = data.summary.min_size
    width_max, _ = data.summary.max_size
    assert width_min < width_max  # the set mixes sizes
    assert data.images.float().std() > 10


def test_infer_resolution_from_the_data(tmp_path: Path) -> None:
    def save(folder: Path, name: str, size: tuple[int, int]) -> None:
        folder.mkdir(exist_ok=True)
        Image.new("RGB", size, (10, 200, 30)).save(folder / name)

    square = tmp_path / "square"
    for i in range(3):
        save(square, f"{i}.png", (256, 256))
    assert infer_resolution(square)[0] == 256

    mixed = tmp_path / "mixed"  # short sides 90, 100, 300 -> median 100 -> 64; long sides 120, 640, 400 -> 400 -> 256
    save(mixed, "a.jpg", (120, 90))
    save(mixed, "b.png", (640, 100))
    save(mixed, "c.png", (300, 400))
    (mixed / "broken.png").write_bytes(b"not an image")
    resolution, reason = infer_resolution(mixed)
    assert resolution == 64 and "median short side 100 px over 3 images" in reason
    assert infer_resolution(mixed, crop="pad")[0] == 256

    tiny = tmp_path / "tiny"
    save(tiny, "a.png", (3, 3))
    save(tiny, "b.png", (5, 5))
    huge_zip = tmp_path / "huge.zip"
    buffer = io.BytesIO()
    Image.new("RGB", (2100, 2100)).save(buffer, format="PNG")
    with zipfile.ZipFile(huge_zip, "w") as archive:
        archive.writestr("x/a.png", buffer.getvalue())
    assert infer_resolution(tiny)[0] == 8  # clamped: the smallest network that still has a few blocks
    assert infer_resolution(huge_zip)[0] == 1024

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.png").write_bytes(b"garbage")
    with pytest.raises(FewshotError, match="no readable images") as refused:
        infer_resolution(empty)
    assert "x.png: not a readable image" in str(refused.value)  # the user learns which file and why
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    (nothing / "notes.txt").write_text("no images here")
    with pytest.raises(FewshotError, match="no image files in folder") as refused:
        infer_resolution(nothing)
    assert ".png" in refused.value.hint


def test_a_file_name_with_a_line_break_keeps_the_error_on_one_line(tmp_path: Path) -> None:
    # Found by fuzz/fuzz_images.py: a zip member may name a line break, which the skipped-file list quoted back.
    source = tmp_path / "set.zip"
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr("two\nlines.png", b"not an image")
        archive.writestr("other.png", b"nor this")
    for call in (lambda: infer_resolution(source), lambda: load_images(source, 32, progress=False)):
        with pytest.raises(FewshotError, match=r"two\\nlines\.png: ") as refused:
            call()
        assert "\n" not in refused.value.message


# Damaged zip archives and oversized files: fuzz/fuzz_images.py found each of the zip cases as an
# exception that escaped load_images / infer_resolution (or a multi-gigabyte read).

def _zip_of_images(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name if name else zipfile.ZipInfo(""), data)
    return buffer.getvalue()


def _central_entry(raw: bytes, index: int) -> int:
    """Offset of the index-th central directory record (signature PK\\1\\2) in an archive's bytes."""
    offset = -1
    for _ in range(index + 1):
        offset = raw.index(b"PK\x01\x02", offset + 1)
    return offset


def _two_images() -> dict[str, bytes]:
    return {"a.png": _png_bytes(_left_red_right_blue(8, 8)), "b.png": _png_bytes(Image.new("RGB", (8, 8), (9, 9, 9)))}


def test_a_zip_of_an_unsupported_version_is_one_error(tmp_path: Path) -> None:
    raw = bytearray(_zip_of_images(_two_images()))
    entry = _central_entry(bytes(raw), 0)
    raw[entry + 6:entry + 8] = (148).to_bytes(2, "little")  # "version needed to extract": 14.8 (was NotImplementedError)
    (tmp_path / "v.zip").write_bytes(bytes(raw))
    for call in (lambda: load_images(tmp_path / "v.zip", 8, progress=False), lambda: infer_resolution(tmp_path / "v.zip")):
        with pytest.raises(FewshotError, match="cannot open .* as a zip archive"):
            call()


def test_damaged_zip_members_are_skipped_with_their_reason(tmp_path: Path) -> None:
    members = {**_two_images(), "c_corrupt.png": _png_bytes(Image.new("RGB", (8, 8))), "d_claims.png": b"x" * 40}
    raw = bytearray(_zip_of_images(members))
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as archive:
        corrupt = archive.getinfo("c_corrupt.png")
    # Deflate block type 3 does not exist: the stream fails to inflate (was zlib.error).
    name_and_extra = int.from_bytes(raw[corrupt.header_offset + 26:corrupt.header_offset + 28], "little") + \
        int.from_bytes(raw[corrupt.header_offset + 28:corrupt.header_offset + 30], "little")
    raw[corrupt.header_offset + 30 + name_and_extra] = 0xFF
    # A compressed size beyond the archive: zipfile would read (allocate) all of it in one call.
    claims = _central_entry(bytes(raw), 3)
    raw[claims + 20:claims + 24] = (0xF000_0000).to_bytes(4, "little")
    (tmp_path / "damaged.zip").write_bytes(bytes(raw))
    data = load_images(tmp_path / "damaged.zip", 8, progress=False)
    assert data.names == ["a.png", "b.png"]
    reasons = dict(data.summary.skipped)
    assert reasons["c_corrupt.png"].startswith("cannot read:")
    assert "claims more bytes than the archive holds" in reasons["d_claims.png"]
    assert infer_resolution(tmp_path / "damaged.zip")[0] == 8


def test_a_zip_member_without_a_name_is_ignored(tmp_path: Path) -> None:
    from fewshot.data import ImageStream

    (tmp_path / "nameless.zip").write_bytes(_zip_of_images({**_two_images(), "": b"no name"}))  # was IndexError
    assert load_images(tmp_path / "nameless.zip", 8, progress=False).names == ["a.png", "b.png"]
    assert infer_resolution(tmp_path / "nameless.zip")[0] == 8
    assert len(ImageStream(tmp_path / "nameless.zip", 8).listing_key()) == 64


def test_a_file_too_large_to_be_an_image_is_skipped_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fewshot.data

    monkeypatch.setattr(fewshot.data, "MAX_FILE_BYTES", 1000)
    folder = tmp_path / "set"
    folder.mkdir()
    for name, data in _two_images().items():
        (folder / name).write_bytes(data)
    (folder / "big.png").write_bytes(_png_bytes(Image.new("RGB", (8, 8))) + bytes(2000))
    (tmp_path / "set.zip").write_bytes(_zip_of_images({**_two_images(), "big.png": bytes(2000)}))
    for source in (folder, tmp_path / "set.zip"):
        data = load_images(source, 8, progress=False)
        assert data.names == ["a.png", "b.png"]
        assert dict(data.summary.skipped)["big.png"].startswith("cannot read: larger than")
