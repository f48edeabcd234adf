"""`reffection-ari tokenize` / `resolve` / `dnc` end to end through the CLI entry point."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from reffection_ari.cli import main
from reffection_ari.phone import PhoneNumber
from reffection_ari.tokens import Keyring, SqliteVault, TokenCodec, TokenService

from .tokens_support import LEEDS, LONDON, NANP, RU_MOBILE

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "subscribers.csv"


@pytest.fixture
def env(tmp_path: Path) -> Path:
    assert main(["keys", "generate", "--keyring", str(tmp_path / "k.json")]) == 0
    return tmp_path


def _args(env: Path) -> list[str]:
    return ["--keyring", str(env / "k.json"), "--vault", str(env / "v.db")]


def _service(env: Path) -> TokenService:
    ring = Keyring.load(env / "k.json")
    return TokenService(TokenCodec(ring), SqliteVault(env / "v.db", ring.lookup_key()))


def _read(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


def test_example_file_tokenizes_and_resolves(env: Path) -> None:
    out = env / "out.csv"
    rc = main(
        [
            "tokenize",
            str(EXAMPLES),
            "-o",
            str(out),
            "--audience",
            "demo",
            "--default-region",
            "GB",
            *_args(env),
        ]
    )
    assert rc == 0
    rows = _read(out)
    assert rows[0] == ["cookie", "token"] and len(rows) == 9
    svc = _service(env)
    assert svc.resolve(rows[1][1], "demo").number.e164 == LONDON
    assert all(svc.resolve(tok, "demo").region in {"GB", "AU", "US"} for _c, tok in rows[1:])
    assert _read(env / "out.csv.rejects.csv") == [["line", "reason", "cookie"]]


def test_rejects_with_line_numbers_and_exit_code(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = env / "in.csv"
    src.write_text(
        "cookie,phone\n"
        f"a,{LONDON}\n"  # line 2 ok
        "b,not a number\n"  # 3 invalid
        ",+441134960442\n"  # 4 empty cookie
        "d,\n"  # 5 empty phone
        f"e,{LONDON}\n"  # 6 duplicate of line 2
        f"f,{LEEDS}\n"  # 7 ok
        "g,+44 800 123 4567\n"  # 8 toll free: not dialable
    )
    out = env / "out.csv"
    rc = main(["tokenize", str(src), "-o", str(out), "--audience", "demo", *_args(env)])
    assert rc == 1
    assert [r[0] for r in _read(out)[1:]] == ["a", "f"]
    rejects = _read(env / "out.csv.rejects.csv")[1:]
    assert rejects == [
        ["3", "invalid_number", "b"],
        ["4", "empty", ""],
        ["5", "empty", "d"],
        ["8", "invalid_number", "g"],
        ["6", "duplicate", "e"],
    ]  # parse failures in file order, then duplicates (found at the vault step)
    err = capsys.readouterr().err
    assert "2 tokens, 5 rejected" in err and "duplicate 1" in err and "empty 2" in err
    assert main(["tokenize", str(src), "-o", str(out), "--audience", "demo", "--allow-rejects", *_args(env)]) == 0


def test_duplicates_across_chunks_and_reimport(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reffection_ari.cli import tokenize as tk

    monkeypatch.setattr(tk, "CHUNK_ROWS", 2)
    src = env / "in.csv"
    src.write_text(f"cookie,phone\na,{LONDON}\nb,{LEEDS}\nc,{NANP}\nd,{LONDON}\n")
    out = env / "o.csv"
    assert main(["tokenize", str(src), "-o", str(out), "--audience", "demo", *_args(env)]) == 1
    assert _read(env / "o.csv.rejects.csv")[1:] == [["5", "duplicate", "d"]]
    first = dict(_read(out)[1:])
    # a second import of the same numbers is not a duplicate and yields the same tokens
    src.write_text(f"cookie,phone\nx,{LONDON}\n")
    assert main(["tokenize", str(src), "-o", str(out), "--audience", "demo", *_args(env)]) == 0
    assert dict(_read(out)[1:])["x"] == first["a"]


def test_consent_columns_are_stored(env: Path) -> None:
    src = env / "in.csv"
    src.write_text(f"cookie,phone,consent_source,consent_at\na,{RU_MOBILE},web-form,2025-01-02T03:04:05Z\n")
    out = env / "o.csv"
    assert main(["tokenize", str(src), "-o", str(out), "--audience", "demo", *_args(env)]) == 0
    svc = _service(env)
    sid = svc.resolve(_read(out)[1][1], "demo").subscriber_id
    rec = svc.vault.get(sid)
    assert rec.consent_source == "web-form" and rec.consent_at == 1735787045.0


def test_missing_columns_and_empty_input(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = env / "in.csv"
    src.write_text("id,number\n1,2\n")
    assert main(["tokenize", str(src), "--audience", "demo", *_args(env)]) == 2
    assert "bad_input" in capsys.readouterr().err
    src.write_text("")
    assert main(["tokenize", str(src), "--audience", "demo", *_args(env)]) == 2


def test_resolve_prints_masked_info_never_digits(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = env / "out.csv"
    shutil.copy(EXAMPLES, env / "in.csv")
    main(
        [
            "tokenize",
            str(env / "in.csv"),
            "-o",
            str(out),
            "--audience",
            "demo",
            "--default-region",
            "GB",
            *_args(env),
        ]
    )
    token = _read(out)[1][1]
    capsys.readouterr()
    rc = main(["resolve", token, "--audience", "demo", "--route", "+44=PJSIP/{e164}@uk-trunk", *_args(env)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "+44 ********" in text and "Europe/London" in text and "uk-trunk" in text and "dnc:        no" in text
    assert "7946 0018" not in text and "2079460018" not in text  # (random hex ids may hold "7946")
    assert main(["resolve", token, "--audience", "other", *_args(env)]) == 2
    assert "wrong_audience" in capsys.readouterr().err


def _audit(env: Path) -> list[dict[str, object]]:
    path = env / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_dnc_commands(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = env / "in.csv"
    src.write_text(f"cookie,phone\na,{LONDON}\n")
    out = env / "o.csv"
    main(["tokenize", str(src), "-o", str(out), "--audience", "demo", *_args(env)])
    token = _read(out)[1][1]
    audited = ["--audit-log", str(env / "audit.jsonl")]
    assert main(["dnc", "add", token, "--audience", "demo", *_args(env), *audited]) == 0
    capsys.readouterr()
    assert main(["dnc", "check", LONDON, *_args(env)]) == 0
    assert capsys.readouterr().out.strip() == "dnc: yes"
    imp = env / "dnc.csv"
    imp.write_text(f"phone\n{NANP}\nbogus\n")
    assert main(["dnc", "import", str(imp), *_args(env), *audited]) == 1
    assert main(["dnc", "export", *_args(env)]) == 0
    exported = capsys.readouterr().out
    assert "2015550123" not in exported and "2079460018" not in exported and exported.count("\n") == 3
    assert main(["dnc", "remove", LONDON, *_args(env), *audited]) == 0
    main(["dnc", "check", LONDON, *_args(env)])
    assert capsys.readouterr().out.strip() == "dnc: no"

    changes = [e["data"] for e in _audit(env) if e["kind"] == "dnc_changed"]
    sid = _service(env).vault.find_by_number(PhoneNumber.parse(LONDON))
    assert sid is not None
    assert [(c["subscriber_ref"], c["dnc"], c["via"]) for c in changes] == [
        (sid.hex(), True, "cli"),
        (None, True, "import"),  # NANP is not in the vault: the entry waits for its import
        (sid.hex(), False, "cli"),
    ]
    assert changes[1]["line"] == 2
    text = (env / "audit.jsonl").read_text()
    assert "2079460018" not in text and "2015550123" not in text  # hashes may hold short digit runs


def test_dnc_changes_need_an_audit_log_or_an_explicit_opt_out(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dnc", "add", LONDON, *_args(env)]) == 2
    assert "audit_required" in capsys.readouterr().err
    assert main(["dnc", "check", LONDON, *_args(env)]) == 0
    assert capsys.readouterr().out.strip() == "dnc: no"  # nothing changed
    assert main(["dnc", "add", LONDON, *_args(env), "--no-audit"]) == 0
    assert "not recorded" in capsys.readouterr().err
    assert not (env / "audit.jsonl").exists()


def test_streaming_memory_is_flat(env: Path) -> None:
    """Chunks bound memory: the tokenizer never holds more than one chunk of rows."""
    from reffection_ari.cli import tokenize as tk

    seen: list[int] = []
    real = tk._Tokenizer.process

    def spy(
        self: tk._Tokenizer, chunk: list[tuple[int, list[str]]], cols: tuple[int, int, int | None, int | None]
    ) -> None:
        seen.append(len(chunk))
        real(self, chunk, cols)

    src = env / "big.csv"
    with src.open("w") as fh:
        fh.write("cookie,phone\n")
        for i in range(12_000):
            fh.write(f"c{i},+7916{i:07d}\n")
    tk._Tokenizer.process = spy  # type: ignore[method-assign]
    try:
        assert main(["tokenize", str(src), "-o", str(env / "o.csv"), "--audience", "demo", *_args(env)]) == 0
    finally:
        tk._Tokenizer.process = real  # type: ignore[method-assign]
    assert max(seen) <= tk.CHUNK_ROWS and sum(seen) == 12_000


def test_no_progress_when_not_a_tty(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(
        [
            "tokenize",
            str(EXAMPLES),
            "-o",
            str(env / "o.csv"),
            "--audience",
            "demo",
            "--default-region",
            "GB",
            *_args(env),
        ]
    )
    assert "\r" not in capsys.readouterr().err


def test_failed_run_leaves_no_output_file(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tokens reach OUT_CSV only after the vault's last commit (written as OUT_CSV.partial)."""
    from reffection_ari.cli import tokenize as tk

    monkeypatch.setattr(tk, "CHUNK_ROWS", 1)
    calls = 0
    real = TokenService.issue_many

    def failing(self: TokenService, *a: object, **kw: object) -> list[str | None]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("disk gone")
        return real(self, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(TokenService, "issue_many", failing)
    src = env / "in.csv"
    src.write_text(f"cookie,phone\na,{LONDON}\nb,{LEEDS}\n")
    out = env / "o.csv"
    with pytest.raises(OSError, match="disk gone"):
        main(["tokenize", str(src), "-o", str(out), "--audience", "demo", *_args(env)])
    assert not out.exists() and not (env / "o.csv.partial").exists()
    svc = _service(env)
    try:
        assert svc.vault.count() == 0  # type: ignore[attr-defined]  # the open batch rolled back
    finally:
        svc.vault.close()
