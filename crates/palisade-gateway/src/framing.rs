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
//! The inspector never changes bytes. When it cannot follow the stream (HTTP/2, an upgrade, a head
//! larger than hyper accepts) it stops inspecting and records nothing more; hyper then applies its own
//! (strict) rules to what follows.

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a request head's framing was refused.
pub type Verdict = Option<&'static str>;

/// Verdicts in request order, shared between the inspector and the connection's service.
#[derive(Clone, Default)]
pub struct Verdicts(Arc<Mutex<VecDeque<Verdict>>>);

impl Verdicts {
    /// The verdict for the next request on this connection (`None` when nothing was found).
    pub fn next(&self) -> Verdict {
        self.0.lock().ok().and_then(|mut queue| queue.pop_front()).flatten()
    }

    fn push(&self, verdict: Verdict) {
        if let Ok(mut queue) = self.0.lock() {
            queue.push_back(verdict);
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
    Passthrough,
}

/// Follows HTTP/1 message boundaries in the bytes read from a client.
pub struct Inspector {
    state: State,
    /// A head split over several reads is gathered here; reused for the connection's life.
    head: Vec<u8>,
    max_head: usize,
    max_headers: usize,
    verdicts: Verdicts,
}

const MAX_CHUNK_LINE: usize = 4096;

impl Inspector {
    pub fn new(max_head: usize, max_headers: usize, verdicts: Verdicts) -> Self {
        Self {
            state: State::Head,
            head: Vec::new(),
            max_head,
            max_headers,
            verdicts,
        }
    }

    /// Feeds bytes as they arrive from the client.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let used = match &mut self.state {
                State::Passthrough => return,
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

    fn feed_head(&mut self, bytes: &[u8]) -> usize {
        if self.head.is_empty() {
            if bytes.starts_with(b"PRI ") {
                // The HTTP/2 connection preface: h2 has no such framing ambiguity.
                self.state = State::Passthrough;
                return bytes.len();
            }
            // The usual case: the whole head arrived in one read; judge it where it lies.
            if let Some(end) = memchr::memmem::find(bytes, b"\r\n\r\n").map(|at| at + 4) {
                self.state = self.judge(&bytes[..end]);
                return end;
            }
        }
        let start = self.head.len().saturating_sub(3);
        self.head.extend_from_slice(bytes);
        if self.head.starts_with(b"PRI ") {
            self.state = State::Passthrough;
            return bytes.len();
        }
        let Some(end) = memchr::memmem::find(&self.head[start..], b"\r\n\r\n").map(|at| start + at + 4) else {
            if self.head.len() > self.max_head {
                self.state = State::Passthrough;
            }
            return bytes.len();
        };
        let consumed_from_bytes = bytes.len() - (self.head.len() - end);
        let head = std::mem::take(&mut self.head);
        self.state = self.judge(&head[..end]);
        // Keep the allocation for the next split head.
        self.head = head;
        self.head.clear();
        consumed_from_bytes
    }

    /// Records the verdict for one complete head and returns how the body is framed.
    fn judge(&self, head: &[u8]) -> State {
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
        match request.parse_with_uninit_headers(head, headers) {
            Ok(httparse::Status::Complete(_)) => {}
            // hyper will refuse this head itself; the stream cannot be followed past it.
            _ => return State::Passthrough,
        }
        let framing = Framing::of(request.headers);
        let verdict = framing.verdict();
        self.verdicts.push(verdict);
        let upgrade =
            request.method == Some("CONNECT") || request.headers.iter().any(|h| h.name.eq_ignore_ascii_case("upgrade"));
        match (verdict, framing) {
            (Some(_), _) => State::Passthrough,
            _ if upgrade => State::Passthrough,
            (None, Framing { chunked: true, .. }) => State::ChunkSize(Vec::new()),
            (None, Framing { length: Some(n), .. }) if n > 0 => State::Body(n),
            _ => State::Head,
        }
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
                self.state = State::Passthrough;
            }
            return bytes.len();
        };
        line.extend_from_slice(&bytes[..newline]);
        let text = std::mem::take(line);
        let text = text.strip_suffix(b"\r").unwrap_or(&text);
        self.state = if is_size {
            match parse_chunk_size(text) {
                Some(0) => State::Trailers(Vec::new()),
                Some(size) => State::ChunkData(size),
                None => State::Passthrough,
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
        queue.iter().copied().collect()
    }

    #[test]
    fn follows_pipelined_requests_with_bodies_in_any_read_size() {
        let stream = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n\
GET /c HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
        for split in [1, 2, 3, 7, 64, 4096] {
            assert_eq!(
                verdicts_of(stream, split),
                vec![None, None, Some("duplicate_content_length")],
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
            assert_eq!(verdicts_of(stream, 4096), vec![Some(expected)]);
        }
    }

    #[test]
    fn http2_preface_and_upgrades_stop_inspection() {
        assert!(verdicts_of(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 4096).is_empty());
        let upgrade = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(verdicts_of(upgrade, 4096), vec![None]);
    }
}
