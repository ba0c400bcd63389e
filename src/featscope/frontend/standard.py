"""The analyses each page asks for with its default controls: one definition, so the Compare form queues
exactly the requests the pages make later and every page opens on a cache hit."""

from __future__ import annotations

from featscope.frontend.services import Need

TSNE_PERPLEXITY = 30.0


def perplexity_for(n: int) -> float:
    """t-SNE's perplexity for ``n`` points: the usual 30, lowered so it stays below N/3 (openTSNE's bound)."""
    return float(min(TSNE_PERPLEXITY, max(2.0, (n - 1) / 3.0 - 1.0)))


def projection_params(n: int, method: str = "tsne") -> dict:
    return {"method": method, "perplexity": perplexity_for(n)} if method == "tsne" else {"method": method}


def pairs_needs(a: int, b: int, definition: str = "ranks") -> list[Need]:
    return [Need("closest", "closest", [a, b]),
            Need("contrast", "contrast", [a, b], {"definition": definition})]


def comembership_need(a: int, b: int, params: dict | None = None) -> Need:
    return Need("comembership", "comembership", [a, b], dict(params or {}))


def projection_need(a: int, b: int, n: int, method: str = "tsne") -> Need:
    return Need("projection", "projection", [a, b], projection_params(n, method))


def agreement_need(a: int, b: int) -> Need:
    return Need("agreement", "agreement", [a, b])


def similarity_need(a: int, b: int) -> Need:
    return Need("similarity", "similarity", [a, b])


def cka_need(backbone_a: str, backbone_b: str, dataset: str, pooling: str) -> Need:
    return Need("cka", "cka-matrix", [backbone_a, backbone_b, dataset], {"pooling": pooling, "debiased": False})


def probe_need(set_id: int) -> Need:
    return Need(f"probe-{set_id}", "probe", [set_id])


def compare_needs(a: int, b: int, n: int, backbone_a: str, backbone_b: str, dataset: str, pooling: str,
                  labelled: bool) -> list[Need]:
    """Everything the pages show for the pair (A, B): the standard analyses of a Compare."""
    needs = [*pairs_needs(a, b), comembership_need(a, b), projection_need(a, b, n), agreement_need(a, b),
             similarity_need(a, b), cka_need(backbone_a, backbone_b, dataset, pooling)]
    if labelled:
        needs += [probe_need(a), probe_need(b)]
    return needs
