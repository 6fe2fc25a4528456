"""On the demo world (`govern demo`), for every principal, purpose and dataset the policy lets
through, the plan applied in Spark gives exactly what the gateway's Arrow engine gives:
the same schema and the same values, row for row (``Table.equals``)."""

from __future__ import annotations

import pytest
from sparkcheck import plain

import govern_spark
from govern.config import load_settings
from govern.deliver.governor import Governor
from govern.errors import GovernError
from govern.policy.model import local_principal

pytestmark = pytest.mark.xdist_group("spark")  # one worker, one JVM, for all Spark tests


@pytest.fixture(scope="module")
def governor(demo) -> Governor:
    return Governor(load_settings(demo.config))


def test_every_demo_principal_purpose_and_dataset(spark, demo, governor) -> None:
    settings = governor.settings
    keys = govern_spark.KeySource(file=str(settings.masking_key_file), key_id=settings.masking_key_id)
    policy = governor.state.policy
    compared, refused = [], []
    for who in sorted(policy.principals):
        principal = local_principal(policy, who)
        for purpose in sorted(policy.purposes):
            for dataset in sorted(policy.datasets):
                try:
                    plan = governor.plan(principal, dataset, purpose)
                    expected = plain(governor.read(principal, dataset, purpose).reader.read_all())
                except GovernError:
                    refused.append((who, purpose, dataset))
                    continue
                df = spark.read.parquet(str(demo.files[dataset]))
                got = plain(govern_spark.to_arrow(govern_spark.apply_plan(df, plan, keys), plan))
                assert got.schema.equals(expected.schema), (who, purpose, dataset)
                assert got.equals(expected), (who, purpose, dataset)
                compared.append((who, purpose, dataset))
    # every demo principal with grants is compared on both datasets; eve has none
    assert {w for w, _, _ in compared} == {"alice", "bob", "carol", "dave"}
    assert {d for _, _, d in compared} == {"patients", "encounters"}
    assert not [r for r in compared if r[0] == "eve"] and refused
