"""Box, DatasetScan.summary/skipped_reasons and dataset_fingerprint on hand-built records."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from featscope.datasets import Box, DatasetScan, ImageRecord, dataset_fingerprint


def _rec(relpath: str, label: str | None = "cat", error: str | None = None, **kw) -> ImageRecord:
    fields = dict(relpath=relpath, label=label, width=8, height=6, size_bytes=100, mtime_ns=1_000, error=error)
    fields.update(kw)
    return ImageRecord(**fields)


def _scan(images, skipped=(), classes=(), warnings=()) -> DatasetScan:
    return DatasetScan(root=Path("/data"), format="folder", images=list(images), skipped=list(skipped),
                       classes=list(classes), fingerprint="x", warnings=list(warnings))


def test_box_area() -> None:
    assert Box("a", 1.0, 2.0, 4.0, 7.0).area == 15.0
    assert Box("a", 4.0, 2.0, 1.0, 7.0).area == 0.0  # inverted
    assert Box("a", 1.0, 2.0, 1.0, 7.0).area == 0.0  # zero width


def test_reason_is_the_part_before_the_first_colon() -> None:
    assert _rec("a.png", error="cannot be decoded: OSError: x: y").reason == "cannot be decoded"
    assert _rec("a.png").reason is None


def test_summary_with_skips_and_warnings() -> None:
    scan = _scan(
        [_rec("a.png"), _rec("b.png", label="dog")],
        skipped=[_rec("c.png", error="cannot be decoded: bad"), _rec("d.png", error="file not found: gone"),
                 _rec("e.png", error="cannot be decoded: worse")],
        classes=["cat", "dog"], warnings=["w1"])
    assert scan.skipped_reasons() == {"cannot be decoded": 2, "file not found": 1}
    assert scan.summary() == ("2 images, 2 classes; 3 skipped: 2 cannot be decoded, 1 file not found; "
                              "1 annotation warning")


def test_summary_singular_and_unlabelled() -> None:
    assert _scan([_rec("a.png")], classes=["cat"]).summary() == "1 image, 1 class"
    unlabelled = _scan([_rec("a.png", label=None)], warnings=["a", "b"])
    assert unlabelled.summary() == "1 image, unlabelled; 2 annotation warnings"
    assert _scan([_rec("a.png")]).skipped_reasons() == {}


def test_image_path_joins_root() -> None:
    assert _scan([_rec("x/a.png")]).image_path(_rec("x/a.png")) == Path("/data/x/a.png")


# ---------------------------------------------------------------- fingerprint


def test_fingerprint_is_order_independent_and_hex() -> None:
    records = [_rec("a.png"), _rec("b.png", label=None), _rec("c.png", error="empty file: 0 bytes")]
    fp = dataset_fingerprint(records)
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert dataset_fingerprint(list(reversed(records))) == fp
    assert dataset_fingerprint([replace(r) for r in records]) == fp


def test_fingerprint_changes_with_every_input_field() -> None:
    base = [_rec("a.png", boxes=(Box("cat", 0, 0, 4, 4),)), _rec("b.png")]
    fp = dataset_fingerprint(base)
    changed = [
        [replace(base[0], mtime_ns=2_000), base[1]],                      # touched
        [replace(base[0], size_bytes=101), base[1]],                      # rewritten
        [replace(base[0], label="dog"), base[1]],                         # relabelled
        [replace(base[0], label=None), base[1]],                          # unlabelled
        [replace(base[0], boxes=(Box("cat", 0, 0, 4, 5),)), base[1]],     # box moved
        [replace(base[0], boxes=()), base[1]],                            # box removed
        [replace(base[0], relpath="A.png"), base[1]],                     # renamed
        base + [_rec("c.png", error="file not found: x")],                # skipped one added
        base[:1],                                                         # removed
    ]
    fingerprints = {dataset_fingerprint(c) for c in changed}
    assert fp not in fingerprints and len(fingerprints) == len(changed)


def test_fingerprint_ignores_probe_results() -> None:
    """Width/height/error are derived from the file, which size and mtime already pin down."""
    assert dataset_fingerprint([_rec("a.png")]) == dataset_fingerprint([_rec("a.png", width=None, height=None)])


# ---------------------------------------------------------------- occlusion


def test_box_rows_carry_occlusion_only_when_known() -> None:
    assert Box("cat", 1, 2, 3, 4).to_row() == ["cat", 1.0, 2.0, 3.0, 4.0]
    assert Box("cat", 1, 2, 3, 4, occlusion=0.25).to_row() == ["cat", 1.0, 2.0, 3.0, 4.0, 0.25]
    assert Box.from_row(["cat", 1, 2, 3, 4]) == Box("cat", 1.0, 2.0, 3.0, 4.0)  # a row stored before occlusion
    assert Box.from_row(["cat", 1, 2, 3, 4, 0.25]).occlusion == 0.25
    assert Box.from_row(["cat", 1, 2, 3, 4, None]).occlusion is None
    box = Box("dog", 0.5, 1.5, 9.0, 7.25, occlusion=0.0)
    assert Box.from_row(box.to_row()) == box


def test_fingerprint_without_occlusion_is_unchanged() -> None:
    """Pinned to the formula used before boxes had an occlusion, so no existing data set gets a new version."""
    import hashlib
    import json

    records = [_rec("a.png", boxes=(Box("cat", 0, 0, 4, 4), Box("dog", 1.5, 2, 3, 3))), _rec("b.png", label=None)]
    digest = hashlib.sha256(b"featscope-dataset-v1")
    for row in sorted(json.dumps([r.relpath, r.size_bytes, r.mtime_ns, r.label,
                                  [[b.label, float(b.x0), float(b.y0), float(b.x1), float(b.y1)] for b in r.boxes]],
                                 separators=(",", ":"), ensure_ascii=True) for r in records):
        digest.update(b"\n" + row.encode())
    assert dataset_fingerprint(records) == digest.hexdigest()
    occluded = [replace(records[0], boxes=(Box("cat", 0, 0, 4, 4, 0.3), records[0].boxes[1])), records[1]]
    assert dataset_fingerprint(occluded) != digest.hexdigest()
    assert dataset_fingerprint([replace(occluded[0], boxes=(Box("cat", 0, 0, 4, 4, 0.4),)), records[1]]) \
        != dataset_fingerprint(occluded)
