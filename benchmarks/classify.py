"""Sensitive-data discovery: column-level precision, recall and F1 on labelled generated tables.

    .venv/bin/python benchmarks/classify.py --worlds 5 --columns 100 --rows 10000 --json benchmarks/results/classify.json

Each world is a table of ``--columns`` columns × ``--rows`` rows, every column labelled with the
type it holds (or none). Positives hold valid values in the formats people write them in (card
numbers with and without separators, IBANs of several countries, sixteen national IDs, US SSNs,
phone numbers of thirteen countries, email addresses), with 2 % of the values garbled or
missing. Negatives are the columns that fool detectors: **checksum-invalid lookalikes** of every
check-digit type (right shape, wrong check digit), SSN-shaped numbers the SSA never issues,
and **adversarial columns** — version numbers, order ids, bare 9/10/16-digit ids, zip codes
and zip+4, dates, timestamps, epoch milliseconds, IMEIs (valid Luhn!), ISBN-13s, UUIDs, IP
addresses, amounts, free text mentioning email addresses — some with names that carry a hint
the values contradict (``email_sent_at`` holding timestamps, ``ssn_verified`` holding yes/no,
``phone_count`` holding counts). Most columns have neutral names (``col_017``) so the values must
carry the decision; a few positives have hint names and a shape too weak on its own (bare
digits in a column named ``ssn`` or ``mobile``).

A column's prediction is its best suggestion's type (``govern.monitor.classify``, the demo
policy's tags, the default minimum confidence); precision, recall and F1 are computed per type
over all worlds' columns. Timing: ``classify_table`` over each world (the sample is the world:
``--rows`` values per column), best of ``--repeat``, scaled to 100 columns × 10,000 rows.
Targets: F1 ≥ 0.95 for types with a check digit (payment_card, iban, national_id), ≥ 0.85 for
ssn, phone and email; ≤ 1 s per 100 columns × 10,000 rows.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from importlib import import_module
from pathlib import Path

import phonenumbers
import pyarrow as pa
from stdnum import ean, luhn
from stdnum import iban as stdnum_iban
from stdnum.fr import nir
from stdnum.no import fodselsnummer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from govern.monitor.classify import classify_table  # noqa: E402
from govern.policy.decide import Decider  # noqa: E402
from govern.policy.load import load_policy  # noqa: E402

TYPES = ("payment_card", "iban", "national_id", "ssn", "phone", "email")
CHECK_DIGIT = ("payment_card", "iban", "national_id")
TARGETS = {t: (0.95 if t in CHECK_DIGIT else 0.85) for t in TYPES}
SECONDS_PER_100x10K = 1.0

Gen = Callable[[random.Random], str]


def digits(r: random.Random, n: int) -> str:
    return "".join(r.choice(string.digits) for _ in range(n))


def birth(r: random.Random) -> date:
    return date(1940, 1, 1) + timedelta(days=r.randrange(0, 365 * 65))


# -- national ids: a candidate of the right shape (valid dates), kept or dropped by the check ------
def _cpf(r: random.Random) -> str:
    d = [int(c) for c in digits(r, 9)]
    for n in (10, 11):
        d.append((sum(w * x for w, x in zip(range(n, 1, -1), d, strict=False)) * 10 % 11) % 10)
    s = "".join(map(str, d))
    return f"{s[:3]}.{s[3:6]}.{s[6:9]}-{s[9:]}"


def _be_nn(r: random.Random) -> str:
    b = birth(r)
    base = f"{b:%y%m%d}{r.randrange(1, 998):03d}"
    check = 97 - int(("2" if b.year >= 2000 else "") + base) % 97
    return f"{base[:2]}.{base[2:4]}.{base[4:6]}-{base[6:9]}.{check:02d}"


def _nir(r: random.Random) -> str:
    b = birth(r)
    body = f"{r.choice('12')}{b:%y%m}{r.randrange(1, 96):02d}{r.randrange(1, 990):03d}{r.randrange(1, 999):03d}"
    return f"{body} {nir.calc_check_digits(body)}"


def _fodsels(r: random.Random) -> str:
    b = birth(r)
    base = f"{b:%d%m%y}{(r.randrange(0, 500) if b.year < 2000 else r.randrange(500, 1000)):03d}"
    d1 = fodselsnummer.calc_check_digit1(base)
    return base + d1 + fodselsnummer.calc_check_digit2(base + d1)


NATIONAL: dict[str, Gen] = {
    "nl.bsn": lambda r: digits(r, 9),
    "ca.sin": lambda r: f"{r.choice('1234679')}{digits(r, 2)} {digits(r, 3)} {digits(r, 3)}",
    "gb.nhs": lambda r: f"{r.randrange(400, 999)} {digits(r, 3)} {digits(r, 4)}",
    "fr.nir": _nir,
    "be.nn": _be_nn,
    "es.dni": lambda r: digits(r, 8) + r.choice("TRWAGMYFPDXBNJZSQVHLCKE"),
    "es.nie": lambda r: r.choice("XYZ") + digits(r, 7) + r.choice("TRWAGMYFPDXBNJZSQVHLCKE"),
    "it.codicefiscale": lambda r: ("".join(r.choice(string.ascii_uppercase) for _ in range(6)) + f"{birth(r):%y}"
                                   + r.choice("ABCDEHLMPRST") + f"{r.randrange(1, 29) + r.choice((0, 40)):02d}"
                                   + r.choice("ABCDEFGHILM") + digits(r, 3) + r.choice(string.ascii_uppercase)),
    "pl.pesel": lambda r: (lambda b: f"{b:%y}{b.month + (20 if b.year >= 2000 else 0):02d}{b:%d}{digits(r, 5)}")(
        birth(r)),
    "no.fodselsnummer": _fodsels,
    "se.personnummer": lambda r: f"{birth(r):%y%m%d}-{digits(r, 4)}",
    "fi.hetu": lambda r: (lambda b: f"{b:%d%m%y}{'-' if b.year < 2000 else 'A'}{r.randrange(2, 899):03d}"
                          + r.choice("0123456789ABCDEFHJKLMNPRSTUVWXY"))(birth(r)),
    "br.cpf": _cpf,
    "in_.aadhaar": lambda r: (lambda s: f"{s[:4]} {s[4:8]} {s[8:11]}{r.choice(string.digits)}")(
        r.choice("23456789") + digits(r, 10)),
    "ch.ssn": lambda r: (lambda s: f"{s[:3]}.{s[3:7]}.{s[7:11]}.{s[11:12]}{r.choice(string.digits)}")(
        "756" + digits(r, 9)),
    "cn.ric": lambda r: f"{r.choice(['110101', '310104', '440305', '510107'])}{birth(r):%Y%m%d}{digits(r, 3)}"
                        f"{r.choice('0123456789X')}",
}


def wrong_check(candidate: Gen) -> Gen:
    """A lookalike: the candidate with its last character (the check digit) replaced."""
    def gen(r: random.Random) -> str:
        v = candidate(r)
        return v[:-1] + r.choice(string.digits if v[-1].isdigit() else string.ascii_uppercase)
    return gen


def pool(r: random.Random, candidate: Gen, valid: Callable[[str], bool], size: int, want: bool) -> list[str]:
    """``size`` candidates that pass (``want``) or, with a wrong check digit, fail the check."""
    out: list[str] = []
    tries = 0
    make = candidate if want else wrong_check(candidate)
    while len(out) < size and tries < size * 400:
        tries += 1
        v = make(r)
        if valid(v) == want:
            out.append(v)
    if len(out) < size:
        raise RuntimeError(f"could not generate {size} values (got {len(out)})")
    return out


# -- payment cards, IBANs, SSNs, phones, emails ------------------------------------------------------------
_CARD_PREFIXES = (("4", 16), ("4", 13), ("51", 16), ("55", 16), ("2223", 16), ("34", 15), ("37", 15), ("6011", 16),
                  ("65", 16), ("3530", 16), ("62", 16))


def card(r: random.Random, valid: bool) -> str:
    prefix, length = r.choice(_CARD_PREFIXES)
    body = prefix + digits(r, length - len(prefix) - 1)
    check = int(luhn.calc_check_digit(body))
    number = body + str(check if valid else (check + r.randrange(1, 10)) % 10)
    style = r.random()
    if style < 0.4:
        return number
    sep = " " if style < 0.8 else "-"
    if length == 15:
        return sep.join((number[:4], number[4:10], number[10:]))
    return sep.join(number[i:i + 4] for i in range(0, length, 4))


_IBAN_BBAN = {"DE": lambda r: digits(r, 18), "GB": lambda r: "".join(r.choice("ABCDNW") for _ in range(4)) + digits(r, 14),
              "NL": lambda r: r.choice(["ABNA", "INGB", "RABO", "TRIO"]) + digits(r, 10),
              "AT": lambda r: digits(r, 16), "CH": lambda r: digits(r, 17), "IE": lambda r: "AIBK" + digits(r, 14),
              "PL": lambda r: digits(r, 24), "SE": lambda r: digits(r, 20)}


def iban(r: random.Random, valid: bool) -> str:
    country = r.choice(sorted(_IBAN_BBAN))
    bban = _IBAN_BBAN[country](r)
    check = stdnum_iban.calc_check_digits(country + "00" + bban)
    if not valid:
        check = f"{(int(check) + r.randrange(1, 90)) % 97 + 2:02d}"
    number = country + check + bban
    return stdnum_iban.format(number) if r.random() < 0.5 and valid else (
        " ".join(number[i:i + 4] for i in range(0, len(number), 4)) if r.random() < 0.5 else number)


def ssn(r: random.Random, valid: bool) -> str:
    if valid:
        area = r.choice([a for a in range(1, 900) if a != 666])
        return f"{area:03d}-{r.randrange(1, 100):02d}-{r.randrange(1, 10000):04d}"
    kind = r.random()  # never issued: ITINs (9xx), area 000 or 666, group 00
    if kind < 0.5:
        return f"9{digits(r, 2)}-{r.choice(['70', '78', '88', '90', '94'])}-{digits(r, 4)}"
    if kind < 0.7:
        return f"{r.choice(['000', '666'])}-{r.randrange(1, 100):02d}-{digits(r, 4)}"
    return f"{r.randrange(1, 900):03d}-00-{digits(r, 4)}"


_PHONE_REGIONS = ("US", "GB", "DE", "FR", "NL", "ES", "IT", "IN", "BR", "AU", "JP", "CA", "MX")
_US_AREAS = ("201", "212", "213", "305", "312", "404", "415", "503", "512", "617", "646", "702", "718", "805", "917")


def phone(r: random.Random) -> str:
    region = r.choice(_PHONE_REGIONS)
    if region == "US":
        n = f"{r.choice(_US_AREAS)}{r.randrange(200, 1000)}{digits(r, 4)}"
        return r.choice([f"({n[:3]}) {n[3:6]}-{n[6:]}", f"{n[:3]}-{n[3:6]}-{n[6:]}", f"{n[:3]}.{n[3:6]}.{n[6:]}",
                         f"+1 {n[:3]} {n[3:6]} {n[6:]}", f"+1-{n[:3]}-{n[3:6]}-{n[6:]}"])
    kind = r.choice([phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE])
    example = phonenumbers.example_number_for_type(region, kind)
    for _ in range(50):
        national = str(example.national_number)
        candidate = phonenumbers.PhoneNumber(country_code=example.country_code,
                                             national_number=int(national[:-4] + digits(r, 4)))
        if phonenumbers.is_valid_number(candidate):
            fmt = r.choice([phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.E164])
            return phonenumbers.format_number(candidate, fmt)
    return phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)


_FIRST = ("anna", "bob", "chen", "dmitri", "eva", "farid", "grace", "hiro", "ines", "jon", "kofi", "lena")
_LAST = ("smith", "garcia", "muller", "rossi", "kowalski", "tanaka", "okafor", "dubois", "silva", "nguyen")
_DOMAINS = ("example.com", "mail.example.org", "corp.example.co.uk", "example.net", "uni.example.edu")


def email(r: random.Random) -> str:
    f, la, d = r.choice(_FIRST), r.choice(_LAST), r.choice(_DOMAINS)
    local = r.choice([f"{f}.{la}", f"{f}{r.randrange(1, 999)}", f"{f[0]}{la}", f"{f}.{la}+news", f"{f}_{la}"])
    value = f"{local}@{d}"
    return value.upper() if r.random() < 0.05 else value


# -- adversarial negatives ------------------------------------------------------------------------------
def _ts(r: random.Random) -> date:
    return date(2015, 1, 1) + timedelta(days=r.randrange(0, 3650))


def _imei(r: random.Random) -> str:
    body = r.choice(["35", "86", "01", "99"]) + digits(r, 12)
    return body + luhn.calc_check_digit(body)


def _isbn(r: random.Random) -> str:
    body = "978" + digits(r, 9)
    return body + ean.calc_check_digit(body)


ADVERSARIAL: dict[str, Gen] = {
    "version": lambda r: ".".join(str(r.randrange(0, 20)) for _ in range(r.choice((2, 3, 4)))),
    "order_ref": lambda r: f"ORD-{r.randrange(2015, 2026)}-{r.randrange(0, 10**6):06d}",
    "order_id": lambda r: str(r.randrange(10**9, 10**10)),
    "id9": lambda r: str(r.randrange(10**8, 10**9)),
    "id16": lambda r: str(r.randrange(10**15, 10**16)),
    "id12": lambda r: str(r.randrange(10**11, 10**12)),
    "zip": lambda r: f"{r.randrange(501, 99951):05d}",
    "zip_plus4": lambda r: f"{r.randrange(501, 99951):05d}-{r.randrange(0, 10000):04d}",
    "date": lambda r: _ts(r).isoformat(),
    "timestamp": lambda r: f"{_ts(r).isoformat()} {r.randrange(24):02d}:{r.randrange(60):02d}:{r.randrange(60):02d}",
    "iso_timestamp": lambda r: f"{_ts(r).isoformat()}T{r.randrange(24):02d}:{r.randrange(60):02d}:00Z",
    "epoch_ms": lambda r: str(r.randrange(1_400_000_000_000, 1_800_000_000_000)),
    "imei": _imei,
    "isbn13": _isbn,
    "uuid": lambda r: "-".join("".join(r.choice("0123456789abcdef") for _ in range(n)) for n in (8, 4, 4, 4, 12)),
    "ip": lambda r: ".".join(str(r.randrange(1, 255)) for _ in range(4)),
    "amount": lambda r: f"{r.randrange(0, 100000) / 100:.2f}",
    "count": lambda r: str(r.randrange(0, 50)),
    "free_text": lambda r: r.choice(["please write to ", "contact ", "cc: ", "sent by "]) + email(r)
                           + r.choice([" for details", " today", "", " (urgent)"]),
    "yes_no": lambda r: r.choice(["yes", "no", "Y", "N"]),
    "phone_like_date": lambda r: f"{_ts(r):%d-%m-%Y}",
    "hex": lambda r: "".join(r.choice("0123456789abcdef") for _ in range(40)),
}
# Negatives whose names carry a hint the values contradict.
HINTED_NEGATIVES = {"timestamp": "email_sent_at", "yes_no": "ssn_verified", "count": "phone_count",
                    "iso_timestamp": "credit_card_updated_at"}


# -- a world ---------------------------------------------------------------------------------------
def column(r: random.Random, rows: int, gen: Gen) -> list[str | None]:
    """``rows`` values; 2 % garbled or missing."""
    out: list[str | None] = []
    for _ in range(rows):
        x = r.random()
        out.append(None if x < 0.01 else ("n/a" if x < 0.02 else gen(r)))
    return out


def from_pool(values: list[str]) -> Gen:
    return lambda r: r.choice(values)


def world(seed: int, columns: int, rows: int, pool_size: int) -> tuple[pa.Table, dict[str, str]]:
    """A table and each column's label ('none' for negatives)."""
    r = random.Random(seed)
    variants = sorted(NATIONAL)
    specs: list[tuple[str, str, Gen]] = []  # (label, name hint or '', generator)
    for i in range(columns):
        kind = r.random()
        if kind < 0.5:  # a positive
            label = TYPES[i % len(TYPES)] if kind < 0.45 else r.choice(TYPES)
            name = ""
            if label == "national_id":
                v = r.choice(variants)
                gen = from_pool(pool(r, NATIONAL[v], _stdnum_valid(v), pool_size, True))
            elif label == "payment_card":
                gen = lambda rr: card(rr, True)  # noqa: E731
            elif label == "iban":
                gen = lambda rr: iban(rr, True)  # noqa: E731
            elif label == "ssn":
                if r.random() < 0.2:  # bare digits: a hint name makes them count
                    name = "ssn"
                    gen = lambda rr: ssn(rr, True).replace("-", "")  # noqa: E731
                else:
                    gen = lambda rr: ssn(rr, True)  # noqa: E731
            elif label == "phone":
                if r.random() < 0.15:
                    name = "mobile"
                    gen = lambda rr: f"{rr.choice(_US_AREAS)}{rr.randrange(200, 1000)}{digits(rr, 4)}"  # noqa: E731
                else:
                    gen = phone
            else:
                gen = email
            specs.append((label, name, gen))
        elif kind < 0.72:  # a checksum-invalid lookalike
            which = r.choice(("payment_card", "iban", "national_id", "ssn"))
            if which == "national_id":
                v = r.choice(variants)
                gen = from_pool(pool(r, NATIONAL[v], _stdnum_valid(v), pool_size, False))
            else:
                gen = {"payment_card": lambda rr: card(rr, False), "iban": lambda rr: iban(rr, False),
                       "ssn": lambda rr: ssn(rr, False)}[which]
            specs.append(("none", "", gen))
        else:  # adversarial
            key = r.choice(sorted(ADVERSARIAL))
            specs.append(("none", HINTED_NEGATIVES.get(key, "") if r.random() < 0.5 else "", ADVERSARIAL[key]))
    arrays, names, labels = [], [], {}
    for i, (label, hint, gen) in enumerate(specs):
        name = f"{hint}_{i:03d}" if hint else f"col_{i:03d}"
        arrays.append(pa.array(column(r, rows, gen), pa.string()))
        names.append(name)
        labels[name] = label
    return pa.Table.from_arrays(arrays, names=names), labels


def _stdnum_valid(module: str) -> Callable[[str], bool]:
    return import_module(f"stdnum.{module}").is_valid


# -- scoring --------------------------------------------------------------------------------------------
def score(pairs: list[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """Per type: precision, recall, F1 and counts from (label, predicted) pairs."""
    out = {}
    for t in TYPES:
        tp = sum(1 for lab, pred in pairs if lab == t and pred == t)
        fp = sum(1 for lab, pred in pairs if lab != t and pred == t)
        fn = sum(1 for lab, pred in pairs if lab == t and pred != t)
        p = tp / (tp + fp) if tp + fp else 1.0
        rc = tp / (tp + fn) if tp + fn else 1.0
        out[t] = {"precision": p, "recall": rc, "f1": 2 * p * rc / (p + rc) if p + rc else 0.0, "columns": tp + fn,
                  "tp": tp, "fp": fp, "fn": fn}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", type=int, default=5)
    ap.add_argument("--columns", type=int, default=100)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--pool", type=int, default=1_000, help="distinct valid values per national-id column")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--verbose", action="store_true", help="print each misclassified column (label and prediction)")
    args = ap.parse_args(argv)

    policy = load_policy(ROOT / "policies")
    decider = Decider(policy)
    pairs: list[tuple[str, str]] = []
    seconds: list[float] = []
    for w in range(args.worlds):
        table, labels = world(args.seed * 1000 + w, args.columns, args.rows, args.pool)
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = classify_table(table, "benchmark", policy, decider)
            best = min(best, time.perf_counter() - start)
        seconds.append(best)
        for col in result.columns:
            predicted = col.best.type if col.best is not None and col.best.type in TYPES else "none"
            pairs.append((labels[col.column], predicted))
            if args.verbose and predicted != labels[col.column]:
                print(f"  world {w} {col.column}: label {labels[col.column]}, predicted {predicted}"
                      f" ({col.best.confidence if col.best else '-'})")
    scores = score(pairs)
    per_100x10k = sum(seconds) / len(seconds) * (100 / args.columns) * (10_000 / args.rows)
    print(f"classify benchmark: {args.worlds} worlds x {args.columns} columns x {args.rows:,} rows (seed {args.seed})")
    print(f"{'type':<14}{'columns':>8}{'precision':>11}{'recall':>8}{'F1':>7}{'target':>8}")
    ok = True
    for t in TYPES:
        s = scores[t]
        hit = s["f1"] >= TARGETS[t]
        ok &= hit
        print(f"{t:<14}{s['columns']:>8}{s['precision']:>11.3f}{s['recall']:>8.3f}{s['f1']:>7.3f}"
              f"{TARGETS[t]:>8.2f}  {'PASS' if hit else 'MISS'}")
    fast = per_100x10k <= SECONDS_PER_100x10K
    print(f"time: {per_100x10k:.3f} s per 100 columns x 10,000 rows (target {SECONDS_PER_100x10K} s)  "
          f"{'PASS' if fast else 'MISS'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"worlds": args.worlds, "columns": args.columns, "rows": args.rows,
                                         "seed": args.seed, "scores": scores, "targets": TARGETS,
                                         "seconds_per_100_columns_10k_rows": per_100x10k,
                                         "seconds_per_world": seconds}, indent=2) + "\n")
    return 0 if ok and fast else 1


if __name__ == "__main__":
    sys.exit(main())
