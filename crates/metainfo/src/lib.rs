//! Metainfo: placeholder.
