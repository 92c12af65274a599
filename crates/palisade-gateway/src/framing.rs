//! Connection-level framing inspection for HTTP/1.
//!
//! hyper resolves some ambiguous framing on its own (with both `Content-Length` and
//! `Transfer-Encoding` it drops the length; identical duplicate lengths are merged), so by the time a
//! request reaches the pipeline the evidence is gone. A gateway must refuse such requests outright:
//! the next hop may resolve the ambiguity differently, which is how request smuggling works. This
//! wrapper sits between the socket and hyper, follows the byte stream's message boundaries, and
//! records a verdict for each request head in order; the pipeline's first stage takes the verdict for
//! its request and answers 400 when the framing was ambiguous.
//!
//! Heads are parsed with httparse, the parser hyper itself uses, so both see a head end at the same
//! byte (bare `LF` line endings and leading empty lines included). The inspector never changes bytes.
//! When it cannot follow the stream any more (a head or chunk line it cannot parse or that is too long,
//! a refused head whose body it cannot delimit) it fails closed: every later request on the connection
//! is refused (`uninspectable_stream`). Only the HTTP/2 preface at the very start of a connection ends
//! inspection quietly, as h2 has no such ambiguity.

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a request head's framing was refused.
pub type Verdict = Option<&'static str>;

/// The verdict of every request the inspector could no longer follow.
pub const UNINSPECTABLE: &str = "uninspectable_stream";

/// Verdicts not yet taken beyond which the inspector stops (an upgraded connection whose payload
/// looks like HTTP heads would otherwise queue them without end); later requests are then refused.
const MAX_PENDING_VERDICTS: usize = 1024;

#[derive(Default)]
struct Queue {
    pending: VecDeque<Verdict>,
    /// The inspector lost the stream: requests beyond `pending` were not inspected.
    lost: bool,
}

/// Verdicts in request order, shared between the inspector and the connection's service.
#[derive(Clone, Default)]
pub struct Verdicts(Arc<Mutex<Queue>>);

impl Verdicts {
    /// The verdict for the next request on this connection (`None` when nothing was found). A poisoned
    /// lock or a lost stream refuses: the request's framing was not inspected.
    pub fn next(&self) -> Verdict {
        let Ok(mut queue) = self.0.lock() else {
            return Some(UNINSPECTABLE);
        };
        match queue.pending.pop_front() {
            Some(verdict) => verdict,
            None if queue.lost => Some(UNINSPECTABLE),
            None => None,
        }
    }

    /// Records a head's verdict; false when too many are pending (the stream is then lost).
    fn push(&self, verdict: Verdict) -> bool {
        let Ok(mut queue) = self.0.lock() else {
            return false;
        };
        if queue.pending.len() >= MAX_PENDING_VERDICTS {
            queue.lost = true;
            return false;
        }
        queue.pending.push_back(verdict);
        true
    }

    fn lose(&self) {
        if let Ok(mut queue) = self.0.lock() {
            queue.lost = true;
        }
    }
}

enum State {
    /// Waiting for (the rest of) a request head; partial bytes are in `Inspector::head`.
    Head,
    Body(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    ChunkDataEnd(u8),
    Trailers(Vec<u8>),
    /// HTTP/2 prior knowledge: nothing to inspect.
    Http2,
    /// The stream could not be followed; later requests are refused.
    Lost,
}

/// Follows HTTP/1 message boundaries in the bytes read from a client.
pub struct Inspector {
    state: State,
    /// A head split over several reads is gathered here; reused for the connection's life.
    head: Vec<u8>,
    /// No head has been seen yet: only then may the bytes be the HTTP/2 preface.
    at_start: bool,
    max_head: usize,
    max_headers: usize,
    verdicts: Verdicts,
}

const MAX_CHUNK_LINE: usize = 4096;

/// What parsing the bytes gathered so far found.
enum Parsed {
    /// A head of this many bytes, and how its body is framed.
    Complete(usize, State),
    Partial,
    Invalid,
}

impl Inspector {
    pub fn new(max_head: usize, max_headers: usize, verdicts: Verdicts) -> Self {
        Self {
            state: State::Head,
            head: Vec::new(),
            at_start: true,
            max_head,
            max_headers,
            verdicts,
        }
    }

    /// Feeds bytes as they arrive from the client.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let used = match &mut self.state {
                State::Http2 | State::Lost => return,
                State::Head => self.feed_head(bytes),
                State::Body(remaining) => {
                    let used = bytes.len().min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    *remaining -= used as u64;
                    if *remaining == 0 {
                        self.state = State::Head;
                    }
                    used
                }
                State::ChunkSize(_) | State::Trailers(_) => self.feed_chunk_line(bytes),
                State::ChunkData(remaining) => {
                    let used = bytes.len().min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                    *remaining -= used as u64;
                    if *remaining == 0 {
                        self.state = State::ChunkDataEnd(2);
                    }
                    used
                }
                State::ChunkDataEnd(left) => {
                    *left -= 1;
                    if *left == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                    1
                }
            };
            bytes = &bytes[used..];
        }
    }

    /// Stops inspecting for good: later requests are refused.
    fn lose(&mut self) {
        self.state = State::Lost;
        self.head = Vec::new();
        self.verdicts.lose();
    }

    fn feed_head(&mut self, bytes: &[u8]) -> usize {
        if self.head.is_empty() {
            if self.at_start && bytes.starts_with(b"PRI ") {
                self.state = State::Http2;
                return bytes.len();
            }
            // The usual case: the whole head arrived in one read; judge it where it lies.
            match self.judge(bytes) {
                Parsed::Complete(end, next) => {
                    self.state = next;
                    return end;
                }
                Parsed::Invalid => {
                    self.lose();
                    return bytes.len();
                }
                Parsed::Partial => {}
            }
            self.head.extend_from_slice(bytes);
            if self.head.len() > self.max_head {
                self.lose();
            }
            return bytes.len();
        }
        // A blank line ends a head: only when the new bytes make one is it worth parsing again.
        let start = self.head.len().saturating_sub(2);
        self.head.extend_from_slice(bytes);
        if self.at_start && self.head.starts_with(b"PRI ") {
            self.state = State::Http2;
            self.head = Vec::new();
            return bytes.len();
        }
        let parsed = if has_blank_line(&self.head[start..]) {
            let head = std::mem::take(&mut self.head);
            let parsed = self.judge(&head);
            // Keep the allocation for the next split head.
            self.head = head;
            parsed
        } else {
            Parsed::Partial
        };
        match parsed {
            Parsed::Complete(end, next) => {
                let earlier = self.head.len() - bytes.len();
                self.head.clear();
                self.state = next;
                end.saturating_sub(earlier).clamp(1, bytes.len())
            }
            Parsed::Partial if self.head.len() <= self.max_head => bytes.len(),
            Parsed::Partial | Parsed::Invalid => {
                self.lose();
                bytes.len()
            }
        }
    }

    /// Parses a head from the start of `bytes`; a complete one gets its verdict recorded.
    fn judge(&mut self, bytes: &[u8]) -> Parsed {
        // Most heads fit the stack array; only a config allowing more headers needs the heap. Left
        // uninitialised: httparse writes what it parses, and clearing 64 slots for every request
        // cost more than the parse of a short head.
        let mut on_stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 64];
        let mut on_heap = Vec::new();
        let headers: &mut [MaybeUninit<httparse::Header<'_>>] = if self.max_headers <= on_stack.len() {
            &mut on_stack[..self.max_headers]
        } else {
            on_heap.resize_with(self.max_headers, MaybeUninit::uninit);
            &mut on_heap
        };
        let mut request = httparse::Request::new(&mut []);
        let end = match request.parse_with_uninit_headers(bytes, headers) {
            Ok(httparse::Status::Complete(end)) if end <= self.max_head => end,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            // hyper refuses this head itself (400 or 431); the stream cannot be followed past it.
            _ => return Parsed::Invalid,
        };
        self.at_start = false;
        let framing = Framing::of(request.headers);
        let verdict = framing.verdict();
        if !self.verdicts.push(verdict) {
            return Parsed::Invalid;
        }
        // An upgrade (or CONNECT) that is granted turns the stream into another protocol, which then
        // fails to parse as a head and ends inspection; one that is refused leaves HTTP/1 on the
        // connection, so inspection goes on either way.
        let next = match (verdict, framing) {
            // A refused head's body cannot be delimited; the connection closes after the 400.
            (Some(_), _) => {
                self.verdicts.lose();
                State::Lost
            }
            (None, Framing { chunked: true, .. }) => State::ChunkSize(Vec::new()),
            (None, Framing { length: Some(n), .. }) if n > 0 => State::Body(n),
            _ => State::Head,
        };
        Parsed::Complete(end, next)
    }

    fn feed_chunk_line(&mut self, bytes: &[u8]) -> usize {
        let (line, is_size) = match &mut self.state {
            State::ChunkSize(line) => (line, true),
            State::Trailers(line) => (line, false),
            _ => return bytes.len(),
        };
        let Some(newline) = bytes.iter().position(|b| *b == b'\n') else {
            line.extend_from_slice(bytes);
            if line.len() > MAX_CHUNK_LINE {
                self.lose();
            }
            return bytes.len();
        };
        line.extend_from_slice(&bytes[..newline]);
        if line.len() > MAX_CHUNK_LINE {
            self.lose();
            return newline + 1;
        }
        let text = std::mem::take(line);
        let text = text.strip_suffix(b"\r").unwrap_or(&text);
        self.state = if is_size {
            match parse_chunk_size(text) {
                Some(0) => State::Trailers(Vec::new()),
                Some(size) => State::ChunkData(size),
                None => {
                    self.lose();
                    return newline + 1;
                }
            }
        } else if text.is_empty() {
            State::Head
        } else {
            State::Trailers(Vec::new())
        };
        newline + 1
    }
}

/// What a head says about its body.
#[derive(Clone, Copy)]
struct Framing {
    length_headers: usize,
    length: Option<u64>,
    length_invalid: bool,
    encoding_headers: usize,
    chunked: bool,
}

impl Framing {
    fn of(headers: &[httparse::Header<'_>]) -> Self {
        let mut framing = Framing {
            length_headers: 0,
            length: None,
            length_invalid: false,
            encoding_headers: 0,
            chunked: false,
        };
        for header in headers {
            if header.name.eq_ignore_ascii_case("content-length") {
                framing.length_headers += 1;
                match std::str::from_utf8(header.value)
                    .ok()
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                {
                    Some(digits) => framing.length = digits.parse().ok(),
                    None => framing.length_invalid = true,
                }
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                framing.encoding_headers += 1;
                framing.chunked = header.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
        }
        framing
    }

    fn verdict(self) -> Verdict {
        if self.length_headers > 0 && self.encoding_headers > 0 {
            Some("content_length_with_transfer_encoding")
        } else if self.length_headers > 1 {
            Some("duplicate_content_length")
        } else if self.length_invalid || (self.length_headers == 1 && self.length.is_none()) {
            Some("invalid_content_length")
        } else if self.encoding_headers > 1 || (self.encoding_headers == 1 && !self.chunked) {
            Some("invalid_transfer_encoding")
        } else {
            None
        }
    }
}

/// Whether `bytes` hold an empty line (`LF LF` or `LF CR LF`), which ends a head.
fn has_blank_line(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', bytes).any(|at| matches!(&bytes[at + 1..], [b'\n', ..] | [b'\r', b'\n', ..]))
}

fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.split(|b| *b == b';').next()?.trim_ascii();
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// An IO that shows every byte it reads to an [`Inspector`].
pub struct Inspected<IO> {
    io: IO,
    inspector: Inspector,
}

impl<IO> Inspected<IO> {
    pub fn new(io: IO, inspector: Inspector) -> Self {
        Self { io, inspector }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Inspected<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &result {
            this.inspector.feed(&buf.filled()[before..]);
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Inspected<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts_of(stream: &[u8], split: usize) -> Vec<Verdict> {
        let verdicts = Verdicts::default();
        let mut inspector = Inspector::new(16 * 1024, 100, verdicts.clone());
        for piece in stream.chunks(split.max(1)) {
            inspector.feed(piece);
        }
        let queue = verdicts.0.lock().unwrap();
        let mut found: Vec<Verdict> = queue.pending.iter().copied().collect();
        if queue.lost {
            found.push(Some(UNINSPECTABLE));
        }
        found
    }

    #[test]
    fn follows_pipelined_requests_with_bodies_in_any_read_size() {
        let stream = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n\
GET /c HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
        for split in [1, 2, 3, 7, 64, 4096] {
            assert_eq!(
                verdicts_of(stream, split),
                vec![None, None, Some("duplicate_content_length"), Some(UNINSPECTABLE)],
                "split {split}"
            );
        }
    }

    #[test]
    fn ambiguous_framing_gets_a_verdict() {
        let cases: [(&[u8], &str); 4] = [
            (
                b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                "content_length_with_transfer_encoding",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                "content_length_with_transfer_encoding",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "invalid_transfer_encoding",
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
                "invalid_content_length",
            ),
        ];
        for (stream, expected) in cases {
            assert_eq!(verdicts_of(stream, 4096), vec![Some(expected), Some(UNINSPECTABLE)]);
        }
    }

    #[test]
    fn only_the_http2_preface_at_the_start_ends_inspection_quietly() {
        assert!(verdicts_of(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 4096).is_empty());
        assert!(verdicts_of(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 2).is_empty());
        // Later on, a preface is an invalid HTTP/1 head: hyper refuses it, and so does what follows.
        let late = b"GET / HTTP/1.1\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(verdicts_of(late, 4096), vec![None, Some(UNINSPECTABLE)]);
    }

    #[test]
    fn inspection_goes_on_after_an_upgrade_request() {
        // hyper keeps serving HTTP/1 when the upgrade is refused, so what follows is judged.
        let upgrade = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(
            verdicts_of(upgrade, 4096),
            vec![None, Some("duplicate_content_length"), Some(UNINSPECTABLE)]
        );
        // When it is granted, the next protocol's bytes are no head: inspection ends, failing closed.
        let granted = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58\n\n";
        assert_eq!(verdicts_of(granted, 4096), vec![None, Some(UNINSPECTABLE)]);
    }

    #[test]
    fn heads_end_where_httparse_ends_them() {
        // Bare LF line endings and leading empty lines, which hyper accepts: the head after them is
        // judged at the right place in every read size.
        let stream = b"GET /a HTTP/1.1\nHost: x\n\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for split in [1, 2, 3, 5, 4096] {
            assert_eq!(
                verdicts_of(stream, split),
                vec![None, Some("content_length_with_transfer_encoding"), Some(UNINSPECTABLE)],
                "split {split}"
            );
        }
    }

    #[test]
    fn a_stream_that_cannot_be_followed_refuses_what_comes_after() {
        let long_extension = format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;{}\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            "e".repeat(MAX_CHUNK_LINE)
        );
        for split in [64, 1 << 20] {
            assert_eq!(
                verdicts_of(long_extension.as_bytes(), split),
                vec![None, Some(UNINSPECTABLE)],
                "split {split}"
            );
        }
        let verdicts = Verdicts::default();
        let mut inspector = Inspector::new(16 * 1024, 100, verdicts.clone());
        inspector.feed(b"GET / HTTP/1.1\r\n\r\nGET /\x01 HTTP/1.1\r\n\r\n");
        assert_eq!(
            verdicts.next(),
            None,
            "the head inspected before the loss keeps its verdict"
        );
        assert_eq!(verdicts.next(), Some(UNINSPECTABLE));
        assert_eq!(verdicts.next(), Some(UNINSPECTABLE), "and the loss is for good");
    }

    #[test]
    fn verdicts_nobody_takes_are_bounded() {
        let verdicts = Verdicts::default();
        let mut inspector = Inspector::new(16 * 1024, 100, verdicts.clone());
        for _ in 0..MAX_PENDING_VERDICTS + 10 {
            inspector.feed(b"GET / HTTP/1.1\r\n\r\n");
        }
        let queue = verdicts.0.lock().unwrap();
        assert_eq!(queue.pending.len(), MAX_PENDING_VERDICTS);
        assert!(queue.lost);
    }
}
