//! Report text on stdout for the commands whose output is read by people and pipelines (`scan`,
//! `policy`). `print!` panics when the reader has gone away (`palisade scan | head`: Rust ignores
//! SIGPIPE, so the write fails with EPIPE); here a closed pipe ends the report quietly and any other
//! write error is returned.

use std::io::{ErrorKind, Write};

/// Writes `text` to stdout; `Ok` also when the reader closed the pipe.
pub fn emit(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// [`emit`] with a line break after `line`.
pub fn emit_line(line: &str) -> std::io::Result<()> {
    emit(&format!("{line}\n"))
}
