//! An open-loop load generator for latency at a fixed rate: requests are due on a Poisson schedule
//! that does not wait for answers, and each latency is measured from the moment its request was
//! due, so a slow answer delays (and counts against) the requests queued behind it.
//!
//! Why not oha's `-q`: oha releases requests with tokio timers, whose wheel has 1 ms slots, so at
//! 15k req/s about 15 requests leave together each millisecond. This generator sleeps each
//! connection's thread to its own next due time (nanosecond timers, 50 µs kernel slack), so
//! arrivals are as spread out as Poisson arrivals are.
//!
//!     cargo run --release -p palisade-echo --example open_loop -- ADDR PATH RATE CONNECTIONS SECONDS
//!
//! Prints one JSON line: the achieved rate, p50/p90/p99/p99.9/max in milliseconds, and errors. Each
//! connection is one thread with one keep-alive HTTP/1.1 connection and RATE/CONNECTIONS of the
//! arrivals; a response must carry `Content-Length` (the echo upstream and the proxies in `bench/`
//! do).
//!
//! The cost of that simplicity: every request wakes a thread, so at 15k req/s on a core shared with
//! the echo upstream the generator's own scheduling dominates the tail (bench/RESULTS.md,
//! 2026-12-02). It is an instrument for moderate rates, or for a machine with a core to spare.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

struct Args {
    address: String,
    path: String,
    rate: f64,
    connections: usize,
    seconds: f64,
}

fn parse_args() -> Result<Args, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, path, rate, connections, seconds] = args.as_slice() else {
        return Err("usage: open_loop ADDR PATH RATE CONNECTIONS SECONDS".into());
    };
    let number = |text: &str, what: &str| text.parse::<f64>().map_err(|_| format!("{what}: not a number: {text}"));
    Ok(Args {
        address: address.clone(),
        path: path.clone(),
        rate: number(rate, "RATE")?,
        connections: number(connections, "CONNECTIONS")? as usize,
        seconds: number(seconds, "SECONDS")?,
    })
}

/// xorshift64*: enough randomness for arrival times, no dependency.
struct Random(u64);

impl Random {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (bits as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// An exponentially distributed gap with the given mean.
    fn gap(&mut self, mean: f64) -> Duration {
        Duration::from_secs_f64(-self.unit().ln() * mean)
    }
}

/// One connection's run: latencies in microseconds, and the number of failed exchanges.
fn run_connection(args: &Args, seed: u64, start: Instant) -> (Vec<u32>, u64) {
    let request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", args.path, args.address);
    let mean_gap = args.connections as f64 / args.rate;
    let end = start + Duration::from_secs_f64(args.seconds);
    let mut random = Random(seed | 1);
    let mut latencies = Vec::with_capacity((args.rate * args.seconds / args.connections as f64 * 1.2) as usize);
    let mut errors = 0;
    let mut connection: Option<BufReader<TcpStream>> = None;
    // Connections start spread over one mean gap, not all at once.
    let mut due = start + random.gap(mean_gap);
    while due < end {
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if connection.is_none() {
            connection = TcpStream::connect(&args.address).ok().map(|stream| {
                let _ = stream.set_nodelay(true);
                BufReader::new(stream)
            });
        }
        let answered = connection
            .as_mut()
            .is_some_and(|stream| exchange(stream, &request).is_ok());
        if answered {
            let micros = Instant::now().duration_since(due).as_micros();
            latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
        } else {
            errors += 1;
            connection = None;
        }
        due += random.gap(mean_gap);
    }
    (latencies, errors)
}

/// Sends the request and reads the whole response (head, then `Content-Length` bytes of body).
fn exchange(stream: &mut BufReader<TcpStream>, request: &str) -> std::io::Result<()> {
    stream.get_mut().write_all(request.as_bytes())?;
    let mut line = String::new();
    let mut length = None;
    loop {
        line.clear();
        if stream.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<u64>().ok();
            }
        }
    }
    let length = length.ok_or(std::io::ErrorKind::InvalidData)?;
    std::io::copy(&mut stream.take(length), &mut std::io::sink())?;
    Ok(())
}

fn percentile(sorted: &[u32], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[index]) / 1000.0
}

fn main() -> Result<(), String> {
    let args = std::sync::Arc::new(parse_args()?);
    let start = Instant::now() + Duration::from_millis(100);
    let workers: Vec<_> = (0..args.connections)
        .map(|index| {
            let args = std::sync::Arc::clone(&args);
            let seed = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(index as u64 + 1);
            std::thread::spawn(move || run_connection(&args, seed, start))
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (mut own, failed) = worker.join().map_err(|_| "a connection thread panicked".to_string())?;
        latencies.append(&mut own);
        errors += failed;
    }
    latencies.sort_unstable();
    println!(
        "{{\"achieved\": {:.0}, \"p50\": {:.3}, \"p90\": {:.3}, \"p99\": {:.3}, \"p999\": {:.3}, \"max\": {:.3}, \"errors\": {errors}}}",
        latencies.len() as f64 / args.seconds,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
        percentile(&latencies, 1.0),
    );
    Ok(())
}
