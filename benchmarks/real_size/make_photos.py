"""A CVQA-schema parquet source of photo-sized JPEGs, to measure a model job at CVQA's real sizes.

    PYTHONPATH=src python benchmarks/real_size/make_photos.py OUT_DIR --items 480 [--distinct 32]

Writes OUT_DIR/data/test-00000-of-00001.parquet and OUT_DIR/culture_groups.tsv (four cultures).
The photos are 3000x2000 to 4032x3024, landscape and portrait, textured like a phone photo (a few
MB each at JPEG quality 90), every third one stored on its side with an EXIF orientation tag (6
or 8), as phones write them. ``--distinct`` photos are drawn and their bytes reused across rows
(drawing hundreds of 12-megapixel photos takes minutes); every row is still decoded on its own.
Rows are in blocks of one culture each, as CVQA's shards hold a subset's rows together; row groups
hold 32 rows, about 100 MB, like the hub's parquet conversion of CVQA.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageFilter

from culture_neurons.data.images import ORIENTATION_TAG

PAIRS = [("Velorian", "Veloria", "VEL"), ("Tarneshi", "Tarnesh", "TAR"),
         ("Morvish", "Morvaine", "MOR"), ("Kelduni", "Kelduin", "KEL")]  # fmt: skip
SIZES = [(3000, 2000), (2000, 3000), (4032, 3024), (3024, 4032), (4000, 3000), (3264, 2448)]
ROW_GROUP = 32

SCHEMA = pa.schema(
    [
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("ID", pa.string()),
        ("Subset", pa.string()),
        ("Question", pa.string()),
        ("Translated Question", pa.string()),
        ("Options", pa.list_(pa.string())),
        ("Translated Options", pa.list_(pa.string())),
        ("Label", pa.int64()),
        ("Category", pa.string()),
        ("Image Type", pa.string()),
        ("Image Source", pa.string()),
        ("License", pa.string()),
    ]
)


def photo(rng: np.random.Generator, size: tuple[int, int], orientation: int | None) -> bytes:
    """Smooth colour fields plus grain: JPEG sizes of a phone photo, not of flat colour."""
    width, height = size
    coarse = rng.integers(0, 256, size=(height // 64, width // 64, 3), dtype=np.uint8)
    base = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    base = base.filter(ImageFilter.GaussianBlur(3))
    grain = rng.normal(0, 14, size=(height, width, 1))
    pixels = np.clip(np.asarray(base, np.float32) + grain, 0, 255).astype(np.uint8)
    picture = Image.fromarray(pixels)
    exif = Image.Exif()
    if orientation is not None:
        # Stored as the sensor saw it; the tag turns it upright (6: 90 degrees clockwise).
        turn = Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270
        picture = picture.transpose(turn)
        exif[ORIENTATION_TAG] = orientation
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--distinct", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    photos = [
        photo(rng, SIZES[k % len(SIZES)], None if k % 3 else (6, 8)[k // 3 % 2])
        for k in range(min(args.distinct, args.items))
    ]
    rows = []
    for k in range(args.items):
        language, country, _ = PAIRS[k * len(PAIRS) // args.items]
        rows.append(
            {
                "image": {"bytes": photos[k % len(photos)], "path": None},
                "ID": f"photo_{k:05d}",
                "Subset": str((language, country)),
                "Question": f"native question {k}",
                "Translated Question": f"What is shown in photo {k}?",
                "Options": [f"native {k} {j}" for j in range(4)],
                "Translated Options": [f"answer {k} {j}" for j in range(4)],
                "Label": k % 4,
                "Category": "Objects / materials / clothing",
                "Image Type": "Self",
                "Image Source": "benchmarks/real_size/make_photos.py",
                "License": "CC0",
            }
        )
    data = args.out / "data"
    data.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    pq.write_table(table, data / "test-00000-of-00001.parquet", row_group_size=ROW_GROUP,
                   use_dictionary=False)  # fmt: skip
    lines = ["country\tlanguage\tculture"] + [f"{c}\t{lang}\t{g}" for lang, c, g in PAIRS]
    (args.out / "culture_groups.tsv").write_text("\n".join(lines) + "\n")
    megabytes = [len(p) / 2**20 for p in photos]
    print(f"{args.items} rows, {len(photos)} distinct photos, "
          f"{min(megabytes):.1f}-{max(megabytes):.1f} MB each")  # fmt: skip


if __name__ == "__main__":
    main()
