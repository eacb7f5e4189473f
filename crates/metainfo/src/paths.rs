//! Path components that must not be written to disk as they are.

/// What is wrong with a path component. Torrents are still accepted with these (as
/// libtorrent accepts them, after rewriting the name); a reader that writes files must
/// refuse or sanitise them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathProblem {
    /// An empty component.
    Empty,
    /// `.`
    CurrentDir,
    /// `..`
    ParentDir,
    /// Starts with `/` or `\`, or a Windows drive (`C:`): an absolute path.
    Absolute,
    /// Holds `/` or `\` (a separator inside one component).
    Separator,
    /// Holds a NUL byte.
    Nul,
}

impl PathProblem {
    /// The problem with one component, if any (the first that applies in the order of
    /// the variants).
    pub fn of(component: &[u8]) -> Option<PathProblem> {
        let is_sep = |b: &u8| *b == b'/' || *b == b'\\';
        match component {
            [] => Some(PathProblem::Empty),
            b"." => Some(PathProblem::CurrentDir),
            b".." => Some(PathProblem::ParentDir),
            [first, ..] if is_sep(first) => Some(PathProblem::Absolute),
            [drive, b':', ..] if drive.is_ascii_alphabetic() => Some(PathProblem::Absolute),
            c if c.iter().any(is_sep) => Some(PathProblem::Separator),
            c if c.contains(&0) => Some(PathProblem::Nul),
            _ => None,
        }
    }
}

impl std::fmt::Display for PathProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathProblem::Empty => "is empty",
            PathProblem::CurrentDir => "is `.`",
            PathProblem::ParentDir => "is `..`",
            PathProblem::Absolute => "is an absolute path",
            PathProblem::Separator => "contains a path separator",
            PathProblem::Nul => "contains a NUL byte",
        })
    }
}

/// One unsafe component of a torrent's name, a file's path or a symlink's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsafePath {
    /// The file (index in [`Metainfo::files`](crate::Metainfo::files)), or `None` for the
    /// torrent's `name`.
    pub file: Option<usize>,
    /// True when the component is in the file's symlink target, not its path.
    pub in_symlink_target: bool,
    /// The component as it appears in the torrent.
    pub component: Vec<u8>,
    /// What is wrong with it.
    pub problem: PathProblem,
}
