// What the test files share: the EVM destination, the EIP-712 "Ether Mail" example of
// the EIP itself, and a policy that allows exactly these (chain 1, DEST, that domain).

import type { Address } from "viem";

export const DEST: Address = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
export const MAIL_CONTRACT: Address = "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC";

export const EVM_POLICY = {
  version: 2,
  enabled: true,
  allowed_kinds: ["evm_transaction", "evm_message", "evm_typed_data"],
  evm: {
    chain_ids: [1],
    allowed_destinations: [DEST],
    max_value_wei: "1000000000000000",
    max_fee_wei: "100000000000000000",
    typed_data: {
      domains: [{ name: "Ether Mail", version: "1", chain_id: 1, verifying_contract: MAIL_CONTRACT }],
      primary_types: ["Mail"],
    },
  },
};

// The EIP-712 example of the EIP itself.
export const MAIL = {
  domain: { name: "Ether Mail", version: "1", chainId: 1, verifyingContract: MAIL_CONTRACT },
  types: {
    Person: [
      { name: "name", type: "string" },
      { name: "wallet", type: "address" },
    ],
    Mail: [
      { name: "from", type: "Person" },
      { name: "to", type: "Person" },
      { name: "contents", type: "string" },
    ],
  },
  primaryType: "Mail",
  message: {
    from: { name: "Cow", wallet: "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826" },
    to: { name: "Bob", wallet: "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB" },
    contents: "Hello, Bob!",
  },
} as const;
