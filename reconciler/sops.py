"""SOPS-format secrets files with age: encrypt, decrypt, verify, re-encrypt.

The file format is the one the ``sops`` tool writes for YAML with ``encrypted_regex: ^data$``:
each value under ``data`` is AES-256-GCM encrypted (32-byte IV, the value's path as
additional data) under one 32-byte data key; the data key is age-encrypted to each
recipient; a MAC (SHA-512 over every value, encrypted with the data key and the
``lastmodified`` time as additional data) detects tampering. Files written here decrypt with
``sops`` and files ``sops`` writes decrypt here. Cryptography comes from maintained libraries:
pyrage for age, cryptography for AES-GCM.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyrage

from reconciler.errors import ReconcilerError
from reconciler.model.kinds import SecretFile, Secrets

ENCRYPTED_REGEX = "^data$"
FORMAT_VERSION = "3.9.4"
_VALUE = re.compile(r"^ENC\[AES256_GCM,data:(?P<data>[A-Za-z0-9+/=]*),iv:(?P<iv>[A-Za-z0-9+/=]+),"
                    r"tag:(?P<tag>[A-Za-z0-9+/=]+),type:(?P<type>str|int|float|bool|bytes)\]$")
_DEFAULT_KEY_FILE = Path("~/.config/sops/age/keys.txt")


class SecretsError(ReconcilerError):
    """A secrets file that cannot be decrypted, verified or written (never shows a value)."""


def identities(key_file: Path | None = None) -> list[pyrage.x25519.Identity]:
    """Age identities, as sops finds them: --age-key-file, $SOPS_AGE_KEY, $SOPS_AGE_KEY_FILE,
    then ~/.config/sops/age/keys.txt."""
    texts: list[str] = []
    if key_file is not None:
        texts.append(_read_key_file(key_file))
    if os.environ.get("SOPS_AGE_KEY"):
        texts.append(os.environ["SOPS_AGE_KEY"])
    if os.environ.get("SOPS_AGE_KEY_FILE"):
        texts.append(_read_key_file(Path(os.environ["SOPS_AGE_KEY_FILE"])))
    if not texts and _DEFAULT_KEY_FILE.expanduser().is_file():
        texts.append(_read_key_file(_DEFAULT_KEY_FILE.expanduser()))
    found = []
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("AGE-SECRET-KEY-"):
                try:
                    found.append(pyrage.x25519.Identity.from_str(line))
                except pyrage.IdentityError:
                    raise SecretsError("an age key is malformed (AGE-SECRET-KEY-...)") from None
    return found


def new_key() -> tuple[str, str]:
    """A new age key pair: (private key, public recipient)."""
    identity = pyrage.x25519.Identity.generate()
    return str(identity), str(identity.to_public())


def decryptor(load_keys: Callable[[], Sequence[pyrage.x25519.Identity]], environment: str
              ) -> Callable[[Secrets], dict[str, str]]:
    """Decryption of one environment's secrets for rendering. The keys are loaded on the
    first secret, so an environment without secrets never needs (or reads) a key."""
    keys: list[Sequence[pyrage.x25519.Identity]] = []

    def decrypt_component(found: Secrets) -> dict[str, str]:
        if not keys:
            keys.append(load_keys())
        return {key: decrypt_secret(found.files[key], keys[0], environment) for key in found.keys}

    return decrypt_component


def decrypt_secret(secret: SecretFile, keys: Sequence[pyrage.x25519.Identity],
                   environment: str) -> str:
    """The plaintext of one secret's file, after checking its MAC."""
    values = decrypt(secret.document, keys, secret.path, environment)
    if secret.key not in values:
        raise SecretsError(f"holds no value for {secret.key}", secret.path)
    return values[secret.key]


def _read_key_file(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise SecretsError(f"cannot read the age key file {path}: {exc.strerror}") from None


def decrypt(document: Mapping[str, Any], keys: Sequence[pyrage.x25519.Identity], where: str,
            environment: str) -> dict[str, str]:
    """The plaintext ``data`` of a SOPS document, after checking its MAC."""
    metadata = document.get("sops")
    if not isinstance(metadata, Mapping):
        raise SecretsError("not a SOPS file: no sops metadata", where)
    data_key = _data_key(metadata, keys, where, environment)
    regex = re.compile(str(metadata.get("encrypted_regex", ENCRYPTED_REGEX)))
    mac_only_encrypted = bool(metadata.get("mac_only_encrypted", False))
    digest = hashlib.sha512()
    values: dict[str, str] = {}
    for path, value in _leaves({k: v for k, v in document.items() if k != "sops"}, []):
        encrypted = any(regex.search(step) for step in path)
        if encrypted:
            plain = _decrypt_value(value, data_key, ":".join(path) + ":", where)
            digest.update(plain)
            if path[0] == "data" and len(path) == 2:
                values[path[1]] = plain.decode("utf-8")
        elif not mac_only_encrypted:
            digest.update(_to_bytes(value))
    stored = metadata.get("mac")
    if not isinstance(stored, str):
        raise SecretsError("the file has no MAC", where)
    expected = _decrypt_value(stored, data_key, str(metadata.get("lastmodified", "")), where,
                              what="MAC").decode()
    if expected != digest.hexdigest().upper():
        raise SecretsError("failed its integrity check (MAC mismatch): the file was changed "
                           "without its data key", where)
    return values


def encrypt(values: Mapping[str, str], recipients: Sequence[str],
            moment: datetime.datetime | None = None) -> dict[str, Any]:
    """A SOPS document for ``values`` under a new data key, age-encrypted to every recipient:
    writing one needs no private key."""
    if not recipients:
        raise SecretsError("no secretRecipients: add age public keys to the environment first")
    key = os.urandom(32)
    lastmodified = (moment or datetime.datetime.now(datetime.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    header = {"apiVersion": "reconciler/v1", "kind": "Secrets"}
    digest = hashlib.sha512()
    for value in header.values():
        digest.update(value.encode())
    data = {}
    for name in sorted(values):
        plain = values[name].encode("utf-8")
        digest.update(plain)
        data[name] = _encrypt_value(plain, key, f"data:{name}:")
    age = []
    for recipient in recipients:
        try:
            parsed = pyrage.x25519.Recipient.from_str(recipient)
        except pyrage.RecipientError:
            raise SecretsError(f"{recipient!r} is not an age public key") from None
        age.append({"recipient": recipient,
                    "enc": pyrage.encrypt(key, [parsed], armored=True).decode()})
    return {**header, "data": data, "sops": {
        "age": age,
        "lastmodified": lastmodified,
        "mac": _encrypt_value(digest.hexdigest().upper().encode(), key, lastmodified),
        "encrypted_regex": ENCRYPTED_REGEX,
        "version": FORMAT_VERSION,
    }}


def _data_key(metadata: Mapping[str, Any], keys: Sequence[pyrage.x25519.Identity], where: str,
              environment: str) -> bytes:
    if not keys:
        raise SecretsError(f"no age key to decrypt {environment}'s secrets: set "
                           "SOPS_AGE_KEY_FILE or SOPS_AGE_KEY, or pass --age-key-file", where)
    for entry in metadata.get("age") or []:
        enc = entry.get("enc") if isinstance(entry, Mapping) else None
        if not isinstance(enc, str):
            continue
        try:
            key = pyrage.decrypt(enc.encode(), list(keys))
        except pyrage.DecryptError:
            continue
        if len(key) == 32:
            return bytes(key)
    raise SecretsError(f"none of the age keys given can decrypt {environment}'s secrets (wrong "
                       "key, or the file is not encrypted to it)", where)


def _encrypt_value(plain: bytes, key: bytes, aad: str) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # only when a secret is set

    iv = os.urandom(32)
    sealed = AESGCM(key).encrypt(iv, plain, aad.encode())
    ciphertext, tag = sealed[:-16], sealed[-16:]
    return f"ENC[AES256_GCM,data:{_b64(ciphertext)},iv:{_b64(iv)},tag:{_b64(tag)},type:str]"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _decrypt_value(value: object, key: bytes, aad: str, where: str, what: str = "a value") -> bytes:
    from cryptography.exceptions import InvalidTag  # only when a secret is read
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    match = _VALUE.match(value) if isinstance(value, str) else None
    if match is None:
        raise SecretsError(f"{what} is not SOPS-encrypted (ENC[AES256_GCM,...])", where)
    try:
        sealed = base64.b64decode(match["data"]) + base64.b64decode(match["tag"])
        return AESGCM(key).decrypt(base64.b64decode(match["iv"]), sealed, aad.encode())
    except (InvalidTag, ValueError):
        raise SecretsError(f"failed its integrity check: {what} does not decrypt (the file was "
                           "changed without its data key)", where) from None


def _leaves(node: object, path: list[str]) -> list[tuple[list[str], object]]:
    if isinstance(node, Mapping):
        return [leaf for key, value in node.items() for leaf in _leaves(value, [*path, str(key)])]
    if isinstance(node, list):
        return [leaf for value in node for leaf in _leaves(value, path)]
    return [(path, node)]


def _to_bytes(value: object) -> bytes:
    if isinstance(value, bool):
        return b"True" if value else b"False"
    if value is None:
        return b""
    return str(value).encode("utf-8")
