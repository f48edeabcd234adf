"""reffection-ari: consented advertising calls on Asterisk ARI.

Tokens instead of phone numbers for the platform; the number stays inside the partner's
boundary (its Asterisk and this library) until an agent confirms a consented lead.
"""

from .errors import (
    CallError,
    ConfigError,
    EvidenceError,
    KeyringError,
    NumberError,
    PolicyRefusal,
    ReffectionError,
    SandboxError,
    TokenError,
)
from .lead import ConsentEvidence, ConsentResult, Keypress, Lead, LeadSink, Prompt, PromptPlayed, RecordingInfo

__version__ = "0.1.0"

__all__ = [
    "CallError",
    "ConfigError",
    "ConsentEvidence",
    "ConsentResult",
    "EvidenceError",
    "Keypress",
    "KeyringError",
    "Lead",
    "LeadSink",
    "NumberError",
    "PolicyRefusal",
    "Prompt",
    "PromptPlayed",
    "RecordingInfo",
    "ReffectionError",
    "SandboxError",
    "TokenError",
    "__version__",
]
