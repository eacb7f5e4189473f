//! Paths a backup leaves out ([`Excludes`]).
//!
//! Patterns are globs (`*`, `?`, `[abc]`, `[!abc]`, `{a,b}`, `**`, `\` escapes) and match
//! the entries the walk meets below each backed-up PATH:
//!
//! - A pattern without `/` matches an entry's file name at any depth: `.cache`, `*.tmp`,
//!   `.Trash-*`.
//! - A pattern that starts with `/` matches the entry's absolute path:
//!   `/home/*/Downloads`. `*`, `?` and `[...]` never match a `/`; `**` matches any number
//!   of whole components (`/home/**/node_modules`).
//! - A pattern with a `/` that does not start with one matches at any depth, as if
//!   prefixed by `**/`: `.local/share/Trash` matches `/home/u/.local/share/Trash`.
//! - A trailing `/` means directories only: `build/` leaves out directories named
//!   `build`, not files.
//!
//! An excluded directory is not descended into (nothing below it is backed up, whatever
//! other patterns say). A PATH given to the backup is always backed up, even when a
//! pattern matches it; patterns apply to what is below it. The absolute path an entry is
//! matched with is the PATH as given when it is absolute (`.` components dropped), or,
//! for a relative PATH (or one with `..`), the canonical path of its parent directory
//! joined with its name; then the names below it. Names and paths are matched as raw
//! bytes (no Unicode normalisation, case-sensitive).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::FormatError;

/// A compiled set of exclude patterns (module documentation: their meaning).
#[derive(Clone, Debug)]
pub struct Excludes {
    patterns: Vec<String>,
    /// Patterns without `/`, matched against the file name: any entry, directories only.
    names: GlobSet,
    dir_names: GlobSet,
    /// Patterns with a `/`, matched against the absolute path: any entry, directories only.
    paths: GlobSet,
    dir_paths: GlobSet,
}

impl Default for Excludes {
    fn default() -> Self {
        Excludes::none()
    }
}

impl PartialEq for Excludes {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl Eq for Excludes {}

impl Excludes {
    /// Excludes nothing.
    pub fn none() -> Excludes {
        Excludes {
            patterns: Vec::new(),
            names: GlobSet::empty(),
            dir_names: GlobSet::empty(),
            paths: GlobSet::empty(),
            dir_paths: GlobSet::empty(),
        }
    }

    /// Compiles `patterns`; an empty or invalid pattern is an error naming it.
    pub fn new(patterns: &[String]) -> Result<Excludes, FormatError> {
        let mut sets = [
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
        ];
        for p in patterns {
            let bad = |why: String| {
                FormatError::Invalid(format!("exclude pattern {p:?} is not valid: {why}"))
            };
            let (body, dir_only) = match p.strip_suffix('/') {
                Some(b) => (b, true),
                None => (p.as_str(), false),
            };
            if body.is_empty() || body.ends_with('/') {
                return Err(bad(
                    "it names no file (empty, `/`, or ends with `//`)".into()
                ));
            }
            if body.contains('\0') {
                return Err(bad("it holds a NUL byte".into()));
            }
            let (glob, on_path) = if body.starts_with('/') {
                (body.to_string(), true)
            } else if body.contains('/') {
                (format!("**/{body}"), true)
            } else {
                (body.to_string(), false)
            };
            let g = GlobBuilder::new(&glob)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| bad(e.kind().to_string()))?;
            let i = usize::from(on_path) * 2 + usize::from(dir_only);
            sets[i].add(g);
        }
        let build = |b: &GlobSetBuilder| {
            b.build().map_err(|e| {
                FormatError::Invalid(format!("exclude patterns {patterns:?} are not valid: {e}"))
            })
        };
        Ok(Excludes {
            patterns: patterns.to_vec(),
            names: build(&sets[0])?,
            dir_names: build(&sets[1])?,
            paths: build(&sets[2])?,
            dir_paths: build(&sets[3])?,
        })
    }

    /// The patterns as given.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the entry at absolute path `abs_path` (a directory when `is_dir`) is left
    /// out. The caller never asks about a backed-up PATH itself.
    pub fn is_excluded(&self, abs_path: &Path, is_dir: bool) -> bool {
        self.is_excluded_if_dir(abs_path, || is_dir)
    }

    /// [`Excludes::is_excluded`] for a caller that does not know the entry's type:
    /// `is_dir` (a `stat`) is asked only when a directories-only pattern matches.
    pub fn is_excluded_if_dir(&self, abs_path: &Path, is_dir: impl FnOnce() -> bool) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let name = abs_path
            .file_name()
            .unwrap_or_else(|| OsStr::from_bytes(b""));
        let name = Candidate::new(Path::new(name));
        if self.names.is_match_candidate(&name) {
            return true;
        }
        // Most sets have no pattern with a `/`: no candidate for the whole path then.
        let path = (!self.paths.is_empty() || !self.dir_paths.is_empty())
            .then(|| Candidate::new(abs_path));
        if path
            .as_ref()
            .is_some_and(|p| self.paths.is_match_candidate(p))
        {
            return true;
        }
        (self.dir_names.is_match_candidate(&name)
            || path
                .as_ref()
                .is_some_and(|p| self.dir_paths.is_match_candidate(p)))
            && is_dir()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &[&str]) -> Excludes {
        Excludes::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn names_match_at_any_depth() {
        let e = ex(&[".cache", "*.tmp", ".Trash-*"]);
        assert!(e.is_excluded(Path::new("/home/u/.cache"), true));
        assert!(e.is_excluded(Path::new("/home/u/a/b/.cache"), false));
        assert!(e.is_excluded(Path::new("/x/y.tmp"), false));
        assert!(e.is_excluded(Path::new("/.Trash-1000"), true));
        assert!(!e.is_excluded(Path::new("/home/u/.cache2"), true));
        assert!(!e.is_excluded(Path::new("/home/u/.cache/x"), false));
        assert!(!e.is_excluded(Path::new("/x/y.tmp.keep"), false));
    }

    #[test]
    fn the_type_is_asked_only_when_a_directories_only_pattern_matches() {
        let e = ex(&["*.tmp", "build/", "/srv/*/cache/"]);
        let asked = std::cell::Cell::new(0);
        let is_dir = |d: bool| {
            asked.set(asked.get() + 1);
            d
        };
        assert!(e.is_excluded_if_dir(Path::new("/a/x.tmp"), || is_dir(false)));
        assert!(!e.is_excluded_if_dir(Path::new("/a/src"), || is_dir(true)));
        assert_eq!(asked.get(), 0);
        assert!(e.is_excluded_if_dir(Path::new("/a/build"), || is_dir(true)));
        assert!(!e.is_excluded_if_dir(Path::new("/a/build"), || is_dir(false)));
        assert!(e.is_excluded_if_dir(Path::new("/srv/w/cache"), || is_dir(true)));
        assert!(!e.is_excluded_if_dir(Path::new("/srv/w/v/cache"), || is_dir(true)));
        assert_eq!(asked.get(), 3);
    }

    #[test]
    fn anchored_patterns_match_the_absolute_path() {
        let e = ex(&["/home/*/Downloads", "/srv/**/node_modules"]);
        assert!(e.is_excluded(Path::new("/home/u/Downloads"), true));
        assert!(!e.is_excluded(Path::new("/home/u/v/Downloads"), true));
        assert!(!e.is_excluded(Path::new("/other/home/u/Downloads"), true));
        assert!(e.is_excluded(Path::new("/srv/node_modules"), true));
        assert!(e.is_excluded(Path::new("/srv/a/b/node_modules"), true));
    }

    #[test]
    fn relative_patterns_with_a_slash_match_at_any_depth() {
        let e = ex(&[".local/share/Trash", "a/*/c"]);
        assert!(e.is_excluded(Path::new("/home/u/.local/share/Trash"), true));
        assert!(e.is_excluded(Path::new("/.local/share/Trash"), true));
        assert!(!e.is_excluded(Path::new("/home/u/x.local/share/Trash"), true));
        assert!(e.is_excluded(Path::new("/r/a/b/c"), false));
        assert!(!e.is_excluded(Path::new("/r/a/b/b/c"), false));
    }

    #[test]
    fn trailing_slash_means_directories_only() {
        let e = ex(&["build/", "/data/tmp/", "x/y/"]);
        assert!(e.is_excluded(Path::new("/p/build"), true));
        assert!(!e.is_excluded(Path::new("/p/build"), false));
        assert!(e.is_excluded(Path::new("/data/tmp"), true));
        assert!(!e.is_excluded(Path::new("/data/tmp"), false));
        assert!(e.is_excluded(Path::new("/q/x/y"), true));
        assert!(!e.is_excluded(Path::new("/q/x/y"), false));
    }

    #[test]
    fn none_and_patterns() {
        let e = Excludes::none();
        assert!(e.is_empty() && e.patterns().is_empty());
        assert!(!e.is_excluded(Path::new("/a"), true));
        assert_eq!(ex(&["a", "/b/"]).patterns(), ["a", "/b/"]);
    }

    #[test]
    fn invalid_patterns_are_named() {
        for p in ["[abc", "", "/", "a//", "{a,b"] {
            let err = Excludes::new(&[p.to_string()]).unwrap_err().to_string();
            assert!(err.contains(&format!("{p:?}")), "{p}: {err}");
        }
    }
}
