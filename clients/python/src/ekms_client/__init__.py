"""Python client of enclave-kms: keys in an AWS Nitro Enclave, used through the signer
interfaces Python code already calls.

- :class:`EkmsClient`: the REST API on the parent's Unix socket (README "Application API").
- :class:`EkmsAccount`: an eth-account ``LocalAccount`` (web3.py's
  ``SignAndSendRawMiddlewareBuilder`` takes it) for a ``secp256k1`` key.
- :class:`EkmsSolanaSigner`: ``pubkey()`` / ``sign_message()`` as solders' ``Keypair``,
  for an ``ed25519`` key.
- Errors: :class:`EkmsError`, :class:`PolicyDenied` (``.rule``), :class:`Unauthorized`,
  :class:`EkmsConnectionError`, :class:`VerificationError`.
"""

from .client import DEFAULT_TIMEOUT, EkmsClient
from .errors import EkmsConnectionError, EkmsError, PolicyDenied, Unauthorized, VerificationError
from .evm import EkmsAccount, unsigned_transaction_bytes
from .solana import EkmsSolanaSigner

__all__ = [
    "DEFAULT_TIMEOUT",
    "EkmsAccount",
    "EkmsClient",
    "EkmsConnectionError",
    "EkmsError",
    "EkmsSolanaSigner",
    "PolicyDenied",
    "Unauthorized",
    "VerificationError",
    "unsigned_transaction_bytes",
]

__version__ = "0.1.0"
