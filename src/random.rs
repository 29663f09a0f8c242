//! Random hex for keys, tags and ids: from the operating system's generator (`getrandom`), so
//! the master key a stack makes is a secret, not a guess. There is no weaker fallback: when
//! the system cannot give random bytes, that is an error ([`try_random_hex`]) or, for
//! [`random_hex`], a panic saying so — a key derived from the time and pid would be guessable.

/// The system's random generator could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the operating system's random number generator failed ({0}); gauntlet makes its keys only \
     from it, and will not make a guessable one instead"
)]
pub struct NoRandomness(pub getrandom::Error);

/// `bytes` random bytes as hex, or the error when the system cannot supply them. For secrets
/// (the master and provider keys), whose callers stop the run on it.
pub fn try_random_hex(bytes: usize) -> Result<String, NoRandomness> {
    hex_from(bytes, getrandom::fill)
}

/// `bytes` random bytes as hex, for names (tags, temporary folders, run ids).
///
/// # Panics
/// When the operating system's generator fails (a broken sandbox without `getrandom(2)` or
/// `/dev/urandom`); nothing gauntlet does can go on sensibly without it.
pub fn random_hex(bytes: usize) -> String {
    try_random_hex(bytes).unwrap_or_else(|e| panic!("{e}"))
}

fn hex_from(
    bytes: usize,
    fill: impl FnOnce(&mut [u8]) -> Result<(), getrandom::Error>,
) -> Result<String, NoRandomness> {
    let mut buf = vec![0u8; bytes];
    fill(&mut buf).map_err(NoRandomness)?;
    Ok(hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The old code, when `/dev/urandom` could not be read, returned a key made from the time
    /// and pid (repeating every 16 bytes) as if nothing had happened: a failing source must
    /// be an error instead.
    #[test]
    fn a_failing_source_is_an_error_not_a_weak_key() {
        let e = hex_from(16, |_| Err(getrandom::Error::UNSUPPORTED)).unwrap_err();
        assert!(e.to_string().contains("random number generator failed"), "{e}");
        let a = try_random_hex(32).unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, try_random_hex(32).unwrap());
        // No 16-byte period, as the old fallback had.
        assert_ne!(a[..32], a[32..]);
    }
}
