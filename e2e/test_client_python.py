"""The Python client (clients/python, issue 11 item 3) against a real `ekms sim`, checked
with the libraries a Python user already has: eth-account recovers what `EkmsAccount`
signs, web3.py's `SignAndSendRawMiddlewareBuilder` sends through it to an eth-tester
chain that executes the transaction, and solders verifies what `EkmsSolanaSigner` signs
for a `VersionedTransaction`. Refusals reach Python as `PolicyDenied` (with the rule) and
`Unauthorized`; answers that do not check (a lying parent) as `VerificationError`."""

from __future__ import annotations

import base64
import json
import socketserver
import struct
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data
from eth_utils import keccak
from nacl.signing import VerifyKey
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message, MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from ekms_client import (
    EkmsAccount,
    EkmsClient,
    EkmsConnectionError,
    EkmsError,
    EkmsSolanaSigner,
    PolicyDenied,
    Unauthorized,
    VerificationError,
)
from ekms_e2e import SYSTEM_PROGRAM, sol_transfer_ix

DEST = "0x000000000000000000000000000000000000dEaD"
MAIL = "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"
#: eth-tester's chain id.
TESTER_CHAIN = 131277322940537
FEE_CAP = str(10**16)
SOL_DEST = Pubkey.from_string("GgBaCs3NCBuZN12kCJgAW63ydqohFkHEdfdEXBPzLHq1")


def evm_policy(kinds=("evm_transaction",), **evm):
    return {
        "version": 2,
        "enabled": True,
        "allowed_kinds": list(kinds),
        "evm": {
            "chain_ids": [1, TESTER_CHAIN],
            "allowed_destinations": [DEST],
            "max_value_wei": str(10**18),
            "max_fee_wei": FEE_CAP,
            **evm,
        },
    }


def solana_policy(**solana):
    return {
        "version": 2,
        "enabled": True,
        "allowed_kinds": ["solana_transaction", "solana_offchain_message"],
        "solana": {
            "allowed_programs": [SYSTEM_PROGRAM],
            "max_lamports_per_transfer": 10**9,
            "max_lamports_per_transaction": 10**9,
            "max_fee_lamports": 20_000,
            "allowed_destinations": [str(SOL_DEST)],
            "offchain_messages": {"prefixes": ["Sign in to "]},
            **solana,
        },
    }


@pytest.fixture
def ekms(sim) -> EkmsClient:
    """The Python client with the sim's admin token."""
    return EkmsClient(sim.socket_path, token_file=sim.client.admin_token_path())


def new_account(ekms: EkmsClient, policy: dict, **kw) -> EkmsAccount:
    key = ekms.create_key("secp256k1", policy=policy)
    return EkmsAccount(ekms, key["key_id"], **kw)


def mail(contents="Hello, Bob!", chain_id=1, big=2**200):
    """EIP-712's example, with a uint256 beyond 2**53."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
            "Mail": [
                {"name": "from", "type": "Person"},
                {"name": "to", "type": "Person"},
                {"name": "contents", "type": "string"},
                {"name": "amount", "type": "uint256"},
                {"name": "tag", "type": "bytes32"},
            ],
        },
        "primaryType": "Mail",
        "domain": {"name": "Ether Mail", "version": "1", "chainId": chain_id, "verifyingContract": MAIL},
        "message": {
            "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
            "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
            "contents": contents,
            "amount": big,
            "tag": b"\x01" * 32,
        },
    }


# --------------------------------------------------------------------------- EVM


def test_sign_transaction_eip1559_eip2930_legacy_recover_with_eth_account(ekms):
    receipts = []
    account = new_account(ekms, evm_policy(), on_receipt=receipts.append)
    assert account.address == ekms.get_key(account.key_id)["address"]
    common = {"to": DEST, "value": 10**15, "nonce": 7, "chainId": 1}
    txs = {
        2: {**common, "gas": 21_000, "maxFeePerGas": 30 * 10**9, "maxPriorityFeePerGas": 10**9, "type": 2},
        1: {**common, "gas": 30_000, "gasPrice": 20 * 10**9,
            "accessList": [{"address": DEST, "storageKeys": ["0x" + "00" * 31 + "01"]}]},
        0: {**common, "gas": 21_000, "gasPrice": 20 * 10**9},
    }
    for tx_type, tx in txs.items():
        signed = account.sign_transaction({**tx, "from": account.address})
        raw = bytes(signed.raw_transaction)
        assert Account.recover_transaction(raw) == account.address
        assert bytes(signed.hash) == keccak(raw)
        if tx_type:
            assert raw[0] == tx_type and signed.v in (0, 1)
        else:
            assert raw[0] >= 0xC0 and signed.v in (1 * 2 + 35, 1 * 2 + 36)  # EIP-155
    assert [r["seq"] for r in receipts] == sorted(r["seq"] for r in receipts) and len(receipts) == 3
    with pytest.raises(TypeError, match="from field"):
        account.sign_transaction({**txs[2], "from": MAIL})
    with pytest.raises(ValueError, match="chainId"):
        account.sign_transaction({k: v for k, v in txs[0].items() if k != "chainId"})


def test_sign_message_and_typed_data_recover_with_eth_account(ekms):
    account = new_account(
        ekms,
        evm_policy(
            ["evm_message", "evm_typed_data"],
            messages={"prefixes": ["Sign in to "]},
            typed_data={"domains": [{"name": "Ether Mail", "chain_id": 1}], "primary_types": ["Mail"]},
        ),
    )
    msg = encode_defunct(text="Sign in to example.org")
    signed = account.sign_message(msg)
    assert Account.recover_message(msg, signature=signed.signature) == account.address
    assert len(signed.signature) == 65 and signed.v in (27, 28)

    td = mail()
    signed = account.sign_typed_data(full_message=td)
    assert Account.recover_message(encode_typed_data(full_message=td), signature=signed.signature) == account.address
    # The three-part form, as eth-account takes it.
    types = {k: v for k, v in td["types"].items() if k != "EIP712Domain"}
    parts = account.sign_typed_data(td["domain"], types, td["message"])
    assert parts.message_hash == signed.message_hash
    assert Account.recover_message(encode_typed_data(td["domain"], types, td["message"]),
                                   signature=parts.signature) == account.address

    with pytest.raises(PolicyDenied) as e:
        account.sign_message(encode_defunct(text="transfer everything"))
    assert e.value.rule == "evm.messages" and "evm.messages" in str(e.value)
    with pytest.raises(PolicyDenied) as e:
        account.sign_typed_data(full_message=mail(chain_id=137))
    assert e.value.rule in ("evm.typed_data.domains", "evm.chain_ids"), e.value
    with pytest.raises(ValueError, match="personal_sign"):
        account.sign_message(encode_typed_data(full_message=td))


def test_unsafe_sign_hash_needs_allow_raw_digest(ekms):
    digest = keccak(b"a digest")
    strict = new_account(ekms, evm_policy(["evm_digest"]))
    with pytest.raises(PolicyDenied) as e:
        strict.unsafe_sign_hash(digest)
    assert e.value.rule == "evm.allow_raw_digest" and e.value.status == 403
    loose = new_account(ekms, evm_policy(["evm_digest"], allow_raw_digest=True))
    signed = loose.unsafe_sign_hash(digest)
    assert Account._recover_hash(digest, signature=signed.signature) == loose.address
    assert loose.unsafe_sign_hash("0x" + digest.hex()).signature == signed.signature


def test_web3_sign_and_send_raw_middleware_on_an_eth_tester_chain(ekms):
    from web3 import EthereumTesterProvider, Web3
    from web3.middleware import SignAndSendRawMiddlewareBuilder

    w3 = Web3(EthereumTesterProvider())
    assert w3.eth.chain_id == TESTER_CHAIN
    key_id = ekms.create_key("secp256k1", policy=evm_policy())["key_id"]

    # What a web3.py user writes (README "Python clients"):
    account = EkmsAccount(ekms, key_id)
    w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(account), layer=0)

    w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": account.address, "value": 3 * 10**18})
    sent = []
    sign = account.sign_transaction
    account.sign_transaction = lambda tx, *a, **k: sent.append(sign(tx, *a, **k)) or sent[-1]

    before = w3.eth.get_balance(DEST)
    tx_hash = w3.eth.send_transaction({"from": account.address, "to": DEST, "value": 12345})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    assert len(sent) == 1
    raw = bytes(sent[0].raw_transaction)
    assert raw[0] == 2  # web3 filled EIP-1559 fees
    assert Account.recover_transaction(raw) == account.address
    assert bytes(tx_hash) == keccak(raw)
    assert w3.eth.get_transaction(tx_hash)["from"] == account.address
    assert w3.eth.get_balance(DEST) == before + 12345
    assert w3.eth.get_transaction_count(account.address) == 1

    # A refusal reaches web3.py's caller as PolicyDenied, and nothing is sent.
    with pytest.raises(PolicyDenied) as e:
        w3.eth.send_transaction({"from": account.address, "to": MAIL, "value": 1})
    assert e.value.rule == "evm.allowed_destinations"
    with pytest.raises(PolicyDenied) as e:
        w3.eth.send_transaction({"from": account.address, "to": DEST, "value": 2 * 10**18})
    assert e.value.rule == "evm.max_value_wei"
    assert w3.eth.get_transaction_count(account.address) == 1


# ------------------------------------------------------------------------ Solana


def offchain_message(signer: bytes, text: bytes) -> bytes:
    """Solana off-chain message, header version 0."""
    return (b"\xffsolana offchain" + bytes([0]) + bytes(32) + bytes([0, 1]) + signer
            + struct.pack("<H", len(text)) + text)


def transfer_ix(payer: Pubkey, lamports: int = 5000):
    return sol_transfer_ix(payer, SOL_DEST, lamports)


def test_solana_signer_fills_versioned_transactions_that_verify(ekms):
    key = ekms.create_key("ed25519", policy=solana_policy())
    sol_key_id = key["key_id"]

    # What a solders user writes (README "Python clients"):
    signer = EkmsSolanaSigner(ekms, sol_key_id)
    message = MessageV0.try_compile(signer.pubkey(), [transfer_ix(signer.pubkey())], [], Hash.new_unique())
    tx = VersionedTransaction.populate(message, [signer.sign_message(to_bytes_versioned(message))])

    assert tx.verify_with_results() == [True]
    assert str(signer.pubkey()) == key["address"]
    v0 = message
    ix = transfer_ix(signer.pubkey())
    # The message object is taken as well (its versioned bytes are signed).
    assert VersionedTransaction.populate(v0, [signer.sign_message(v0)]).verify_with_results() == [True]

    legacy = Message.new_with_blockhash([ix], signer.pubkey(), Hash.new_unique())
    sig = signer.sign_message(bytes(legacy))
    tx = VersionedTransaction.populate(legacy, [sig])
    assert all(tx.verify_with_results())
    VerifyKey(bytes(signer.pubkey())).verify(bytes(legacy), bytes(sig))

    # A whole unsigned transaction: the signature lands in the key's slot.
    unsigned = VersionedTransaction.populate(v0, [Signature.default()])
    assert all(signer.sign_transaction(unsigned).verify_with_results())

    # With a sponsor paying the fee: a Presigner beside the sponsor's Keypair.
    sponsor = Keypair()
    key2 = ekms.create_key("ed25519", policy=solana_policy(allowed_fee_payers=[str(sponsor.pubkey())]))
    signer2 = EkmsSolanaSigner(ekms, key2["key_id"], pubkey=key2["address"])
    msg = MessageV0.try_compile(sponsor.pubkey(), [sol_transfer_ix(signer2.pubkey(), SOL_DEST, 1)], [],
                                Hash.new_unique())
    tx = VersionedTransaction(msg, [sponsor, signer2.presigner(msg)])
    assert tx.verify_with_results() == [True, True]

    # Off-chain messages.
    text = offchain_message(bytes(signer.pubkey()), b"Sign in to example.org")
    VerifyKey(bytes(signer.pubkey())).verify(text, bytes(signer.sign_offchain_message(text)))
    with pytest.raises(PolicyDenied) as e:
        signer.sign_offchain_message(offchain_message(bytes(signer.pubkey()), b"Send all my SOL"))
    assert e.value.rule == "solana.offchain_messages"
    # A transfer to an address the policy does not list.
    other = MessageV0.try_compile(signer.pubkey(), [sol_transfer_ix(signer.pubkey(), Pubkey.new_unique(), 1)], [],
                                  Hash.new_unique())
    with pytest.raises(PolicyDenied) as e:
        signer.sign_message(other)
    assert e.value.rule == "solana.allowed_destinations"


# ------------------------------------------------------------------------ errors


def test_tokens_reach_python_as_unauthorized(sim, ekms):
    evm = ekms.create_key("secp256k1", policy=evm_policy())
    sol = ekms.create_key("ed25519", policy=solana_policy())
    tx = {"to": DEST, "value": 1, "nonce": 0, "chainId": 1, "gas": 21_000,
          "maxFeePerGas": 10**9, "maxPriorityFeePerGas": 10**9}

    bad = EkmsClient(sim.socket_path, token="ekms_" + "A" * 43)
    with pytest.raises(Unauthorized) as e:
        EkmsAccount(bad, evm["key_id"], address=evm["address"]).sign_transaction(tx)
    assert e.value.status == 401 and e.value.code == "unauthenticated"
    with pytest.raises(Unauthorized):
        EkmsClient(sim.socket_path).get_key(evm["key_id"])  # no token at all

    # A sign-only token for the EVM key: signs with it (address given: it may not read
    # keys), is refused the Solana key and key reads with 403 forbidden.
    token = ekms.request("POST", "/v1/tokens", {"name": "bot", "scopes": ["sign"], "key_ids": [evm["key_id"]]})
    bot = EkmsClient(sim.socket_path, token=token["token"])
    account = EkmsAccount(bot, evm["key_id"], address=evm["address"])
    assert Account.recover_transaction(account.sign_transaction(tx).raw_transaction) == evm["address"]
    with pytest.raises(Unauthorized) as e:
        EkmsAccount(bot, evm["key_id"])
    assert e.value.status == 403 and e.value.code == "forbidden"
    with pytest.raises(Unauthorized) as e:
        EkmsSolanaSigner(bot, sol["key_id"], pubkey=sol["address"]).sign_offchain_message(
            offchain_message(bytes(Pubkey.from_string(sol["address"])), b"Sign in to x"))
    assert e.value.status == 403

    # A policy refusal is PolicyDenied, an EkmsError with the rule.
    with pytest.raises(PolicyDenied) as e:
        account.sign_transaction({**tx, "chainId": 5})
    assert isinstance(e.value, EkmsError) and e.value.rule == "evm.chain_ids" and e.value.code == "policy_denied"
    assert "evm.chain_ids" in str(e.value)


def test_other_errors(sim, ekms, tmp_path):
    with pytest.raises(EkmsError) as e:
        EkmsAccount(ekms, "00000000-0000-4000-8000-000000000000")
    assert e.value.code == "key_not_found" and e.value.status == 404
    assert not isinstance(e.value, (PolicyDenied, Unauthorized))
    with pytest.raises(EkmsConnectionError):
        EkmsClient(tmp_path / "nothing.sock", token="x").health()
    sol = ekms.create_key("ed25519", policy=solana_policy())
    with pytest.raises(ValueError, match="not secp256k1"):
        EkmsAccount(ekms, sol["key_id"])
    assert ekms.health()["status"] == "ok"


# ------------------------------------------------------------------- lying parent


class _Liar:
    """A Unix-socket HTTP server that answers every sign request with `answer(body)`."""

    def __init__(self, path: Path, answer):
        liar = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                data = json.dumps(liar.answer(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

            def get_request(self):
                sock, _ = super().get_request()
                return sock, ("local", 0)

        self.answer = answer
        self.server = Server(str(path), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_answers_that_do_not_check_raise_verification_error(tmp_path):
    """The parent relays the enclave's answers and is not trusted: a signature by
    another key, or over other bytes, is never returned to the caller."""
    real = Account.create()
    other = Account.create()
    tx = {"to": DEST, "value": 1, "nonce": 0, "chainId": 1, "gas": 21_000,
          "maxFeePerGas": 10**9, "maxPriorityFeePerGas": 10**9}

    def evm_answer(body):
        signed = other.sign_transaction(tx)
        return {"signature": {"r": hex(signed.r), "s": hex(signed.s), "y_parity": signed.v, "v": signed.v},
                "signed_transaction": "0x" + bytes(signed.raw_transaction).hex(),
                "transaction_hash": "0x" + bytes(signed.hash).hex(), "receipt": {}}

    sock = tmp_path / "liar.sock"
    with _Liar(sock, evm_answer):
        account = EkmsAccount(EkmsClient(sock, token="x"), "k", address=real.address)
        with pytest.raises(VerificationError, match="recover"):
            account.sign_transaction(tx)

    # A real signature of the right key over another transaction (value changed).
    def swapped(body):
        signed = real.sign_transaction({**tx, "value": 10**18})
        return {**evm_answer(body), "signature": {"r": hex(signed.r), "s": hex(signed.s), "y_parity": signed.v,
                                                   "v": signed.v},
                "signed_transaction": "0x" + bytes(signed.raw_transaction).hex(),
                "transaction_hash": "0x" + bytes(signed.hash).hex()}

    sock2 = tmp_path / "liar2.sock"
    with _Liar(sock2, swapped):
        account = EkmsAccount(EkmsClient(sock2, token="x"), "k", address=real.address)
        with pytest.raises(VerificationError, match="not the one sent"):
            account.sign_transaction(tx)

    # A message signed by another key.
    def msg_answer(body):
        s = other.sign_message(encode_defunct(hexstr=body["payload"]))
        return {"signature": "0x" + bytes(s.signature).hex(), "r": hex(s.r), "s": hex(s.s), "v": s.v,
                "y_parity": s.v - 27, "digest": "0x" + bytes(s.message_hash).hex(), "receipt": {}}

    sock3 = tmp_path / "liar3.sock"
    with _Liar(sock3, msg_answer):
        account = EkmsAccount(EkmsClient(sock3, token="x"), "k", address=real.address)
        with pytest.raises(VerificationError):
            account.sign_message(encode_defunct(text="hi"))

    # Solana: a signature by another keypair.
    impostor, owner = Keypair(), Keypair()
    msg = MessageV0.try_compile(owner.pubkey(), [sol_transfer_ix(owner.pubkey(), SOL_DEST, 1)], [], Hash.new_unique())

    def sol_answer(body):
        data = base64.b64decode(body["payload"])
        return {"signature": str(impostor.sign_message(data)), "signed_transaction": body["payload"], "receipt": {}}

    sock4 = tmp_path / "liar4.sock"
    with _Liar(sock4, sol_answer):
        signer = EkmsSolanaSigner(EkmsClient(sock4, token="x"), "k", pubkey=owner.pubkey())
        with pytest.raises(VerificationError):
            signer.sign_message(msg)
