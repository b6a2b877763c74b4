//! A chunked request body (RFC 9112 §7.1), read to its end and discarded.
//!
//! None of our routes takes a body, but a request that declares one must be
//! read to its last byte before the request is answered: that is where the
//! request ends, and whatever follows is never taken for a request (the
//! connection is closed after the answer). The body is counted, never
//! stored, so its size is bounded by the count alone; its syntax is checked
//! strictly (CRLF line ends, hex sizes, trailer lines that are fields) so a
//! malformed body is refused with 400 instead of being guessed at.

/// Why a chunked body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Its data exceeds the limit (→ 413).
    TooLarge,
    /// It breaks the chunked syntax (→ 400).
    Invalid,
}

/// How far a body has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Every byte given was part of the body; more is needed.
    More,
    /// The body ended after this many of the bytes given.
    Done(usize),
}

/// Longest chunk-size line (size, extensions, CRLF) or trailer line taken.
const MAX_LINE: usize = 4096;
/// Trailer lines, at most.
const MAX_TRAILERS: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size (`digits` so far).
    Size {
        digits: u8,
    },
    /// After the size: extensions up to the CR.
    Extension,
    /// The LF of a size line.
    SizeLf,
    /// `left` bytes of chunk data.
    Data {
        left: u64,
    },
    /// The CR, then the LF, after a chunk's data.
    DataCr,
    DataLf,
    /// Trailer section: at the start of a line.
    TrailerStart,
    /// Inside a trailer field line (`colon`: one was seen).
    Trailer {
        colon: bool,
        name: bool,
    },
    TrailerLf,
    /// The LF of the last (empty) line.
    EndLf,
}

/// The decoder's state: feed it the bytes as they arrive.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    size: u64,
    line: usize,
    trailers: u32,
    total: u64,
    max: u64,
}

impl Chunked {
    /// A body whose data may total `max` bytes.
    pub fn new(max: u64) -> Chunked {
        Chunked {
            state: State::Size { digits: 0 },
            size: 0,
            line: 0,
            trailers: 0,
            total: 0,
            max,
        }
    }

    /// Data bytes counted so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Reads `bytes`, the next ones after what was fed before.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Progress, Error> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if let State::Data { left } = self.state {
                // Skip the data in one step.
                let n = (bytes.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                i += n;
                let left = left - n as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { left }
                };
                continue;
            }
            i += 1;
            self.line += 1;
            if self.line > MAX_LINE {
                return Err(Error::Invalid);
            }
            self.state = match self.state {
                State::Size { digits } => match hex(b) {
                    // 15 digits: 2^60 bytes, more than any limit; more
                    // digits would overflow the count.
                    Some(d) if digits < 15 => {
                        self.size = self.size * 16 + u64::from(d);
                        State::Size { digits: digits + 1 }
                    }
                    Some(_) => return Err(Error::Invalid),
                    None if digits == 0 => return Err(Error::Invalid),
                    None if b == b'\r' => State::SizeLf,
                    None if b == b';' || b == b' ' || b == b'\t' => State::Extension,
                    None => return Err(Error::Invalid),
                },
                State::Extension => match b {
                    b'\r' => State::SizeLf,
                    b'\n' => return Err(Error::Invalid),
                    b if b < 0x20 && b != b'\t' || b == 0x7f => return Err(Error::Invalid),
                    _ => State::Extension,
                },
                State::SizeLf if b == b'\n' => {
                    self.line = 0;
                    let size = std::mem::take(&mut self.size);
                    self.total = self.total.saturating_add(size);
                    if self.total > self.max {
                        return Err(Error::TooLarge);
                    }
                    if size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data { left: size }
                    }
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => {
                    self.line = 0;
                    State::Size { digits: 0 }
                }
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    _ if is_tchar(b) => {
                        self.trailers += 1;
                        if self.trailers > MAX_TRAILERS {
                            return Err(Error::Invalid);
                        }
                        State::Trailer {
                            colon: false,
                            name: true,
                        }
                    }
                    _ => return Err(Error::Invalid),
                },
                State::Trailer { colon, name } => match b {
                    b'\r' if colon => State::TrailerLf,
                    b':' if !colon => State::Trailer {
                        colon: true,
                        name: false,
                    },
                    _ if name && !is_tchar(b) => return Err(Error::Invalid),
                    b if !name && (b < 0x20 && b != b'\t' || b == 0x7f) => {
                        return Err(Error::Invalid)
                    }
                    _ => State::Trailer { colon, name },
                },
                State::TrailerLf if b == b'\n' => {
                    self.line = 0;
                    State::TrailerStart
                }
                State::EndLf if b == b'\n' => return Ok(Progress::Done(i)),
                _ => return Err(Error::Invalid),
            };
        }
        Ok(Progress::More)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_tchar(b: u8) -> bool {
    super::framing::is_token(&[b])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` whole and a byte at a time; both readings must agree.
    fn read(body: &[u8], max: u64) -> Result<Progress, Error> {
        let whole = Chunked::new(max).feed(body);
        let mut c = Chunked::new(max);
        let mut bytewise = Ok(Progress::More);
        for (i, b) in body.iter().enumerate() {
            match c.feed(std::slice::from_ref(b)) {
                Ok(Progress::More) => continue,
                Ok(Progress::Done(1)) => {
                    bytewise = Ok(Progress::Done(i + 1));
                    break;
                }
                other => {
                    bytewise = other;
                    break;
                }
            }
        }
        assert_eq!(whole, bytewise, "{:?}", String::from_utf8_lossy(body));
        whole
    }

    #[test]
    fn well_formed_bodies_end_where_they_end() {
        let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
        for body in [
            &b"0\r\n\r\n"[..],
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX-Trailer: yes\r\nOther:\r\n\r\n",
            b"00005\r\nhello\r\n000\r\n\r\n",
        ] {
            let mut with_tail = body.to_vec();
            with_tail.extend_from_slice(smuggled);
            assert_eq!(read(&with_tail, 100), Ok(Progress::Done(body.len())));
        }
        let mut c = Chunked::new(100);
        assert_eq!(c.feed(b"5\r\nhel"), Ok(Progress::More));
        assert_eq!(c.feed(b"lo\r\n0\r\n"), Ok(Progress::More));
        assert_eq!(c.feed(b"\r\nX"), Ok(Progress::Done(2)));
        assert_eq!(c.total(), 5);
    }

    #[test]
    fn what_the_framing_tests_send_is_refused() {
        let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
        for body in [
            format!("fffffffffffffffffffff\r\n\r\n{smuggled}"),
            format!("-1\r\nx\r\n0\r\n\r\n{smuggled}"),
            format!("3\r\nabcdef\r\n0\r\n\r\n{smuggled}"),
            format!("0\r\n{smuggled}"),
            "5\nhello\n0\n\n".to_string(),
            "\r\n0\r\n\r\n".to_string(),
            "5\r\nhello0\r\n\r\n".to_string(),
            "0\r\nX\r\n\r\n".to_string(),
            "0\r\n: v\r\n\r\n".to_string(),
            "1;\x00\r\nx\r\n0\r\n\r\n".to_string(),
        ] {
            assert_eq!(
                read(body.as_bytes(), 1 << 20),
                Err(Error::Invalid),
                "{body:?}"
            );
        }
    }

    #[test]
    fn data_over_the_limit_is_too_large_as_soon_as_a_size_says_so() {
        // The size line alone is enough: no data needs to arrive.
        assert_eq!(read(b"101\r\n", 256), Err(Error::TooLarge));
        assert_eq!(read(b"100\r\n", 256), Ok(Progress::More));
        let mut body = Vec::new();
        for _ in 0..3 {
            body.extend_from_slice(b"64\r\n");
            body.extend_from_slice(&[b'a'; 100]);
            body.extend_from_slice(b"\r\n");
        }
        assert_eq!(read(&body, 250), Err(Error::TooLarge));
        body.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(read(&body, 300), Ok(Progress::Done(body.len())));
    }

    #[test]
    fn lines_and_trailers_are_bounded() {
        let long_ext = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(MAX_LINE));
        assert_eq!(read(long_ext.as_bytes(), 100), Err(Error::Invalid));
        let many = format!("0\r\n{}\r\n", "T: v\r\n".repeat(MAX_TRAILERS as usize + 1));
        assert_eq!(read(many.as_bytes(), 100), Err(Error::Invalid));
    }
}
