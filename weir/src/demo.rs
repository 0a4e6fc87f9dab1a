//! `weir demo`: a self-contained demonstration.
//!
//! Placeholder: does nothing yet.

/// Runs the demonstration.
///
/// # Errors
///
/// None yet.
pub fn run() -> anyhow::Result<()> {
    Ok(())
}
