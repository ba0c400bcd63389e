"""A CSV list of images -> a Listing.

The file either has a header row naming a ``path`` column (and optionally ``label``; other columns
are ignored) or no header and one or two columns (``path[,label]``). Paths are relative to the
CSV's directory, which becomes the scan root; absolute paths are accepted when they lie below it.
Backslashes count as separators. An empty label cell means unlabelled. A repeated path keeps its
first row, with a warning. Anything that stops the file being read as a whole (bad quoting, wrong
column counts, paths outside the root) raises :class:`DatasetError` naming the line.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from featscope.datasets.images import IMAGE_EXTENSIONS
from featscope.datasets.scanning import Candidate, DatasetError, Listing, normalize_relpath, relpath_below

__all__ = ["list_csv"]


def list_csv(csv_path: Path) -> Listing:
    """Parse ``csv_path`` into candidates relative to its directory."""
    if not csv_path.is_file():
        raise DatasetError(f"{csv_path} does not exist or is not a file; pass the CSV that lists the images")
    root = csv_path.parent
    rows = _read_rows(csv_path)
    if not rows:
        raise DatasetError(f"{csv_path} lists no images; add rows of path[,label]")
    path_col, label_col, width, rows = _columns(csv_path, rows)
    candidates: list[Candidate] = []
    first_line: dict[str, int] = {}
    warnings: list[str] = []
    for line, row in rows:
        if len(row) != width:
            raise DatasetError(f"{csv_path}, line {line}: expected {width} column(s), found {len(row)}; "
                               "quote cells that contain commas")
        cell = row[path_col].strip()
        if not cell or "\0" in cell:
            raise DatasetError(f"{csv_path}, line {line}: the path cell is empty or holds a NUL byte; "
                               "give each row an image path")
        relpath = _relpath(root, cell)
        if relpath is None:
            raise DatasetError(f"{csv_path}, line {line}: {cell} is not below {root}; images must lie below "
                               "the CSV's directory, so move the CSV to a common parent folder of the images")
        if relpath in first_line:
            warnings.append(f"{csv_path.name}, line {line}: {relpath} already listed on line "
                            f"{first_line[relpath]}; this row is ignored")
            continue
        first_line[relpath] = line
        label = row[label_col].strip() if label_col is not None else ""
        candidates.append(Candidate(relpath=relpath, label=label or None))
    return Listing(format="csv", root=root, candidates=candidates, warnings=warnings, annotations=csv_path)


def _read_rows(csv_path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every non-blank row."""
    rows: list[tuple[int, list[str]]] = []
    with open(csv_path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, strict=True)
        try:
            for row in reader:
                if any(cell.strip() for cell in row):
                    rows.append((reader.line_num, row))
        except csv.Error as exc:
            raise DatasetError(f"{csv_path}, line {reader.line_num}: malformed CSV ({exc}); "
                               "check the quoting on that line") from None
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{csv_path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                               "save it as UTF-8") from None
    return rows


def _columns(csv_path: Path, rows: list[tuple[int, list[str]]]
             ) -> tuple[int, int | None, int, list[tuple[int, list[str]]]]:
    """(path column, label column, expected width, data rows) from the header or the headerless shape."""
    line, first = rows[0]
    names = [cell.strip().lower() for cell in first]
    if "path" in names:
        label_col = names.index("label") if "label" in names else None
        return names.index("path"), label_col, len(first), rows[1:]
    cell = first[0].strip()
    looks_like_file = os.path.splitext(cell)[1].lower() in IMAGE_EXTENSIONS or (csv_path.parent / cell).exists()
    if not looks_like_file:
        raise DatasetError(f"{csv_path}, line {line}: {first!r} looks like a header but has no 'path' column; "
                           "name the image column 'path' (and the class column 'label')")
    if len(first) not in (1, 2):
        raise DatasetError(f"{csv_path}, line {line}: a CSV without a header must have the columns "
                           f"path[,label], found {len(first)}; add a header row naming 'path' and 'label'")
    return 0, (1 if len(first) == 2 else None), len(first), rows


def _relpath(root: Path, cell: str) -> str | None:
    path = Path(cell.replace("\\", "/"))
    if path.is_absolute():
        return relpath_below(root, path)
    return normalize_relpath(cell)
