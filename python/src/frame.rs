//! Frames between a Python replica's Rust process and its Python worker (one Unix socket):
//! `u32 length` (of what follows, little-endian), `u8 kind`, `u64 id`, `u32 meta length`, the
//! meta (JSON, may be empty) and the body. `photon_worker/protocol.py` is the other end.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Replica -> worker: a request (meta: its head; body: its body).
pub const REQUEST: u8 = 1;
/// Replica -> worker: the caller of request `id` went away.
pub const CANCEL: u8 = 2;
/// Replica -> worker: apply a `user_config` (meta `{"user_config": ...}`).
pub const RECONFIGURE: u8 = 3;
/// Replica -> worker: run `check_health`.
pub const HEALTH: u8 = 4;
/// Replica -> worker: run `__del__` and exit.
pub const SHUTDOWN: u8 = 5;
/// Replica -> worker: the head of the answer to handle call `id` (meta `{"status", "headers"}`,
/// and `"end": true` when the body is all there).
pub const HANDLE_START: u8 = 6;
/// Replica -> worker: answer bytes of handle call `id`.
pub const HANDLE_CHUNK: u8 = 7;
/// Replica -> worker: handle call `id` ended (meta `{}` or `{"error": {"kind", "message"}}`).
pub const HANDLE_END: u8 = 8;
/// Replica -> worker: a WebSocket message from the client of request `id` (meta
/// `{"text": bool}`; body: the message).
pub const WS_RECEIVE: u8 = 9;
/// Replica -> worker: the client closed request `id`'s WebSocket (meta `{"code"}`).
pub const WS_DISCONNECT: u8 = 10;
/// Worker -> replica: the deployment is built (meta `{}`) or not (`{"error": traceback}`).
pub const READY: u8 = 20;
/// Worker -> replica: the head of request `id`'s reply (meta `{"status", "headers", "end"}`).
pub const REPLY_START: u8 = 21;
/// Worker -> replica: reply bytes (meta `{"text": bool}`: one WebSocket message).
pub const REPLY_CHUNK: u8 = 22;
/// Worker -> replica: the reply ended (meta `{}` or `{"error": traceback}`; `{"code",
/// "reason"}` closes a WebSocket).
pub const REPLY_END: u8 = 23;
/// Worker -> replica: a RECONFIGURE / HEALTH / SHUTDOWN finished (meta `{}` or `{"error"}`).
pub const CONTROL_DONE: u8 = 24;
/// Worker -> replica: call a deployment (meta `{"app", "deployment", "method", "request_id",
/// "model_id", "stream"}`; body: the pickled arguments).
pub const HANDLE_CALL: u8 = 25;
/// Worker -> replica: the caller of handle call `id` went away.
pub const HANDLE_CANCEL: u8 = 26;
/// Worker -> replica: the multiplexed models held or loading (meta `{"model_ids": [...]}`).
pub const MODELS: u8 = 27;

/// Frames larger than this end the connection (a request body is bounded well below it).
pub const MAX_FRAME: usize = photon_router::MAX_MESSAGE_BYTES + (1 << 20);

const HEAD: usize = 1 + 8 + 4;

/// One frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// What it is (the constants above).
    pub kind: u8,
    /// The call it belongs to.
    pub id: u64,
    /// Its meta (`Null` when empty).
    pub meta: Value,
    /// Its body.
    pub body: Bytes,
}

/// Encodes a frame.
pub fn encode(kind: u8, id: u64, meta: Option<&Value>, body: &[u8]) -> Bytes {
    let meta = meta.map(|m| m.to_string()).unwrap_or_default();
    let mut out = BytesMut::with_capacity(4 + HEAD + meta.len() + body.len());
    out.put_u32_le((HEAD + meta.len() + body.len()) as u32);
    out.put_u8(kind);
    out.put_u64_le(id);
    out.put_u32_le(meta.len() as u32);
    out.put_slice(meta.as_bytes());
    out.put_slice(body);
    out.freeze()
}

/// Reads the next frame; `None` at a clean end of the stream.
pub async fn read(reader: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Frame>> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if !(HEAD..=MAX_FRAME).contains(&len) {
        return Err(invalid(format!("frame length {len} out of bounds")));
    }
    let mut rest = BytesMut::zeroed(len);
    reader.read_exact(&mut rest).await?;
    let mut rest = rest.freeze();
    let kind = rest[0];
    let id = u64::from_le_bytes(rest[1..9].try_into().expect("8 bytes"));
    let meta_len = u32::from_le_bytes(rest[9..13].try_into().expect("4 bytes")) as usize;
    if meta_len > len - HEAD {
        return Err(invalid(format!("meta length {meta_len} exceeds the frame")));
    }
    let _ = rest.split_to(HEAD);
    let meta_bytes = rest.split_to(meta_len);
    let meta = if meta_bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&meta_bytes).map_err(|e| invalid(format!("frame meta: {e}")))?
    };
    Ok(Some(Frame { kind, id, meta, body: rest }))
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let meta = serde_json::json!({"status": 200, "headers": [["a", "b"]]});
        let mut wire = encode(REPLY_START, 7, Some(&meta), b"body").to_vec();
        wire.extend_from_slice(&encode(REPLY_END, 7, None, b""));
        let mut reader = &wire[..];
        let first = read(&mut reader).await.unwrap().unwrap();
        assert_eq!((first.kind, first.id, first.meta, &first.body[..]), (REPLY_START, 7, meta, &b"body"[..]));
        let second = read(&mut reader).await.unwrap().unwrap();
        assert_eq!((second.kind, second.meta), (REPLY_END, Value::Null));
        assert!(read(&mut reader).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn bad_lengths_are_errors_not_panics() {
        let mut short = &[5u8, 0, 0, 0, 1][..];
        assert!(read(&mut short).await.is_err());
        let mut bad_meta = encode(READY, 0, None, b"").to_vec();
        bad_meta[9 + 4] = 0xff;
        assert!(read(&mut &bad_meta[..]).await.is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// Whatever a worker sends, the replica reads frames or an error, never a panic; a frame
        /// with a length field that claims too much is refused before anything is allocated.
        #[test]
        fn any_bytes_read_as_frames_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..96),
                                                 kind in any::<u8>(), id in any::<u64>(),
                                                 body in prop::collection::vec(any::<u8>(), 0..32)) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let mut reader = &bytes[..];
                while let Ok(Some(_)) = read(&mut reader).await {}
                let wire = encode(kind, id, Some(&serde_json::json!({"k": id})), &body);
                let frame = read(&mut &wire[..]).await.unwrap().unwrap();
                assert_eq!((frame.kind, frame.id, &frame.body[..]), (kind, id, &body[..]));
            });
        }
    }
}
