//! Library side of the `swarmbak` command: pieces the command and its tests share.

pub mod treecmp;
