"""Mask-out maps (study Fig. 5): the target class's probability as a blank square slides over the image.

Two public names: :func:`maskout_map` and :class:`MaskoutResult`.

Position grid: along each axis the mask's top-left corner takes the values ``0, stride, 2*stride, ...``
while the mask fits (``<= H - size``); with ``cover_border`` (default) ``H - size`` is appended when the
steps miss it, so the last mask touches the border. (Captum ``Occlusion`` instead steps on to
``ceil((H - size) / stride) * stride`` and clips that last mask at the border; the positions below it
are the same as here, and with ``(H - size) % stride == 0`` the grids are identical.)
Each position's probability belongs to the mask centre, ``top + (size - 1) / 2`` in pixel coordinates.

Fill: ``"zero"`` writes 0 into the *normalised* input, i.e. the normalisation mean colour (Captum's
default baseline on a normalised input); ``"mean"`` writes a given data-set mean pixel; ``"blur"`` writes
the window of a Gaussian-blurred copy of the image.

Speed, every step exact in fp32:
- masked copies are made on the device by slice assignment into a batch copy, under ``inference_mode``
  and optional bf16/fp16 autocast; channels_last with autocast, the network's own NCHW layout in fp32:
  channels_last reorders the sums, which put fp32 1.3e-5 in probability from the naive NCHW loop on a
  ResNet-50 (NCHW: 9.5e-7) for about 9% less time (``channels_last=True`` asks for it);
- conv-BN folding (as :mod:`featscope.extractors.extract`) only with autocast: in fp32 its weight rounding
  doubled the distance to the naive loop (1.2e-5 vs 6.6e-6 in probability on a ResNet-18 with logits ~50);
- reuse (incremental inference, as Krypton does for occlusion maps): the network is traced (FX); a mask
  at one position changes only a rectangle of each layer's output, found by propagating the mask's rows
  and columns forward through every conv/pool/pointwise node. The first layers are cut at clean points
  (a node that is the only value later nodes read) into segments; each segment runs on a window of its
  input tensor only: the unmasked tensor (computed once) with the previous segment's changed rectangle
  pasted in, just large enough to hold every value its own changed rectangle reads (found by propagating
  that rectangle back), aligned to the segment's stride so its grid is the full tensor's, and touching
  the border wherever the reads reach past it so the padding there is real. Outputs computed from a
  window's false borders are never used, so every value is the full network's. The cuts are chosen by a
  shortest path over the cut points that minimises the estimated multiply-adds (plus copies) per position;
  where windows would cover whole tensors the rest of the network runs as usual. Graphs with ops the
  propagation does not know (or a failed self-check of every segment) run the plain batched path.

Measured (``benchmarks/bench_maskout.py --repeat 3 --naive-positions all``, ResNet-50 random init, 224 px,
60/8 = 484 positions, this project's 2-core CPU; best round of each; Captum under the same allocator
setting): Captum Occlusion (best ppe=16) 23.7 s; fp32 exact (ten windowed segments to layer3.0, 66% of
the multiply-adds) 15.3 s = 1.55x, max |dp| from the naive loop over all 484 positions 5.8e-6; fp32
without reuse 23.7 s; fp32 channels_last 14.2 s (2.1e-5 from the naive loop); bf16 7.7 s = 3.09x; bf16
with ``approx_margin=2`` (15 segments to layer3.5) 5.8 s = 4.10x. At the measured matmul peaks
(183 GFLOP/s fp32, 430 bf16) the exact plan's work takes 14.4 s fp32 and 6.1 s bf16. The random net is
chaotic (half a grey level of input noise moves p by 0.17), so bf16 differs by 0.159 and approx by 0.29.

Precision: ``"fp32"`` is exact. ``"bf16"``/``"fp16"`` run the network under autocast (conv-BN folded,
channels_last) but its head, from the global pool on, in fp32, for next to no work: a logit rounded
to bf16 (steps of 0.06 at 10) moves p by p(1 - p) times that, up to 0.015 (on 3 scenes of the ResNet-50
below, bf16 from layer2 on: 0.0095-0.0108 with a bf16 head, 0.0067-0.0074 with an fp32 one). ``"mixed"`` also keeps the layers up
to stride 8 (a ResNet's stem, layer1 and layer2) in fp32: there a mask's edge is still sharp, and the
rounding of the masked input and of these activations travels through every later layer. On a
featscope-trained ResNet-50 (``benchmarks/train_resnet50.py``: 5,000 64-px study scenes, held-out top-1
0.55), 16 px mask, stride 3, every position of 36 probe scenes (``bench_maskout.py --study-scene 64
--size 16 --stride 3 --scenes-accuracy 2``): bf16 max |dp| 0.050 (median per scene 0.023, 14 of 36
scenes within 0.02), mixed 0.0107 (median 0.005, all 36 within 0.02); half a grey level of input noise
moves p by up to 0.036. Switching at stride 4 instead (layer2 in bf16) reached 0.0207 on one scene.
Low precision is faster only where the hardware has it (GPUs; CPUs with AVX512-BF16 or AMX). The 224-px
figures above came from an earlier runner; on a 2-core AMD EPYC (AVX2, no native bf16, 2.3x slower:
Captum 54.3 s) bf16 is emulated: fp32 exact 33.7 s = 1.61x Captum, bf16 185 s = 0.29x, mixed 146 s =
0.37x, and the 36 maps above took 155 s fp32, 558 s bf16, 355 s mixed. The engine note and the log say so.
"""

from __future__ import annotations

import copy
import logging
import operator
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.utils import _pair

from featscope.extractors.extract import (PRECISIONS, _exact_fp32, _keep_freed_memory, _resolve_device,
                                          slow_low_precision)
from featscope.extractors.heads import Classifier, ClassifierNet
from featscope.extractors.types import Preprocess

log = logging.getLogger(__name__)

FILLS = ("zero", "mean", "blur")
MASKOUT_PRECISIONS = {**PRECISIONS, "mixed": torch.bfloat16}
_DTYPE_NAMES = {v: k for k, v in PRECISIONS.items()}
_EMPTY = 1 << 30  # an empty interval is (+_EMPTY, -_EMPTY): hulls and clips keep it empty


@dataclass
class MaskoutResult:
    """Probability of ``target`` for each mask position ``(tops_y[i], tops_x[j])`` in ``probs[i, j]``.

    ``full`` is the (H, W) map for drawing: ``probs`` placed at the mask centres and interpolated
    bilinearly between them (constant beyond the outermost centres). ``engine`` says which path ran.
    """

    probs: np.ndarray
    tops_y: np.ndarray
    tops_x: np.ndarray
    centres_y: np.ndarray
    centres_x: np.ndarray
    unmasked: float
    full: np.ndarray
    target: int
    size: int
    stride: int
    fill: str
    precision: str
    engine: str
    seconds: float


def maskout_map(classifier: Classifier | nn.Module, image: torch.Tensor, target: int | str, *,
                preprocess: Preprocess, size: int = 60, stride: int = 8, fill: str = "zero",
                mean_pixel: Sequence[float] | None = None, blur_sigma: float | None = None,
                precision: str = "fp32", reuse: bool | str = "auto", cover_border: bool = True,
                channels_last: bool | None = None, device: str | torch.device | None = None, batch_size: int = 32,
                approx_margin: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> MaskoutResult:
    """Slide a ``size`` x ``size`` mask over ``image`` and record the probability of ``target`` at each step.

    ``classifier``: a :class:`Classifier` (its own head or a probe; ``target`` may be a class name) or
    any module mapping a normalised batch to logits. ``image``: uint8 (3, H, W) at the network's input
    resolution (``preprocess.to_uint8``). ``mean_pixel``: RGB 0..255, needed by ``fill="mean"``.
    ``blur_sigma``: Gaussian sigma of ``fill="blur"`` in pixels (default ``size / 4``). ``reuse``:
    ``"auto"`` recomputes only the changed part of the first layers when that saves work, ``True``
    whenever the graph allows it, ``False`` never. ``precision``: ``"fp32"`` exact; ``"bf16"``/``"fp16"``
    autocast (conv-BN folded) with the head after the last spatial layer in fp32; ``"mixed"`` also runs the
    layers up to stride 8 in fp32 (conv-BN folded there too) and bf16 between (see "Precision" above;
    low precision is faster only on hardware with native bf16/fp16). ``channels_last``: ``None`` uses it with bf16/fp16 only,
    so that fp32 sums in the order of the plain network's NCHW pass. The network is not modified (a copy runs).
    ``approx_margin``: ``None`` (default) is exact. An int N makes reuse approximate, as Krypton's
    truncated projective fields: at every layer the recomputed region is cut to the mask's footprint plus N
    cells, and the mask's effect beyond it is dropped (those cells keep their unmasked values). Much less
    work deeper in the network; the error depends on the network: check it against the exact map
    (``benchmarks/bench_maskout.py`` prints it) before relying on it.
    """
    started = time.perf_counter()
    _check_args(image, size, stride, fill, mean_pixel, blur_sigma, precision, reuse, batch_size)
    if approx_margin is not None and (isinstance(approx_margin, bool) or not isinstance(approx_margin, int)
                                      or approx_margin < 0 or reuse is False):
        raise ValueError(f"approx_margin must be None (exact) or a number of cells >= 0 with reuse on, got "
                         f"{approx_margin!r} (reuse={reuse!r}); e.g. approx_margin=2")
    if isinstance(classifier, Classifier):
        net, t = classifier.net, classifier.class_index(target)
    else:
        net, t = classifier, _plain_index(target)
    dev = _resolve_device("auto" if device is None else device)
    h, w = image.shape[1:]
    ys, xs = _grid(h, size, stride, cover_border), _grid(w, size, stride, cover_border)
    dtype = MASKOUT_PRECISIONS[precision]
    use_cl = dtype != torch.float32 if channels_last is None else bool(channels_last)
    fmt = torch.channels_last if use_cl else torch.contiguous_format
    with _keep_freed_memory(), _exact_fp32(dev.type == "cuda"), torch.inference_mode():
        base = preprocess.normalize(image[None].to(dev))
        fill_img = _fill_image(base, preprocess, fill, mean_pixel, blur_sigma or size / 4)
        engine = _Engine.build(net, base, size, ys, xs, reuse, _Precision(dev.type, dtype, precision == "mixed"),
                               fmt, approx_margin)
        logits = engine.full(base)
        _check_target(t, logits)
        unmasked = float(torch.softmax(logits.float(), 1)[0, t])
        positions = [(y, x) for y in ys for x in xs]
        probs = []
        for lo in range(0, len(positions), batch_size):
            logits = engine.masked(base, fill_img, positions[lo:lo + batch_size], size)
            probs.append(torch.softmax(logits.float(), 1)[:, t].cpu())
            if progress is not None:
                progress(min(lo + batch_size, len(positions)), len(positions))
    probs_np = torch.cat(probs).double().numpy().reshape(len(ys), len(xs))
    cy, cx = ys + (size - 1) / 2, xs + (size - 1) / 2
    return MaskoutResult(probs=probs_np, tops_y=ys, tops_x=xs, centres_y=cy, centres_x=cx, unmasked=unmasked,
                         full=_pixel_map(probs_np, cy, cx, h, w), target=t, size=size, stride=stride, fill=fill,
                         precision=precision, engine=engine.description, seconds=time.perf_counter() - started)


# -- arguments ---------------------------------------------------------------------------------------

def _check_args(image: torch.Tensor, size: int, stride: int, fill: str, mean_pixel: Sequence[float] | None,
                blur_sigma: float | None, precision: str, reuse: bool | str, batch_size: int) -> None:
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        got = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a uint8 tensor (3, H, W), got {got}; "
                         f"use backbone.preprocess.to_uint8(pil_image)")
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"size (the mask's side in pixels) must be a positive int, got {size!r}; the study uses 60")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride <= 0:
        raise ValueError(f"stride must be a positive number of pixels, got {stride!r}; e.g. stride=8")
    h, w = image.shape[1:]
    if h < size or w < size:
        raise ValueError(f"the image ({h}x{w}) is smaller than the {size}x{size} mask; pass a smaller size, or "
                         f"the image at the network's input resolution (backbone.preprocess.to_uint8)")
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}; choose one of {', '.join(FILLS)}")
    if fill == "mean" and (mean_pixel is None or len(mean_pixel) != 3):
        raise ValueError("fill='mean' needs mean_pixel=(R, G, B), the data set's mean pixel in 0..255 "
                         "(for the normalisation mean colour use fill='zero')")
    if blur_sigma is not None and not blur_sigma > 0:
        raise ValueError(f"blur_sigma must be positive, got {blur_sigma!r}")
    if precision not in MASKOUT_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(MASKOUT_PRECISIONS)}, got {precision!r}")
    if reuse not in (True, False, "auto"):
        raise ValueError(f"reuse must be True, False or 'auto', got {reuse!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def _plain_index(target: int | str) -> int:
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return int(target)
    if isinstance(target, str) and target.isdigit():
        return int(target)
    raise ValueError(f"target {target!r} must be a class index for a plain module; "
                     f"wrap the network with classifier_for(backbone) to use class names")


def _check_target(t: int, logits: torch.Tensor) -> None:
    if logits.ndim != 2:
        raise ValueError(f"the classifier must return logits (B, C), got shape {tuple(logits.shape)}")
    if not 0 <= t < logits.shape[1]:
        raise ValueError(f"unknown class {t}: the network has {logits.shape[1]} outputs "
                         f"(pass an index 0..{logits.shape[1] - 1})")


def _grid(n: int, size: int, stride: int, cover_border: bool) -> np.ndarray:
    tops = list(range(0, n - size + 1, stride))
    if cover_border and tops[-1] != n - size:
        tops.append(n - size)
    return np.array(tops, dtype=np.int64)


def _fill_image(base: torch.Tensor, pre: Preprocess, fill: str, mean_pixel: Sequence[float] | None,
                sigma: float) -> torch.Tensor:
    """What a masked window shows, in normalised input space: (1, 3, 1, 1) or (1, 3, H, W)."""
    if fill == "zero":
        return torch.zeros(1, 3, 1, 1, device=base.device)
    if fill == "mean":
        return pre.normalize(torch.tensor(mean_pixel, dtype=torch.float32, device=base.device).view(1, 3, 1, 1))
    from torchvision.transforms.v2.functional import gaussian_blur

    k = min(2 * int(np.ceil(3 * sigma)) + 1, 2 * (min(base.shape[2:]) // 2) - 1)  # reflect padding < side
    return gaussian_blur(base, [k, k], [sigma, sigma])


def _pixel_map(probs: np.ndarray, cy: np.ndarray, cx: np.ndarray, h: int, w: int) -> np.ndarray:
    rows = np.stack([np.interp(np.arange(w), cx, r) for r in probs])  # (ny, W)
    return np.stack([np.interp(np.arange(h), cy, c) for c in rows.T], axis=1).astype(np.float32)


# -- the network ---------------------------------------------------------------------------------

class _Flat(nn.Module):
    """A ClassifierNet as one traceable module: body to the tap, average pool, head."""

    def __init__(self, net: ClassifierNet) -> None:
        super().__init__()
        self.body, self.tap, self.head = net.body, net.tap, net.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)[self.tap].mean(dim=(2, 3)))


def _prepare(net: nn.Module, base: torch.Tensor, fold: bool, fmt: torch.memory_format) -> tuple[nn.Module, bool]:
    """A traced (conv-BN folded if ``fold``) copy on the device in memory format ``fmt``, checked against
    the original; or the plain copy when tracing fails."""
    module = copy.deepcopy(net).eval().to(base.device)
    plain = module.to(memory_format=fmt)
    want = plain(base.contiguous(memory_format=fmt)).float()
    try:
        from torch.fx.experimental.optimization import fuse

        src = copy.deepcopy(module).eval()  # again: a deep copy of torchvision's feature extractor is in train mode
        traced = fx.symbolic_trace(_Flat(src) if isinstance(module, ClassifierNet) else src)
        traced = (fuse(traced, inplace=True, no_trace=True) if fold else traced).eval().to(memory_format=fmt)
        got = traced(base.contiguous(memory_format=fmt))
        if isinstance(got, torch.Tensor) and got.shape == want.shape and torch.allclose(
                got.float(), want, rtol=1e-4, atol=1e-4 * float(want.abs().max()) + 1e-6):
            return traced, True
        log.info("traced copy disagrees with the network; running it untraced")
    except Exception as e:  # noqa: BLE001 - tracing and folding are optimisations
        log.info("network not traceable (%s); running it untraced", e)
    return plain, False


# Mixed precision runs the layers at strides up to this one in fp32 (see "Precision" in the module
# docstring: 8 kept a trained ResNet-50 within 0.0107 of fp32 over 36 scenes, 4 reached 0.0207).
_MIXED_FP32_STRIDE = 8


@dataclass(frozen=True)
class _Precision:
    """How the network runs: ``dtype`` under autocast (fp32: no autocast), or ``mixed``: fp32 at the
    high-resolution front and at the head, ``dtype`` (bf16) autocast between."""

    device_type: str
    dtype: torch.dtype
    mixed: bool = False

    def autocast(self):
        return nullcontext() if self.dtype == torch.float32 else torch.autocast(self.device_type, dtype=self.dtype)


class _Staged(nn.Module):
    """Pieces of a network run one after the other, each under its own precision.

    ``casts[i]``: ``None`` runs piece ``i`` in fp32 on an fp32 input (a bf16 tensor from the piece before is
    widened), else a :class:`_Precision` whose autocast it runs under. ``exact=True`` runs every piece in fp32
    (the self-checks)."""

    def __init__(self, pieces: list[nn.Module], casts: list[_Precision | None]) -> None:
        super().__init__()
        self.pieces, self.casts = nn.ModuleList(pieces), casts

    def forward(self, x: torch.Tensor, exact: bool = False) -> torch.Tensor:
        for piece, cast in zip(self.pieces, self.casts):
            if cast is None or exact:
                x = piece(x.float() if x.is_floating_point() else x)
            else:
                with cast.autocast():
                    x = piece(x)
        return x


@dataclass
class _Segment:
    """The nodes after one cut up to and including the next, run on windows of the first cut's tensor.

    ``crop``: the window's side on the segment's input tensor (rows, cols); ``starts``: per axis, mask top ->
    the window's first row/column there; ``changed``: per axis, mask top -> the rows/columns of the
    segment's output that the mask changes (``None`` for the last segment, which runs on whole tensors);
    ``step``: input-to-output stride; ``cached``: the unmasked input tensor (``None`` for the first
    segment, whose input is the masked image). ``module`` is a :class:`_Staged` once the plan is built.
    """

    module: _Staged | None
    crop: tuple[int, int]
    starts: tuple[dict[int, int], dict[int, int]]
    changed: tuple[dict[int, tuple[int, int]], dict[int, tuple[int, int]]] | None
    step: int
    cached: torch.Tensor | None = None


class _Engine:
    """Runs batches of masked images, through the windowed segments when they are set up, else plainly.

    ``module`` (a :class:`_Staged`) is the whole network in the run's precision; ``segments`` the windowed
    plan, whose modules are :class:`_Staged` too."""

    def __init__(self, module: _Staged, segments: list[_Segment] | None, description: str,
                 fmt: torch.memory_format, cuts: Sequence[str] = ()) -> None:
        self.module, self.segments, self.fmt = module, segments, fmt
        self.cuts = list(cuts)  # the windowed segments' last nodes
        self.description = description + (", channels_last" if fmt == torch.channels_last else "")

    @classmethod
    def build(cls, net: nn.Module, base: torch.Tensor, size: int, ys: np.ndarray, xs: np.ndarray,
              reuse: bool | str, precision: _Precision, fmt: torch.memory_format, margin: int | None = None
              ) -> "_Engine":
        lowered = precision.dtype != torch.float32
        module, traced = _prepare(net, base, lowered, fmt)
        if not traced:
            if precision.mixed:  # the zones are found on the traced graph; without it, exactness wins
                log.warning("mask-out: the network is not traceable, so mixed precision runs it in fp32")
            cast = None if precision.mixed or not lowered else precision
            low = _DTYPE_NAMES[precision.dtype]
            how = ("batched (network not traceable: mixed precision ran in fp32)" if precision.mixed else
                   f"batched (network not traceable, so its head ran in {low} too){_slow_note(base.device, precision.dtype)}"
                   if lowered else "batched (network not traceable)" if reuse else "batched")
            return cls(_Staged([module], [cast]), None, how, fmt)
        from torch.fx.passes.shape_prop import ShapeProp

        ShapeProp(module).propagate(base.contiguous(memory_format=fmt))
        nodes = list(module.graph.nodes)
        *zones, notes = _zones(nodes, base, precision.mixed) if lowered else (0, len(nodes) - 1, [])
        zone_cuts = [c for c in zones if 0 < c < len(nodes) - 1]
        low = _DTYPE_NAMES[precision.dtype]
        how = "" if not lowered else (
            (f"; mixed: fp32 to node {nodes[zones[0]].name!r}, {low} from there" if zones[0] > 0
             else f"; {'mixed: ' if precision.mixed else ''}{low}")
            + (f", fp32 head after node {nodes[zones[1]].name!r}" if zones[1] < len(nodes) - 1 else ""))
        for note in notes:
            log.warning("mask-out in %s: %s", "mixed precision" if precision.mixed else low, note)
        how += "".join(f" ({note})" for note in notes) + _slow_note(base.device, precision.dtype)

        def staged(lo: int, hi: int, cuts: list[int], pieces: list[nn.Module]) -> _Staged:
            """Pieces of the nodes ``lo + 1 .. hi`` (split at ``cuts``), each cast by its zone."""
            bounds = [lo, *cuts, hi]
            casts = [precision if lowered and zones[0] <= a and b <= zones[1] else None
                     for a, b in zip(bounds, bounds[1:])]
            return _Staged(pieces, casts)

        whole = staged(0, len(nodes) - 1, zone_cuts, _split(module, nodes, zone_cuts))
        if not reuse:
            return cls(whole, None, "batched" + how, fmt)
        plan = _plan_reuse(module, nodes, size, ys, xs, force=reuse is True or margin is not None,
                           margin=margin, musts=zone_cuts)
        if plan is None:
            return cls(whole, None, "batched (no first layers worth reusing)" + how, fmt)
        chain, segments = plan
        cuts, end = [nodes[c].name for c in chain], chain[-1]
        rest = [c for c in zone_cuts if c > end]  # zone switches inside the last (whole-tensor) segment
        pieces = _split(module, nodes, [*chain, *rest])
        for seg, lo, hi, piece in zip(segments[:-1], [0, *chain], chain, pieces):
            seg.module = staged(lo, hi, [], [piece])
        segments[-1].module = staged(end, len(nodes) - 1, rest, pieces[len(chain):])
        windows = ", ".join(f"{s.crop[0]}x{s.crop[1]}" for s in segments[:-1])
        kind = "windows only" if margin is None else f"windows, approximate: changes beyond {margin} cells of the mask dropped"
        engine = cls(whole, segments, f"reuse: first layers recomputed on {kind}, in {len(cuts)} segments "
                                      f"to node {cuts[-1]!r} (windows {windows}){how}", fmt, cuts)
        inputs = _verify(segments, base, ys, xs, fmt)
        if inputs is not None:  # fp32 caches, then two masked positions end to end against the whole network
            for seg, x in zip(segments[1:], inputs):
                seg.cached = x
            corner, middle = (int(ys[0]), int(xs[-1])), (int(ys[len(ys) // 2]), int(xs[len(xs) // 2]))
            if margin is None and not engine.agrees(base, size, [corner, middle]):  # approximate: differs by design
                inputs = None
        if inputs is None:
            log.warning("reuse self-check failed (cuts at %s); running the plain batched path", ", ".join(cuts))
            return cls(whole, None, "batched (reuse self-check failed)" + how, fmt)
        if lowered:  # the fp32 caches of the self-check serve fp32 segments only
            for seg, x in zip(segments[1:], _chain_inputs(segments, base, fmt)):
                seg.cached = x
        return engine

    def agrees(self, base: torch.Tensor, size: int, positions: list[tuple[int, int]]) -> bool:
        """fp32 self-check: the windowed segments give the whole network's logits for masked images."""
        fill = torch.zeros(1, 3, 1, 1, dtype=base.dtype, device=base.device)
        got = self.masked(base, fill, positions, size, exact=True).float()
        want = self.full(_masked_batch(base, fill, positions, size, [(0, 0)] * len(positions), base.shape[2:],
                                       self.fmt), exact=True).float()
        return got.shape == want.shape and float((got - want).abs().max()) <= 1e-4 * float(want.abs().max()) + 1e-5

    def full(self, x: torch.Tensor, exact: bool = False) -> torch.Tensor:
        return self.module(x.clone(memory_format=self.fmt), exact)  # a copy: the network may write into its input

    def masked(self, base: torch.Tensor, fill: torch.Tensor, positions: list[tuple[int, int]], size: int,
               exact: bool = False) -> torch.Tensor:
        if self.segments is None:
            return self.module(_masked_batch(base, fill, positions, size, [(0, 0)] * len(positions), base.shape[2:],
                                             self.fmt), exact)
        z, before, prev = None, [], None
        for seg in self.segments:
            origins = [(seg.starts[0][y], seg.starts[1][x]) for y, x in positions]
            if seg.cached is None:
                win = _masked_batch(base, fill, positions, size, origins, seg.crop, self.fmt)
            else:
                win = _windows(seg.cached, origins, seg.crop, self.fmt)
                _paste(win, origins, z, before, prev, positions)
            z, before, prev = seg.module(win, exact), origins, seg
        return z


def _slow_note(device: torch.device, dtype: torch.dtype) -> str:
    """The engine description's note on why this precision is slow here (logged once per process), or ""."""
    slow = slow_low_precision(device, dtype, "mask-out")
    return f" ({slow})" if slow else ""



def _zones(nodes: list[fx.Node], base: torch.Tensor, mixed: bool) -> tuple[int, int, list[str]]:
    """(front, tail, notes) for low precision: fp32 through node ``front``, low precision to node ``tail``,
    fp32 after it; ``notes`` say where a zone could not be placed.

    Only the trunk is read: the clean cuts (a node that is the only value later nodes read), so parameters
    (``get_attr``) and side branches (a squeeze-excitation's pooled vector) do not count. ``tail``: the last
    spatial (4-D) cut before the first flat one, stepping back over a global pool so that its input, not the
    pooled features, is what bf16 rounds; the graph's end when nothing flat follows. ``front`` (``mixed``
    only, else the input): the last cut before ``tail`` still at stride <= ``_MIXED_FP32_STRIDE``."""
    index = {n: i for i, n in enumerate(nodes)}
    h, w = base.shape[2:]
    cuts = [i for i, n in enumerate(nodes[:-1]) if i > 0 and n.op not in ("get_attr", "placeholder")
            and _shape(n) is not None and _only_live(nodes, index, i)]
    flat = next((i for i in cuts if len(_shape(nodes[i])) != 4), None)
    spatial = [i for i in cuts if len(_shape(nodes[i])) == 4 and (flat is None or i < flat)]
    tail, notes = len(nodes) - 1, []
    if flat is not None and spatial:
        tail = spatial[-1]
        if len(spatial) > 1 and _global_pool(nodes[tail]):
            tail = spatial[-2]
    else:
        notes.append(("no flat tensor after the last spatial layer" if flat is None else
                      "no spatial cut before the first flat tensor") + ", so the head ran in low precision too")
    front = 0
    if mixed:
        for i in spatial:
            shape = _shape(nodes[i])
            if i >= tail or shape[2] * _MIXED_FP32_STRIDE < h or shape[3] * _MIXED_FP32_STRIDE < w:
                break
            front = i
        if front == 0:
            notes.append(f"no clean cut at stride <= {_MIXED_FP32_STRIDE}, so the first layers ran in low precision too")
    return front, tail, notes


def _global_pool(node: fx.Node) -> bool:
    """An adaptive pool to 1x1 (a classifier's global average or max pool)."""
    if node.op == "call_module":
        m = node.graph.owning_module.get_submodule(node.target)
        return isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and _pair(m.output_size) == (1, 1)
    if node.op == "call_function" and node.target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
        return _pair(node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")) == (1, 1)
    return False


def _windows(src: torch.Tensor, origins: list[tuple[int, int]], crop: tuple[int, int], fmt: torch.memory_format
             ) -> torch.Tensor:
    """One window of ``src`` (1, C, H, W) per origin, side ``crop``."""
    wy, wx = crop
    out = torch.empty((len(origins), src.shape[1], wy, wx), dtype=src.dtype, device=src.device, memory_format=fmt)
    if (wy, wx) == tuple(src.shape[2:]):
        out.copy_(src.expand_as(out))
    else:
        for b, (oy, ox) in enumerate(origins):
            out[b] = src[0, :, oy:oy + wy, ox:ox + wx]
    return out


def _paste(win: torch.Tensor, origins: list[tuple[int, int]], z: torch.Tensor, z_origins: list[tuple[int, int]],
           prev: _Segment, positions: list[tuple[int, int]]) -> None:
    """Write into each window the part of the previous segment's output that its mask changed.

    ``z[b]`` is that output for the window at ``z_origins[b]`` of the previous segment's input, so its first
    row on the cut tensor is ``z_origins[b][0] // prev.step`` (window starts are multiples of the step)."""
    wy, wx = win.shape[2:]
    for b, ((y, x), (oy, ox), (py, px)) in enumerate(zip(positions, origins, z_origins)):
        (a0, a1), (b0, b1) = prev.changed[0][y], prev.changed[1][x]
        a0, a1, b0, b1 = max(a0, oy), min(a1, oy + wy), max(b0, ox), min(b1, ox + wx)
        if a0 < a1 and b0 < b1:
            zy, zx = py // prev.step, px // prev.step
            win[b, :, a0 - oy:a1 - oy, b0 - ox:b1 - ox] = z[b, :, a0 - zy:a1 - zy, b0 - zx:b1 - zx]


def _chain_inputs(segments: list[_Segment], base: torch.Tensor, fmt: torch.memory_format, exact: bool = False
                  ) -> list[torch.Tensor]:
    """The unmasked image through the segments: the input tensor of every segment after the first."""
    out, x = [], base
    for seg in segments[:-1]:
        x = seg.module(x.clone(memory_format=fmt), exact)  # a copy: a segment may write into its input (ReLU(inplace))
        out.append(x)
    return out


def _masked_batch(base: torch.Tensor, fill: torch.Tensor, positions: list[tuple[int, int]], size: int,
                  origins: list[tuple[int, int]], window: tuple[int, int], fmt: torch.memory_format) -> torch.Tensor:
    """Windows of ``base`` (top-left ``origins``, side ``window``) with each position's mask filled in."""
    wy, wx = window
    out = torch.empty((len(positions), 3, wy, wx), dtype=base.dtype, device=base.device, memory_format=fmt)
    for b, ((y, x), (oy, ox)) in enumerate(zip(positions, origins)):
        out[b] = base[0, :, oy:oy + wy, ox:ox + wx]
        y0, y1, x0, x1 = max(y, oy), min(y + size, oy + wy), max(x, ox), min(x + size, ox + wx)
        if y0 < y1 and x0 < x1:
            src = fill[0] if fill.shape[2] == 1 else fill[0, :, y0:y1, x0:x1]
            out[b, :, y0 - oy:y1 - oy, x0 - ox:x1 - ox] = src
    return out


# -- reuse planning: interval propagation over the traced graph -------------------------------------------

_POINT_MODULES = (nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.LeakyReLU, nn.Identity,
                  nn.Dropout)
_POINT_FUNCTIONS = {operator.add, operator.iadd, torch.add, torch.relu, F.relu, F.relu6, F.silu}
_POINT_METHODS = {"relu", "relu_", "add", "add_", "contiguous"}


def _window_op(gm: fx.GraphModule, node: fx.Node) -> tuple | None | str:
    """(kernel, stride, padding, dilation) pairs for a windowed op, "point" for pointwise, None if unknown."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, nn.Conv2d) and m.padding_mode == "zeros" and not isinstance(m.padding, str):
            return m.kernel_size, m.stride, m.padding, m.dilation
        if isinstance(m, nn.MaxPool2d) and not m.ceil_mode:
            return _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), _pair(m.dilation)
        if isinstance(m, nn.AvgPool2d) and not m.ceil_mode:
            return _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), (1, 1)
        return "point" if isinstance(m, _POINT_MODULES) else None
    if node.target in (operator.iadd, "add_") and (not isinstance(node.args[0], fx.Node) or len(node.args[0].users) > 1):
        return None  # x.add_(y) changes x for its other readers too, which the graph's edges do not show
    if node.op == "call_function" and node.target in _POINT_FUNCTIONS:
        return "point"
    if node.op == "call_method" and node.target in _POINT_METHODS:
        return "point"
    return None


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _macs(gm: fx.GraphModule, node: fx.Node) -> float:
    shape = _shape(node)
    if shape is None:
        return 0.0
    per_item = float(np.prod(shape[1:]))
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, nn.Conv2d):
            return per_item * m.in_channels / m.groups * float(np.prod(m.kernel_size))
        if isinstance(m, nn.Linear):
            return float(m.in_features * m.out_features)
    return per_item


def _hull(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return np.minimum(a[0], b[0]), np.maximum(a[1], b[1])


# Copying one activation element (window gathers, pastes) costs about as much time as this many
# multiply-adds of a convolution on a CPU; it keeps the planner from cutting where a copy costs more than
# the work it saves.
_COPY_MACS = 16.0


def _plan_reuse(gm: fx.GraphModule, nodes: list[fx.Node], size: int, ys: np.ndarray, xs: np.ndarray,
                force: bool, margin: int | None = None, musts: Sequence[int] = ()
                ) -> tuple[list[int], list[_Segment]] | None:
    """Cut the graph's first layers into segments, each run on windows only, where the estimated
    multiply-adds per position are lowest (a shortest path over the clean cut points); the rest of the
    graph is the last segment. ``None`` when no cut saves at least 3% (any saving with ``force``).
    ``margin``: approximate mode, each windowed op's changed region cut to the mask's footprint on its
    grid plus ``margin`` cells. ``nodes``: the graph's nodes, shapes propagated. ``musts``: node indices every
    chain of windowed segments that reaches past them cuts at (where the precision switches). Returns the
    cut node indices and the segments (their modules still to be set: the pieces of the graph between the cuts)."""
    index = {n: i for i, n in enumerate(nodes)}
    tops = (ys, xs)
    # Per node and axis: rows/cols the mask changes (one interval per mask top), and cumulative stride.
    changed: dict[fx.Node, list[tuple[np.ndarray, np.ndarray]]] = {}
    strides: dict[fx.Node, int] = {}
    cuts: list[int] = []
    for i, node in enumerate(nodes[:-1]):
        op = "input" if node.op == "placeholder" and i == 0 else _window_op(gm, node)
        shape, ins = _shape(node), [a for a in node.all_input_nodes]
        if op is None or shape is None or len(shape) != 4 or any(_shape(a) is None for a in ins):
            break
        if op == "input":
            changed[node] = [(t, t + size) for t in tops]
            strides[node] = 1
        elif op == "point":
            if any(_shape(a) != shape or a not in changed for a in ins) or len({strides[a] for a in ins}) != 1:
                break
            iv = [(np.full(len(t), _EMPTY), np.full(len(t), -_EMPTY)) for t in tops]
            for a in ins:
                iv = [_hull(iv[ax], changed[a][ax]) for ax in range(2)]
            changed[node], strides[node] = iv, strides[ins[0]]
        else:
            (k, s, p, d), src = op, ins[0]
            if len(ins) != 1 or src not in changed or s[0] != s[1]:
                break
            changed[node] = [(np.clip(-((-(changed[src][ax][0] + p[ax] - (k[ax] - 1) * d[ax])) // s[ax]), 0, shape[2 + ax]),
                              np.clip((changed[src][ax][1] - 1 + p[ax]) // s[ax] + 1, 0, shape[2 + ax]))
                             for ax in range(2)]
            strides[node] = strides[src] * s[0]
            if margin is not None:
                st = strides[node]
                changed[node] = [(np.maximum(changed[node][ax][0], tops[ax] // st - margin),
                                  np.minimum(changed[node][ax][1], -(-(tops[ax] + size) // st) + margin))
                                 for ax in range(2)]
        if i > 0 and _only_live(nodes, index, i):
            cuts.append(i)
    macs = np.cumsum([0.0] + [_macs(gm, n) for n in nodes])  # macs[j] = sum over nodes[:j]
    elements = {i: float(np.prod(_shape(nodes[i])[1:])) for i in [0] + cuts}
    # Shortest path over cut points: best[b] = (cost per position of reaching cut b by windows, previous cut).
    best: dict[int, tuple[float, int]] = {0: (0.0, -1)}
    windows: dict[tuple[int, int], _Segment] = {}
    for b in cuts:
        need = _need(gm, nodes, b, changed)
        for a in [0] + [c for c in cuts if c < b]:
            if a not in best or any(a < m < b for m in musts):
                continue
            seg = _window(nodes[a], need[nodes[a]], changed[nodes[b]], strides[nodes[b]] // strides[nodes[a]], tops)
            if seg is None:
                continue
            hw = _shape(nodes[a])[2:]
            frac = seg.crop[0] * seg.crop[1] / (hw[0] * hw[1])
            cost = best[a][0] + (macs[b + 1] - macs[a + 1]) * frac + _COPY_MACS * elements[a] * frac
            if cost < best.get(b, (np.inf, -1))[0]:
                best[b], windows[a, b] = (cost, a), seg
    total = macs[-1]
    end, end_cost = None, total * (10.0 if force else 0.97)
    for b in cuts:
        if b in best and best[b][0] + macs[-1] - macs[b + 1] + _COPY_MACS * elements[b] < end_cost:
            end, end_cost = b, best[b][0] + macs[-1] - macs[b + 1] + _COPY_MACS * elements[b]
    if end is None:
        return None
    chain = [end]
    while best[chain[-1]][1] > 0:
        chain.append(best[chain[-1]][1])
    chain.reverse()
    log.debug("mask-out reuse: cuts %s, estimated %.3g of %.3g multiply-adds per position",
              [nodes[c].name for c in chain], end_cost, total)
    segments = [windows[a, b] for a, b in zip([0] + chain, chain)]
    last_hw = _shape(nodes[end])[2:]
    segments.append(_Segment(module=None, crop=(last_hw[0], last_hw[1]),
                             starts=tuple({int(t): 0 for t in tops[ax]} for ax in range(2)), changed=None, step=1))
    return chain, segments


def _only_live(nodes: list[fx.Node], index: dict[fx.Node, int], i: int) -> bool:
    """True when node ``i`` is the only value computed so far that later nodes read (a clean cut)."""
    return all(max((index[u] for u in n.users), default=0) <= i for n in nodes[:i])


def _need(gm: fx.GraphModule, nodes: list[fx.Node], b: int, changed: dict) -> dict:
    """Back-propagate the changed rectangles of node ``b`` to every earlier node: the rows/cols of each
    that those outputs depend on (unclipped; at a clean cut this is complete once the sweep passes it)."""
    need = {nodes[b]: changed[nodes[b]]}
    for node in reversed(nodes[1:b + 1]):
        if node not in need:
            continue
        op = _window_op(gm, node)
        for a in node.all_input_nodes:
            if op == "point":
                iv = need[node]
            else:
                k, st, p, d = op
                iv = [(need[node][ax][0] * st[ax] - p[ax], (need[node][ax][1] - 1) * st[ax] - p[ax] + (k[ax] - 1) * d[ax] + 1)
                      for ax in range(2)]
            need[a] = [_hull(need[a][ax], iv[ax]) for ax in range(2)] if a in need else iv
    return need


def _window(src: fx.Node, need: list, changed: list, step: int, tops: tuple[np.ndarray, np.ndarray]
            ) -> _Segment | None:
    """Window geometry on ``src``'s tensor for a segment whose output changes at ``changed``: per mask top
    the window holds every row/col the changed outputs read; its start is a multiple of ``step``, so
    the window's output grid is the full tensor's, and it meets the border wherever the reads reach
    past it, so the padding there is real. ``None`` when the window is the whole tensor."""
    hw = _shape(src)[2:]
    crop, starts, spans = [], [], []
    for ax in range(2):
        n = hw[ax]
        a0, a1 = changed[ax]
        lo, hi = np.clip(need[ax][0], 0, n), np.clip(need[ax][1], 0, n)
        lo = np.where(a0 < a1, lo, 0)
        hi = np.where(a0 < a1, hi, 0)
        flo = (lo // step) * step
        side = int(max(1, (hi - flo).max()))
        side = n - ((n - side) // step) * step  # so that n - side is a multiple of step
        start = np.minimum(flo, n - side)
        crop.append(side)
        starts.append(dict(zip(tops[ax].tolist(), start.tolist())))
        spans.append({t: (int(u), int(v)) if u < v else (0, 0) for t, u, v in zip(tops[ax].tolist(), a0, a1)})
    if crop[0] >= hw[0] and crop[1] >= hw[1]:
        return None
    return _Segment(module=None, crop=(crop[0], crop[1]), starts=(starts[0], starts[1]),
                    changed=(spans[0], spans[1]), step=step)


def _split(gm: fx.GraphModule, nodes: list[fx.Node], cuts: list[int]) -> list[fx.GraphModule]:
    """The graph in ``len(cuts) + 1`` pieces: up to and including each cut node, each fed with the last."""
    pieces, bounds = [], [-1, *cuts, len(nodes) - 1]
    for lo, hi in zip(bounds, bounds[1:]):
        graph, env = fx.Graph(), {}
        if lo >= 0:
            env[nodes[lo]] = graph.placeholder("cut")
        for n in nodes[lo + 1:hi + 1]:
            if n.op == "output":
                graph.output(fx.map_arg(n.args[0], lambda a: env[a]))
            else:
                env[n] = graph.node_copy(n, lambda a: env[a])
        if nodes[hi].op != "output":
            graph.output(env[nodes[hi]])
        pieces.append(fx.GraphModule(gm, graph).eval())
    return pieces


def _verify(segments: list[_Segment], base: torch.Tensor, ys: np.ndarray, xs: np.ndarray,
            fmt: torch.memory_format) -> list[torch.Tensor] | None:
    """Self-check in fp32: for every windowed segment, the unmasked windows at the first, middle and last
    positions reproduce the changed rectangles of the segment's output on the whole image (guards the
    geometry against ops that break its assumptions). Returns the segments' unmasked inputs, or ``None``."""
    inputs = _chain_inputs(segments, base, fmt, exact=True)
    full = [base.contiguous(memory_format=fmt), *inputs]
    for j, seg in enumerate(segments[:-1]):
        want = full[j + 1].float()
        tol = 1e-4 * float(want.abs().max()) + 1e-6
        for y, x in {(ys[0], xs[0]), (ys[len(ys) // 2], xs[len(xs) // 2]), (ys[-1], xs[-1])}:
            y, x = int(y), int(x)
            oy, ox = seg.starts[0][y], seg.starts[1][x]
            z = seg.module(_windows(full[j], [(oy, ox)], seg.crop, fmt), True).float()
            (a0, a1), (b0, b1) = seg.changed[0][y], seg.changed[1][x]
            sy, sx = oy // seg.step, ox // seg.step
            if a1 - sy > z.shape[2] or b1 - sx > z.shape[3] or a0 < sy or b0 < sx:
                return None
            if a0 < a1 and b0 < b1 and (z[:, :, a0 - sy:a1 - sy, b0 - sx:b1 - sx] - want[:, :, a0:a1, b0:b1]).abs().max() > tol:
                return None
    return inputs
