"""Child process: store one receipted lead in the outbox, say so, then hang until killed.

usage: outbox_store.py DB LEAD_ID RECORDING_FILE
Stands in for the daemon between "lead committed" and "delivered": the parent SIGKILLs it.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evidence_leads import fixed_key, make_lead, write_recording

from reffection_ari.evidence import LeadOutbox, ReceiptSigner


async def main(db: str, lead_id: str, recording: str) -> None:
    rec = write_recording(Path(recording))
    lead = make_lead(lead_id, recording=rec)
    lead = replace(lead, receipt=ReceiptSigner(fixed_key(1), "k1", "example-partner").issue(lead))
    outbox = LeadOutbox(db)
    await outbox.store(lead)  # returns only once committed: the confirm would be acknowledged now
    sys.stdout.write(f"stored {lead_id}\n")
    sys.stdout.flush()
    await asyncio.Event().wait()  # never delivers: the parent kills us


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
