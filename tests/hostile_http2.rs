//! Hand-made HTTP/2 frames against the real server: CONTINUATION, rapid-reset and
//! unfinished-stream floods (cut off with ENHANCE_YOUR_CALM), and HTTP/2 slowloris (cut off by
//! the header read timeout). After each, proof that the server still answers a captured review
//! correctly.

mod support;

use std::sync::Arc;

use stsguard::{lookup::NoLookup, policy::Policy};
use support::{
    TestServer,
    connections::{GIVE_UP, assert_all_closed, flood, raw_h2, read_until, short_limits, trickle},
    hostile::{NOT_A_REVIEW, assert_still_serving},
};
use tokio::io::AsyncWriteExt;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// An HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// An HPACK literal header field without indexing, no Huffman coding.
fn hpack_literal(name: &str, value: &str) -> Vec<u8> {
    fn int(n: usize, out: &mut Vec<u8>) {
        if n < 127 {
            out.push(n as u8);
            return;
        }
        out.push(127);
        let mut rest = n - 127;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
    }
    let mut out = vec![0x00];
    int(name.len(), &mut out);
    out.extend_from_slice(name.as_bytes());
    int(value.len(), &mut out);
    out.extend_from_slice(value.as_bytes());
    out
}

/// The header block of `POST /validate`.
fn h2_request_block() -> Vec<u8> {
    [
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "localhost"),
        (":path", "/validate"),
    ]
    .iter()
    .flat_map(|(name, value)| hpack_literal(name, value))
    .collect()
}

/// A complete HEADERS frame on stream 1 (END_HEADERS, not END_STREAM) for `POST /validate`.
fn h2_headers() -> Vec<u8> {
    h2_frame(HEADERS, END_HEADERS, 1, &h2_request_block())
}

/// The frames a server sent, as (type, flags, stream, payload).
fn h2_frames(mut received: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut frames = Vec::new();
    while received.len() >= 9 {
        let len = usize::from(received[0]) << 16
            | usize::from(received[1]) << 8
            | usize::from(received[2]);
        let stream = u32::from_be_bytes(received[5..9].try_into().unwrap()) & 0x7fff_ffff;
        let end = (9 + len).min(received.len());
        frames.push((received[3], received[4], stream, received[9..end].to_vec()));
        received = &received[end..];
    }
    frames
}

/// The error code of the server's GOAWAY, if it sent one.
fn goaway_code(received: &[u8]) -> Option<u32> {
    h2_frames(received)
        .into_iter()
        .find(|(kind, ..)| *kind == GOAWAY)
        .map(|(.., payload)| u32::from_be_bytes(payload[4..8].try_into().unwrap()))
}

/// GOAWAY's ENHANCE_YOUR_CALM: the peer is flooding.
const ENHANCE_YOUR_CALM: u32 = 0xb;

#[tokio::test]
async fn http2_frame_floods_are_cut_off() {
    let server = TestServer::start(Policy::builtin()).await;
    let prefix = [H2_PREFACE, H2_SETTINGS].concat();
    let block = h2_request_block();

    // Control: the hand-made frames are a request the server answers (400: the body is empty).
    let mut control = raw_h2(&server).await;
    let mut request = prefix.clone();
    request.extend(h2_frame(HEADERS, END_HEADERS | END_STREAM, 1, &block));
    control.write_all(&request).await.unwrap();
    let answer = read_until(&mut control, b"EOF while parsing a value").await;
    assert!(answer.contains(NOT_A_REVIEW), "{answer}");
    drop(control);

    // CONTINUATION flood: one header block that never ends, 16 KB at a time, up to 8 MB.
    let mut continuation = prefix.clone();
    continuation.extend(h2_frame(HEADERS, 0, 1, &block));
    let filler = hpack_literal("x-flood", &"a".repeat(16_000));
    for _ in 0..512 {
        continuation.extend(h2_frame(CONTINUATION, 0, 1, &filler));
    }
    // Rapid reset: 20,000 requests, each cancelled as soon as it is sent.
    let mut reset = prefix.clone();
    for i in 0..20_000u32 {
        let stream = 2 * i + 1;
        reset.extend(h2_frame(HEADERS, END_HEADERS, stream, &block));
        reset.extend(h2_frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }
    // 5,000 requests that never end, far past the 200 concurrent streams allowed.
    let mut open = prefix;
    for i in 0..5_000u32 {
        open.extend(h2_frame(HEADERS, END_HEADERS, 2 * i + 1, &block));
    }
    for (what, bytes) in [
        ("a CONTINUATION flood", continuation),
        ("a rapid-reset flood", reset),
        ("5,000 unfinished streams", open),
    ] {
        let (received, closed) = flood(raw_h2(&server).await, bytes).await;
        assert!(closed, "{what} keeps the connection open");
        assert_eq!(goaway_code(&received), Some(ENHANCE_YOUR_CALM), "{what}");
        assert_still_serving(&server, what).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn slowloris_http2_headers_are_cut_off_by_the_header_read_timeout() {
    let server =
        TestServer::start_with(Policy::builtin(), Arc::new(NoLookup), short_limits()).await;

    // A HEADERS frame one byte a second after a proper preface; and only the preface, then
    // nothing: a connection that never sends a request (stsguard's own watchdog: hyper has no
    // header read timeout for HTTP/2).
    let prefix = [H2_PREFACE, H2_SETTINGS].concat();
    let headers = h2_headers();
    let (trickled, idle) = tokio::join!(
        trickle(raw_h2(&server).await, &prefix, &headers, GIVE_UP),
        trickle(raw_h2(&server).await, &prefix, b"", GIVE_UP),
    );
    assert_all_closed(vec![
        ("trickling an HTTP/2 HEADERS frame", trickled),
        ("sending no request after the HTTP/2 preface", idle),
    ]);
    assert_still_serving(&server, "HTTP/2 slowloris").await;
    server.stop().await;
}
