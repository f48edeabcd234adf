"""Helpers shared by the token-layer tests: a controllable clock and a wired service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reffection_ari.phone import PhoneNumber
from reffection_ari.tokens import Keyring, SqliteVault, TokenCodec, TokenService
from tests.leakguard import register_number

DAY = 86400.0
# Numbers from fictional/drama ranges that phonenumbers still accepts as valid.
LONDON = register_number("+442079460018")
LEEDS = register_number("+441134960442")
SYDNEY_MOBILE = register_number("+61491570156")
NANP = register_number("+12015550123")
RU_MOBILE = register_number("+79161234567")


class FakeClock:
    def __init__(self, start: float = 20_000 * DAY + 3600) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance_days(self, days: float) -> None:
        self.now += days * DAY


@dataclass
class Wired:
    ring: Keyring
    codec: TokenCodec
    vault: SqliteVault
    service: TokenService
    clock: FakeClock


def wire(tmp_path: Path, **service_kw: int) -> Wired:
    clock = FakeClock()
    ring = Keyring.generate(tmp_path / "keyring.json")
    codec = TokenCodec(ring, clock=clock)
    vault = SqliteVault(tmp_path / "vault.db", ring.lookup_key(), clock=clock)
    return Wired(ring, codec, vault, TokenService(codec, vault, **service_kw), clock)


def num(text: str) -> PhoneNumber:
    return PhoneNumber.parse(text)
