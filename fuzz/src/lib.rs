//! What the fuzz targets share.

/// Splits a fuzz input made of two files at its first NUL byte: text that
/// cannot hold a NUL (a `.cfg`, `model.json`) and the binary file after it.
/// Without a NUL the whole input is the text and the binary file is empty.
pub fn split_at_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[]),
    }
}
