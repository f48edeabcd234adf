"""``reffection-ari erase``: vault row gone (token -> erased), undelivered lead cleared, audited."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from reffection_ari.cli import main as cli_main
from reffection_ari.config import load_config, load_yaml
from reffection_ari.errors import TokenError
from reffection_ari.evidence import LeadOutbox, OutboxState, verify_audit_log
from reffection_ari.phone import PhoneNumber
from reffection_ari.tokens import Keyring, SqliteVault, TokenCodec, TokenService

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proc"))
from evidence_leads import make_lead

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "config.yaml"
NUMBER = "+442079460777"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, str]:
    import yaml

    raw = load_yaml(EXAMPLE.read_text())
    raw["recordings"]["host_dir"] = str(tmp_path / "rec")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    keyring = Keyring.generate(config.keyring)
    vault = SqliteVault(config.vault, keyring.lookup_key())
    token = TokenService(TokenCodec(keyring), vault).issue(PhoneNumber.parse(NUMBER), "platform-a")
    vault.close()
    outbox = LeadOutbox(config.delivery.outbox)
    outbox.store_sync(make_lead("lead_erase_1", number=NUMBER))
    outbox.store_sync(make_lead("lead_other_1", number="+442079460888"))
    outbox.close()
    return path, token


@pytest.mark.parametrize("by", ["token", "number"])
def test_erase_by_token_or_number(setup: tuple[Path, str], by: str, capsys: pytest.CaptureFixture[str]) -> None:
    path, token = setup
    args = ["--token", token, "--audience", "platform-a"] if by == "token" else ["--number", "020 7946 0777"]
    assert cli_main(["erase", "-c", str(path), *args]) == 0
    out = capsys.readouterr().out
    assert "subscriber erased" in out and "undelivered leads cleared: 1" in out
    assert "2079460777" not in out and "7946 0777" not in out  # the report names no number

    config = load_config(path)
    keyring = Keyring.load(config.keyring)
    vault = SqliteVault(config.vault, keyring.lookup_key())
    with pytest.raises(TokenError) as err:
        TokenService(TokenCodec(keyring), vault).resolve(token, "platform-a")
    assert err.value.code == "erased"
    vault.close()

    outbox = LeadOutbox(config.delivery.outbox)
    assert outbox.get("lead_erase_1").state == OutboxState.DEAD
    assert outbox.get("lead_other_1").state == OutboxState.PENDING  # another subscriber: untouched
    assert outbox.show("lead_erase_1")[1].get("number_e164") is None
    outbox.close()

    signing_key, _ = keyring.receipt_signing_key()
    verify_audit_log(config.audit_log, signing_key.public_key())  # raises on a broken chain
    entries = [json.loads(line) for line in config.audit_log.read_text().splitlines()]
    assert [e["data"]["scope"] for e in entries if e["kind"] == "erasure"] == ["outbox", "vault"]
    assert NUMBER[1:] not in config.audit_log.read_text()
