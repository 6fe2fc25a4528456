"""The built-in mask functions; importing this package registers them all.

Restrictiveness order (``MaskFunction.rank``; 0 = most restrictive). When a column carries
several tags, the plan compiler keeps the mask with the smallest ``order_key`` = (rank,
*strictness(params)*):

==  ====================  ===================================================================
 0  null                  every value becomes null (same type)
 1  redact                constant text
 2  hash                  keyed HMAC pseudonym, not reversible
 3  tokenize              keyed, deterministic, reversible with ``reidentify``
 4  generalize            year/month, numeric bucket, string prefix
 5  randomized_response   value kept with probability p (smaller p is stricter)
 6  noise                 bounded deterministic noise (larger scale is stricter)
 7  date_shift            per-subject date shift (larger max_days is stricter)
 8  email_domain          only the domain survives
 9  show_first/show_last  N characters survive (smaller N is stricter)
10  regex_replace         whatever the pattern leaves
==  ====================  ===================================================================

Each function has an Arrow form and a DuckDB SQL form that agree bit for bit (property-tested
in ``tests/mask``), and is implemented for exactly the type families in ``accepts``; any other
(mask × type) pair raises ``MaskError`` from ``check_type``. Keys reach masks only as HKDF
subkeys (:mod:`govern.mask.keys`); SQL forms bind them as parameters.
"""

from __future__ import annotations

from govern.mask.functions import basic, generalize, partial, perturb, pseudonym, tokenize
from govern.mask.functions.tokenize import register_duckdb_udfs, reidentify

__all__ = ["basic", "generalize", "partial", "perturb", "pseudonym", "register_duckdb_udfs",
           "reidentify", "tokenize"]
