//! From a request path to a file under the document root.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Why a path maps to no file to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// The path has a `..` segment (400: we do not normalise).
    DotDot,
    /// No regular file there, or it leads outside the root through a symbolic link (404).
    NotFound,
}

impl PathError {
    /// The status code to answer with.
    pub fn status(self) -> u16 {
        match self {
            PathError::DotDot => 400,
            PathError::NotFound => 404,
        }
    }
}

/// The file that `path` (decoded, starting with `/`) names under `root`, which must be
/// canonical (`std::fs::canonicalize`). A path ending in `/` names `index.html` there. The
/// result is canonical and inside `root`: a symbolic link leading outside is refused.
pub fn resolve(root: &Path, path: &[u8]) -> Result<PathBuf, PathError> {
    let mut rel = PathBuf::new();
    for seg in path.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => return Err(PathError::DotDot),
            s => rel.push(OsStr::from_bytes(s)),
        }
    }
    if path.ends_with(b"/") {
        rel.push("index.html");
    }
    let full = root
        .join(rel)
        .canonicalize()
        .map_err(|_| PathError::NotFound)?;
    if !full.starts_with(root) {
        return Err(PathError::NotFound);
    }
    match std::fs::metadata(&full) {
        Ok(m) if m.is_file() => Ok(full),
        _ => Err(PathError::NotFound),
    }
}

/// A `Content-Type` for a file name, by extension (`application/octet-stream` otherwise).
pub fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(OsStr::to_str).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html",
        "txt" => "text/plain",
        "css" => "text/css",
        "js" => "text/javascript",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_inside_root_only() {
        let dir = std::env::temp_dir().join(format!("http-path-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a.txt"), b"a").unwrap();
        std::fs::write(dir.join("index.html"), b"i").unwrap();
        let root = dir.canonicalize().unwrap();
        let r = |p: &str| resolve(&root, p.as_bytes());
        assert_eq!(r("/sub/a.txt"), Ok(root.join("sub/a.txt")));
        assert_eq!(r("//sub/./a.txt"), Ok(root.join("sub/a.txt")));
        assert_eq!(r("/"), Ok(root.join("index.html")));
        assert_eq!(r("/sub"), Err(PathError::NotFound));
        assert_eq!(r("/sub/"), Err(PathError::NotFound));
        assert_eq!(r("/missing"), Err(PathError::NotFound));
        assert_eq!(r("/../etc/passwd"), Err(PathError::DotDot));
        assert_eq!(r("/sub/../index.html"), Err(PathError::DotDot));
        std::os::unix::fs::symlink("/etc", dir.join("out")).unwrap();
        assert_eq!(r("/out/passwd"), Err(PathError::NotFound));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
