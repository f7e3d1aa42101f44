//! `POST /v1/keys/{key_id}/sign` `{"kind","payload"}`: decodes the payload from its
//! text form ([`format::payload_bytes`]), calls [`crate::service::Service::sign`] and
//! formats the signature: EVM transactions `{"signature":{"r","s","y_parity","v"},
//! "signed_transaction","transaction_hash"}`; EVM messages, typed data and digests
//! `{"signature" (65 bytes r‖s‖v),"r","s","v","y_parity","digest"}`; Solana
//! transactions `{"signature","signed_transaction"}`; Solana off-chain messages
//! `{"signature"}`; each with the audit `"receipt"`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ekms_shared::api::{
    EvmDigestSigned, EvmSignature, EvmTransactionSigned, SignRequest as SignBody, SignResponse,
    SolanaMessageSigned, SolanaTransactionSigned,
};
use ekms_shared::audit::Receipt;
use ekms_shared::{PayloadKind, SignOutput, SignPayload};

use super::extract::{key_id, JsonBody};
use super::{ApiCode, ApiError, AppState};
use crate::auth::Caller;
use crate::format;
use crate::service::sign::SignRequest;

/// `POST /v1/keys/{key_id}/sign`.
pub(crate) async fn sign(
    caller: Caller,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    JsonBody(body): JsonBody<SignBody>,
) -> Result<Response, ApiError> {
    let key_id = key_id(path)?;
    let kind = PayloadKind::parse(&body.kind).ok_or_else(|| {
        ApiError::new(
            ApiCode::UnknownKind,
            format!(
                "kind {:?}: expected one of {}",
                body.kind,
                PayloadKind::ALL.map(PayloadKind::as_str).join(", ")
            ),
        )
    })?;
    let bytes = format::payload_bytes(kind, &body.payload)
        .ok_or_else(|| ApiError::new(ApiCode::InvalidPayload, format::payload_shape(kind)))?;
    let signed = state
        .service
        .sign(
            &caller,
            SignRequest {
                key_id,
                payload: SignPayload { kind, bytes },
            },
        )
        .await?;
    Ok(Json(sign_response(signed.output, signed.receipt)).into_response())
}

/// The signature as the API shows it (module docs).
fn sign_response(output: SignOutput, receipt: Receipt) -> SignResponse {
    match output {
        SignOutput::Evm {
            r,
            s,
            y_parity,
            v,
            signed_transaction,
            transaction_hash,
        } => SignResponse::EvmTransaction(EvmTransactionSigned {
            signature: EvmSignature {
                r: format::to_0x_hex(&r),
                s: format::to_0x_hex(&s),
                y_parity,
                v,
            },
            signed_transaction: format::to_0x_hex(&signed_transaction),
            transaction_hash: format::to_0x_hex(&transaction_hash),
            receipt,
        }),
        SignOutput::Solana {
            signature,
            signed_transaction,
        } => SignResponse::SolanaTransaction(SolanaTransactionSigned {
            signature: format::to_base58(&signature),
            signed_transaction: format::to_base64(&signed_transaction),
            receipt,
        }),
        SignOutput::EvmDigest {
            digest,
            r,
            s,
            y_parity,
        } => {
            // `eth_sign`'s 65 bytes: r || s || v with v = 27 + parity.
            let v = 27 + y_parity;
            let mut rsv = Vec::with_capacity(65);
            rsv.extend_from_slice(&r);
            rsv.extend_from_slice(&s);
            rsv.push(v);
            SignResponse::EvmDigest(EvmDigestSigned {
                signature: format::to_0x_hex(&rsv),
                r: format::to_0x_hex(&r),
                s: format::to_0x_hex(&s),
                v,
                y_parity,
                digest: format::to_0x_hex(&digest),
                receipt,
            })
        }
        SignOutput::SolanaMessage { signature } => {
            SignResponse::SolanaMessage(SolanaMessageSigned {
                signature: format::to_base58(&signature),
                receipt,
            })
        }
    }
}
