"""The demo world's data: fake patients and their hospital encounters.

Generated locally from a seed (numpy ``default_rng``), never downloaded, so ``govern demo``
works offline and every test sees the same rows. Same ``rows`` and ``seed`` give
byte-identical files. Columns are built whole with numpy and Arrow compute (no per-row
Python), so millions of rows take seconds: the benchmarks need large inputs.

The data is shaped to exercise the policies: PHI columns (name, email, ssn, birth_date, zip),
sensitive diagnoses ("HIV", "Substance use disorder") for cell rules, a ``region`` for row
filters, and a ``phone`` column that the catalog deliberately omits to show that unclassified
columns are withheld (schema drift is fail-closed).
"""

from __future__ import annotations

import os
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = [
    "DEPARTMENTS",
    "DIAGNOSES",
    "ENCOUNTERS_SCHEMA",
    "PATIENTS_SCHEMA",
    "REGIONS",
    "make_encounters",
    "make_patients",
    "write_demo_data",
]

ROW_GROUP_SIZE = 65_536
_DICTIONARY_COLUMNS = ("name", "region", "diagnosis", "department")

PATIENTS_SCHEMA = pa.schema(
    [
        ("patient_id", pa.int64()),
        ("name", pa.string()),
        ("email", pa.string()),
        ("ssn", pa.string()),
        ("birth_date", pa.date32()),
        ("zip", pa.string()),
        ("region", pa.string()),
        ("diagnosis", pa.string()),
        ("charges", pa.float64()),
        ("phone", pa.string()),
    ]
)

ENCOUNTERS_SCHEMA = pa.schema(
    [
        ("encounter_id", pa.int64()),
        ("patient_id", pa.int64()),
        ("date", pa.date32()),
        ("department", pa.string()),
        ("cost", pa.float64()),
        ("region", pa.string()),
    ]
)

REGIONS = ("EU", "US", "APAC")
_REGION_P = (0.35, 0.45, 0.20)

DIAGNOSES = (
    "Hypertension",
    "Diabetes type 2",
    "Asthma",
    "Depression",
    "Anxiety disorder",
    "Osteoarthritis",
    "COPD",
    "Migraine",
    "Coronary artery disease",
    "Breast cancer",
    "HIV",
    "Substance use disorder",
)
_DIAGNOSIS_P = (0.18, 0.14, 0.11, 0.10, 0.09, 0.08, 0.07, 0.07, 0.06, 0.04, 0.02, 0.04)

DEPARTMENTS = (
    "Emergency",
    "General medicine",
    "Cardiology",
    "Oncology",
    "Psychiatry",
    "Pediatrics",
    "Orthopedics",
    "Radiology",
)
_DEPARTMENT_P = (0.22, 0.25, 0.12, 0.07, 0.08, 0.10, 0.09, 0.07)
# Typical cost per department (median of a log-normal), so aggregates differ by department.
_DEPARTMENT_COST = (900.0, 180.0, 1400.0, 3200.0, 350.0, 220.0, 1100.0, 600.0)

_EMAIL_DOMAINS = ("example.com", "example.org", "mail.example", "post.example", "inbox.example")

FIRST_NAMES = tuple(
    """
    James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David Barbara
    Richard Susan Joseph Jessica Thomas Sarah Charles Karen Christopher Nancy Daniel Lisa
    Matthew Betty Anthony Margaret Mark Sandra Donald Ashley Steven Kimberly Paul Emily Andrew
    Donna Joshua Michelle Kenneth Carol Kevin Amanda Brian Melissa George Deborah Timothy
    Stephanie Ronald Rebecca Edward Sharon Jason Laura Jeffrey Cynthia Ryan Kathleen Jacob Amy
    Gary Angela Nicholas Shirley Eric Anna Jonathan Brenda Stephen Pamela Larry Emma Justin
    Nicole Scott Helen Brandon Samantha Benjamin Katherine Samuel Christine Gregory Debra
    Alexander Rachel Frank Carolyn Patrick Janet Raymond Catherine Jack Maria Dennis Heather
    Jerry Diane Tyler Ruth Aaron Julie José Zoë Łukasz Søren Chloé Renée Noémie Hélène
    Björn Jürgen Günther Maëlle Inès Zoé Ángel Íñigo Sofía Lucía Joaquín Martín Tomás
    François Élodie Anaïs Raphaël Jérôme Mathéo Léa Clément Agnès Ágnes Dóra Bálint Kristóf
    Małgorzata Paweł Wojciech Zuzana Tomáš Jiří Vojtěch Ondřej Šárka Mária Kateřina Åsa
    Ørjan Eiríkur Dagný Þór Sigríður Gunnar Ingrid Astrid Kåre Mette Priya Arjun Ananya Rohan
    Aiko Haruto Yuki Sakura Wei Mei Jian Li Min-jun Seo-yeon Ji-ho Amara Kwame Chidi Ayodele
    Fatima Omar Layla Youssef Noor Tariq Leila Dmitri Olga Sergei Natalia Ivan Anastasia
    Giulia Luca Francesca Matteo Chiara Niccolò Aurora Ilse Sanne Daan Bram Fleur
    """.split()
)

LAST_NAMES = tuple(
    """
    Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez
    Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris
    Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill
    Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Gomez Phillips
    Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris Morales Murphy Cook
    Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward
    Richardson Watson Brooks Chavez Wood James Bennett Gray Mendoza Ruiz Hughes Price Alvarez
    Castillo Sanders Patel Myers Long Ross Foster Jimenez Powell Jenkins Perry Russell Sullivan
    Bell Coleman Butler Henderson Barnes Gonzales Fisher Vasquez Simmons Romero Jordan
    Patterson Alexander Hamilton Graham Reynolds Griffin Wallace Moreno West Cole Hayes Bryant
    Herrera Gibson Ellis Tran Medina Aguilar Stevens Murray Ford Castro Marshall Owens Harrison
    Fernandez McDonald Woods Washington Kennedy Wells Vargas Henry Chen Freeman Webb Tucker
    Guzman Burns Crawford Olson Simpson Porter Hunter Gordon Mendez Silva Shaw Snyder Mason
    Dixon Muñoz Hunt Hicks Holmes Palmer Wagner Black Robertson Boyd Rose Stone Salazar Fox
    Warren Mills Meyer Rice Schmidt García Núñez Peña Ibáñez Domínguez Gómez Martínez Sánchez
    Müller Schröder Schäfer Köhler Weiß Groß Böhm Krüger Lévesque Côté Bélanger Gagné Thériault
    Dubé Lefèvre Girard Mercier Bonnet François Nowak Kowalski Wiśniewski Wójcik Kamiński
    Lewandowski Zieliński Szymański Woźniak Dąbrowski Łęcki Żak Novák Svoboda Dvořák Černý
    Procházka Kučera Veselý Horák Němec Pokorný Nielsen Jensen Hansen Pedersen Andersen
    Christensen Larsen Sørensen Rasmussen Jørgensen Østergaard Lindqvist Åberg Ångström
    Ström Öberg Björk Nyström Håkansson Jóhannsdóttir Guðmundsson Ólafsson Kristjánsdóttir
    Nagy Kovács Tóth Szabó Horváth Varga Kiss Molnár Németh Farkas Papadopoulos Georgiou
    Yılmaz Kaya Demir Şahin Çelik Öztürk Aydın Özdemir Arslan Doğan Rossi Russo Ferrari
    Esposito Bianchi Romano Colombo Ricci Marino Greco Bruno Gallo Conti Lombardi Costa
    Sato Suzuki Takahashi Tanaka Watanabe Ito Yamamoto Nakamura Kobayashi Wang Zhang Liu
    Yang Huang Zhao Wu Zhou Park Choi Jung Kang Cho Yoon Singh Kumar Sharma Gupta Das Reddy
    Okafor Mensah Adeyemi Okoye Diallo Haddad Khalil Nasser Ivanov Petrov Smirnov Volkov
    """.split()
)

_ASCII_EXTRA = str.maketrans(
    {
        "ł": "l",
        "Ł": "L",
        "ø": "o",
        "Ø": "O",
        "æ": "ae",
        "Æ": "Ae",
        "ß": "ss",
        "đ": "d",
        "ð": "d",
        "Ð": "D",
        "þ": "th",
        "Þ": "Th",
        "ı": "i",
        "œ": "oe",
    }
)


def _ascii(text: str) -> str:
    """The mailbox form of a name: "Łukasz Søren-Zoë" → "lukaszsorenzoe". Applied to the
    name lists once, not per row."""
    folded = unicodedata.normalize("NFKD", text.translate(_ASCII_EXTRA))
    return "".join(c for c in folded if c.isascii() and c.isalnum()).lower()


def _days(d: date) -> int:
    return (d - date(1970, 1, 1)).days


_CHUNK = 1 << 20  # rows per Arrow chunk: keeps 32-bit string offsets far from overflow


def _fixed(n: int, *parts: str | tuple[np.ndarray, int]) -> pa.ChunkedArray:
    """Fixed-width ASCII strings such as "123-45-6789", built as a byte matrix: each part is
    a constant text or ``(values, width)`` printed as zero-padded decimal digits. An order
    of magnitude faster than casting numbers to text and joining them."""
    chunks = []
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        widths = [len(p) if isinstance(p, str) else p[1] for p in parts]
        matrix = np.empty((hi - lo, sum(widths)), np.uint8)
        col = 0
        for part, width in zip(parts, widths, strict=True):
            if isinstance(part, str):
                matrix[:, col : col + width] = np.frombuffer(part.encode("ascii"), np.uint8)
            else:
                rest = part[0][lo:hi].astype(np.int64)
                for j in range(col + width - 1, col - 1, -1):
                    matrix[:, j] = rest % 10 + ord("0")
                    rest //= 10
            col += width
        offsets = np.arange(0, (hi - lo + 1) * matrix.shape[1], matrix.shape[1], dtype=np.int32)
        chunks.append(
            pa.StringArray.from_buffers(hi - lo, pa.py_buffer(offsets), pa.py_buffer(matrix))
        )
    return pa.chunked_array(chunks, pa.string())


def _pick(choices: list[str] | tuple[str, ...], index: np.ndarray) -> pa.Array:
    """``choices[index]`` as an Arrow string column (a vectorized take). Narrow indices
    make Arrow's take several times faster."""
    dtype = np.int8 if len(choices) < 2**7 else np.int16 if len(choices) < 2**15 else np.int32
    return pc.take(pa.array(choices, pa.string()), pa.array(index.astype(dtype)))


def _categorical(rng: np.random.Generator, p: tuple[float, ...], n: int) -> np.ndarray:
    """Draw ``n`` category indices with probabilities ``p`` (like ``rng.choice``, faster)."""
    cdf = np.cumsum(p)
    return np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(n), side="right"), len(p) - 1)


def make_patients(rows: int, rng: np.random.Generator) -> pa.Table:
    """The patients table; consumes ``rng`` in a fixed order (determinism)."""
    n = rows
    first = rng.integers(0, len(FIRST_NAMES), n)
    last = rng.integers(0, len(LAST_NAMES), n)
    # Whole names and mailboxes come from small vocabularies of every combination (68k
    # entries), so each column is one take instead of several string joins.
    full = first * len(LAST_NAMES) + last
    names = [f"{f} {la}" for f in FIRST_NAMES for la in LAST_NAMES]
    first_ascii = [_ascii(s) for s in FIRST_NAMES]
    last_ascii = [_ascii(s) for s in LAST_NAMES]
    mailboxes = [f"{f}.{la}" for f in first_ascii for la in last_ascii]
    number = rng.integers(1, 1000, n)
    domain = rng.integers(0, len(_EMAIL_DOMAINS), n)
    suffixes = [f"{k}@{dom}" for k in range(1000) for dom in _EMAIL_DOMAINS]
    email = pc.binary_join_element_wise(
        _pick(mailboxes, full), _pick(suffixes, number * len(_EMAIL_DOMAINS) + domain), ""
    )
    area = rng.integers(1, 900, n)
    area[area == 666] = 667  # never issued
    ssn = _fixed(
        n, (area, 3), "-", (rng.integers(1, 100, n), 2), "-", (rng.integers(1, 10_000, n), 4)
    )
    birth = rng.integers(_days(date(1930, 1, 1)), _days(date(2010, 12, 31)) + 1, n).astype(np.int32)
    zip_code = _fixed(n, (rng.integers(1_000, 100_000, n), 5))
    region = _pick(REGIONS, _categorical(rng, _REGION_P, n))
    diagnosis = _pick(DIAGNOSES, _categorical(rng, _DIAGNOSIS_P, n))
    charges = np.round(np.clip(rng.lognormal(np.log(2_500.0), 1.1, n), 50.0, 50_000.0), 2)
    phone = _fixed(
        n, "+1-555-", (rng.integers(200, 1000, n), 3), "-", (rng.integers(0, 10_000, n), 4)
    )
    return pa.Table.from_arrays(
        [
            pa.array(np.arange(1, n + 1, dtype=np.int64)),
            _pick(names, full),
            email,
            ssn,
            pa.array(birth).cast(pa.date32()),
            zip_code,
            region,
            diagnosis,
            pa.array(charges),
            phone,
        ],
        schema=PATIENTS_SCHEMA,
    )


def make_encounters(patients: pa.Table, rng: np.random.Generator) -> pa.Table:
    """About three encounters per patient, skewed (most have a few, some many, some none),
    in date order so date filters prune row groups.

    Dates are drawn already sorted (a count per day) and paired with the owners in random
    order: the same distribution as sorting (date, owner) pairs, without sorting millions
    of rows.
    """
    n = patients.num_rows
    per_patient = rng.negative_binomial(1, 0.25, n)  # geometric, mean 3, long tail
    owner = rng.permutation(np.repeat(np.arange(n, dtype=np.int32), per_patient))
    m = owner.size
    first_day, last_day = _days(date(2015, 1, 1)), _days(date(2025, 12, 31))
    per_day = rng.multinomial(
        m, np.full(last_day - first_day + 1, 1.0 / (last_day - first_day + 1))
    )
    day = np.repeat(np.arange(first_day, last_day + 1, dtype=np.int32), per_day)  # sorted
    dept = _categorical(rng, _DEPARTMENT_P, m)
    cost = np.round(
        np.clip(np.asarray(_DEPARTMENT_COST)[dept] * rng.lognormal(0.0, 0.8, m), 10.0, 250_000.0), 2
    )
    # Look owners up in numpy: a random-access take of millions of strings thrashes caches.
    patient_id = patients.column("patient_id").to_numpy()[owner]
    region = pc.index_in(patients.column("region"), pa.array(REGIONS)).to_numpy()[owner]
    return pa.Table.from_arrays(
        [
            pa.array(np.arange(1, m + 1, dtype=np.int64)),
            pa.array(patient_id),
            pa.array(day).cast(pa.date32()),
            _pick(DEPARTMENTS, dept),
            pa.array(cost),
            _pick(REGIONS, region),
        ],
        schema=ENCOUNTERS_SCHEMA,
    )


def write_demo_data(data_dir: Path, rows: int = 10_000, seed: int = 7) -> dict[str, Path]:
    """Write ``patients.parquet`` (``rows`` rows) and ``encounters.parquet`` (about 3×) into
    ``data_dir``; return dataset name → file path.

    Files are written under a hidden temporary name and renamed into place, so a gateway
    reading the folder never sees half a file.
    """
    if rows < 1:
        raise ValueError("rows must be at least 1")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    patients = make_patients(rows, rng)
    # Write patients while encounters are generated: both release the GIL. Only this thread
    # draws from ``rng``, so the output does not depend on scheduling.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="govern-demo") as pool:
        jobs = {"patients": pool.submit(_write, patients, data_dir, "patients")}
        encounters = make_encounters(patients, rng)
        jobs["encounters"] = pool.submit(_write, encounters, data_dir, "encounters")
        return {name: job.result() for name, job in jobs.items()}


def _write(table: pa.Table, data_dir: Path, name: str) -> Path:
    path = data_dir / f"{name}.parquet"
    tmp = data_dir / f".{name}.parquet.tmp"
    # Dictionary-encode only low-cardinality text: on near-unique columns (ssn, email) the
    # attempt costs time and then falls back anyway.
    pq.write_table(
        table,
        tmp,
        row_group_size=ROW_GROUP_SIZE,
        compression="zstd",
        use_dictionary=[c for c in _DICTIONARY_COLUMNS if c in table.column_names],
    )
    os.replace(tmp, path)
    return path
