"""Encrypted views (CKKS, TenSEAL): encrypt, compute and release times, and ciphertext expansion.

    .venv/bin/python benchmarks/he.py --rows 100000 --repeat 3 --json benchmarks/results/he.json

Part 1, the core in this process (N = 8192, 4096 slots, coefficient modulus [60, 40, 40, 60],
scale 2^40), on ``--rows`` values drawn uniformly in [0, 50000]:

* key generation, Galois key generation, and the size of each serialized context;
* encrypting the column (ceil(rows / 4096) ciphertexts) and the bytes produced, against the
  8 bytes of a float64 per value (the *expansion*);
* the client's computations on the ciphertexts: sum (slot-wise additions only), sum with the
  final rotate-and-sum (Galois keys), dot product of two columns (ciphertext × ciphertext),
  linear score of two columns (ciphertext × scalar);
* the gateway's release core: fresh encryption + evaluation + decryption of one slot + Laplace
  noise, for a sum and for a dot product, with the absolute CKKS error measured against numpy.

Part 2, end to end: a seeded demo world of ``--rows`` patients, a real ``govern serve --no-watch``
process on loopback, and the Python client as bob (``research``): the encrypted view of
``charges`` (request to last byte, bytes received), a release of the sum (the first one also
generates the Galois keys; the median of the next ``--repeat`` is reported), and a client-held
key query (per-region sums of a linear score). Times are medians over ``--repeat`` runs; run on
a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from served import free_port, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median seconds of ``repeat`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def core(rows: int, repeat: int) -> dict[str, Any]:
    import tenseal as ts

    from govern.privacy.he.computation import Computation, evaluate
    from govern.privacy.he.noise import error_bound, laplace, noise_scale
    from govern.privacy.he.params import PARAMETERS, new_secret_context, public_context_bytes

    rng = np.random.default_rng(7)
    x = rng.uniform(0, 50_000, rows)
    y = rng.uniform(0, 50_000, rows)
    s = PARAMETERS.slots
    chunks = -(-rows // s)

    def padded(v: np.ndarray) -> list[np.ndarray]:
        p = np.zeros(chunks * s)
        p[:rows] = v
        return [p[i * s:(i + 1) * s] for i in range(chunks)]

    out: dict[str, Any] = {"rows": rows, "ciphertexts_per_column": chunks}
    out["keygen_s"], ctx = timed(new_secret_context, repeat)
    out["context_public_bytes"] = len(public_context_bytes(ctx))
    out["context_public_no_relin_bytes"] = len(public_context_bytes(ctx, relin=False))
    out["galois_keygen_s"], _ = timed(lambda: ctx.generate_galois_keys(), 1)
    out["context_public_with_galois_bytes"] = len(public_context_bytes(ctx, galois=True))
    out["context_secret_file_bytes"] = len(ctx.serialize(save_secret_key=True, save_galois_keys=False))

    px, py = padded(x), padded(y)
    out["encrypt_s"], cts = timed(lambda: [ts.ckks_vector(ctx, p) for p in px], repeat)
    blobs = [c.serialize() for c in cts]
    out["ciphertext_bytes"] = sum(len(b) for b in blobs)
    out["expansion_vs_float64"] = out["ciphertext_bytes"] / (8 * rows)
    out["serialize_s"], _ = timed(lambda: [c.serialize() for c in cts], repeat)
    public = ts.context_from(public_context_bytes(ctx, galois=True))
    out["deserialize_s"], _ = timed(lambda: [ts.ckks_vector_from(public, b) for b in blobs], repeat)
    cts_y = [ts.ckks_vector(ctx, p) for p in py]

    class Source:
        def __init__(self, vx, vy):
            self.v = {"x": vx, "y": vy}

        def values(self, c):
            return self.v[c]

        def selected(self):
            raise NotImplementedError

        def group(self, k):
            raise NotImplementedError

    src = Source(cts, cts_y)
    comp_sum = Computation.parse({"op": "sum", "column": "x"})
    comp_dot = Computation.parse({"op": "dot", "columns": ["x", "y"]})
    comp_lin = Computation.parse({"op": "linear", "columns": ["x", "y"], "weights": [0.5, -0.25]})
    out["compute_sum_slotwise_s"], _ = timed(lambda: evaluate(comp_sum, src, [], rotate=False), repeat)
    out["compute_sum_rotated_s"], r = timed(lambda: evaluate(comp_sum, src, [], rotate=True), repeat)
    out["compute_dot_rotated_s"], rd = timed(lambda: evaluate(comp_dot, src, [], rotate=True), repeat)
    out["compute_linear_rotated_s"], _ = timed(lambda: evaluate(comp_lin, src, [], rotate=True), repeat)
    out["sum_abs_error"] = abs(r["sum"].decrypt()[0] - x.sum())
    out["dot_abs_error"] = abs(rd["dot"].decrypt()[0] - (x * y).sum())
    out["sum_error_bound"] = error_bound(chunks * s, 50_000, 0)
    out["dot_error_bound"] = error_bound(chunks * s, 50_000 ** 2, 1)

    def release(comp: Computation, magnitude: float, depth: int) -> float:
        fresh = Source([ts.ckks_vector(ctx, p) for p in px],
                       [ts.ckks_vector(ctx, p) for p in py] if comp.op == "dot" else [])
        exact = evaluate(comp, fresh, [], rotate=True)[comp.op].decrypt()[0]
        scale = noise_scale(magnitude, 0.5, error_bound(chunks * s, magnitude, depth), 12)
        return laplace([exact], scale)[0]

    laplace([0.0], 1.0)  # import OpenDP outside the timing
    out["release_core_sum_s"], _ = timed(lambda: release(comp_sum, 50_000, 0), repeat)
    out["release_core_dot_s"], _ = timed(lambda: release(comp_dot, 50_000 ** 2, 1), repeat)
    return out


def end_to_end(rows: int, repeat: int) -> dict[str, Any]:
    from govern.client import Client
    from govern.demo import create_demo

    out: dict[str, Any] = {"rows": rows}
    with tempfile.TemporaryDirectory() as tmp:
        world = create_demo(Path(tmp) / "demo", rows=rows, seed=7)
        keys = json.loads((world.directory / "keys.json").read_text())
        port = free_port()
        log = open(Path(tmp) / "server.log", "w")
        proc = subprocess.Popen([str(Path(sys.executable).parent / "govern"), "serve", "--config", str(world.config),
                                 "--port", str(port), "--pg-port", "0", "--no-watch"], stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url)
            with Client(url, token=keys["bob"], purpose="research", timeout=600) as c:
                c.encrypted_view("patients", columns=["charges"], limit=10)  # first key made outside the timing
                out["view_s"], view = timed(lambda: c.encrypted_view("patients", columns=["charges"]), repeat)
                out["view_rows"] = view.rows
                out["view_bytes"] = len(view._data.context) + sum(len(b) for v in view._data.vectors.values() for b in v)
                out["view_ciphertext_bytes_per_value"] = (out["view_bytes"] - len(view._data.context)) / view.rows
                t = time.perf_counter()
                view.release({"op": "sum", "column": "charges"}, epsilon=0.05)
                out["release_first_s"] = time.perf_counter() - t
                out["release_sum_s"], r = timed(
                    lambda: view.release({"op": "sum", "column": "charges"}, epsilon=0.05), repeat)
                out["release_noise_scale"] = r.body["noise"]["scale"]["sum"]
                out["release_mean_s"], _ = timed(
                    lambda: view.release({"op": "mean", "column": "charges"}, epsilon=0.05), repeat)
                out["query_linear_groups_s"], _ = timed(lambda: c.encrypted_query(
                    "patients", {"charges": 0.001, "intercept": 1.0}, group_by="region", groups=["EU", "US"],
                    epsilon=0.05), repeat)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            log.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-gateway", action="store_true", help="only the in-process core")
    args = ap.parse_args()
    result: dict[str, Any] = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                          "platform": platform.platform()},
                              "core": core(args.rows, args.repeat)}
    if not args.no_gateway:
        result["gateway"] = end_to_end(args.rows, args.repeat)
    for part, values in result.items():
        if part == "machine":
            continue
        print(f"\n{part}")
        for k, v in values.items():
            print(f"  {k:38s} {v:>14.4g}" if isinstance(v, float) else f"  {k:38s} {v:>14}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
