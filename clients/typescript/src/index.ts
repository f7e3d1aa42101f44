// @enclave-kms/client: the API client and its errors. The library adapters are subpaths,
// so that each pulls in only its own library:
//   @enclave-kms/client/viem         ekmsAccount (viem `toAccount`)
//   @enclave-kms/client/ethers       EkmsSigner (ethers v6 `AbstractSigner`)
//   @enclave-kms/client/solana-kit   ekmsSolanaSigner (@solana/kit `TransactionPartialSigner`)
//   @enclave-kms/client/solana-web3  EkmsWeb3Signer (@solana/web3.js v1)
export * from "./client.js";
