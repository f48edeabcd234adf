"""Call orchestration: the service that runs consent calls over ARI/AMI, and its PII-free views."""

from .calls import EVENT_FILTER, CallService, ConfirmResult, new_call_id
from .metrics import Histogram, Metrics
from .model import CallView, Lease, Partner, PlatformEvent, PreparedCall

__all__ = [
    "EVENT_FILTER",
    "CallService",
    "CallView",
    "ConfirmResult",
    "Histogram",
    "Lease",
    "Metrics",
    "Partner",
    "PlatformEvent",
    "PreparedCall",
    "new_call_id",
]
