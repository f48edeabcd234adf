"""The facade the daemon and the CLI use: number -> token, token -> subscriber."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..phone import PhoneNumber
from .codec import DecodedToken, TokenCodec, validate_audience
from .vault import BulkItem, ErasureReport, Vault

__all__ = ["ResolvedSubscriber", "TokenService", "audience_for"]

DEFAULT_TTL_DAYS = 90
DEFAULT_BUCKET_DAYS = 7


def audience_for(platform: str, campaign: str | None = None) -> str:
    """``platform`` or ``platform/campaign``, validated."""
    return validate_audience(f"{platform}/{campaign}" if campaign else platform)


def _candidates(audience: str, campaign: str | None) -> list[str]:
    """Audiences a presented token may be bound to, most specific first."""
    validate_audience(audience)
    if "/" in audience or campaign is None:
        return [audience]
    return [audience_for(audience, campaign), audience]


@dataclass(frozen=True)
class ResolvedSubscriber:
    """What the partner side knows about a token's subscriber. ``number`` is masked in repr."""

    subscriber_id: bytes = field(repr=False)
    number: PhoneNumber
    region: str
    time_zones: tuple[str, ...]
    dnc: bool
    audience: str
    expiry_day: int

    @property
    def time_zone(self) -> str | None:
        """The subscriber's zone when the number pins one down; ``None`` when it spans several
        (policy must then respect all of :attr:`time_zones`)."""
        return self.time_zones[0] if len(self.time_zones) == 1 else None

    @property
    def subscriber_ref(self) -> str:
        return self.subscriber_id.hex()


class TokenService:
    """Issues and resolves tokens against one keyring and one vault.

    Expiry policy: a token issued on day D expires at the end of ``D + ttl_days`` rounded up to a
    multiple of ``bucket_days`` (epoch days). So a subscriber re-tokenised for the same audience
    within one bucket gets the *same* token (the platform can de-duplicate), and every token
    lives at least ``ttl_days``.
    """

    def __init__(
        self,
        codec: TokenCodec,
        vault: Vault,
        *,
        ttl_days: int = DEFAULT_TTL_DAYS,
        bucket_days: int = DEFAULT_BUCKET_DAYS,
    ) -> None:
        self.codec = codec
        self.vault = vault
        self.ttl_days = ttl_days
        self.bucket_days = bucket_days

    def _expiry(self, ttl_days: int | None) -> int:
        return self.codec.expiry_day(ttl_days or self.ttl_days, self.bucket_days)

    def issue(
        self,
        number: PhoneNumber,
        audience: str,
        *,
        campaign: str | None = None,
        consent_source: str | None = None,
        consent_at: float | None = None,
        ttl_days: int | None = None,
    ) -> str:
        """Token for ``number`` bound to ``audience`` (and ``campaign`` if given)."""
        aud = audience_for(audience, campaign) if campaign else validate_audience(audience)
        sid = self.vault.ensure_subscriber(number, consent_source=consent_source, consent_at=consent_at)
        return self.codec.encode(sid, aud, self._expiry(ttl_days))

    def issue_many(
        self, items: Sequence[BulkItem], audience: str, run_id: str, *, ttl_days: int | None = None
    ) -> list[str | None]:
        """Bulk :meth:`issue`; ``None`` marks a number repeated within ``run_id``."""
        validate_audience(audience)
        expiry = self._expiry(ttl_days)
        return self.codec.encode_many(self.vault.bulk_ensure(items, run_id), audience, expiry)

    def decode(self, token: str, audience: str, *, campaign: str | None = None) -> DecodedToken:
        """Verify the token only (no vault access)."""
        return self.codec.decode(token, _candidates(audience, campaign))

    def resolve(self, token: str, audience: str, *, campaign: str | None = None) -> ResolvedSubscriber:
        """Token -> subscriber. A platform-wide token resolves for any of that platform's
        campaigns; a campaign-bound token only for its campaign. Raises :class:`TokenError`."""
        decoded = self.decode(token, audience, campaign=campaign)
        rec = self.vault.get(decoded.subscriber_id)
        return ResolvedSubscriber(
            subscriber_id=decoded.subscriber_id,
            number=rec.number,
            region=rec.region,
            time_zones=rec.time_zones,
            dnc=rec.dnc,
            audience=decoded.audience,
            expiry_day=decoded.expiry_day,
        )

    def erase_token(self, token: str, audience: str, *, campaign: str | None = None) -> ErasureReport:
        """Erase the subscriber behind a token. Expired tokens still identify their subscriber."""
        decoded = self.codec.decode(token, _candidates(audience, campaign), check_expiry=False)
        return self.vault.erase(decoded.subscriber_id)
