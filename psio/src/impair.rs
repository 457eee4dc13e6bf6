//! Impairment middleware (placeholder while being written).

/// Impairment settings.
#[derive(Debug, Clone, Default)]
pub struct ImpairmentConfig {}

/// A queue wrapped with seeded impairments.
pub struct Impaired {}
