"""Finding: SQL validation was quadratic, and it ran before authorization and outside any deadline.

The attack: ``validate`` rendered the subtree of every ``exp.Func`` node to learn the name DuckDB
would call (``node.sql()``), and ``OR``/``AND`` are Funcs, so a long boolean chain re-rendered
itself once per link: a 10 KB query from a principal with no grants burned 22 s of CPU, 45 KB
pinned a core for over 6 minutes. Any statement within ``sql_max_length`` (100,000 characters)
must now be validated or refused in linear time: about a second at most here.

Each statement below is built to be a worst case and filled to just under 100,000 characters:
long OR/AND chains, nesting as deep as the parser allows (and deeper: that must be a clean
``SqlError``, never a ``RecursionError``), long CASE, IN lists and array literals, many small
subqueries, CTEs and set operations, and refusals found at the very end of a long text. Each
runs in a child process (killed after ``KILL_AFTER`` seconds, so the unfixed code fails instead
of hanging), timed there with ``time.perf_counter`` and ``time.process_time``; the bound is
``BOUND`` = 2 s of CPU on the 2-core development machine. Before the fix, 22 of the 32 cases ran
past 20 s and were killed. Measured after it (2 cores shared with other work): 0.1-0.9 s each,
the worst the 100 KB OR chain, the 30-deep nested calls and the 1,500 table functions, where
sqlglot's own tokenizer and parser take about two thirds of the time. The bound was 1 s until the
same machine ran 1.4 times slower on another day (2026-12-06: the same pure-Python loop took
0.87-1.22 s of CPU within an hour, and these cases 1.0-1.4 s): 2 s keeps a tenfold margin below
what the quadratic validation took, so it still fails that, and no longer fails on a slow hour.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection

import pytest

from govern.errors import GovernError
from govern.sql.validate import validate

MAX_LENGTH = 100_000  # the default sql_max_length
BOUND = 2.0  # seconds of CPU per statement (see the module docstring)
KILL_AFTER = 20.0  # the unfixed code takes minutes on most of these: fail, don't hang


def filled(head: str, unit: Callable[[int], str], sep: str, tail: str = "", limit: int = MAX_LENGTH - 100) -> str:
    """``head`` + units joined by ``sep`` + ``tail``, as long as fits in ``limit`` characters."""
    parts: list[str] = []
    size = len(head) + len(tail)
    i = 0
    while True:
        piece = unit(i)
        if size + len(piece) + len(sep) > limit:
            break
        parts.append(piece)
        size += len(piece) + len(sep)
        i += 1
    return head + sep.join(parts) + tail


def nested(head: str, opening: str, core: str, closing: str, tail: str = "", limit: int = MAX_LENGTH - 100) -> str:
    depth = (limit - len(head) - len(core) - len(tail)) // (len(opening) + len(closing))
    return head + opening * depth + core + closing * depth + tail


def repeated_nest(depth: int) -> str:
    """Nests as deep as the parser takes, many times over: each Func re-rendering its subtree
    costs depth² per nest."""
    nest = "abs(" * depth + "x" + ")" * depth
    return filled("SELECT 1 FROM range(1) t(x) WHERE ", lambda i: f"{nest} = {i}", " OR ")


FROM = "SELECT 1 FROM range(1) t(x) WHERE "
CASES: list[tuple[str, str]] = [
    ("OR chain", filled(FROM, lambda i: f"x = {i}", " OR ")),
    ("AND chain", filled(FROM, lambda i: f"x <> {i}", " AND ")),
    ("alternating AND/OR", filled(FROM, lambda i: f"x = {i}", " AND x > 0 OR ")),
    ("OR chain of function calls", filled(FROM, lambda i: f"abs(x) = {i}", " OR ")),
    ("OR chain inside a function call", filled("SELECT coalesce(", lambda i: f"x = {i}", " OR ",
                                               ", false) FROM range(1) t(x)")),
    ("OR chain of CASEs", filled(FROM, lambda i: f"CASE WHEN x = {i} THEN true END", " OR ")),
    ("OR chain of lambdas", filled(FROM, lambda i: f"len(list_transform([x], y -> y + {i})) = 1", " OR ")),
    ("nested calls 30 deep, repeated", repeated_nest(30)),
    ("nested parentheses, as deep as the text allows", nested("SELECT ", "(", "1", ")")),
    ("nested function calls, as deep as the text allows", nested("SELECT ", "abs(", "1", ")")),
    ("nested brackets, as deep as the text allows", nested("SELECT ", "[", "1", "]")),
    ("nested subqueries, as deep as the text allows", nested("SELECT * FROM ", "(SELECT * FROM ", "range(1)", ")")),
    ("nested CASE, as deep as the text allows", nested("SELECT ", "CASE WHEN true THEN ", "1", " END")),
    ("nested NOT, as deep as the text allows", nested("SELECT ", "NOT ", "true", "")),
    ("long CASE", filled("SELECT CASE ", lambda i: f"WHEN x = {i} THEN {i}", " ", " END FROM range(1) t(x)")),
    ("long IN list", filled("SELECT 1 FROM range(1) t(x) WHERE x IN (", str, ", ", ")")),
    ("long array literal", filled("SELECT [", str, ", ", "]")),
    ("coalesce of many arguments", filled("SELECT coalesce(", lambda i: "NULL", ", ", ", 1)")),
    ("many small subqueries", filled("SELECT ", lambda i: f"(SELECT {i})", " + ")),
    ("many IN subqueries", filled(FROM, lambda i: f"x IN (SELECT {i})", " OR ")),
    ("many UNION ALL", filled("", lambda i: f"SELECT {i}", " UNION ALL ")),
    ("many CTEs", filled("WITH ", lambda i: f"c{i} AS (SELECT {i})" if i == 0 else f"c{i} AS (SELECT * FROM c{i - 1})",
                         ", ", " SELECT 1")),
    ("many table functions", filled("SELECT 1 FROM ", lambda i: f"range(1) t{i}", ", ")),
    ("long || chain", filled("SELECT ", lambda i: f"'{i}'", " || ")),
    ("long arithmetic chain", filled("SELECT ", str, " + ")),
    ("many ? parameters", filled("SELECT ", lambda i: "?", ", ")),
    ("a refused function at the end of a long chain", filled(FROM, lambda i: f"x = {i}", " OR ",
                                                              " OR getenv('HOME') = ''")),
    ("an unbounded repeat at the end of a long chain", filled(FROM, lambda i: f"x = {i}", " OR ",
                                                               " OR repeat('a', x) = ''")),
    ("a syntax error at the end of a long chain", filled(FROM, lambda i: f"x = {i}", " OR ", " OR OR")),
    ("an invisible character at the end", filled(FROM, lambda i: f"x = {i}", " OR ", " \u200b")),
    ("one long string literal", "SELECT '" + "a" * (MAX_LENGTH - 20) + "'"),
    ("one long comment", "SELECT 1 /*" + "*" * (MAX_LENGTH - 20) + "*/"),
]


def serve(conn: Connection) -> None:
    """The child: validate each text it receives; answer (wall seconds, CPU seconds, outcome)."""
    while True:
        sql = conn.recv()
        start, cpu = time.perf_counter(), time.process_time()
        try:
            validate(sql, max_length=MAX_LENGTH)
            outcome = "ok"
        except GovernError as exc:
            outcome = f"{type(exc).__name__}: {exc.detail}"
        except BaseException as exc:  # the test reports whatever escaped
            outcome = f"ESCAPED {type(exc).__name__}"
        conn.send((time.perf_counter() - start, time.process_time() - cpu, outcome))


class Validator:
    """A child process that validates texts; killed and restarted when one runs too long."""

    def __init__(self) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.process: multiprocessing.process.BaseProcess | None = None
        self.conn: Connection | None = None

    def _start(self) -> None:
        parent, child = self.context.Pipe()
        self.process = self.context.Process(target=serve, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.conn = parent
        self.conn.send("SELECT 1")  # warm up: imports and sqlglot's first-use caches
        self.conn.recv()

    def run(self, sql: str) -> tuple[float, float, str]:
        if self.process is None:
            self._start()
        assert self.conn is not None and self.process is not None
        self.conn.send(sql)
        if not self.conn.poll(KILL_AFTER):
            self.stop()
            return KILL_AFTER, KILL_AFTER, f"still running after {KILL_AFTER:g} s (killed)"
        return self.conn.recv()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.join()
            self.process = None


@pytest.fixture(scope="module")
def validator() -> Iterator[Validator]:
    v = Validator()
    yield v
    v.stop()


def test_the_cases_are_worst_cases() -> None:
    """Each text is within the limit and close to it (the deep ones too: most of it is nesting)."""
    for title, sql in CASES:
        assert MAX_LENGTH - 1_000 < len(sql) <= MAX_LENGTH, (title, len(sql))


@pytest.mark.parametrize("title,sql", CASES, ids=[c[0] for c in CASES])
def test_validation_is_fast_on_worst_cases(validator: Validator, title: str, sql: str) -> None:
    """At most ``BOUND`` seconds of CPU, and twice that of wall time — the best of up to five
    runs when other processes crowd the two cores (a quadratic validation fails all five)."""
    wall, cpu, outcome = validator.run(sql)
    for _ in range(4):
        if (cpu >= BOUND or wall >= 2 * BOUND) and wall < KILL_AFTER:
            again = validator.run(sql)
            wall, cpu, outcome = min(wall, again[0]), min(cpu, again[1]), again[2]
    assert not outcome.startswith("ESCAPED"), outcome  # a clean govern error, never a RecursionError
    assert cpu < BOUND, f"{title}: {cpu:.2f} s of CPU ({outcome[:120]})"
    assert wall < 2 * BOUND, f"{title}: {wall:.2f} s ({outcome[:120]})"


def test_deep_nesting_is_a_clean_error() -> None:
    """Nesting past what the parser can take is refused as too deep (SQLSTATE 54001)."""
    from govern.errors import SqlError

    for sql in (nested("SELECT ", "(", "1", ")", limit=2_000), nested("SELECT ", "abs(", "1", ")", limit=2_000)):
        with pytest.raises(SqlError) as info:
            validate(sql, max_length=MAX_LENGTH)
        assert info.value.extra.get("sqlstate") == "54001"
        assert "nested too deeply" in info.value.detail
