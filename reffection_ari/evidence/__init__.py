"""Evidence and delivery: signed consent receipts, the durable lead outbox and its sinks, the
hash-chained audit log, and retention (see docs/receipts.md, docs/operations-outbox-audit.md)."""

from __future__ import annotations

from .audit import (
    AuditChainError,
    AuditDataError,
    AuditEntry,
    AuditKind,
    AuditLog,
    AuditReport,
    check_no_phone_numbers,
    contains_phone_like,
    verify_audit_log,
)
from .leadjson import LEAD_SCHEMA, lead_summary, lead_to_json
from .outbox import ClaimedLead, DeliveryWorker, ErasedLead, LeadOutbox, OutboxEntry, OutboxState
from .receipts import (
    RECEIPT_TYP,
    ReceiptSigner,
    VerificationKey,
    decode_unverified,
    load_public_keys,
    number_binding,
    parse_public_keys,
    public_key_jwk,
    verify_receipt,
)
from .retention import ErasureReport, RecordingDeletion, RetentionSweeper, delete_recording, erase_from_outbox
from .sinks import (
    DeliveryFailed,
    DeliverySink,
    JsonlFileSink,
    WebhookSink,
    encode_body,
    sign_webhook,
    verify_webhook,
)

__all__ = [
    "LEAD_SCHEMA",
    "RECEIPT_TYP",
    "AuditChainError",
    "AuditDataError",
    "AuditEntry",
    "AuditKind",
    "AuditLog",
    "AuditReport",
    "ClaimedLead",
    "DeliveryFailed",
    "DeliverySink",
    "DeliveryWorker",
    "ErasedLead",
    "ErasureReport",
    "JsonlFileSink",
    "LeadOutbox",
    "OutboxEntry",
    "OutboxState",
    "ReceiptSigner",
    "RecordingDeletion",
    "RetentionSweeper",
    "VerificationKey",
    "WebhookSink",
    "check_no_phone_numbers",
    "contains_phone_like",
    "decode_unverified",
    "delete_recording",
    "encode_body",
    "erase_from_outbox",
    "lead_summary",
    "lead_to_json",
    "load_public_keys",
    "number_binding",
    "parse_public_keys",
    "public_key_jwk",
    "sign_webhook",
    "verify_audit_log",
    "verify_receipt",
    "verify_webhook",
]
