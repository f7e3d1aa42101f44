"""Attack on `solana.allowed_destinations` (issue 8, wt-attack8): a System
`CreateAccount` is exempt from the destination list because it "funds a fresh account
that signs the message" — but that account's key is the application's (untrusted), so
a CreateAccount is a payment to whoever built the transaction. With space 0 and the
System program as owner, the application moves the lamports on at once. Shown here on
LiteSVM with the transaction the enclave signed."""

from __future__ import annotations

from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, TransferParams, create_account, transfer
from solders.transaction import Transaction

from ekms_e2e import ONE_SOL, SYSTEM_PROGRAM
from test_solana_runtime import LAMPORTS_PER_SIGNATURE, balance, execute, unsigned_legacy

LISTED = Keypair().pubkey()  # the only destination the policy's author allows
POLICY = {
    "version": 2,
    "enabled": True,
    "allowed_kinds": ["solana_transaction"],
    "solana": {
        "allowed_programs": [SYSTEM_PROGRAM],
        "max_lamports_per_transfer": ONE_SOL,
        "max_lamports_per_transaction": ONE_SOL,
        "max_fee_lamports": 100_000,
        "allowed_destinations": [str(LISTED)],
    },
}


def test_create_account_of_an_application_held_key_is_not_a_way_around_allowed_destinations(sim):
    client = sim.client
    key = client.create_key("ed25519", POLICY)
    payer = Pubkey.from_string(key["address"])
    svm = LiteSVM()
    svm.airdrop(payer, 10 * ONE_SOL)
    stranger = Keypair().pubkey()  # anyone at all: the attacker's real destination

    # A plain transfer to the application's own key is refused...
    mine = Keypair()
    plain, _ = unsigned_legacy(
        payer, [transfer(TransferParams(from_pubkey=payer, to_pubkey=mine.pubkey(), lamports=ONE_SOL))],
        svm.latest_blockhash())
    r = client.sign_solana(key["key_id"], plain)
    assert r.status == 403 and r.error.get("rule") == "solana.allowed_destinations", r

    # ...so the application asks for a CreateAccount of the same key instead.
    ix = create_account(CreateAccountParams(
        from_pubkey=payer, to_pubkey=mine.pubkey(), lamports=ONE_SOL, space=0,
        owner=Pubkey.from_string(SYSTEM_PROGRAM)))
    unsigned, _ = unsigned_legacy(payer, [ix], svm.latest_blockhash(), {mine.pubkey(): mine})
    r = client.sign_solana(key["key_id"], unsigned)
    if r.status == 200:
        # What the signature does on the runtime: the key pays 1 SOL to an account the
        # application holds, which sends it on to a stranger.
        execute(svm, r.json)
        assert balance(svm, mine.pubkey()) == ONE_SOL
        svm.airdrop(stranger, 1)  # (only so that get_balance has an account to read)
        out = Transaction.new_signed_with_payer(
            [transfer(TransferParams(from_pubkey=mine.pubkey(), to_pubkey=stranger,
                                     lamports=ONE_SOL - LAMPORTS_PER_SIGNATURE))],
            mine.pubkey(), [mine], svm.latest_blockhash())
        svm.send_transaction(out)
        moved = balance(svm, stranger) - 1
        raise AssertionError(
            f"the enclave signed a CreateAccount of an application-held key: {moved} lamports of "
            f"the key reached {stranger}, which is not in solana.allowed_destinations")
    assert r.status == 403 and r.error.get("rule") == "solana.allowed_destinations", r
