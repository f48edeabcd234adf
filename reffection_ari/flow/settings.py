"""Per-call flow settings: what a campaign decides about its consent call.

Built once per call (usually from the campaign config) and validated here, so a bad campaign
fails at start with the exact key instead of mid-call. Holds no subscriber data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from reffection_ari.errors import ConfigError
from reffection_ari.lead import Prompt

ConsentMode = Literal["ivr", "agent"]
DTMF_DIGITS = frozenset("0123456789*#ABCD")
MAX_ANSWER_DIGITS = 4


def is_answer_key(value: object) -> bool:
    """A yes/no answer is 1 to 4 DTMF keys (e.g. ``1`` or ``*1``, so that a stray key gives no
    consent); longer ones are rarely dialled right by anyone."""
    return isinstance(value, str) and 1 <= len(value) <= MAX_ANSWER_DIGITS and set(value) <= DTMF_DIGITS


@dataclass(frozen=True, slots=True)
class FlowPrompts:
    """The announcements of a campaign. Only ``disclosure`` is mandatory (plus ``question`` in
    ivr mode); a missing optional prompt is simply skipped (e.g. no ``whisper``: bridge at once)."""

    disclosure: Prompt
    question: Prompt | None = None
    invalid: Prompt | None = None  # before re-asking after an invalid digit
    goodbye: Prompt | None = None  # after declined / opted out / no input
    whisper: Prompt | None = None  # to the agent only, before the bridge
    hold: Prompt | None = None  # to the subscriber while the agent rings (replayed)
    apology: Prompt | None = None  # agent unavailable, transfer failed
    thanks: Prompt | None = None  # lead stored and the agent already gone


@dataclass(frozen=True, slots=True)
class FlowSettings:
    consent_mode: ConsentMode
    campaign: str
    advertiser: str
    caller_id_presented: str  # the label / partner caller id shown to the subscriber
    prompts: FlowPrompts
    yes_key: str = "1"
    no_key: str = "2"
    optout_key: str = "9"
    confirm_key: str = "#"  # on the agent leg
    first_digit_timeout: float = 5.0
    inter_digit_timeout: float = 3.0  # only matters when an answer has more than one key
    max_retries: int = 2  # re-asks of the question after a timeout or invalid digit
    subscriber_ring_timeout: float = 30.0
    recording_start_timeout: float = 5.0
    agent_ring_timeout: float = 20.0
    wrap_up_seconds: float = 30.0
    max_call_seconds: float = 900.0
    transfer_ring_timeout: float = 30.0
    transfer_dial_string: str | None = None  # the advertiser's line; not personal data
    agent_dial_string: str | None = None  # None: the driver uses the campaign's
    agent_id: str | None = None
    policy_checks: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.consent_mode not in ("ivr", "agent"):
            raise ConfigError("consent_mode", "must be 'ivr' or 'agent'")
        for key in ("campaign", "advertiser", "caller_id_presented"):
            if not getattr(self, key):
                raise ConfigError(key, "must not be empty")
        if self.consent_mode == "ivr" and self.prompts.question is None:
            raise ConfigError("prompts.question", "required when consent_mode is 'ivr'")
        for key in ("yes_key", "no_key"):
            if not is_answer_key(getattr(self, key)):
                raise ConfigError(key, f"must be 1 to {MAX_ANSWER_DIGITS} DTMF keys (0-9, *, #, A-D)")
        # Opting out is one key: withdrawing must never take more than giving consent did.
        for key in ("optout_key", "confirm_key"):
            if getattr(self, key) not in DTMF_DIGITS:
                raise ConfigError(key, "must be one DTMF key (0-9, *, #, A-D)")
        for key in ("yes_key", "no_key"):
            if self.optout_key in getattr(self, key):
                raise ConfigError(key, "must not contain the optout key: it opts out whenever it is pressed")
        answers = (("yes_key", self.yes_key), ("no_key", self.no_key), ("optout_key", self.optout_key))
        for i, (key, value) in enumerate(answers):
            for other_key, other in answers[:i]:
                # prefix-free: a complete answer is acted on at once, never held back waiting
                # for a longer one it begins
                if value.startswith(other) or other.startswith(value):
                    other_name = other_key.removesuffix("_key")
                    raise ConfigError(key, f"must differ from the {other_name} key and neither may begin the other")
        for key in (
            "first_digit_timeout",
            "inter_digit_timeout",
            "subscriber_ring_timeout",
            "recording_start_timeout",
            "agent_ring_timeout",
            "wrap_up_seconds",
            "max_call_seconds",
            "transfer_ring_timeout",
        ):
            if not getattr(self, key) > 0:
                raise ConfigError(key, "must be a positive number of seconds")
        if self.max_retries < 0:
            raise ConfigError("max_retries", "must be >= 0")
        if self.transfer_dial_string is not None and not self.transfer_dial_string:
            raise ConfigError("transfer_dial_string", "must not be empty when set")
