//! Format: placeholder.
