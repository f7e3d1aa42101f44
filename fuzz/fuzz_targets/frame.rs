//! Fuzz target `frame`: the parent ↔ enclave frame codec (`ekms-shared`) on arbitrary
//! frame bodies (the bytes after the 4-byte length prefix, as `decode_request` and
//! `decode_response` take them).
//!
//! [`ekms_shared::fuzz_decode`] owns the checks: `frame_len` on the first four bytes,
//! both decoders on the whole input, and for every frame that decodes, encode → decode
//! gives an equal frame. A panic anywhere is a bug: both directions of the vsock
//! connection carry hostile bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ekms_shared::fuzz_decode(data));
