"""Column-name hints, matched on whole tokens only.

A column name is split into lower-case tokens at punctuation, at case changes and at digits
(``customerEmail2`` → ``customer email 2``), and a hint is a run of whole tokens: ``phone``
matches ``phone``, ``home_phone`` and ``PhoneNumber`` but never ``phoneme``, and no hint ever
matches inside a word (``person_id`` holds no ``son``, ``reason`` no ``son``). Substring
matching is what makes context-based detectors flag everything (presidio #1063).

Some hints only count when they are the whole name (``name``: ``product_name`` is not a
person's name); :data:`HINTS` lists every hint once, with the type it points to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["HINTS", "Hint", "hint_for", "tokens"]

_SPLIT = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def tokens(name: str) -> tuple[str, ...]:
    """``"customerEmail_2"`` → ``("customer", "email", "2")``; ``"SSN"`` → ``("ssn",)``."""
    return tuple(t.lower() for t in _SPLIT.findall(name))


@dataclass(frozen=True)
class Hint:
    type: str
    phrase: tuple[str, ...]  # consecutive whole tokens
    whole: bool = False  # the phrase must be the whole name


def _h(type_: str, *phrases: str, whole: bool = False) -> list[Hint]:
    return [Hint(type_, tuple(p.split()), whole) for p in phrases]


# Listed once. Order breaks ties between hints of equal length: specific types come first
# (``email address`` is an email, not an address).
HINTS: tuple[Hint, ...] = tuple([
    *_h("payment_card", "card number", "card no", "card num", "credit card", "debit card", "cardnumber",
        "creditcard", "ccn", "cc number"),
    *_h("iban", "iban", "bank account", "account iban"),
    *_h("ssn", "ssn", "social security", "social security number", "socsec"),
    *_h("national_id", "national id", "national identifier", "nin", "bsn", "nhs number", "nhs no", "sin number",
        "personnummer", "pesel", "nir", "cpf", "aadhaar", "dni", "nie", "codice fiscale", "tax id",
        "passport", "passport number", "idnr", "steuer id", "hetu", "fodselsnummer"),
    *_h("email", "email", "e mail", "mail address", "email address", "emailaddress"),
    *_h("phone", "phone", "telephone", "tel", "mobile", "cellphone", "cell phone", "fax", "msisdn",
        "phone number", "phonenumber"),
    *_h("person_name", "name", whole=True),
    *_h("person_name", "first name", "last name", "full name", "given name", "family name", "middle name",
        "maiden name", "surname", "firstname", "lastname", "fullname", "forename", "patient name",
        "customer name", "person name", "employee name", "user name", "contact name"),
    *_h("birth_date", "birth", "dob", "birthdate", "birthday", "date of birth"),
    *_h("postal_code", "zip", "zipcode", "zip code", "postcode", "postal code", "postal"),
    *_h("address", "address", "street", "street address", "home address", "addr"),
    *_h("ip_address", "ip", "ip address", "ipaddress", "ipv4", "ipv6"),
    *_h("health", "diagnosis", "diagnoses", "icd", "icd10", "medication", "prescription"),
    *_h("demographic", "gender", "sex", "age", "ethnicity", "race"),
    *_h("financial", "salary", "income", "wage", "wages", "charges", "net worth"),
    *_h("person_identifier", "patient id", "customer id", "person id", "user id", "member id", "employee id",
        "client id", "subscriber id"),
])


def _contains(words: tuple[str, ...], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(words[i:i + n] == phrase for i in range(len(words) - n + 1))


def hint_for(name: str) -> Hint | None:
    """The most specific hint the column name carries (the longest phrase; ties: list order)."""
    words = tokens(name)
    best: Hint | None = None
    for hint in HINTS:
        if (words == hint.phrase) if hint.whole else _contains(words, hint.phrase):
            if best is None or len(hint.phrase) > len(best.phrase):
                best = hint
    return best
