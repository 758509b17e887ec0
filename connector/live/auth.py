"""Live clients' tokens: a JWT verified with PyJWT against ``live.auth.jwt`` (signature,
``exp`` required, audience and issuer when configured), its claims kept for the row rules.
Nothing of a token reaches logs or errors: failures name the reason only."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import jwt

from connector.vocabulary import LiveAuth


class AuthError(Exception):
    """A token that is missing, badly signed, for another audience, or expired; the message
    is safe to send to the client."""


@dataclass(frozen=True)
class Identity:
    """Who a client is: its token's claims (empty when anonymous) and when it expires."""

    claims: dict[str, Any] = field(default_factory=dict)
    expires_at: float | None = None  # wall time (the token's exp)

    def seconds_left(self) -> float | None:
        return None if self.expires_at is None else self.expires_at - time.time()


class Verifier:
    def __init__(self, auth: LiveAuth) -> None:
        self.auth = auth
        self._key = auth.secret if auth.secret is not None else auth.public_key

    def verify(self, token: str | None) -> Identity:
        """The identity a token proves; no token is anonymous when that is allowed."""
        if not token:
            if self.auth.anonymous:
                return Identity()
            raise AuthError("a token is required")
        if self._key is None:
            raise AuthError("tokens are not accepted here")
        try:
            claims = jwt.decode(
                token, self._key, algorithms=list(self.auth.algorithms),
                audience=self.auth.audience, issuer=self.auth.issuer,
                options={"require": ["exp"], "verify_aud": self.auth.audience is not None})
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError("the token is from another issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise AuthError("the token's signature does not verify") from None
        except jwt.InvalidTokenError:
            raise AuthError("the token is not a valid JWT") from None
        return Identity(claims, float(claims["exp"]))
