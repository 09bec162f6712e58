//! Matrix connector (placeholder while the crate is built up).
