"""``govern demo``: a complete, deterministic demo world in one folder.

Layout of the folder::

    govern.yaml          settings (relative paths, so the folder can move)
    data/                patients.parquet, encounters.parquet (seeded; same seed, same bytes)
    policies/            a copy of the example policy set (the repo's ``policies/``)
    state/masking.key    a fresh random masking key (0600)
    keys.json            the demo principals' API keys (0600), printed once

The data is deterministic; keys are fresh on every run.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from govern.errors import InvalidRequest

PREVIEWS = (("alice", "patients", "analytics"), ("bob", "patients", "model-training"),
            ("dave", "patients", "treatment"))


def example_policies_dir() -> Path:
    """The example policy set: packaged copy in a wheel, the repo's ``policies/`` otherwise."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_demo_policies", here.parent / "policies"):
        if (candidate / "policy.csv").exists():
            return candidate
    raise InvalidRequest("the example policy set is missing from this installation")


@dataclass
class DemoInfo:
    directory: Path
    rows: int
    files: dict[str, Path]
    api_keys: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.directory / "govern.yaml"

    def summary(self) -> str:
        lines = [f"demo world in {self.directory} ({self.rows} patients)"]
        for name, path in sorted(self.files.items()):
            lines.append(f"  {name:<11} {path}")
        lines.append(f"  settings    {self.config}")
        if self.api_keys:
            lines.append(f"  API keys (shown once; also in {self.directory / 'keys.json'}):")
            for who, key in sorted(self.api_keys.items()):
                lines.append(f"    {who:<6} {key}")
        return "\n".join(lines)

    def preview(self) -> str:
        from govern.config import load_settings
        from govern.deliver.governor import Governor
        from govern.plan.explain import render_rows
        from govern.policy.model import local_principal

        gov = Governor(load_settings(self.config))
        out = []
        for who, ds, purpose in PREVIEWS:
            principal = local_principal(gov.state.policy, who)
            table = gov.read(principal, ds, purpose, limit=3).reader.read_all()
            out.append(f"\n$ govern preview {who} {ds} --purpose {purpose} --limit 3")
            out.append(render_rows(table, "table"))
        return "\n".join(out)


def create_demo(directory: Path, *, rows: int = 10_000, seed: int = 7) -> DemoInfo:
    from govern.demo_data import write_demo_data
    from govern.identity.apikeys import issue_demo_keys
    from govern.mask.keyfile import write_key_file

    if rows < 1:
        raise InvalidRequest("--rows must be at least 1")
    directory.mkdir(parents=True, exist_ok=True)
    files = write_demo_data(directory / "data", rows=rows, seed=seed)
    policies = directory / "policies"
    if policies.exists():
        shutil.rmtree(policies)
    shutil.copytree(example_policies_dir(), policies)
    state = directory / "state"
    state.mkdir(exist_ok=True)
    key_file = state / "masking.key"
    if not key_file.exists():
        write_key_file(key_file, "k1")
    settings = {
        "policy_dir": "policies",
        "data_root": "data",
        "state_dir": "state",
        "masking_key_file": "state/masking.key",
        "masking_key_id": "k1",
    }
    (directory / "govern.yaml").write_text(
        "# Settings for the demo world (paths are relative to this file).\n"
        + yaml.safe_dump(settings, sort_keys=False))
    info = DemoInfo(directory, rows, {k: Path(v) for k, v in files.items()})
    info.api_keys = issue_demo_keys(policies / "principals.yaml", directory / "keys.json")
    return info
