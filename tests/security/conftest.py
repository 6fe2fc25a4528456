"""The identity test kit's key fixtures, for attacks that mint real JWTs."""

from tests.identity.conftest import jwks_file, keys  # noqa: F401  (fixtures)
