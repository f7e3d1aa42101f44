"""An eth-account ``LocalAccount`` whose key stays in the enclave.

:class:`EkmsAccount` is a :class:`eth_account.signers.local.LocalAccount` (a subclass,
so web3.py's ``SignAndSendRawMiddlewareBuilder.build(account)``, which dispatches on that
type, takes it) whose signing methods ask enclave-kms instead of using a private key:

=============================  ==========================  ================================
method                         payload kind sent           returns
=============================  ==========================  ================================
``sign_transaction(dict)``     ``evm_transaction``         ``SignedTransaction``
``sign_message(signable)``     ``evm_message`` (EIP-191    ``SignedMessage``
                               version ``E`` only)
``sign_typed_data(...)``       ``evm_typed_data``          ``SignedMessage``
``unsafe_sign_hash(hash)``     ``evm_digest``              ``SignedMessage``
=============================  ==========================  ================================

Every answer is checked here before it is returned (the parent that relays it is not
trusted): the signed transaction must be the one built from the dict with the returned
signature, the digest must be the one eth-account computes, and the signature must
recover to the key's address; otherwise :class:`~ekms_client.VerificationError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import rlp
from eth_account._utils.legacy_transactions import (
    Transaction,
    UnsignedTransaction,
    encode_transaction,
    serializable_unsigned_transaction_from_dict,
)
from eth_account._utils.encode_typed_data.encoding_and_hashing import get_primary_type
from eth_account._utils.transaction_utils import transaction_rpc_to_rlp_structure
from eth_account.datastructures import SignedMessage, SignedTransaction
from eth_account.messages import SignableMessage, encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions import TypedTransaction
from eth_keys import keys as eth_keys
from eth_typing import ChecksumAddress
from eth_utils import keccak, to_checksum_address
from eth_utils.toolz import dissoc
from hexbytes import HexBytes

from .client import EkmsClient
from .errors import EkmsError, VerificationError

__all__ = ["EkmsAccount", "unsigned_transaction_bytes"]

#: JSON numbers are exact in every JSON implementation up to 2**53; larger integers in
#: typed data are sent as decimal strings (EIP-712 JSON accepts both).
_JSON_SAFE_INT = 2**53 - 1

_DOMAIN_FIELDS = (
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
    ("salt", "bytes32"),
)


def unsigned_transaction_bytes(transaction_dict: Mapping[str, Any]) -> bytes:
    """The unsigned EIP-2718 bytes eth-account would sign for ``transaction_dict``.

    The dict is read exactly as :meth:`eth_account.Account.sign_transaction` reads it
    (its serializers: hex or int quantities, ``type`` inferred from the fee fields,
    ``data`` or ``input``, ``accessList``), without ``from``.

    Returns:
        ``0x02 || rlp([chainId, nonce, maxPriorityFeePerGas, maxFeePerGas, gas, to,
        value, data, accessList])`` (EIP-1559), ``0x01 || rlp([chainId, nonce, gasPrice,
        gas, to, value, data, accessList])`` (EIP-2930), or ``rlp([nonce, gasPrice, gas,
        to, value, data, chainId, 0, 0])`` (legacy, EIP-155).

    Raises:
        ValueError: a legacy transaction without ``chainId`` (the enclave signs only
            EIP-155 ones); eth-account's errors for a malformed dict.
    """
    return _unsigned(dict(transaction_dict))[1]


def _unsigned(tx: dict[str, Any]) -> tuple[Any, bytes]:
    obj = serializable_unsigned_transaction_from_dict(tx)
    if isinstance(obj, TypedTransaction):
        inner = obj.transaction
        fields = transaction_rpc_to_rlp_structure(dissoc(inner.dictionary, "v", "r", "s"))
        serializer = inner.__class__._unsigned_transaction_serializer
        unsigned = bytes([obj.transaction_type]) + rlp.encode(serializer.from_dict(fields))
    elif isinstance(obj, Transaction):
        # eth-account's EIP-155 signing form: v = chainId, r = s = 0.
        unsigned = rlp.encode(obj)
    elif isinstance(obj, UnsignedTransaction):
        raise ValueError("a legacy transaction needs a chainId: the enclave signs only EIP-155 transactions")
    else:  # pragma: no cover - eth-account returns one of the three
        raise TypeError(f"unknown transaction object {type(obj).__name__}")
    # The bytes sent are exactly those whose hash eth-account would sign.
    if keccak(unsigned) != bytes(obj.hash()):
        raise ValueError("unsigned transaction bytes do not match eth-account's signing hash")
    return obj, unsigned


def _int(value: Any) -> int:
    if isinstance(value, str):
        return int(value, 16) if value[:2].lower() == "0x" else int(value)
    if isinstance(value, (bytes, bytearray)):
        return int.from_bytes(value, "big")
    return int(value)


def _recover(digest: bytes, y_parity: int, r: int, s: int) -> ChecksumAddress:
    sig = eth_keys.Signature(vrs=(y_parity, r, s))
    return sig.recover_public_key_from_msg_hash(digest).to_checksum_address()


def _jsonable(value: Any) -> Any:
    """Typed-data values as JSON: bytes as ``0x`` hex, integers beyond 2**53 as
    decimal strings, tuples as lists."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "0x" + bytes(value).hex()
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        return value if -_JSON_SAFE_INT <= value <= _JSON_SAFE_INT else str(value)
    raise TypeError(f"typed data value of type {type(value).__name__} is not JSON")


def _eip191_digest(signable: SignableMessage) -> bytes:
    return keccak(b"\x19" + bytes(signable.version) + bytes(signable.header) + bytes(signable.body))


class EkmsAccount(LocalAccount):
    """An EVM signer backed by an enclave-kms ``secp256k1`` key.

    Args:
        client: the :class:`~ekms_client.EkmsClient` (its token needs scope ``sign`` on
            this key).
        key_id: the key's id (a UUID chosen by the enclave).
        address: the key's EIP-55 address. Without it, the key is read with
            ``GET /v1/keys/{key_id}``, which needs scope ``keys:read``; a ``sign``-only
            token must pass it. Pin the address you verified (``ekms keys verify``).
        on_receipt: called with each signature's audit receipt ``{"seq",
            "record_sha256", "signature"}`` (keep them for ``ekms audit verify``).

    The private key never leaves the enclave: ``key``, ``bytes(account)`` and
    ``encrypt`` raise ``TypeError``. EIP-7702 ``sign_authorization`` and blob
    transactions are not signed by the enclave and raise ``NotImplementedError``.

    Every signing method raises :class:`~ekms_client.PolicyDenied` (with ``rule``) when
    the key's policy refuses, :class:`~ekms_client.Unauthorized` for a token that may
    not use the key, :class:`~ekms_client.EkmsError` for other error answers and
    :class:`~ekms_client.VerificationError` for an answer that does not check.
    """

    def __init__(
        self,
        client: EkmsClient,
        key_id: str,
        *,
        address: str | None = None,
        on_receipt: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        # LocalAccount.__init__ takes a private key: deliberately not called.
        self.client = client
        self.key_id = key_id
        self.on_receipt = on_receipt
        if address is None:
            key = client.get_key(key_id)
            if key.get("algorithm") != "secp256k1":
                raise ValueError(f"key {key_id} is {key.get('algorithm')!r}, not secp256k1")
            address = key["address"]
        self._address = to_checksum_address(address)

    def __repr__(self) -> str:
        return f"EkmsAccount(key_id={self.key_id!r}, address={self._address!r})"

    @property
    def address(self) -> ChecksumAddress:
        """The key's EIP-55 address."""
        return self._address

    # The private key is the enclave's.
    @property
    def key(self) -> NoReturn:  # type: ignore[override]
        raise TypeError("an enclave-kms key has no exportable private key")

    def __bytes__(self) -> NoReturn:  # type: ignore[override]
        raise TypeError("an enclave-kms key has no exportable private key")

    def encrypt(self, *args: Any, **kwargs: Any) -> NoReturn:  # type: ignore[override]
        raise TypeError("an enclave-kms key has no exportable private key")

    def sign_authorization(self, authorization: dict[str, Any]) -> NoReturn:  # type: ignore[override]
        raise NotImplementedError("enclave-kms does not sign EIP-7702 authorizations")

    # ------------------------------------------------------------------ signing

    def _signed(self, kind: str, payload: Any) -> dict[str, Any]:
        answer = self.client.sign(self.key_id, kind, payload)
        if not isinstance(answer, dict):
            raise EkmsError("invalid_answer", f"sign answer is not an object: {answer!r:.200}")
        receipt = answer.get("receipt")
        if self.on_receipt is not None and isinstance(receipt, dict):
            self.on_receipt(receipt)
        return answer

    def sign_transaction(  # type: ignore[override]
        self, transaction_dict: Mapping[str, Any], blobs: Any = None
    ) -> SignedTransaction:
        """Signs a transaction dict, as :meth:`eth_account.Account.sign_transaction`.

        Args:
            transaction_dict: ``chainId``, ``nonce``, ``to``, ``value`` (wei), ``gas``,
                ``data``/``input``, and ``maxFeePerGas`` + ``maxPriorityFeePerGas``
                (EIP-1559), or ``gasPrice`` (legacy) with ``accessList`` (EIP-2930) or
                without; ``type`` is optional; ``from``, if present, must be this
                account's address. Quantities as ints or hex strings.

        Returns:
            ``SignedTransaction(raw_transaction, hash, r, s, v)``: ``v`` is the y parity
            (0/1) for typed transactions and ``chainId * 2 + 35 + parity`` for legacy
            ones, as eth-account gives them.

        Raises:
            TypeError: ``from`` is another address, or the dict is not a mapping.
            ValueError: a legacy transaction without ``chainId``.
            PolicyDenied, Unauthorized, EkmsError, VerificationError: see the class.
        """
        if blobs is not None:
            raise NotImplementedError("enclave-kms does not sign blob (EIP-4844) transactions")
        if not isinstance(transaction_dict, Mapping):
            raise TypeError(f"transaction_dict must be dict-like, got {transaction_dict!r}")
        tx = dict(transaction_dict)
        if "from" in tx:
            sender = tx.pop("from")
            if to_checksum_address(sender) != self._address:
                raise TypeError(f"from field must match the key's {self._address}, but it was {sender!r}")
        unsigned_obj, unsigned = _unsigned(tx)
        answer = self._signed("evm_transaction", "0x" + unsigned.hex())
        try:
            sig = answer["signature"]
            r, s, v, y = _int(sig["r"]), _int(sig["s"]), int(sig["v"]), int(sig["y_parity"])
            raw = HexBytes(answer["signed_transaction"])
            tx_hash = HexBytes(answer["transaction_hash"])
        except (KeyError, TypeError, ValueError) as e:
            raise EkmsError("invalid_answer", f"evm_transaction answer: {e!r}") from e
        # The raw transaction must be ours with the returned signature, hash and signer.
        if bytes(encode_transaction(unsigned_obj, (v, r, s))) != bytes(raw):
            raise VerificationError("verification_failed", "the signed transaction is not the one sent")
        if keccak(bytes(raw)) != bytes(tx_hash):
            raise VerificationError("verification_failed", "transaction_hash is not the hash of the transaction")
        if y not in (0, 1) or _recover(bytes(unsigned_obj.hash()), y, r, s) != self._address:
            raise VerificationError("verification_failed", "the signature does not recover to the key's address")
        return SignedTransaction(raw_transaction=raw, hash=tx_hash, r=r, s=s, v=v)

    def _signed_message(self, kind: str, payload: Any, digest: bytes) -> SignedMessage:
        answer = self._signed(kind, payload)
        try:
            r, s, v, y = _int(answer["r"]), _int(answer["s"]), int(answer["v"]), int(answer["y_parity"])
            signature = HexBytes(answer["signature"])
            answered_digest = HexBytes(answer["digest"])
        except (KeyError, TypeError, ValueError) as e:
            raise EkmsError("invalid_answer", f"{kind} answer: {e!r}") from e
        if bytes(answered_digest) != digest:
            raise VerificationError("verification_failed", f"{kind}: the enclave signed another digest")
        if (
            y not in (0, 1)
            or v != 27 + y
            or bytes(signature) != r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])
            or _recover(digest, y, r, s) != self._address
        ):
            raise VerificationError("verification_failed", f"{kind}: the signature does not recover to the key's address")
        return SignedMessage(message_hash=HexBytes(digest), r=r, s=s, v=v, signature=signature)

    def sign_message(self, signable_message: SignableMessage) -> SignedMessage:
        """Signs an EIP-191 ``personal_sign`` message (kind ``evm_message``).

        Args:
            signable_message: from :func:`eth_account.messages.encode_defunct`
                (version ``E``); its body (the message bytes) is what is sent.

        Returns:
            ``SignedMessage(message_hash, r, s, v, signature)``, ``v`` 27 or 28, ``signature``
            the 65 bytes ``r‖s‖v`` (``Account.recover_message`` takes it).

        Raises:
            ValueError: another EIP-191 version (use :meth:`sign_typed_data` for EIP-712;
                version ``0x00`` is not signed), or a header that does not state the
                body's length.
            PolicyDenied, Unauthorized, EkmsError, VerificationError: see the class.
        """
        if bytes(signable_message.version) != b"E":
            raise ValueError(
                f"only EIP-191 version E (personal_sign) messages are signed, not {bytes(signable_message.version)!r}"
                " (EIP-712: use sign_typed_data)"
            )
        body = bytes(signable_message.body)
        if bytes(signable_message.header) != b"thereum Signed Message:\n" + str(len(body)).encode():
            raise ValueError("the message header does not state the body's length (use encode_defunct)")
        return self._signed_message("evm_message", "0x" + body.hex(), _eip191_digest(signable_message))

    def sign_typed_data(
        self,
        domain_data: dict[str, Any] | None = None,
        message_types: dict[str, Any] | None = None,
        message_data: dict[str, Any] | None = None,
        full_message: dict[str, Any] | None = None,
    ) -> SignedMessage:
        """Signs EIP-712 typed data (kind ``evm_typed_data``), with the arguments of
        :meth:`eth_account.Account.sign_typed_data`: either ``full_message`` (``{"types",
        "primaryType", "domain", "message"}``) or the three parts (``message_types``
        without ``EIP712Domain``; the primary type is the one no other type refers to).

        Values may be ints, ``0x`` strings or bytes; bytes are sent as ``0x`` hex and
        integers beyond 2**53 as decimal strings. The digest is computed here with
        :func:`eth_account.messages.encode_typed_data` and must equal the enclave's.

        Returns:
            ``SignedMessage`` as :meth:`sign_message`.

        Raises:
            ValueError: neither or both forms given; eth-account's encoding errors.
            PolicyDenied, Unauthorized, EkmsError, VerificationError: see the class.
        """
        if full_message is not None:
            if domain_data is not None or message_types is not None or message_data is not None:
                raise ValueError("give full_message, or domain_data, message_types and message_data")
            signable = encode_typed_data(full_message=full_message)
            document = dict(full_message)
            if "primaryType" not in document:
                types = {k: v for k, v in document["types"].items() if k != "EIP712Domain"}
                document["primaryType"] = get_primary_type(types)
        else:
            if domain_data is None or message_types is None or message_data is None:
                raise ValueError("give full_message, or domain_data, message_types and message_data")
            signable = encode_typed_data(domain_data, message_types, message_data)
            domain_type = [{"name": n, "type": t} for n, t in _DOMAIN_FIELDS if n in domain_data]
            document = {
                "types": {"EIP712Domain": domain_type, **message_types},
                "primaryType": get_primary_type(message_types),
                "domain": domain_data,
                "message": message_data,
            }
        return self._signed_message("evm_typed_data", _jsonable(document), _eip191_digest(signable))

    def unsafe_sign_hash(self, message_hash: bytes | str) -> SignedMessage:  # type: ignore[override]
        """Signs a raw 32-byte digest (kind ``evm_digest``).

        **The key's policy must allow it**: a version 2 policy with ``"evm_digest"`` in
        ``allowed_kinds`` and ``"allow_raw_digest": true``, which bypasses every other
        rule of the policy (a digest may be any transaction's). Otherwise
        :class:`~ekms_client.PolicyDenied` with rule ``allowed_kinds`` or
        ``evm.allow_raw_digest``.

        Args:
            message_hash: 32 bytes, or ``0x`` + 64 hex digits.

        Returns:
            ``SignedMessage`` as :meth:`sign_message`.
        """
        digest = bytes(HexBytes(message_hash))
        if len(digest) != 32:
            raise ValueError(f"message_hash must be 32 bytes, got {len(digest)}")
        return self._signed_message("evm_digest", "0x" + digest.hex(), digest)
