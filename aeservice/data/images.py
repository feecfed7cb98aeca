"""Image files as arrays: IDX files (the format MNIST is distributed in) and folders of PNG/JPEG images.

Readers only: each returns a numpy array of images, (n, h, w) or (n, h, w, c), and the labels
it found, and `aeservice.data.datasets` turns them into a `Dataset`. Every problem with a file
is a one-line `UserError` naming the file.
"""
from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from aeservice.errors import UserError

__all__ = ["IDX_TYPES", "IMAGE_SUFFIXES", "is_idx_name", "idx_stem", "read_idx", "idx_labels_beside",
           "read_image_folder"]

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT")
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# t10k-images-idx3-ubyte, train-images.idx3-ubyte, t10k-labels-idx1-ubyte.gz, ...
_IDX_NAME = re.compile(r"[-._]idx\d+(-ubyte)?(\.gz)?$", re.IGNORECASE)
_GZIP_MAGIC = b"\x1f\x8b"

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Pillow modes of one channel; every other mode (RGB, RGBA, P, CMYK, YCbCr, ...) is read as RGB
_GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")


def is_idx_name(name: str) -> bool:
    """Whether a file name says IDX: it ends in idx<N>, idx<N>-ubyte or either with .gz."""
    return _IDX_NAME.search(name) is not None


def idx_stem(name: str) -> str:
    """The name without its IDX ending: t10k-images-idx3-ubyte.gz -> t10k-images."""
    return _IDX_NAME.sub("", name) or name


def _idx_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if not (path.name.lower().endswith(".gz") or raw[:2] == _GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # not gzip, or cut short
        raise UserError(f"cannot read {path} as gzip: {exc}") from None


def read_idx(path: Path) -> np.ndarray:
    """The array an IDX file holds, in its own dtype: a 4-byte magic (0, 0, type, dimensions),
    each dimension as a big-endian 4-byte integer, then the values in row-major order."""
    raw = _idx_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        magic = raw[:4].hex() or "nothing"
        raise UserError(f"{path} is not an IDX file: its magic number is {magic}, not 0000 then type and dimensions")
    code, ndim = raw[2], raw[3]
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        raise UserError(f"{path}: unknown IDX value type 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise UserError(f"{path}: IDX header says 0 dimensions")
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise UserError(f"{path} is truncated: its IDX header is cut short ({len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[code])
    need = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    have = len(raw) - start
    if have < need:
        shape = "x".join(map(str, dims))
        raise UserError(f"{path} is truncated: dimensions {shape} need {need} bytes of values, it has {have}")
    if have > need:
        raise UserError(f"{path} has {have - need} bytes after the {need} its dimensions need: not one IDX array")
    return np.frombuffer(raw, dtype=dtype, offset=start).reshape(dims).astype(dtype.newbyteorder("="))


def idx_labels_beside(path: Path) -> Path | None:
    """The labels file that goes with an images file, if it lies beside it:
    t10k-images-idx3-ubyte[.gz] -> t10k-labels-idx1-ubyte, with or without .gz."""
    name = re.sub(r"images([-._])idx3", r"labels\1idx1", path.name, flags=re.IGNORECASE)
    if name == path.name:
        return None
    base = name[:-3] if name.lower().endswith(".gz") else name
    return next((p for p in (path.with_name(name), path.with_name(base), path.with_name(base + ".gz"))
                 if p.is_file()), None)


def _image_files(folder: Path) -> tuple[list[Path], list[str] | None]:
    """The image files under folder, in sorted order, and their class (their sub-folder's name),
    or None when they all lie in the folder itself. Hidden files (.DS_Store, ._x.png) are skipped."""
    def images(where: Path, deep: bool) -> list[Path]:
        found = where.rglob("*") if deep else where.iterdir()
        return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                      and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    top = images(folder, deep=False)
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels = list(top), []
    for sub in classes:
        inside = images(sub, deep=True)
        files += inside
        labels += [sub.name] * len(inside)
    if not files:
        kinds = "/".join(s.lstrip(".").upper() for s in IMAGE_SUFFIXES)
        raise UserError(f"no {kinds} images found in {folder} (nor in its sub-folders)")
    if not labels:
        return files, None
    if top:  # a class for some images and none for others: which would they be?
        raise UserError(f"{folder} has images both in it ({top[0].name}) and in class sub-folders "
                        f"({files[len(top)].relative_to(folder)}): put each image in a class folder")
    return files, labels


def _open(path: Path):
    from PIL import Image

    try:
        image = Image.open(path)
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's UnidentifiedImageError is an OSError
        raise UserError(f"cannot read {path} as an image: {exc}") from None
    return image


def _pixels(image) -> np.ndarray:
    """(h, w) for a one-channel image, else (h, w, 3) RGB; 8-bit values 0-255 either way."""
    if image.mode not in _GRAY_MODES:
        return np.asarray(image.convert("RGB"))
    if image.mode.startswith("I") or image.mode == "F":  # 16-bit (or wider) gray: onto the 8-bit scale
        values = np.asarray(image, dtype=np.float64)
        return np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
    return np.asarray(image.convert("L"))


def read_image_folder(folder: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Every PNG/JPEG image under folder as one uint8 array, and their labels or None.

    Images lie in the folder itself (no labels) or in sub-folders whose names are their labels
    (class ids: whole numbers when every name is one). All must have one size. Grayscale ones
    give (n, h, w); if any has colour, all are RGB, (n, h, w, 3), a gray one with three equal
    channels. An RGB image whose three channels are equal everywhere counts as gray, so a
    folder of gray images saved as RGB still gives one channel. Alpha is dropped.
    """
    files, labels = _image_files(folder)
    first, size = None, None
    arrays = []
    for path in files:
        image = _open(path)
        if size is None:
            first, size = path, image.size
        elif image.size != size:  # compared before any pixel is kept
            raise UserError(f"images in {folder} differ in size: {first.relative_to(folder)} is "
                            f"{size[0]}x{size[1]}, {path.relative_to(folder)} is {image.size[0]}x{image.size[1]}"
                            " (width x height)")
        pixels = _pixels(image)
        if pixels.ndim == 3 and (pixels == pixels[..., :1]).all():
            pixels = pixels[..., 0]
        arrays.append(pixels)
    if any(a.ndim == 3 for a in arrays):
        arrays = [a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2) for a in arrays]
    y = None
    if labels is not None:
        y = np.array([int(v) for v in labels]) if all(v.isdigit() for v in labels) else np.array(labels)
    return np.stack(arrays), y
