//! The wall clock at the precision the system database stores times in (milliseconds since
//! the Unix epoch, as DBOS writes them).

/// A duration in whole milliseconds, saturating at `i64::MAX` (as the database stores them).
pub fn millis(d: std::time::Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// Now, in milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
