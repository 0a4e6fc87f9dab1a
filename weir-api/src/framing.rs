//! The control protocol's framing: one JSON message per `\n`-terminated
//! line, read without ever holding more than a bound of it.

use std::io::{self, BufRead, BufReader, ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::time::Instant;

/// Longest request line, newline excluded.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest response line the client accepts (FDB dumps can be large).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Outcome of [`read_line_bounded`].
#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    /// A line (without its newline) is in the buffer. The last line before
    /// end of stream may lack the newline.
    Line,
    /// End of stream, buffer empty.
    Eof,
    /// The line exceeded the limit; the rest of it was not read.
    TooLong,
}

/// Reads one `\n`-terminated line into `line` (cleared first), never
/// holding more than `max` bytes of it. `before_read` runs before each
/// refill; an error from it aborts the read (used to enforce a deadline).
pub fn read_line_bounded<R: Read>(
    reader: &mut BufReader<R>,
    line: &mut Vec<u8>,
    max: usize,
    mut before_read: impl FnMut() -> io::Result<()>,
) -> io::Result<LineRead> {
    line.clear();
    loop {
        if reader.buffer().is_empty() {
            before_read()?;
        }
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(if line.is_empty() {
                LineRead::Eof
            } else {
                LineRead::Line
            });
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if line.len() + take > max {
            return Ok(LineRead::TooLong);
        }
        line.extend_from_slice(&chunk[..take]);
        reader.consume(if done { take + 1 } else { take });
        if done {
            return Ok(LineRead::Line);
        }
    }
}

/// A `before_read` hook for [`read_line_bounded`] that makes the whole line
/// arrive by `deadline`, so a peer trickling bytes cannot hold a
/// connection open forever.
pub fn deadline_hook(
    stream: &UnixStream,
    deadline: Instant,
) -> impl FnMut() -> io::Result<()> + '_ {
    move || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reader_stops_at_limit() {
        let data = b"abc\ndefgh\nij";
        let mut reader = BufReader::with_capacity(2, &data[..]);
        let mut line = Vec::new();
        assert_eq!(
            read_line_bounded(&mut reader, &mut line, 4, || Ok(())).unwrap(),
            LineRead::Line
        );
        assert_eq!(line, b"abc");
        assert_eq!(
            read_line_bounded(&mut reader, &mut line, 4, || Ok(())).unwrap(),
            LineRead::TooLong
        );
        assert!(line.len() <= 4);
        let mut reader = BufReader::new(&b"ij"[..]);
        assert_eq!(
            read_line_bounded(&mut reader, &mut line, 4, || Ok(())).unwrap(),
            LineRead::Line
        );
        assert_eq!(line, b"ij");
        assert_eq!(
            read_line_bounded(&mut reader, &mut line, 4, || Ok(())).unwrap(),
            LineRead::Eof
        );
    }
}
