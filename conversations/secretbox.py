"""Encryption at rest for provider API keys (Fernet: AES-128-CBC with HMAC-SHA256).

The key is ENCRYPTION_KEY when set, else derived from SECRET_KEY; rotating the one in use makes stored
keys unreadable, so docs/operations.md says to set ENCRYPTION_KEY once and keep it.
"""

import base64
import hashlib
import os
from functools import cache

from cryptography.fernet import Fernet
from django.conf import settings


@cache
def _fernet() -> Fernet:
    secret = os.environ.get("ENCRYPTION_KEY") or settings.SECRET_KEY
    key = hashlib.sha256(b"chatsite provider keys:" + secret.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()
