//! Traffic simulator (placeholder).
