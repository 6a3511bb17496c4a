//! What a control plane sends, and what the client caches on disk.

use mesh_xds::client::fuzzing;
use mesh_xds::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use prost::Message;

/// The input's first byte picks the protocol: SotW, Delta or a cache file.
/// For the two protocols the rest is a sequence of frames, each a 16-bit
/// little-endian length and that many bytes of one response message.
pub fn xds(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => fuzzing::sotw(&messages::<DiscoveryResponse>(rest)),
        1 => fuzzing::delta(&messages::<DeltaDiscoveryResponse>(rest)),
        _ => fuzzing::cache_file(rest),
    }
}

fn messages<M: Message + Default>(mut data: &[u8]) -> Vec<M> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([data[0], data[1]]));
        let end = (2 + len).min(data.len());
        // A frame that is not a message is a response the transport
        // would already have refused: skipped.
        if let Ok(m) = M::decode(&data[2..end]) {
            out.push(m);
        }
        data = &data[end..];
    }
    out
}

/// Frames `messages` as [`xds`] reads them, after the `mode` byte.
pub fn frame<M: Message>(mode: u8, messages: &[M]) -> Vec<u8> {
    let mut out = vec![mode];
    for m in messages {
        let bytes = m.encode_to_vec();
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&bytes[..usize::from(len)]);
    }
    out
}
