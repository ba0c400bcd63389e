"""Registering backbones and loading them again, in any process, verified against their recorded fingerprint.

A registration records the arguments the loader was called with (``load_args``), never what it
resolved them to: ``checkpoint:FILE`` names its file and ``torchvision-det:NAME`` its architecture, so
handing the resolved file or architecture back would be refused. Any process (a CLI command, a
worker, a restarted server) calls :func:`~featscope.extractors.backbones.load_backbone` again with
exactly those arguments and the recorded preprocessing, and refuses the network unless its
fingerprint is the registered one. Rows written before ``load_args`` existed hold the resolved
values; :func:`load_arguments` maps them back per source. A new source (``run:<id>``) needs nothing
here: its arguments are stored and replayed like any other.

It also records what the network offers (taps and their shapes, class names), so requests can be
checked and answered without loading it; older rows get that record the first time they are loaded.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from featscope.catalog import Backbone as BackboneRow
from featscope.extractors.backbones import TapInfo, list_taps, load_backbone, parse_spec
from featscope.extractors.types import Backbone, Preprocess
from featscope.workspace.context import Context, NotFound

STUDY_ALIASES = ("conv2", "conv3", "conv4", "conv5")


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
                 preprocess: Preprocess | dict[str, Any] | None = None) -> BackboneInfo:
    """Load ``spec`` once (so a bad checkpoint fails now, not at extraction) and register it under ``name``.

    ``preprocess``: a :class:`Preprocess` replaces the weights' own preprocessing; a dict (e.g.
    ``{"resize": 40, "crop": 32}``) changes only those fields of it, keeping its normalisation, channel
    order and pixel scale (a Caffe-style network keeps its BGR 0..255 input)."""
    args = {"spec": _absolute_spec(spec), "weights": str(Path(weights).expanduser().resolve()) if weights else None,
            "weights_format": weights_format, "arch": arch, "random_init": random_init, "seed": seed}
    bb = load_backbone(**args, preprocess=None if isinstance(preprocess, dict) else preprocess)
    if isinstance(preprocess, dict):
        bb.preprocess = Preprocess.from_dict({**bb.preprocess.to_dict(), **preprocess})
    name = name or _default_name(args["spec"], bb, random_init, seed)
    with ctx.session() as s:
        existing = s.scalars(select(BackboneRow).where(BackboneRow.name == name)).first()
        if existing is not None:
            if existing.fingerprint == bb.fingerprint and Preprocess.from_dict(existing.preprocess) == bb.preprocess:
                return BackboneInfo.of(existing)
            raise ValueError(
                f"a different backbone is already registered as {name!r} ({existing.spec}); "
                f"choose another name (--name NAME, REST: name)"
            )
        row = BackboneRow(
            name=name, spec=args["spec"], source=bb.source, arch=bb.arch, weights=args["weights"] or bb.weights,
            weights_format=bb.weights_format, random_init=random_init, seed=seed, fingerprint=bb.fingerprint,
            preprocess=bb.preprocess.to_dict(), taps=list(bb.taps), has_classifier=bb.classifier is not None,
            load_args=args, network=network_record(bb),
        )
        s.add(row)
        s.flush()
        info = BackboneInfo.of(row, created=True)
    ctx.networks[(info.id, bb.fingerprint)] = bb
    return info


def _absolute_spec(spec: str) -> str:
    """``checkpoint:`` specs with their file made absolute, so another process in another folder finds it."""
    source, target = parse_spec(spec)
    return f"checkpoint:{Path(target).expanduser().resolve()}" if source == "checkpoint" else spec


def _default_name(spec: str, bb: Backbone, random_init: bool, seed: int) -> str:
    source, target = parse_spec(spec)
    base = Path(target).stem if source == "checkpoint" else target
    if source == "torchvision-det":
        base = f"{base}-body"
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
            raise NotFound(f"no backbone {ref!r} (known: {known}); register one (`featscope backbone add SPEC`, "
                           f"POST /api/v1/backbones)")
        return row


def load_arguments(row: BackboneRow) -> dict[str, Any]:
    """The keyword arguments of :func:`load_backbone` (less ``preprocess``) that load ``row`` again.

    Rows registered by an older featscope recorded the loader's resolved values instead: the file of
    a ``checkpoint:`` spec in ``weights`` and the detector body's architecture in ``arch``. The spec
    already names those, so they are dropped; a checkpoint keeps its recorded architecture and format
    (what its file was read as, which is what auto-detection finds again)."""
    if row.load_args:
        return dict(row.load_args)
    source, _ = parse_spec(row.spec)
    args: dict[str, Any] = {"spec": row.spec, "weights_format": row.weights_format or "auto",
                            "random_init": bool(row.random_init), "seed": int(row.seed or 0)}
    if source == "checkpoint":
        args["arch"] = row.arch
    else:
        args["weights"] = row.weights
    return args


def open_backbone(ctx: Context, ref: str | int) -> Backbone:
    """Load a registered backbone; refuse if its weights no longer match what was registered."""
    row = get_backbone_row(ctx, ref)
    cached = ctx.networks.get((row.id, row.fingerprint))
    if cached is not None:
        return cached
    bb = load_backbone(**load_arguments(row), preprocess=Preprocess.from_dict(row.preprocess))
    if bb.fingerprint != row.fingerprint:
        raise ValueError(
            f"backbone {row.name!r}: its weights ({row.weights or row.spec}) changed since it was registered "
            f"(fingerprint {bb.fingerprint[:12]} != {row.fingerprint[:12]}); register the new weights under a new name"
        )
    if row.network is None:  # an older row: record what the network offers now that it is loaded
        with ctx.session() as s:
            s.execute(update(BackboneRow).where(BackboneRow.id == row.id).values(network=network_record(bb)))
    ctx.networks[(row.id, row.fingerprint)] = bb
    return bb


def network_record(bb: Backbone) -> dict[str, Any]:
    """What a loaded network offers, as the catalog keeps it: taps with shapes at its input size, classes."""
    infos = list_taps(bb)
    n_classes = int(bb.classifier.out_features) if bb.classifier is not None else 0
    return {"input_size": bb.preprocess.crop, "taps": [dataclasses.asdict(t) for t in infos], "n_classes": n_classes,
            "class_names": list(bb.class_names) if bb.class_names else None}


def recorded_taps(row: BackboneRow) -> list[TapInfo] | None:
    """The taps recorded at registration (shapes at the backbone's input size), or None for an older row."""
    if not row.network:
        return None
    return [TapInfo(**t) for t in row.network["taps"]]


def tap_choices(row: BackboneRow) -> tuple[list[str], dict[str, str]]:
    """(tap names, alias -> tap) a request may name; an older row without a record offers the study's
    aliases (``conv2``..``conv5``), which every backbone featscope loads has."""
    taps = recorded_taps(row)
    if taps is None:
        return list(row.taps), {a: "" for a in STUDY_ALIASES}
    return [t.name for t in taps], {a: t.name for t in taps for a in t.aliases}


def recorded_classes(row: BackboneRow) -> list[str] | None:
    """The backbone's own classifier's class names (indices as names when it has none), or None when it has
    no classifier or the row has no record yet."""
    if not row.network or not row.network.get("n_classes"):
        return None
    return list(row.network.get("class_names") or [str(i) for i in range(row.network["n_classes"])])


def backbone_layers(ctx: Context, ref: str | int, input_size: int | None = None) -> list[TapInfo]:
    """The taps a registered backbone offers, with their shapes and pooled lengths (loads the network,
    so it also checks that its weights still match)."""
    return list_taps(open_backbone(ctx, ref), input_size=input_size)
