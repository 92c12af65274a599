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
//! Each head ends where httparse, the parser hyper itself uses, ends it (bare `LF` line endings and
//! leading empty lines included; see [`scan_head`]). The inspector never changes bytes. When it cannot
//! follow the stream any more (a head or chunk line it cannot read or that is too long, a refused head
//! whose body it cannot delimit) it fails closed: every later request on the connection is refused
//! (`uninspectable_stream`). Only the HTTP/2 preface at the very start of a connection ends
//! inspection quietly, as h2 has no such ambiguity.

use std::collections::VecDeque;
use std::io;
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
    /// Any byte arrived on the connection (a connection that stays silent is cut at the header
    /// timeout).
    received: bool,
    /// The request line of a head that is still incomplete, or that was too large to follow, for
    /// the log line of a connection cut for it (a slow head, 431).
    partial: Option<PartialHead>,
}

/// What the start of an unfinished request head says: its method and the path of its target (no
/// query: the access log never holds one), both bounded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartialHead {
    pub method: String,
    pub path: String,
}

impl PartialHead {
    const MAX_METHOD: usize = 32;
    const MAX_PATH: usize = 1024;

    /// Read from the first line of `head` as far as it goes.
    fn read(head: &[u8]) -> Self {
        let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
        let mut words = line.split(|b| *b == b' ');
        let method = words.next().unwrap_or_default();
        let target = words.next().unwrap_or_default();
        let path = target.split(|b| *b == b'?').next().unwrap_or_default();
        let text = |bytes: &[u8], max: usize| String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned();
        Self {
            method: text(method, Self::MAX_METHOD),
            path: text(path, Self::MAX_PATH),
        }
    }
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

    /// Whether any byte has arrived on the connection.
    pub fn received_any(&self) -> bool {
        self.0.lock().map(|queue| queue.received).unwrap_or(true)
    }

    fn mark_received(&self) {
        if let Ok(mut queue) = self.0.lock() {
            queue.received = true;
        }
    }

    /// The request line of the head the connection was in the middle of, if any.
    pub fn partial_head(&self) -> Option<PartialHead> {
        self.0.lock().ok().and_then(|queue| queue.partial.clone())
    }

    fn set_partial(&self, partial: Option<PartialHead>) {
        if let Ok(mut queue) = self.0.lock() {
            queue.partial = partial;
        }
    }

    /// Bad chunk framing found in a body whose head is still waiting for its verdict (the usual
    /// case: the head and its first chunks came in one read): that request is refused before
    /// anything of it goes upstream. A verdict already taken cannot be changed; hyper's own chunk
    /// decoder then fails the body, which the upstream stage answers as the client's fault.
    fn refuse_latest(&self, reason: &'static str) {
        if let Ok(mut queue) = self.0.lock() {
            if let Some(latest @ None) = queue.pending.back_mut() {
                *latest = Some(reason);
            }
        }
    }
}

/// The verdict for a request whose chunked body is malformed (a size that is not hex or overflows,
/// a bad extension, a missing CRLF).
pub const INVALID_CHUNK: &str = "invalid_chunked_body";

/// The verdict for a request with a chunk declared larger than any route's body limit.
pub const CHUNK_TOO_LARGE: &str = "chunk_exceeds_body_limit";

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
    /// Nothing has been read yet.
    silent: bool,
    /// The head being gathered has its whole request line noted in the verdicts (see [`PartialHead`]).
    partial_noted: bool,
    max_head: usize,
    /// A chunk declared larger than any route's body limit is refused (see [`CHUNK_TOO_LARGE`]).
    max_chunk: u64,
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
    pub fn new(max_head: usize, verdicts: Verdicts) -> Self {
        Self {
            state: State::Head,
            head: Vec::new(),
            at_start: true,
            silent: true,
            partial_noted: false,
            max_head,
            max_chunk: u64::MAX,
            verdicts,
        }
    }

    /// Refuses a chunk declared larger than `max`: no route would take that body, and refusing it at
    /// the size line keeps its first bytes from going upstream.
    pub fn with_max_chunk_size(mut self, max: u64) -> Self {
        self.max_chunk = max;
        self
    }

    /// Feeds bytes as they arrive from the client.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        if self.silent && !bytes.is_empty() {
            self.silent = false;
            self.verdicts.mark_received();
        }
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
                    // Chunk data ends in exactly CR LF.
                    let expected = if *left == 2 { b'\r' } else { b'\n' };
                    if bytes[0] != expected {
                        self.refuse_chunked();
                        return;
                    }
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

    /// A head is gathered over several reads (slow, or large): its request line is noted, as far as
    /// it has come until its first line is complete, for the log line if the connection is cut for it.
    fn note_partial(&mut self) {
        if !self.partial_noted {
            self.verdicts.set_partial(Some(PartialHead::read(&self.head)));
            self.partial_noted = memchr::memchr(b'\n', &self.head).is_some();
        }
    }

    /// The chunked body being followed is malformed: its request is refused if it still can be, and
    /// the stream cannot be followed past it.
    fn refuse_chunked(&mut self) {
        self.verdicts.refuse_latest(INVALID_CHUNK);
        self.lose();
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
                    self.verdicts.set_partial(Some(PartialHead::read(bytes)));
                    self.lose();
                    return bytes.len();
                }
                Parsed::Partial => {}
            }
            self.head.extend_from_slice(bytes);
            self.note_partial();
            if self.head.len() > self.max_head {
                self.lose();
            }
            return bytes.len();
        }
        // A blank line ends a head: only when the new bytes make one is it worth parsing again.
        let start = self.head.len().saturating_sub(2);
        self.head.extend_from_slice(bytes);
        self.note_partial();
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
                // A gathered head always noted its start.
                self.partial_noted = false;
                self.verdicts.set_partial(None);
                end.saturating_sub(earlier).clamp(1, bytes.len())
            }
            Parsed::Partial if self.head.len() <= self.max_head => bytes.len(),
            Parsed::Partial | Parsed::Invalid => {
                self.lose();
                bytes.len()
            }
        }
    }

    /// Finds the head at the start of `bytes`; a complete one gets its verdict recorded.
    fn judge(&mut self, bytes: &[u8]) -> Parsed {
        let (end, framing) = match scan_head(bytes) {
            Scanned::Complete(end, framing) if end <= self.max_head => (end, framing),
            Scanned::Partial => return Parsed::Partial,
            // hyper refuses this head itself (400 or 431); the stream cannot be followed past it.
            _ => return Parsed::Invalid,
        };
        self.at_start = false;
        let verdict = framing.verdict();
        if !self.verdicts.push(verdict) {
            return Parsed::Invalid;
        }
        // An upgrade (or CONNECT) that is granted turns the stream into another protocol, whose bytes
        // are no head (or too long a one) and end inspection; one that is refused leaves HTTP/1 on the
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
        self.state = if is_size {
            // A size line ends in CR LF, as hyper requires.
            match text.strip_suffix(b"\r").and_then(parse_chunk_size) {
                Some(0) => State::Trailers(Vec::new()),
                Some(size) if size > self.max_chunk => {
                    self.verdicts.refuse_latest(CHUNK_TOO_LARGE);
                    self.lose();
                    return newline + 1;
                }
                Some(size) => State::ChunkData(size),
                None => {
                    self.refuse_chunked();
                    return newline + 1;
                }
            }
        } else if text.strip_suffix(b"\r").unwrap_or(&text).is_empty() {
            State::Head
        } else {
            State::Trailers(Vec::new())
        };
        newline + 1
    }
}

/// What [`scan_head`] found at the start of the bytes.
enum Scanned {
    /// A head of this many bytes.
    Complete(usize, Framing),
    Partial,
    Invalid,
}

/// Where the head at the start of `bytes` ends and what it says about its body, in one pass over its
/// lines: a second full parse of every head (httparse, as hyper does) cost 2.1k instructions per
/// request, this a few hundred. For every head httparse accepts, the two agree on the end and on the
/// framing headers (`the_scanner_agrees_with_httparse` checks 20,000 generated heads and every prefix of each); a head
/// httparse refuses, hyper answers with 400 or 431 and closes the connection, so nothing after it is
/// served whatever the scanner made of it. The end is the first empty line after the request line:
/// header lines are never empty (obs-fold is refused), lines end in `LF` or `CR LF`, and empty lines
/// before the request line are skipped, as httparse does. A request line without `HTTP/1.x` at its end is
/// invalid, which ends inspection.
fn scan_head(bytes: &[u8]) -> Scanned {
    let mut start = 0;
    loop {
        match &bytes[start..] {
            [b'\r', b'\n', ..] => start += 2,
            [b'\n', ..] => start += 1,
            [] | [b'\r'] => return Scanned::Partial,
            [b'\r', ..] => return Scanned::Invalid,
            _ => break,
        }
    }
    let mut framing = Framing::default();
    let mut request_line = true;
    let mut line_start = start;
    for newline in memchr::memchr_iter(b'\n', &bytes[start..]).map(|at| at + start) {
        let line = &bytes[line_start..newline];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Scanned::Complete(newline + 1, framing);
        }
        if request_line {
            // httparse takes only `HTTP/1.0` and `HTTP/1.1`: anything else (the HTTP/2 preface later
            // in a connection, another protocol after an upgrade) is no HTTP/1 stream to follow.
            if !(line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0")) {
                return Scanned::Invalid;
            }
            request_line = false;
        } else {
            framing.add(line);
        }
        line_start = newline + 1;
    }
    Scanned::Partial
}

/// What a head says about its body.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Framing {
    length_headers: usize,
    length: Option<u64>,
    length_invalid: bool,
    encoding_headers: usize,
    chunked: bool,
}

impl Framing {
    /// Takes one header line (`name: value`, line ending removed) into account.
    fn add(&mut self, line: &[u8]) {
        // Only two names matter; comparing names compares their lengths first, so other lines cost little.
        let Some(colon) = memchr::memchr(b':', line) else {
            return;
        };
        let name = &line[..colon];
        // httparse's value: without the whitespace around it.
        let value = trim_blanks(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            self.length_headers += 1;
            if !value.is_empty() && value.iter().all(u8::is_ascii_digit) {
                // Digits only, so UTF-8; more than u64 holds is no length.
                self.length = std::str::from_utf8(value).ok().and_then(|digits| digits.parse().ok());
            } else {
                self.length_invalid = true;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.encoding_headers += 1;
            self.chunked = value.eq_ignore_ascii_case(b"chunked");
        }
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

/// `bytes` without leading and trailing spaces and tabs.
fn trim_blanks(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// Whether `bytes` hold an empty line (`LF LF` or `LF CR LF`), which ends a head.
fn has_blank_line(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', bytes).any(|at| matches!(&bytes[at + 1..], [b'\n', ..] | [b'\r', b'\n', ..]))
}

/// A chunk size line without its CR LF: hex digits from the first byte (a size that does not fit in
/// 64 bits is refused, as hyper refuses it), optional blanks, and an optional `;` extension of
/// visible characters, blanks and tabs (no control byte, no CR: hyper ends the line at a CR).
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let (size, extension) = match memchr::memchr(b';', line) {
        Some(at) => (&line[..at], Some(&line[at + 1..])),
        None => (line, None),
    };
    let digits = trim_blanks_end(size);
    if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    if extension.is_some_and(|extension| !extension.iter().all(|b| matches!(b, b'\t' | b' '..=b'~'))) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// `bytes` without trailing spaces and tabs.
fn trim_blanks_end(mut bytes: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
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

/// What httparse makes of a head, framing included (`None` while it is incomplete; `Err` when it
/// refuses it): the oracle the scanner is held to.
fn httparse_head(bytes: &[u8]) -> Result<Option<(usize, Framing)>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(end)) => {
            let mut framing = Framing::default();
            for header in request.headers.iter() {
                let mut line = header.name.as_bytes().to_vec();
                line.push(b':');
                line.extend_from_slice(header.value);
                framing.add(&line);
            }
            Ok(Some((end, framing)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(()),
    }
}

/// The fuzz target `framing` (and the replay of its corpus in `cargo test`): on any bytes, the
/// scanner ends a head exactly where httparse does and reads the same framing from it, never ends
/// one httparse would still wait on, at the end of `data` and at every cut point; and the inspector,
/// fed `data` in pieces of any size, never panics and never records more verdicts than heads.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    let cuts = data.len().min(256);
    for cut in (0..=cuts).map(|k| (data.len() * k).checked_div(cuts).unwrap_or(0)) {
        let prefix = &data[..cut];
        match (httparse_head(prefix), scan_head(prefix)) {
            (Ok(Some((end, framing))), Scanned::Complete(scanned_end, scanned)) => {
                assert_eq!((end, framing), (scanned_end, scanned), "{prefix:?}");
            }
            (Ok(Some(_)), _) => panic!("httparse completes {prefix:?}, the scanner does not"),
            (Ok(None), Scanned::Complete(..)) => panic!("the scanner completes {prefix:?}, httparse does not"),
            _ => {}
        }
    }
    let split = usize::from(data.first().copied().unwrap_or(1) % 17).max(1);
    let verdicts = Verdicts::default();
    let mut inspector = Inspector::new(1024, verdicts.clone()).with_max_chunk_size(4096);
    for piece in data.chunks(split) {
        inspector.feed(piece);
    }
    let queue = verdicts.0.lock().map(|q| q.pending.len()).unwrap_or(0);
    let heads = memchr::memmem::find_iter(data, b"\n").count();
    assert!(queue <= heads.max(1), "{queue} verdicts for at most {heads} heads");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts_of(stream: &[u8], split: usize) -> Vec<Verdict> {
        let verdicts = Verdicts::default();
        let mut inspector = Inspector::new(16 * 1024, verdicts.clone());
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
    fn bad_chunk_framing_refuses_its_request_while_its_verdict_is_pending() {
        let head = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        let bodies = [
            "fffffffffffffffff1\r\nhello\r\n0\r\n\r\n", // overflows 64 bits
            "5\r\nhelloXY0\r\n\r\n",                    // no CR LF after the data
            "5\nhello\r\n0\r\n\r\n",                    // bare LF after the size
            "5;a=\x01\r\nhello\r\n0\r\n\r\n",           // control byte in an extension
            " 5\r\nhello\r\n0\r\n\r\n",                 // blank before the size
            "0x5\r\nhello\r\n0\r\n\r\n",                // not hex
        ];
        for body in bodies {
            let stream = format!("{head}{body}");
            assert_eq!(
                verdicts_of(stream.as_bytes(), 4096),
                vec![Some(INVALID_CHUNK), Some(UNINSPECTABLE)],
                "{body:?}"
            );
        }
        // Once the request's verdict was taken, the request cannot be refused any more: the stream
        // is lost (hyper's decoder fails the body) and later requests are refused.
        let verdicts = Verdicts::default();
        let mut inspector = Inspector::new(16 * 1024, verdicts.clone());
        inspector.feed(head.as_bytes());
        assert_eq!(verdicts.next(), None);
        inspector.feed(b"zz\r\n");
        assert_eq!(verdicts.next(), Some(UNINSPECTABLE));
        // A chunk larger than any route takes.
        let verdicts = Verdicts::default();
        let mut inspector = Inspector::new(16 * 1024, verdicts.clone()).with_max_chunk_size(1024);
        inspector.feed(format!("{head}401\r\nhello").as_bytes());
        assert_eq!(verdicts.next(), Some(CHUNK_TOO_LARGE));
        let verdicts = Verdicts::default();
        let mut inspector = Inspector::new(16 * 1024, verdicts.clone()).with_max_chunk_size(1024);
        inspector.feed(format!("{head}400\r\n").as_bytes());
        assert_eq!(verdicts.next(), None, "at the limit is fine");
        // Well-formed look-alikes pass.
        let fine = format!("{head}5 ;name=\"quoted value\"\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n");
        assert_eq!(verdicts_of(fine.as_bytes(), 3), vec![None]);
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
        let mut inspector = Inspector::new(16 * 1024, verdicts.clone());
        inspector.feed(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.2\r\n\r\n");
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
        let mut inspector = Inspector::new(16 * 1024, verdicts.clone());
        for _ in 0..MAX_PENDING_VERDICTS + 10 {
            inspector.feed(b"GET / HTTP/1.1\r\n\r\n");
        }
        let queue = verdicts.0.lock().unwrap();
        assert_eq!(queue.pending.len(), MAX_PENDING_VERDICTS);
        assert!(queue.lost);
    }

    /// Heads built from pieces that differ in the ways parsers differ: line endings, empty lines,
    /// whitespace, case, repeated and odd framing values, bytes httparse refuses.
    #[test]
    fn the_scanner_agrees_with_httparse() {
        const LEADING: [&str; 5] = ["", "\r\n", "\n", "\r\n\n", "\r"];
        const REQUEST_LINES: [&str; 4] = ["GET / HTTP/1.1", "POST /a?b=c HTTP/1.0", "GET  / HTTP/1.1", "GET /"];
        const HEADERS: [&str; 24] = [
            "Host: x",
            "Content-Length: 5",
            "content-length:5",
            "Content-Length:  5  ",
            "Content-Length: 5\t",
            "Content-Length: +5",
            "Content-Length: 5, 5",
            "Content-Length:",
            "Content-Length: 99999999999999999999999",
            "Transfer-Encoding: chunked",
            "TRANSFER-ENCODING:Chunked ",
            "Transfer-Encoding: gzip, chunked",
            "Transfer-Encoding : chunked",
            " Transfer-Encoding: chunked",
            "\tContent-Length: 5",
            "X-Note: content-length: 5",
            "X-Colons: a:b:c",
            "Upgrade: websocket",
            "Content-Length\x00: 5",
            "X-Bad: a\rb",
            "Transfer-Encoding: \x0bchunked",
            "X-Empty:",
            "NoColon",
            "Content-Lengthx: 5",
        ];
        const ENDINGS: [&str; 2] = ["\r\n", "\n"];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound as u64) as usize
        };
        let mut complete = 0;
        for _ in 0..20_000 {
            let mut head = String::from(LEADING[next(LEADING.len())]);
            head.push_str(REQUEST_LINES[next(REQUEST_LINES.len())]);
            head.push_str(ENDINGS[next(2)]);
            for _ in 0..next(5) {
                head.push_str(HEADERS[next(HEADERS.len())]);
                head.push_str(ENDINGS[next(2)]);
            }
            head.push_str(ENDINGS[next(2)]);
            head.push_str("GET /next HTTP/1.1\r\n\r\n");
            let bytes = head.as_bytes();
            // Every prefix too: the scanner must never see a head end where httparse sees none yet.
            for cut in (1..=bytes.len()).rev() {
                let prefix = &bytes[..cut];
                match (httparse_head(prefix), scan_head(prefix)) {
                    (Ok(Some((end, framing))), Scanned::Complete(scanned_end, scanned)) => {
                        assert_eq!((end, framing), (scanned_end, scanned), "{head:?} cut at {cut}");
                        if cut == bytes.len() {
                            complete += 1;
                        }
                    }
                    (Ok(Some(_)), _) => panic!("httparse completes {head:?} cut at {cut}, the scanner does not"),
                    (Ok(None), Scanned::Complete(..)) => {
                        panic!("the scanner completes {head:?} cut at {cut}, httparse does not")
                    }
                    // Both wait, or httparse refuses the head (and hyper with it).
                    _ => {}
                }
            }
        }
        assert!(
            complete > 3_000,
            "only {complete} heads were valid: the pieces need rebalancing"
        );
    }
}
