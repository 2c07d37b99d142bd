//! The process's open-files limit (`RLIMIT_NOFILE`): every connection,
//! socket and database file takes one descriptor, and the common soft limit
//! of 1024 is far below what a server needs. Start-up raises the soft limit
//! to the hard one; the connection caps left unset in `[limits]` are sized
//! from the result (src/config.rs, `LimitsConfig`).

/// What is assumed when the limit cannot be read, and the most that caps
/// are sized from (an unlimited hard limit would size them past memory).
const FALLBACK: u64 = 1024;
const SIZING_CEILING: u64 = 1 << 20;

/// Raises the soft open-files limit to the hard limit. Returns the soft
/// limit in force afterwards, and the error when raising failed.
pub fn raise() -> (u64, Option<std::io::Error>) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(_) => (current(), None),
        Err(e) => (current(), Some(e)),
    }
}

/// The soft open-files limit in force, as caps are sized from it.
pub fn current() -> u64 {
    rlimit::Resource::NOFILE
        .get()
        .map_or(FALLBACK, |(soft, _hard)| soft)
        .min(SIZING_CEILING)
}
