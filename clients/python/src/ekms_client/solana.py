"""A solders-compatible Solana signer whose ``ed25519`` key stays in the enclave.

solders' own signers (``Keypair``, ``Presigner``) are Rust objects, so a Python signer
cannot be handed to ``VersionedTransaction(message, [signer])``. :class:`EkmsSolanaSigner`
has the same ``pubkey()`` / ``sign_message(bytes)`` methods as ``Keypair``, and fills a
transaction either way solders allows::

    sig = signer.sign_message(to_bytes_versioned(message))
    tx = VersionedTransaction.populate(message, [sig])            # the key signs alone
    tx = VersionedTransaction(message, [signer.presigner(message), other_keypair])
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, Union

from solders.message import Message, MessageV0, to_bytes_versioned
from solders.presigner import Presigner
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction, VersionedTransaction

from .client import EkmsClient
from .errors import EkmsError, VerificationError

__all__ = ["EkmsSolanaSigner"]

SolanaMessage = Union[bytes, bytearray, memoryview, Message, MessageV0]


def message_bytes(message: SolanaMessage) -> bytes:
    """The bytes a signature covers: ``to_bytes_versioned(message)`` for a solders
    message (the ``0x80`` prefix of a v0 message included), the bytes themselves
    otherwise."""
    if isinstance(message, (Message, MessageV0)):
        return to_bytes_versioned(message)
    return bytes(message)


class EkmsSolanaSigner:
    """A Solana signer backed by an enclave-kms ``ed25519`` key.

    Args:
        client: the :class:`~ekms_client.EkmsClient` (its token needs scope ``sign`` on
            this key).
        key_id: the key's id.
        pubkey: the key's public key (a ``Pubkey`` or its base58). Without it, the key
            is read with ``GET /v1/keys/{key_id}`` (scope ``keys:read``); a
            ``sign``-only token must pass it.
        on_receipt: called with each signature's audit receipt.

    Signing methods raise :class:`~ekms_client.PolicyDenied` (with ``rule``) when the
    key's policy refuses, :class:`~ekms_client.Unauthorized`,
    :class:`~ekms_client.EkmsError`, and :class:`~ekms_client.VerificationError` when
    the returned signature does not verify for the key over the bytes sent.
    """

    def __init__(
        self,
        client: EkmsClient,
        key_id: str,
        *,
        pubkey: Pubkey | str | None = None,
        on_receipt: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.client = client
        self.key_id = key_id
        self.on_receipt = on_receipt
        if pubkey is None:
            key = client.get_key(key_id)
            if key.get("algorithm") != "ed25519":
                raise ValueError(f"key {key_id} is {key.get('algorithm')!r}, not ed25519")
            pubkey = key["address"]
        self._pubkey = pubkey if isinstance(pubkey, Pubkey) else Pubkey.from_string(pubkey)

    def __repr__(self) -> str:
        return f"EkmsSolanaSigner(key_id={self.key_id!r}, pubkey={str(self._pubkey)!r})"

    def pubkey(self) -> Pubkey:
        """The key's public key (its Solana address)."""
        return self._pubkey

    def _sign(self, kind: str, data: bytes) -> tuple[Signature, dict[str, Any]]:
        answer = self.client.sign(self.key_id, kind, base64.b64encode(data).decode())
        try:
            sig = Signature.from_string(answer["signature"])
        except (KeyError, TypeError, ValueError) as e:
            raise EkmsError("invalid_answer", f"{kind} answer: {e!r}") from e
        receipt = answer.get("receipt")
        if self.on_receipt is not None and isinstance(receipt, dict):
            self.on_receipt(receipt)
        if not sig.verify(self._pubkey, data):
            raise VerificationError("verification_failed", f"{kind}: the signature does not verify for the key")
        return sig, answer

    def sign_message(self, message: SolanaMessage) -> Signature:
        """Signs a transaction message (kind ``solana_transaction``, sent as a bare
        message): what ``Keypair.sign_message`` does, under the key's policy.

        Args:
            message: the serialized message, legacy or v0 (``bytes(message)`` for a legacy
                ``Message``, ``to_bytes_versioned(message)`` for a ``MessageV0``), or the
                solders message object itself. The key must be a required signer.

        Returns:
            the ed25519 signature over those bytes, for
            ``VersionedTransaction.populate(message, [...])``.
        """
        return self._sign("solana_transaction", message_bytes(message))[0]

    def sign_transaction(self, transaction: VersionedTransaction | Transaction | bytes) -> VersionedTransaction:
        """Signs a whole transaction (kind ``solana_transaction``): the key's signature is
        put in its slot, the other slots are kept as given.

        Args:
            transaction: a solders ``VersionedTransaction`` or legacy ``Transaction``, or
                its wire bytes, with every signature slot present (unsigned slots all
                zero: ``Signature.default()``).

        Returns:
            the transaction with the key's signature, as a ``VersionedTransaction``.
        """
        raw = bytes(transaction)
        tx = VersionedTransaction.from_bytes(raw)
        data = message_bytes(tx.message)
        keys = list(tx.message.account_keys)
        if self._pubkey not in keys[: tx.message.header.num_required_signatures]:
            raise ValueError(f"{self._pubkey} is not a required signer of the transaction")
        slot = keys.index(self._pubkey)
        answer = self.client.sign(self.key_id, "solana_transaction", base64.b64encode(raw).decode())
        try:
            sig = Signature.from_string(answer["signature"])
            signed = VersionedTransaction.from_bytes(base64.b64decode(answer["signed_transaction"], validate=True))
        except (KeyError, TypeError, ValueError) as e:
            raise EkmsError("invalid_answer", f"solana_transaction answer: {e!r}") from e
        receipt = answer.get("receipt")
        if self.on_receipt is not None and isinstance(receipt, dict):
            self.on_receipt(receipt)
        if not sig.verify(self._pubkey, data):
            raise VerificationError("verification_failed", "solana_transaction: the signature does not verify for the key")
        expected = list(tx.signatures)
        expected[slot] = sig
        if message_bytes(signed.message) != data or list(signed.signatures) != expected:
            raise VerificationError("verification_failed", "solana_transaction: the signed transaction is not the one sent")
        return signed

    def presigner(self, message: SolanaMessage) -> Presigner:
        """A solders ``Presigner`` holding the key's signature over ``message``, to pass
        with other signers to ``VersionedTransaction(message, [...])``."""
        return Presigner(self._pubkey, self.sign_message(message))

    def sign_offchain_message(self, message: bytes) -> Signature:
        """Signs a Solana off-chain message (kind ``solana_offchain_message``).

        Args:
            message: the whole message: the ``\\xffsolana offchain`` header, version 0,
                the key among its signers, the body (the policy's ``offchain_messages``
                judges it).

        Returns:
            the ed25519 signature over the whole message.
        """
        return self._sign("solana_offchain_message", bytes(message))[0]
