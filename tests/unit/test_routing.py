"""Route table: longest prefix, region, default, no_route, masked dial targets, config errors."""

from __future__ import annotations

import pytest

from reffection_ari.errors import ConfigError, ReffectionError
from reffection_ari.routing import Route, RouteTable

from .tokens_support import LEEDS, LONDON, NANP, RU_MOBILE, SYDNEY_MOBILE, num

TABLE = RouteTable.from_config(
    [
        {"prefix": "+44", "dial": "PJSIP/{e164}@uk-trunk"},
        {"prefix": "+44113", "dial": "PJSIP/0{national}@leeds-gw", "trunk": "leeds"},
        {"region": "RU", "dial": "PJSIP/8{national}@ru-trunk"},
        {"region": "AU", "dial": "SIP/au/{digits}"},
    ],
    default="PJSIP/{e164}@partner-trunk",
)


@pytest.mark.parametrize(
    ("number", "dial", "trunk"),
    [
        (LONDON, f"PJSIP/{LONDON}@uk-trunk", "uk-trunk"),
        (LEEDS, "PJSIP/01134960442@leeds-gw", "leeds"),
        (RU_MOBILE, "PJSIP/89161234567@ru-trunk", "ru-trunk"),
        (SYDNEY_MOBILE, "SIP/au/61491570156", "SIP"),
        (NANP, f"PJSIP/{NANP}@partner-trunk", "partner-trunk"),
    ],
)
def test_routes(number: str, dial: str, trunk: str) -> None:
    target = TABLE.resolve(num(number))
    assert target.dial_string == dial and target.trunk == trunk


def test_dial_target_is_masked() -> None:
    t = TABLE.resolve(num(LONDON))
    for text in (repr(t), str(t), f"{t}", t.masked):
        assert "7946" not in text
    assert t.masked == "PJSIP/+44 ********@uk-trunk"


def test_no_route() -> None:
    table = RouteTable([Route("PJSIP/{e164}@uk", prefix="+44")])
    with pytest.raises(ReffectionError) as ei:
        table.resolve(num(NANP))
    assert ei.value.code == "no_route"


@pytest.mark.parametrize(
    "routes",
    [
        [{"prefix": "44", "dial": "PJSIP/{e164}@x"}],
        [{"prefix": "+44", "region": "GB", "dial": "PJSIP/{e164}@x"}],
        [{"prefix": "+44", "dial": "PJSIP/{number}@x"}],
        [{"prefix": "+44", "dial": "PJSIP/fixed@x"}],
        [{"prefix": "+44", "dial": "PJSIP/{e164}@x&PJSIP/{e164}@y"}],
        [{"region": "gb", "dial": "PJSIP/{e164}@x"}],
        [{"prefix": "+44", "dial": "PJSIP/{e164}@x"}, {"prefix": "+44", "dial": "PJSIP/{e164}@y"}],
        [{"prefix": "+44", "dial": "PJSIP/{e164}@x", "extra": 1}],
    ],
)
def test_config_errors_name_the_key(routes: list[dict[str, object]]) -> None:
    with pytest.raises(ConfigError) as ei:
        RouteTable.from_config(routes)
    assert ei.value.key.startswith("routes[")
