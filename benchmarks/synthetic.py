"""Synthetic views: fit time, sampling throughput and quality, measured in one run.

    .venv/bin/python benchmarks/synthetic.py --json benchmarks/results/synthetic.json

What runs, on a fresh seeded demo world of ``--rows`` patients (and ~3x as many encounters).
The defaults (125,000 patients, ``--fit-rows`` 125,000) make each SDV fit see exactly 100,000
training rows (the other 20 % is the holdout):

(a) **fit** of each dataset's model with its catalog synthesizer (Gaussian copula), exactly as
    ``govern synth fit`` does it: one pass over the data for the exact-copy digests and the
    identifier pools, the SDV fit on the training split (80 % of at most ``--fit-rows`` rows),
    then the reports. Reported: SDV's fit alone, and the whole job;
(b) **sampling**: ``--sample-rows`` rows drawn from the stored model (SDV sampling, the copy
    check against every real row, generated identifiers), best of ``--repeat``; for patients
    also the full governed path a request takes (bob's plan applied by the Arrow engine);
(c) **quality**: SDV's quality score (column shapes, column pair trends) of the fit-time
    reference sample, and the privacy numbers next to it.

The patients table has independent columns (so no pair trend is scored there); encounters'
cost depends on the department, so its pair trends show whether correlations survive.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=125_000, help="patients in the demo world")
    ap.add_argument("--fit-rows", type=int, default=125_000, help="synthetic_fit_rows: rows a fit reads (80 %% train)")
    ap.add_argument("--sample-rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--datasets", default="patients,encounters")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    t0 = time.perf_counter()
    import sdv.single_table  # noqa: F401  # what the first synthetic request of a gateway pays

    import_seconds = time.perf_counter() - t0

    from govern.config import load_settings
    from govern.deliver.governor import Governor
    from govern.demo import create_demo
    from govern.policy.model import local_principal
    from govern.privacy.synthetic.sample import sample_rows
    from govern.privacy.synthetic.service import SyntheticService

    results: dict[str, Any] = {
        "rows": args.rows, "fit_rows": args.fit_rows, "sample_rows": args.sample_rows, "repeat": args.repeat,
        "python": sys.version.split()[0], "machine": platform.machine(), "import_seconds": round(import_seconds, 2),
        "datasets": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        demo = create_demo(Path(tmp) / "world", rows=args.rows, seed=7)
        gov = Governor(load_settings(demo.config, synthetic_fit_rows=args.fit_rows,
                                     synthetic_max_rows=max(args.sample_rows, 1)))
        svc = SyntheticService(gov.settings, gov)
        for name in args.datasets.split(","):
            ref = svc.reference(name)
            started = time.perf_counter()
            manifest = svc.fit_now(ref, force=True)
            job_seconds = time.perf_counter() - started
            model = svc.model(ref)
            assert model is not None
            key = gov.keys.subkey("synthetic-rows", model.manifest["key_id"])
            sample_runs = []
            for i in range(args.repeat):
                t = time.perf_counter()
                out = sample_rows(model, ref, args.sample_rows, seed=i, digest_key=key)
                sample_runs.append(time.perf_counter() - t)
                assert out.table.num_rows == args.sample_rows
            entry: dict[str, Any] = {
                "real_rows": manifest["rows"]["real"], "train_rows": manifest["rows"]["train"],
                "fit_seconds": manifest["seconds"]["fit"], "job_seconds": round(job_seconds, 2),
                "sample_seconds": round(min(sample_runs), 3),
                "sample_rows_per_second": round(args.sample_rows / min(sample_runs)),
                "quality": manifest["reports"]["quality"]["score"],
                "column_shapes": manifest["reports"]["quality"]["column_shapes"],
                "column_pair_trends": manifest["reports"]["quality"]["column_pair_trends"],
                "exact_copies_in_reference": manifest["reports"]["privacy"]["exact_copies"],
                "dcr": manifest["reports"]["privacy"].get("dcr"),
            }
            if name == "patients":
                bob = local_principal(gov.state.policy, "bob")
                plan = gov.plan(bob, name, "research", action="read_synthetic")
                runs = []
                for i in range(args.repeat):
                    t = time.perf_counter()
                    res = svc.synthesize(ref, model, plan, args.sample_rows, seed=100 + i)
                    runs.append(time.perf_counter() - t)
                    assert res.table.num_rows == args.sample_rows
                entry["governed_seconds"] = round(min(runs), 3)
                entry["governed_rows_per_second"] = round(args.sample_rows / min(runs))
            results["datasets"][name] = entry
            print(f"{name}: fit {entry['fit_seconds']:.2f}s on {entry['train_rows']:,} rows "
                  f"(job {entry['job_seconds']:.1f}s), sampling {entry['sample_rows_per_second']:,} rows/s"
                  + (f", governed {entry['governed_rows_per_second']:,} rows/s" if "governed_rows_per_second" in entry
                     else "")
                  + f", quality {entry['quality']} (shapes {entry['column_shapes']}, "
                    f"pair trends {entry['column_pair_trends']}), exact copies {entry['exact_copies_in_reference']}")
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(f"SDV import {results['import_seconds']}s, peak RSS {results['peak_rss_mb']} MB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
