"""The only module that talks to SDV (and sdmetrics): build, fit, seed, sample, evaluate.

SDV is an optional extra. :func:`require_sdv` turns a missing install into
:class:`~govern.errors.Unsupported` (HTTP 501) with the command that fixes it; nothing else in
govern imports SDV, so the gateway runs without it.

Randomness. SDV samples deterministically: after ``fit`` the model's generator is set to a
fixed seed on the first ``sample`` and advanced from there (``reset_sampling`` goes back), so
two gateway workers that load the same model would hand out *identical* "random" data. SDV has
no public way to seed a sample (sdv-dev/SDV#586), so :func:`sample` seeds every source of
randomness itself before each request — the model (``_set_random_state``, which CTGAN/TVAE
also use for torch) and each RDT transformer's ``reverse_transform`` state — from one request
seed. Same seed, same rows; unseeded requests get a fresh seed from ``secrets``.

Copulas and RDT apply those states by swapping NumPy's *global* generator in and out, which
is not thread-safe: two samples interleaving in one process would mix their streams. Every
SDV call therefore runs under :data:`SDV_LOCK` (process-wide, because the global generator
is). Fitting runs in a separate process (``jobs``), so a long fit never holds it.
"""

from __future__ import annotations

import math
import threading
import warnings
from typing import Any

import numpy as np
import pandas as pd

from govern.errors import SyntheticError, Unsupported
from govern.privacy.synthetic.mst import ColumnDomain, MstSynthesizer
from govern.privacy.synthetic.spec import SynthesizerSpec

__all__ = [
    "SDV_LOCK",
    "dcr",
    "dumps",
    "fit",
    "loads",
    "new_synthesizer",
    "quality",
    "require_sdv",
    "sample",
    "versions",
]

INSTALL_HINT = ("synthetic data needs the optional 'synthetic' extra (SDV), which is not installed "
                "on this gateway: pip install 'govern[synthetic]' (see docs/synthetic.md)")

# NumPy's global generator is process-wide; so is the lock that keeps SDV's use of it orderly.
SDV_LOCK = threading.RLock()

_CLASSES = {
    "gaussian_copula": "GaussianCopulaSynthesizer",
    "ctgan": "CTGANSynthesizer",
    "copulagan": "CopulaGANSynthesizer",
    "tvae": "TVAESynthesizer",
}


def require_sdv() -> None:
    """Raise Unsupported (501) unless SDV 2.x and sdmetrics can be imported."""
    try:
        import sdmetrics  # noqa: F401
        import sdv
    except ImportError:
        raise Unsupported(INSTALL_HINT) from None
    if int(str(getattr(sdv, "__version__", "0")).split(".")[0]) < 2:
        raise Unsupported(f"synthetic data needs SDV 2.x; this gateway has SDV {sdv.__version__}")


def versions() -> dict[str, str]:
    import copulas
    import rdt
    import sdmetrics
    import sdv

    return {"sdv": sdv.__version__, "rdt": rdt.__version__, "copulas": copulas.__version__,
            "sdmetrics": sdmetrics.__version__}


def new_synthesizer(spec: SynthesizerSpec, metadata: dict, domains: list[ColumnDomain] | None = None) -> Any:
    """An unfitted synthesizer for ``metadata`` (a V2 metadata dict) and ``spec``: SDV's, or
    govern's DP synthesizer (``mst``, which also needs each column's ``domains``)."""
    if spec.type == "mst":
        if domains is None:
            raise SyntheticError("the DP synthesizer needs the columns' domains")
        kwargs = spec.kwargs
        return MstSynthesizer(kwargs["epsilon"], kwargs.get("delta", 0.0), kwargs.get("bins", 16), domains)
    import sdv.single_table
    from sdv.metadata import Metadata

    cls = getattr(sdv.single_table, _CLASSES[spec.type])
    kwargs = spec.kwargs
    learned = next(iter(metadata["tables"].values()))["columns"]
    if "numerical_distributions" in kwargs:  # only learned columns have distributions
        kwargs["numerical_distributions"] = {c: d for c, d in kwargs["numerical_distributions"].items()
                                             if c in learned}
    if spec.type in ("ctgan", "copulagan", "tvae"):
        kwargs["enable_gpu"] = False  # the CPU build of torch is installed; never look for CUDA
        kwargs["verbose"] = False
    return cls(Metadata.load_from_dict(metadata), **kwargs)


def fit(synthesizer: Any, table_name: str, frame: pd.DataFrame, seed: int) -> None:
    """Fit on ``frame``, with NumPy's and torch's generators seeded for a repeatable fit (a DP
    fit is not repeatable: OpenDP's noise cannot be seeded)."""
    if isinstance(synthesizer, MstSynthesizer):
        synthesizer.fit_frame(frame)
        return
    with SDV_LOCK:
        state = np.random.get_state()
        np.random.seed(seed % 2**32)
        try:
            _seed_torch(seed)
            synthesizer.fit({table_name: frame})
        finally:
            np.random.set_state(state)


def sample(synthesizer: Any, rows: int, seed: int) -> pd.DataFrame:
    """``rows`` synthetic rows. Every random state is set from ``seed`` first (see module)."""
    if rows <= 0:
        return pd.DataFrame()
    if isinstance(synthesizer, MstSynthesizer):
        return synthesizer.sample_frame(rows, seed)
    with SDV_LOCK:
        transformers = [t for t in _transformers(synthesizer) if t is not None]
        words = np.random.SeedSequence(seed).generate_state(1 + len(transformers))
        synthesizer._set_random_state(int(words[0]))
        for t, word in zip(transformers, words[1:], strict=True):
            t.set_random_state(np.random.RandomState(int(word)), "reverse_transform")
        out = synthesizer.sample(num_rows=rows)
    if isinstance(out, dict):
        out = next(iter(out.values()))
    return out.reset_index(drop=True)


def quality(real: pd.DataFrame, synthetic: pd.DataFrame, metadata: dict) -> dict[str, Any]:
    """SDV's quality report (sdmetrics): column shapes and column pair trends, 0..1."""
    from sdv.evaluation import evaluate_quality
    from sdv.metadata import Metadata

    with SDV_LOCK:
        report = evaluate_quality(real, synthetic, Metadata.load_from_dict(metadata), verbose=False)
    props = {row["Property"]: _num(row["Score"]) for _, row in report.get_properties().iterrows()}
    shapes = report.get_details("Column Shapes")
    pairs = report.get_details("Column Pair Trends")
    if "Meets Threshold?" in pairs:
        pairs = pairs[pairs["Meets Threshold?"].astype(bool)]
    return {
        "score": _num(report.get_score()),
        "column_shapes": props.get("Column Shapes"),
        "column_pair_trends": props.get("Column Pair Trends"),
        "columns": [{"column": r["Column"], "metric": r["Metric"], "score": _num(r["Score"])}
                    for _, r in shapes.iterrows()],
        "pairs": [{"columns": [r["Column 1"], r["Column 2"]], "metric": r["Metric"], "score": _num(r["Score"])}
                  for _, r in pairs.iterrows()],
        "note": None if props.get("Column Pair Trends") is not None else
        "no pair of learned columns is associated in the real data, so pair trends are not scored",
    }


def dcr(train: pd.DataFrame, synthetic: pd.DataFrame, holdout: pd.DataFrame | None, metadata: dict,
        table_name: str, subsample: int) -> dict[str, Any]:
    """Distance to closest record (sdmetrics): against a random baseline, and — with a holdout
    the model never saw — whether synthetic rows sit closer to the training rows (overfitting)."""
    from sdmetrics.single_table import DCRBaselineProtection, DCROverfittingProtection

    out: dict[str, Any] = {"rows_compared": subsample}
    with SDV_LOCK, warnings.catch_warnings():
        # sdmetrics warns when the holdout is under half the training rows; both sides are
        # subsampled to the same size here, so the warning does not apply.
        warnings.filterwarnings("ignore", message=".*validation data at least half.*")
        state = np.random.get_state()
        np.random.seed(0)
        try:
            base = DCRBaselineProtection.compute_breakdown(
                train, synthetic, metadata, table_name, num_rows_subsample=subsample)
            out["baseline_protection"] = {
                "score": _num(base["score"]),
                "median_dcr_synthetic": _num(base["median_DCR_to_real_data"]["synthetic_data"]),
                "median_dcr_random": _num(base["median_DCR_to_real_data"]["random_data_baseline"]),
            }
            if holdout is not None and len(holdout) >= subsample:
                over = DCROverfittingProtection.compute_breakdown(
                    train, synthetic, holdout, metadata, table_name, num_rows_subsample=subsample)
                out["overfitting_protection"] = {
                    "score": _num(over["score"]),
                    "closer_to_training": _num(over["synthetic_data_percentages"]["closer_to_training"]),
                    "closer_to_holdout": _num(over["synthetic_data_percentages"]["closer_to_holdout"]),
                }
        finally:
            np.random.set_state(state)
    return out


def dumps(synthesizer: Any) -> bytes:
    import cloudpickle

    return cloudpickle.dumps(synthesizer)


def loads(data: bytes) -> Any:
    """Unpickle a synthesizer. Callers verify the bytes' MAC first (``store``): a pickle runs
    code when loaded, so only the gateway's own, authenticated files get here."""
    import pickle

    require_sdv()
    return pickle.loads(data)  # authenticated by store.ModelStore before this call


def _transformers(synthesizer: Any) -> list[Any]:
    processor = getattr(synthesizer, "_data_processor", None)
    hyper = getattr(processor, "_hyper_transformer", None)
    return list(getattr(hyper, "field_transformers", {}).values())


def _seed_torch(seed: int) -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover - SDV depends on torch
        return
    torch.manual_seed(seed % 2**63)


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else round(f, 6)
