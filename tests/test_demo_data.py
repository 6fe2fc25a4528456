"""The demo data: deterministic, exactly the documented schemas, internally consistent, fast."""

from __future__ import annotations

import hashlib
import time
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from govern.demo_data import (
    DEPARTMENTS,
    DIAGNOSES,
    ENCOUNTERS_SCHEMA,
    PATIENTS_SCHEMA,
    REGIONS,
    write_demo_data,
)

ROWS = 10_000


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_demo_data(tmp_path_factory.mktemp("demo"), rows=ROWS, seed=7)


@pytest.fixture(scope="module")
def patients(demo: dict[str, Path]) -> pa.Table:
    return pq.read_table(demo["patients"])


@pytest.fixture(scope="module")
def encounters(demo: dict[str, Path]) -> pa.Table:
    return pq.read_table(demo["encounters"])


def test_same_seed_gives_byte_identical_files(demo: dict[str, Path], tmp_path: Path) -> None:
    again = write_demo_data(tmp_path / "again", rows=ROWS, seed=7)
    other = write_demo_data(tmp_path / "other", rows=ROWS, seed=8)
    assert set(again) == {"patients", "encounters"}
    for name in ("patients", "encounters"):
        assert _sha256(again[name]) == _sha256(demo[name])
        assert _sha256(other[name]) != _sha256(demo[name])


def test_files_and_no_leftovers(demo: dict[str, Path]) -> None:
    folder = demo["patients"].parent
    assert sorted(p.name for p in folder.iterdir()) == ["encounters.parquet", "patients.parquet"]
    meta = pq.ParquetFile(demo["patients"]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_schemas_are_exactly_as_documented(patients: pa.Table, encounters: pa.Table) -> None:
    assert patients.schema.equals(PATIENTS_SCHEMA, check_metadata=False)
    assert encounters.schema.equals(ENCOUNTERS_SCHEMA, check_metadata=False)
    assert PATIENTS_SCHEMA.names == [
        "patient_id",
        "name",
        "email",
        "ssn",
        "birth_date",
        "zip",
        "region",
        "diagnosis",
        "charges",
        "phone",
    ]
    assert ENCOUNTERS_SCHEMA.names == [
        "encounter_id",
        "patient_id",
        "date",
        "department",
        "cost",
        "region",
    ]
    assert patients.schema.field("birth_date").type == pa.date32()
    assert encounters.schema.field("date").type == pa.date32()
    for table in (patients, encounters):
        assert all(table.column(c).null_count == 0 for c in table.column_names)


def test_row_counts_and_keys(patients: pa.Table, encounters: pa.Table) -> None:
    assert patients.num_rows == ROWS
    assert patients.column("patient_id").to_pylist() == list(range(1, ROWS + 1))
    assert 2.5 * ROWS < encounters.num_rows < 3.5 * ROWS
    ids = encounters.column("encounter_id")
    assert pc.count_distinct(ids).as_py() == encounters.num_rows


def test_referential_integrity(patients: pa.Table, encounters: pa.Table) -> None:
    joined = encounters.join(
        patients.select(["patient_id", "region"]).rename_columns(["patient_id", "patient_region"]),
        "patient_id",
        join_type="left outer",
    )
    assert joined.num_rows == encounters.num_rows
    assert joined.column("patient_region").null_count == 0  # every encounter has a patient
    assert pc.all(pc.equal(joined.column("region"), joined.column("patient_region"))).as_py()
    per_patient = encounters.group_by("patient_id").aggregate([("encounter_id", "count")])
    counts = per_patient.column("encounter_id_count")
    assert pc.max(counts).as_py() >= 15  # some patients have many encounters
    assert per_patient.num_rows < ROWS  # and some have none


def test_value_formats_and_domains(patients: pa.Table, encounters: pa.Table) -> None:
    def matches(column: str, pattern: str) -> bool:
        return pc.all(pc.match_substring_regex(patients.column(column), pattern)).as_py()

    assert matches("ssn", r"^\d{3}-\d{2}-\d{4}$")
    assert matches("zip", r"^\d{5}$")
    assert matches("phone", r"^\+1-555-\d{3}-\d{4}$")
    assert matches("email", r"^[a-z0-9.]+@[a-z.]+$")
    assert matches("name", r"^\S+ \S+$")
    names = set(patients.column("name").to_pylist())
    assert any(not n.isascii() for n in names)
    assert any(n.startswith(("José ", "Zoë ", "Łukasz ", "Søren ")) for n in names)
    assert set(patients.column("region").to_pylist()) == set(REGIONS)
    assert set(patients.column("diagnosis").to_pylist()) == set(DIAGNOSES)
    assert {"HIV", "Substance use disorder", "Hypertension", "Diabetes type 2", "Asthma"} <= set(
        DIAGNOSES
    )
    assert set(encounters.column("department").to_pylist()) == set(DEPARTMENTS)
    assert {"Psychiatry", "Cardiology", "Oncology", "Emergency"} <= set(DEPARTMENTS)

    births = pc.min_max(patients.column("birth_date")).as_py()
    assert date(1930, 1, 1) <= births["min"] and births["max"] <= date(2010, 12, 31)
    days = pc.min_max(encounters.column("date")).as_py()
    assert date(2015, 1, 1) <= days["min"] and days["max"] <= date(2025, 12, 31)

    charges = patients.column("charges")
    bounds = pc.min_max(charges).as_py()
    assert 50 <= bounds["min"] and bounds["max"] <= 50_000
    assert pc.all(pc.equal(pc.round(charges, 2), charges)).as_py()
    assert pc.min(encounters.column("cost")).as_py() > 0


def test_email_is_the_ascii_form_of_the_name(patients: pa.Table) -> None:
    rows = patients.slice(0, 2_000).to_pylist()
    by_name = {r["name"]: r["email"] for r in rows}
    for name, local in (
        ("Łukasz", "lukasz."),
        ("Søren", "soren."),
        ("Zoë", "zoe."),
        ("José", "jose."),
    ):
        emails = [e for n, e in by_name.items() if n.startswith(name + " ")]
        assert all(e.startswith(local) for e in emails)


def test_encounters_are_in_date_order(encounters: pa.Table) -> None:
    dates = encounters.column("date")
    assert pc.all(pc.greater_equal(dates.slice(1), dates.slice(0, len(dates) - 1))).as_py()


def test_generation_is_vectorized_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    out = write_demo_data(tmp_path, rows=200_000, seed=1)
    elapsed = time.perf_counter() - start
    assert pq.ParquetFile(out["patients"]).metadata.num_rows == 200_000
    assert pq.ParquetFile(out["patients"]).metadata.num_row_groups == 4  # ~64k-row groups
    assert elapsed < 5.0, f"200k patients took {elapsed:.2f}s; per-row Python would take far longer"


def test_rows_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_demo_data(tmp_path, rows=0)
