"""What a sensitive value looks like, and the check that tells it from a lookalike.

Each :class:`Detector` has a *shape* (an anchored RE2 pattern Arrow runs over a whole column
at once) and a *check* (a maintained library's validator, run on a bounded sub-sample of the
values with that shape): Luhn and the card networks' number ranges for payment cards, ISO
13616 mod-97 and each country's format for IBANs (``python-stdnum``), the SSA's rules for US
social security numbers, each country's check digits for national IDs (``python-stdnum``),
Google's numbering plans for phone numbers (``phonenumbers``), and RFC 5321 syntax for email
addresses. The shape alone is cheap and catches too much (order ids look like card numbers,
dates like phone numbers); the check is what keeps precision, and is why a detector's
``check_digit`` matters: a random lookalike passes a check digit one time in ten or less.

``weak`` shapes (nine bare digits for an SSN, a bare digit run for a phone number) are too
common among ids to count on their own: they count only when the column's name says so.

:func:`detectors` lists the detectors once, most specific first (the order breaks ties).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import import_module

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn as stdnum_luhn
from stdnum.us import ssn as stdnum_ssn

__all__ = ["Detector", "card_network", "detectors"]


@dataclass(frozen=True)
class Detector:
    type: str  # the suggestion type (several detectors may share one: national_id)
    label: str  # what a person calls it
    check: str  # the check's name, for the evidence line
    strong: str  # anchored RE2 pattern: the shape counts as evidence on its own
    validate: Callable[[str], bool]
    check_digit: bool
    weak: str | None = None  # a shape that counts only with a name hint
    variant: str | None = None  # e.g. "nl.bsn"
    ignore_case: bool = False


_DIGITS = re.compile(r"[^0-9]")

# Issuer identification number ranges of the card networks (ISO/IEC 7812): (first digits
# low, high, lengths). Data, not an algorithm: the Luhn check itself is python-stdnum's.
_NETWORKS: tuple[tuple[str, int, int, tuple[int, ...]], ...] = (
    ("visa", 4, 4, (13, 16, 19)),
    ("mastercard", 51, 55, (16,)),
    ("mastercard", 2221, 2720, (16,)),
    ("amex", 34, 34, (15,)),
    ("amex", 37, 37, (15,)),
    ("discover", 6011, 6011, (16, 17, 18, 19)),
    ("discover", 644, 649, (16, 17, 18, 19)),
    ("discover", 65, 65, (16, 17, 18, 19)),
    ("jcb", 3528, 3589, (16, 17, 18, 19)),
    ("diners", 300, 305, (14, 15, 16, 17, 18, 19)),
    ("diners", 36, 36, (14, 15, 16, 17, 18, 19)),
    ("diners", 38, 39, (16, 17, 18, 19)),
    ("unionpay", 62, 62, (16, 17, 18, 19)),
    ("maestro", 5018, 5018, (12, 13, 14, 15, 16, 17, 18, 19)),
    ("maestro", 5020, 5020, (12, 13, 14, 15, 16, 17, 18, 19)),
    ("maestro", 5038, 5038, (12, 13, 14, 15, 16, 17, 18, 19)),
    ("maestro", 5893, 5893, (12, 13, 14, 15, 16, 17, 18, 19)),
    ("maestro", 6304, 6304, (12, 13, 14, 15, 16, 17, 18, 19)),
    ("maestro", 6759, 6763, (12, 13, 14, 15, 16, 17, 18, 19)),
)


def card_network(digits: str) -> str | None:
    """The card network whose number range and length ``digits`` fall in, if any."""
    for network, low, high, lengths in _NETWORKS:
        width = len(str(low))
        if len(digits) in lengths and low <= int(digits[:width] or 0) <= high:
            return network
    return None


def _card(value: str) -> bool:
    digits = _DIGITS.sub("", value)
    return 12 <= len(digits) <= 19 and card_network(digits) is not None and stdnum_luhn.is_valid(digits)


def _iban(value: str) -> bool:
    return bool(stdnum_iban.is_valid(value))


def _ssn(value: str) -> bool:
    return bool(stdnum_ssn.is_valid(value))


_LOCAL_DOTS = re.compile(r"^\.|\.\.|\.@")


def _email(value: str) -> bool:
    local, _, domain = value.rpartition("@")
    return len(value) <= 254 and 0 < len(local) <= 64 and not _LOCAL_DOTS.search(value) and len(domain) <= 253


def _phone(regions: tuple[str, ...]) -> Callable[[str], bool]:
    def valid(value: str) -> bool:
        if not 7 <= len(_DIGITS.sub("", value)) <= 15:
            return False
        for region in ((None,) if value.startswith("+") else regions):
            try:
                number = phonenumbers.parse(value, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                return True
        return False
    return valid


def _stdnum(module: str) -> Callable[[str], bool]:
    is_valid = import_module(f"stdnum.{module}").is_valid

    def valid(value: str) -> bool:
        return bool(is_valid(value))
    return valid


_EMAIL = (r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
          r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")

# (stdnum module, label, shape): national identifiers with a check digit or check letter.
_NATIONAL_IDS: tuple[tuple[str, str, str], ...] = (
    ("nl.bsn", "Dutch citizen service number (BSN)", r"^[0-9]{4}\.?[0-9]{2}\.?[0-9]{3}$"),
    ("ca.sin", "Canadian social insurance number", r"^[0-9]{3}[ -]?[0-9]{3}[ -]?[0-9]{3}$"),
    ("gb.nhs", "UK NHS number", r"^[0-9]{3}[ -]?[0-9]{3}[ -]?[0-9]{4}$"),
    ("fr.nir", "French social security number (NIR)",
     r"^[1-478] ?[0-9]{2} ?[0-9]{2} ?(?:[0-9]{2}|2[AaBb]) ?[0-9]{3} ?[0-9]{3} ?[0-9]{2}$"),
    ("be.nn", "Belgian national number", r"^[0-9]{2}\.?[0-9]{2}\.?[0-9]{2}[ -]?[0-9]{3}\.?[0-9]{2}$"),
    ("es.dni", "Spanish DNI", r"^[0-9]{8}-?[A-Za-z]$"),
    ("es.nie", "Spanish NIE", r"^[XYZxyz]-?[0-9]{7}-?[A-Za-z]$"),
    ("it.codicefiscale", "Italian codice fiscale",
     r"^[A-Za-z]{6}[0-9LMNPQRSTUVlmnpqrstuv]{2}[A-Za-z][0-9LMNPQRSTUVlmnpqrstuv]{2}[A-Za-z]"
     r"[0-9LMNPQRSTUVlmnpqrstuv]{3}[A-Za-z]$"),
    ("pl.pesel", "Polish PESEL", r"^[0-9]{11}$"),
    ("no.fodselsnummer", "Norwegian birth number", r"^[0-9]{6} ?[0-9]{5}$"),
    ("se.personnummer", "Swedish personal identity number", r"^(?:[0-9]{2})?[0-9]{6}[-+]?[0-9]{4}$"),
    ("fi.hetu", "Finnish personal identity code", r"^[0-9]{6}[-+A-FU-Ya-fu-y][0-9]{3}[0-9A-Ya-y]$"),
    ("de.idnr", "German tax identification number", r"^[0-9]{2} ?[0-9]{3} ?[0-9]{3} ?[0-9]{3}$"),
    ("br.cpf", "Brazilian CPF", r"^[0-9]{3}\.?[0-9]{3}\.?[0-9]{3}-?[0-9]{2}$"),
    ("in_.aadhaar", "Indian Aadhaar number", r"^[2-9][0-9]{3} ?[0-9]{4} ?[0-9]{4}$"),
    ("ch.ssn", "Swiss social security number (AHV)", r"^756\.?[0-9]{4}\.?[0-9]{4}\.?[0-9]{2}$"),
    ("cn.ric", "Chinese resident identity card", r"^[0-9]{17}[0-9Xx]$"),
)


@lru_cache(maxsize=8)
def detectors(phone_regions: tuple[str, ...] = ("US",)) -> tuple[Detector, ...]:
    """Every detector, most specific first. ``phone_regions``: where a phone number written
    without a leading ``+`` is dialled (the settings' ``monitor.phone_regions``)."""
    regions = tuple(r.upper() for r in phone_regions)
    return (
        Detector("payment_card", "payment card number", "Luhn and card-network ranges",
                 r"^[0-9]{4}[ -]?[0-9]{2,6}[ -]?[0-9]{2,6}(?:[ -]?[0-9]{1,4}){0,2}$", _card, True),
        Detector("iban", "IBAN", "ISO 13616 mod-97 and country format",
                 r"^[A-Za-z]{2}[0-9]{2} ?(?:[A-Za-z0-9]{4} ?){2,7}[A-Za-z0-9]{1,4}$", _iban, True),
        Detector("ssn", "US social security number", "SSA area, group and serial rules",
                 r"^[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}$", _ssn, False, weak=r"^[0-9]{9}$"),
        *(Detector("national_id", label, f"{module} check digit", shape, _stdnum(module), True, variant=module)
          for module, label, shape in _NATIONAL_IDS),
        Detector("email", "email address", "RFC 5321 syntax", _EMAIL, _email, False),
        Detector("phone", "phone number", f"numbering plans ({', '.join(regions) or 'international only'})",
                 r"^(?:\+[0-9]|\(?[0-9]+\)?[ .-])[0-9 ().-]{4,22}[0-9]$", _phone(regions), False,
                 weak=r"^[0-9]{7,15}$"),
    )
