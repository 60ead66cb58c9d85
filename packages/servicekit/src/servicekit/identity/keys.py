"""API keys: how they look, how they are kept (hashed, never in plain text) and what a valid one stands for.

A key is `ck_<mode>_<40 letters and digits>`, about 238 random bits, shown once when it is made. Only its
SHA-256 digest and a short display prefix are stored. A fast unsalted hash is right here, unlike for
passwords: a slow or salted hash protects guessable secrets from brute force on a stolen table, and a
238-bit random key cannot be guessed, so the digest alone reveals nothing usable (GitHub and Stripe keep
their tokens the same way). The digest is also the lookup key, so no request compares secrets by hand.
"""

import hashlib
import secrets
import string
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from servicekit.identity.scopes import Scope

KEY_ALPHABET = string.ascii_letters + string.digits
SECRET_LENGTH = 40
PREFIX_SHOWN = 6
"""How many characters of the secret part stay visible in listings (`ck_live_Ab3dE9…`)."""

KeyMode = Literal["live", "dev"]
DEVELOPMENT_PREFIX = "ck_dev_"


def mint_key(mode: KeyMode = "live") -> str:
    """A new random key. `dev` keys are made only by the local stack, so a leaked one is recognisable."""
    return f"ck_{mode}_" + "".join(secrets.choice(KEY_ALPHABET) for _ in range(SECRET_LENGTH))


def digest(key: str) -> bytes:
    """What is stored and looked up instead of the key."""
    return hashlib.sha256(key.encode()).digest()


def display_prefix(key: str) -> str:
    """The part of a key that may be shown afterwards, to tell keys apart."""
    mode_end = key.index("_", 3) + 1
    return key[: mode_end + PREFIX_SHOWN] + "…"


def looks_like_key(value: str) -> bool:
    """Cheap shape check, so a malformed header never costs a lookup."""
    parts = value.split("_")
    return (
        len(parts) == 3
        and parts[0] == "ck"
        and parts[1] in ("live", "dev")
        and len(parts[2]) == SECRET_LENGTH
        and all(c in KEY_ALPHABET for c in parts[2])
    )


def mode_of(prefix: str) -> KeyMode:
    """Whether a stored key (by its display prefix) is a development key, so its successor is one too."""
    return "dev" if prefix.startswith(DEVELOPMENT_PREFIX) else "live"


def new_key_id() -> str:
    return f"key_{secrets.token_hex(8)}"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A stored key: everything but the key itself."""

    id: str
    name: str
    prefix: str
    scopes: frozenset[Scope]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    rotated_at: datetime | None = None
    """When a successor of the same name was made (`credited keys rotate`); accepted until `expires_at`."""

    def refusal(self, now: datetime) -> str | None:
        """Why this key cannot be used at `now`, or None when it can. A revoked key is refused whatever `now`
        says: `revoked_at` is the database's clock, which may run ahead of this process's."""
        if self.revoked_at is not None:
            return "this API key was revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "this API key has expired"
        return None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who called: the key's id and name (recorded with what they decide) and its scopes."""

    key_id: str
    name: str
    scopes: frozenset[Scope]

    @classmethod
    def of(cls, record: KeyRecord) -> "Caller":
        return cls(record.id, record.name, record.scopes)
