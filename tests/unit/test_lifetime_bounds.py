"""Lifetimes are bounded for everyone, and stored state is made safe before anything uses it (pure)."""

import json
import math

import pytest

from cleanup_service.app import may_use
from mlhubspawner.options import MAX_DAYS_TO_LIVE, OptionsError, parse_days_to_live, parse_options
from mlhubspawner.policy import Policy
from mlhubspawner.spawner_base import sane_lifetime, stored_options

NOW = 1_800_000_000.0
DAY = 86400


@pytest.mark.parametrize(
    "value", [1e7, "1e7", 3651, "1e308", "inf", float("nan"), "-inf", 0, -1, True, "x", None]
)
def test_days_beyond_the_ceiling_or_not_numbers_are_refused(value):
    with pytest.raises(OptionsError) as e:
        parse_days_to_live(value)
    assert e.value.field == "days_to_live"


def test_the_ceiling_holds_without_any_policy_maximum():
    policy = Policy(default_image="a")  # max_days_to_live None
    assert parse_options({"days_to_live": MAX_DAYS_TO_LIVE}, policy).days_to_live == MAX_DAYS_TO_LIVE
    assert parse_options({}, policy).days_to_live is None  # never expires
    with pytest.raises(OptionsError, match="3650"):
        parse_options({"days_to_live": 1e7}, policy)
    with pytest.raises(OptionsError, match="at most 5"):
        parse_days_to_live(6, limit=5)


@pytest.mark.parametrize(
    "created, expiration, expected",
    [
        (NOW - DAY, NOW + DAY, (NOW - DAY, NOW + DAY)),  # sane values are kept
        (NOW - DAY, 0, (NOW - DAY, 0.0)),  # never expires
        (NOW - DAY, math.inf, (NOW - DAY, NOW - DAY + MAX_DAYS_TO_LIVE * DAY)),
        (NOW - DAY, 1e300, (NOW - DAY, NOW - DAY + MAX_DAYS_TO_LIVE * DAY)),
        (NOW - DAY, math.nan, (NOW - DAY, NOW - DAY + MAX_DAYS_TO_LIVE * DAY)),
        (NOW - DAY, "soon", (NOW - DAY, NOW - DAY + MAX_DAYS_TO_LIVE * DAY)),
        (NOW - DAY, -5, (NOW - DAY, NOW - DAY + MAX_DAYS_TO_LIVE * DAY)),
        ("yesterday", NOW + DAY, (0.0, NOW + DAY)),
        (math.inf, math.inf, (0.0, NOW + MAX_DAYS_TO_LIVE * DAY)),
        (NOW + 100 * DAY, 0, (0.0, 0.0)),  # created in the future: unknown
    ],
)
def test_stored_lifetimes_are_made_safe(created, expiration, expected):
    result = sane_lifetime(created, expiration, NOW)
    assert result == pytest.approx(expected)
    json.dumps(result, allow_nan=False)


def test_stored_options_are_kept_clamped_or_dropped():
    good = stored_options({"image": "i:1", "days_to_live": 7, "env": {"A": "b"}})
    assert good.days_to_live == 7 and good.env == {"A": "b"}
    assert stored_options({"image": "i:1", "days_to_live": 1e308}).days_to_live == MAX_DAYS_TO_LIVE
    assert stored_options({"image": "i:1", "days_to_live": None}).days_to_live is None
    for junk in (
        {"image": 7},
        {"cpu_limit": 1},
        {"image": "i", "env": "A=b"},
        {"image": "i", "cpu_limit": "x"},
        {"image": "i", "gpus": "1", "gpu_type": ["nvidia.com/gpu"]},
        [1],
    ):
        assert stored_options(junk) is None


@pytest.mark.parametrize(
    "scopes, read, write",
    [
        (["custom:mlhub-cleanup:read"], True, False),
        (["custom:mlhub-cleanup:write"], True, True),
        (["admin:servers", "admin:users"], True, True),  # an admin's full token
        (["admin:servers!user=alice"], False, False),  # a filtered admin is not admin of everyone
        (["read:users:name"], False, False),  # an admin's narrowed token
        ([], False, False),
        (None, False, False),
    ],
)
def test_the_cleanup_service_goes_by_scopes(scopes, read, write):
    assert may_use(scopes, write=False) is read
    assert may_use(scopes, write=True) is write
