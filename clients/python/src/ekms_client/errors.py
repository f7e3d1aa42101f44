"""Exceptions of the enclave-kms client.

Every error answer of the service (`{"error": {"code", "message", "rule"?}}`) becomes an
:class:`EkmsError`; the two a caller usually handles on their own have subclasses:

- :class:`PolicyDenied`: `403 policy_denied`, the key's policy refused the request
  (`rule` names the rule, e.g. ``"evm.chain_ids"``; docs/POLICY.md lists them);
- :class:`Unauthorized`: `401 unauthenticated` (no, an unknown, a revoked or an expired
  token) or `403 forbidden` (a valid token outside its scopes or key ids).

:class:`EkmsConnectionError` is a failure to reach the socket at all, and
:class:`VerificationError` an answer that does not check against what was asked (the
parent relays the enclave's answers and is not trusted: the client recomputes).
"""

from __future__ import annotations

from typing import Any


class EkmsError(Exception):
    """An error answer of the service, or a failure of the client.

    Attributes:
        code: the service's error code (README "Errors", e.g. ``"key_not_found"``), or
            one of the client's own: ``"connection_failed"``, ``"invalid_answer"``,
            ``"verification_failed"``, ``"http_<status>"`` for a non-JSON error answer.
        message: the human-readable message.
        status: the HTTP status (``None`` when no answer arrived).
        rule: the policy rule of a refusal, else ``None``.
        body: the decoded JSON answer when there was one.
    """

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        *,
        rule: str | None = None,
        body: Any = None,
    ) -> None:
        self.code = code
        self.message = message
        self.status = status
        self.rule = rule
        self.body = body
        super().__init__(self._text())

    def _text(self) -> str:
        where = f"{self.status} " if self.status is not None else ""
        rule = f" (rule {self.rule})" if self.rule else ""
        return f"{where}{self.code}{rule}: {self.message}"


class PolicyDenied(EkmsError):
    """`403 policy_denied`: the key's policy refused; :attr:`rule` names the rule.

    ``str(exc)`` carries the rule too, e.g. ``403 policy_denied (rule evm.chain_ids): …``.
    """

    def __init__(self, rule: str, message: str, status: int = 403, *, body: Any = None) -> None:
        super().__init__("policy_denied", message, status, rule=rule, body=body)


class Unauthorized(EkmsError):
    """`401 unauthenticated` or `403 forbidden`: the token is missing, unknown, revoked,
    expired, or not allowed this route or key."""


class EkmsConnectionError(EkmsError):
    """The socket could not be reached, or the connection broke before an answer
    (``code == "connection_failed"``, ``status is None``). The request may or may not
    have reached the enclave."""


class VerificationError(EkmsError):
    """The answer does not check against the request: a signature that does not recover
    to the key's address or verify for its public key, a signed transaction that is not
    the one sent, or a digest that differs from the one computed here
    (``code == "verification_failed"``). Nothing of such an answer should be used."""
