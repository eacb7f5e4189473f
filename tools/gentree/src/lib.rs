//! gentree: placeholder.
