//! Random secrets: credentials and tokens smolpaws hands out.

/// 32 random bytes from the OS, hex-encoded.
pub fn token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    hex::encode(bytes)
}
