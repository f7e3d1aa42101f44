"""The example bots (examples/, issue 11 item 6) as `make examples` runs them: the
TypeScript keeper bot (viem), the Python keeper bot (web3.py) and the SPL bot
(@solana/kit) against their own `ekms sim`, each output verified with eth-account and
solders; and the README's "Use it from your code" lines, which must be the examples'
own (`README:begin` / `README:end` regions). Needs Node.js and npm (`make test-e2e`
builds clients/typescript first; without a fresh dist/ the runner builds it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ekms_e2e import REPO

sys.path.insert(0, str(REPO / "examples"))

import run_examples  # noqa: E402


def test_readme_shows_the_examples_lines():
    run_examples.check_readme()


@pytest.mark.parametrize(
    "edit",
    [
        # A line of an example changed in the README only.
        lambda s: s.replace('maxFeePerGas: parseGwei("30")', 'maxFeePerGas: parseGwei("31")', 1),
        # A line in the README that no example runs.
        lambda s: s.replace("const account = await ekmsAccount({ client, keyId });\n",
                            "const account = await ekmsAccount({ client, keyId });\nawait account.signAuthorization({});\n", 1),
        # The section gone.
        lambda s: s.replace("## Use it from your code", "## Usage", 1),
    ],
    ids=["changed", "invented", "missing"],
)
def test_the_readme_check_catches_drift(tmp_path: Path, edit):
    readme = (REPO / "README.md").read_text()
    edited = edit(readme)
    assert edited != readme
    (tmp_path / "README.md").write_text(edited)
    with pytest.raises(run_examples.ExampleFailure):
        run_examples.check_readme(tmp_path / "README.md")


def test_make_examples(capsys):
    rc = run_examples.main([])
    out, err = capsys.readouterr()
    assert rc == 0, f"{out}\n{err}"
    assert "examples: all three signed and verified" in out
    assert out.count("verified: signed by the key") == 3
