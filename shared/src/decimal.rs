//! Decimal numbers written straight into a byte buffer, as `write!(out,
//! "{n}")` writes them but without the formatting machinery: the log line
//! and the rendered answers write several per request. A leaf.

/// Appends `n` in decimal.
pub fn push(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_are_written_as_format_writes_them() {
        for n in [
            0u64,
            7,
            9,
            10,
            99,
            200,
            999,
            1_000_000,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut ours = b"x".to_vec();
            super::push(&mut ours, n);
            assert_eq!(ours, format!("x{n}").into_bytes());
        }
    }
}
