//! Random hex for keys, tags and ids: from the kernel's generator, so the master key a stack
//! makes is a secret, not a guess.

/// `bytes` random bytes as hex.
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_err()
    {
        // Not secret-grade, but unique: time and pid.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let seed = t.as_nanos() ^ (u128::from(std::process::id()) << 64);
        buf.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (seed >> ((i % 16) * 8)) as u8);
    }
    hex::encode(buf)
}
