"""Registering backbones and loading them again, verified against their recorded fingerprint."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from featscope.catalog import Backbone as BackboneRow
from featscope.extractors.backbones import TapInfo, list_taps, load_backbone, parse_spec
from featscope.extractors.types import Backbone, Preprocess
from featscope.workspace.context import Context, NotFound


@dataclass(frozen=True)
class BackboneInfo:
    id: int
    name: str
    spec: str
    arch: str
    weights: str | None
    random_init: bool
    fingerprint: str
    taps: list[str]
    has_classifier: bool
    created: bool = False

    @classmethod
    def of(cls, row: BackboneRow, created: bool = False) -> "BackboneInfo":
        return cls(row.id, row.name, row.spec, row.arch, row.weights, row.random_init, row.fingerprint,
                   list(row.taps), row.has_classifier, created)


def add_backbone(ctx: Context, spec: str, *, name: str | None = None, weights: str | Path | None = None,
                 weights_format: str = "auto", arch: str | None = None, random_init: bool = False, seed: int = 0,
                 preprocess: Preprocess | None = None) -> BackboneInfo:
    """Load ``spec`` once (so a bad checkpoint fails now, not at extraction) and register it under ``name``."""
    if weights is None and isinstance(spec, str) and spec.startswith("run:"):
        from featscope.workspace.training import run_weights  # a training run's backbone file

        weights = run_weights(ctx, spec[4:].strip())
    weights = str(Path(weights).expanduser().resolve()) if weights else None
    bb = load_backbone(spec, weights=weights, weights_format=weights_format, arch=arch, random_init=random_init,
                       seed=seed, preprocess=preprocess)
    name = name or _default_name(spec, bb, random_init, seed)
    with ctx.session() as s:
        existing = s.scalars(select(BackboneRow).where(BackboneRow.name == name)).first()
        if existing is not None:
            if existing.fingerprint == bb.fingerprint and Preprocess.from_dict(existing.preprocess) == bb.preprocess:
                return BackboneInfo.of(existing)
            raise ValueError(
                f"a different backbone is already registered as {name!r} ({existing.spec}); "
                f"choose another name with --name"
            )
        row = BackboneRow(
            name=name, spec=spec, source=bb.source, arch=bb.arch, weights=weights or bb.weights,
            weights_format=bb.weights_format, random_init=random_init, seed=seed, fingerprint=bb.fingerprint,
            preprocess=bb.preprocess.to_dict(), taps=list(bb.taps), has_classifier=bb.classifier is not None,
        )
        s.add(row)
        s.flush()
        info = BackboneInfo.of(row, created=True)
    _LOADED[(info.id, bb.fingerprint)] = bb
    return info


def _default_name(spec: str, bb: Backbone, random_init: bool, seed: int) -> str:
    source, target = parse_spec(spec)
    base = Path(target).stem if source == "checkpoint" else target
    if source == "torchvision-det":
        base = f"{base}-body"
    if source == "run":
        base = f"run-{target}"
    if random_init:
        base = f"{base}-random{seed}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", base)


def list_backbones(ctx: Context) -> list[BackboneInfo]:
    with ctx.session() as s:
        return [BackboneInfo.of(r) for r in s.scalars(select(BackboneRow).order_by(BackboneRow.name))]


def get_backbone_row(ctx: Context, ref: str | int) -> BackboneRow:
    """A registered backbone by id or name."""
    with ctx.session() as s:
        row = s.get(BackboneRow, int(ref)) if str(ref).isdigit() else None
        row = row or s.scalars(select(BackboneRow).where(BackboneRow.name == str(ref))).first()
        if row is None:
            known = ", ".join(r.name for r in s.scalars(select(BackboneRow).order_by(BackboneRow.name))) or "none yet"
            raise NotFound(f"no backbone {ref!r} (known: {known}); register one with `featscope backbone add SPEC`")
        return row


# Loaded networks are kept per process: loading and hashing ResNet-101 weights costs seconds.
_LOADED: dict[tuple[int, str], Backbone] = {}


def open_backbone(ctx: Context, ref: str | int) -> Backbone:
    """Load a registered backbone; refuse if its weights no longer match what was registered."""
    row = get_backbone_row(ctx, ref)
    cached = _LOADED.get((row.id, row.fingerprint))
    if cached is not None:
        return cached
    bb = load_backbone(row.spec, weights=row.weights,
                       weights_format=row.weights_format or "auto", arch=row.arch, random_init=row.random_init,
                       seed=row.seed, preprocess=Preprocess.from_dict(row.preprocess))
    if bb.fingerprint != row.fingerprint:
        raise ValueError(
            f"backbone {row.name!r}: its weights ({row.weights or row.spec}) changed since it was registered "
            f"(fingerprint {bb.fingerprint[:12]} != {row.fingerprint[:12]}); register the new weights under a new name"
        )
    _LOADED[(row.id, row.fingerprint)] = bb
    return bb


def backbone_layers(ctx: Context, ref: str | int, input_size: int | None = None) -> list[TapInfo]:
    """The taps a registered backbone offers, with their shapes and pooled lengths."""
    return list_taps(open_backbone(ctx, ref), input_size=input_size)
