"""The partner's key file: one independent key per purpose, several generations each.

Purposes are kept apart so that one can be rotated or leaked without the others:

* ``token``   -- AES-SIV-512 key (+ a 256-bit audience-tag key) that seals tokens;
* ``lookup``  -- keyed BLAKE2b key for the vault's number index (never a plaintext index);
* ``receipt`` -- Ed25519 private key that signs consent receipts (public half exportable).

Each key has a ``kid`` ``"<purpose>-<n>"`` and a status: ``active`` (issues/signs; exactly one per
purpose), ``resolve_only`` (older token keys: tokens still resolve), ``verify_only`` (older receipt
keys: public key still exported). Retiring a key removes its material from the file: every token
sealed under it then fails ``unknown_key`` (crypto-shredding). The file is JSON written atomically
with mode 0600, and refused when group/world accessible.

Key material never appears in ``repr``, logs, exceptions or :meth:`Keyring.list` output.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from ..errors import KeyringError

__all__ = ["KeyInfo", "Keyring", "LookupKey", "Purpose", "TokenKey"]

Purpose = Literal["token", "lookup", "receipt"]
PURPOSES: Final[tuple[Purpose, ...]] = ("token", "lookup", "receipt")
FORMAT: Final = "reffection-keyring/1"
_MAX_KID_NUMBER: Final = 0xFFFF  # the token header carries the number in 16 bits


def _b64e(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode("ascii").rstrip("=")


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class _Secret:
    """Holds bytes; prints as ``<redacted>`` however it is formatted."""

    __slots__ = ("_b",)

    def __init__(self, b: bytes) -> None:
        self._b = b

    def reveal(self) -> bytes:
        return self._b

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("secrets are not picklable")


@dataclass(frozen=True)
class KeyInfo:
    """Metadata only: safe to print."""

    kid: str
    purpose: Purpose
    status: str
    created: float


@dataclass(frozen=True, repr=False)
class TokenKey:
    """A token-sealing key generation. ``number`` is what the token header carries."""

    kid: str
    number: int
    status: str
    _siv: _Secret
    _tag: _Secret

    def aessiv(self) -> AESSIV:
        return AESSIV(self._siv.reveal())

    def tag_key(self) -> bytes:
        return self._tag.reveal()

    def __repr__(self) -> str:
        return f"TokenKey(kid={self.kid!r}, status={self.status!r})"


@dataclass(frozen=True, repr=False)
class LookupKey:
    kid: str
    _key: _Secret

    def key(self) -> bytes:
        return self._key.reveal()

    def __repr__(self) -> str:
        return f"LookupKey(kid={self.kid!r})"


@dataclass
class _Entry:
    kid: str
    purpose: Purpose
    status: str
    created: float
    material: dict[str, _Secret]

    @property
    def number(self) -> int:
        return int(self.kid.rsplit("-", 1)[1])


def _new_material(purpose: Purpose) -> dict[str, _Secret]:
    if purpose == "token":
        return {"siv": _Secret(AESSIV.generate_key(512)), "tag": _Secret(os.urandom(32))}
    if purpose == "lookup":
        return {"key": _Secret(os.urandom(32))}
    raw = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return {"ed25519": _Secret(raw)}


_MATERIAL_SIZES: Final[dict[Purpose, dict[str, int]]] = {
    "token": {"siv": 64, "tag": 32},
    "lookup": {"key": 32},
    "receipt": {"ed25519": 32},
}
_STATUSES: Final[dict[Purpose, frozenset[str]]] = {
    "token": frozenset({"active", "resolve_only"}),
    "lookup": frozenset({"active"}),
    "receipt": frozenset({"active", "verify_only"}),
}


class Keyring:
    """Loaded key file. Construct with :meth:`generate` or :meth:`load`; mutate with
    :meth:`rotate` / :meth:`retire` (each saves the file atomically)."""

    def __init__(self, path: Path, entries: list[_Entry], retired: list[str]) -> None:
        self._path = path
        self._entries = entries
        self._retired = retired
        self._token_by_number: dict[int, TokenKey] = {}
        self._reindex()

    # construction ------------------------------------------------------------------------

    @classmethod
    def generate(cls, path: str | os.PathLike[str], *, overwrite: bool = False) -> Keyring:
        """Create a new key file with one active key per purpose."""
        p = Path(path)
        if p.exists() and not overwrite:
            raise KeyringError(f"key file {p} already exists (use rotate, or remove it first)")
        now = time.time()
        entries = [_Entry(f"{pur}-1", pur, "active", now, _new_material(pur)) for pur in PURPOSES]
        ring = cls(p, entries, [])
        ring.save()
        return ring

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Keyring:
        """Read and validate a key file; refuse it when anyone but the owner can access it."""
        p = Path(path)
        try:
            fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise KeyringError(f"key file {p} not found (create one with `reffection-ari keys generate`)") from None
        except OSError as exc:
            raise KeyringError(f"key file {p} cannot be opened: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise KeyringError(f"key file {p} is not a regular file")
            if st.st_mode & 0o077:
                raise KeyringError(
                    f"key file {p} is accessible by group/others (mode {stat.S_IMODE(st.st_mode):04o}); "
                    f"run `chmod 600 {p}`"
                )
            raw = fh.read()
        try:
            doc = json.loads(raw)
        except ValueError:
            raise KeyringError(f"key file {p} is not valid JSON") from None
        return cls(p, *cls._parse(p, doc))

    @staticmethod
    def _parse(p: Path, doc: Any) -> tuple[list[_Entry], list[str]]:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise KeyringError(f"key file {p}: unknown format (expected {FORMAT!r})")
        entries: list[_Entry] = []
        seen: set[str] = set()
        for i, item in enumerate(doc.get("keys", [])):
            where = f"key file {p}: keys[{i}]"
            if not isinstance(item, dict):
                raise KeyringError(f"{where}: not an object")
            purpose = item.get("purpose")
            kid = item.get("kid")
            status = item.get("status")
            if purpose not in PURPOSES:
                raise KeyringError(f"{where}: unknown purpose")
            if not isinstance(kid, str) or not kid.startswith(f"{purpose}-") or kid in seen:
                raise KeyringError(f"{where}: bad or duplicate kid")
            try:
                n = int(kid.rsplit("-", 1)[1])
            except ValueError:
                raise KeyringError(f"{where}: bad kid") from None
            if not 1 <= n <= _MAX_KID_NUMBER:
                raise KeyringError(f"{where}: kid number out of range")
            if status not in _STATUSES[purpose]:
                raise KeyringError(f"{where} ({kid}): bad status")
            mat_doc = item.get("material")
            if not isinstance(mat_doc, dict):
                raise KeyringError(f"{where} ({kid}): missing material")
            material: dict[str, _Secret] = {}
            for name, size in _MATERIAL_SIZES[purpose].items():
                try:
                    b = _b64d(mat_doc[name])
                except (KeyError, TypeError, ValueError):
                    raise KeyringError(f"{where} ({kid}): material {name!r} missing or not base64") from None
                if len(b) != size:
                    raise KeyringError(f"{where} ({kid}): material {name!r} has the wrong length")
                material[name] = _Secret(b)
            seen.add(kid)
            entries.append(_Entry(kid, purpose, status, float(item.get("created", 0.0)), material))
        for pur in PURPOSES:
            active = [e for e in entries if e.purpose == pur and e.status == "active"]
            if len(active) != 1:
                raise KeyringError(f"key file {p}: needs exactly one active {pur} key, found {len(active)}")
        retired = doc.get("retired", [])
        if not isinstance(retired, list) or not all(isinstance(k, str) for k in retired):
            raise KeyringError(f"key file {p}: 'retired' must be a list of kids")
        return entries, list(retired)

    # persistence ---------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    def save(self) -> None:
        """Write atomically (temp file 0600 + fsync + rename)."""
        doc = {
            "format": FORMAT,
            "keys": [
                {
                    "kid": e.kid,
                    "purpose": e.purpose,
                    "status": e.status,
                    "created": e.created,
                    "material": {k: _b64e(v.reveal()) for k, v in e.material.items()},
                }
                for e in self._entries
            ],
            "retired": self._retired,
        }
        data = json.dumps(doc, indent=2).encode()
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(f".{self._path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    # queries -------------------------------------------------------------------------------

    def _reindex(self) -> None:
        self._token_by_number = {
            e.number: TokenKey(e.kid, e.number, e.status, e.material["siv"], e.material["tag"])
            for e in self._entries
            if e.purpose == "token"
        }

    def _active(self, purpose: Purpose) -> _Entry:
        for e in self._entries:
            if e.purpose == purpose and e.status == "active":
                return e
        raise KeyringError(f"no active {purpose} key")  # pragma: no cover - load() guarantees one

    def list(self) -> builtins.list[KeyInfo]:
        """Metadata of every present key (retired keys are gone; see :meth:`retired`)."""
        return [KeyInfo(e.kid, e.purpose, e.status, e.created) for e in self._entries]

    def retired(self) -> builtins.list[str]:
        return list(self._retired)

    def active_token_key(self) -> TokenKey:
        return self._token_by_number[self._active("token").number]

    def token_key(self, number: int) -> TokenKey | None:
        """The token key whose header number is ``number`` (None: retired or never existed)."""
        return self._token_by_number.get(number)

    def token_keys(self) -> builtins.list[TokenKey]:
        return list(self._token_by_number.values())

    def lookup_key(self) -> LookupKey:
        e = self._active("lookup")
        return LookupKey(e.kid, e.material["key"])

    def receipt_signing_key(self) -> tuple[Ed25519PrivateKey, str]:
        """(private key, kid) of the active receipt-signing key."""
        e = self._active("receipt")
        return Ed25519PrivateKey.from_private_bytes(e.material["ed25519"].reveal()), e.kid

    def export_public(self, fmt: Literal["jwk", "pem"] = "jwk") -> str:
        """Public halves of all receipt keys: a JWK Set (JSON) or concatenated PEM blocks."""
        pubs = []
        for e in self._entries:
            if e.purpose != "receipt":
                continue
            pub = Ed25519PrivateKey.from_private_bytes(e.material["ed25519"].reveal()).public_key()
            pubs.append((e.kid, pub))
        if fmt == "pem":
            out = []
            for kid, pub in pubs:
                pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
                out.append(f"# kid: {kid}\n{pem.decode()}")
            return "".join(out)
        keys = [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "kid": kid,
                "use": "sig",
                "alg": "EdDSA",
                "x": _b64e(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)),
            }
            for kid, pub in pubs
        ]
        return json.dumps({"keys": keys}, indent=2)

    # mutations -----------------------------------------------------------------------------

    def rotate(self, purpose: Purpose = "token") -> KeyInfo:
        """Add a new active key for ``purpose``; the previous one stays usable for resolving
        (token) or verifying (receipt). The lookup key cannot rotate without re-indexing the
        vault, which this version does not do."""
        if purpose == "lookup":
            raise KeyringError("rotating the lookup key needs a vault re-index, which is not supported yet")
        if purpose not in PURPOSES:
            raise KeyringError(f"unknown key purpose {purpose!r}")
        used = [e.number for e in self._entries if e.purpose == purpose]
        used += [int(k.rsplit("-", 1)[1]) for k in self._retired if k.startswith(f"{purpose}-")]
        n = max(used, default=0) + 1
        if n > _MAX_KID_NUMBER:
            raise KeyringError(f"{purpose} key numbers exhausted")
        old_status = "resolve_only" if purpose == "token" else "verify_only"
        for e in self._entries:
            if e.purpose == purpose and e.status == "active":
                e.status = old_status
        entry = _Entry(f"{purpose}-{n}", purpose, "active", time.time(), _new_material(purpose))
        self._entries.append(entry)
        self._reindex()
        self.save()
        return KeyInfo(entry.kid, entry.purpose, entry.status, entry.created)

    def retire(self, kid: str) -> None:
        """Destroy a non-active key's material. Tokens under a retired token key are gone for
        good (``unknown_key``)."""
        for e in self._entries:
            if e.kid == kid:
                if e.status == "active":
                    raise KeyringError(f"{kid} is the active {e.purpose} key: rotate first")
                self._entries.remove(e)
                self._retired.append(kid)
                self._reindex()
                self.save()
                return
        raise KeyringError(f"no key {kid!r} in the key file")

    def __repr__(self) -> str:
        return f"Keyring(path={str(self._path)!r}, kids={[e.kid for e in self._entries]!r})"
