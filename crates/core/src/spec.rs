//! Reading `protocol-spec/` from golden tests (feature `test-utils`): the specs' examples
//! are tests, and each quoted constant must still stand in its document.

use std::path::PathBuf;

/// The path of a document of `protocol-spec/` in this repository.
pub fn path(doc: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../protocol-spec")).join(doc)
}

/// The text of a document of `protocol-spec/` (panics, naming it, when it is missing).
pub fn read(doc: &str) -> String {
    std::fs::read_to_string(path(doc)).unwrap_or_else(|e| panic!("protocol-spec/{doc}: {e}"))
}

/// Whitespace runs as one space, so that reflowing a paragraph does not matter.
pub fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Panics unless every quote appears in the document (whitespace runs compared as one
/// space), naming the first one that does not.
pub fn assert_quoted(doc: &str, quotes: &[&str]) {
    let text = squash(&read(doc));
    for q in quotes {
        assert!(
            text.contains(&squash(q)),
            "this text is no longer in protocol-spec/{doc}; update the test and the spec together:\n{q}"
        );
    }
}
