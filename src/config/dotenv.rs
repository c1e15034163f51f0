//! `.env` files, read as the old Node proxies did (`dotenv`): each
//! `KEY=value` line becomes an environment variable unless the environment
//! already has it. Read once, at start, before any thread exists.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A larger file is refused: an env file is a few lines.
const MAX_BYTES: u64 = 1 << 20;

/// What was read, for the banner and `check` (names only, never values).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    /// Variables the file set.
    pub set: Vec<String>,
    /// Variables the file names that the environment already had (kept).
    pub kept: Vec<String>,
}

static LOADED: OnceLock<Loaded> = OnceLock::new();

/// The env file read at start, if any.
pub fn loaded() -> Option<&'static Loaded> {
    LOADED.get()
}

/// Reads `explicit` (an error when missing), else `.env` in the working
/// directory when it exists; `Ok(false)` when no file was read.
///
/// Call before any thread starts: it sets process environment variables.
pub fn load(explicit: Option<&Path>) -> Result<bool, String> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None if Path::new(".env").is_file() => PathBuf::from(".env"),
        None => return Ok(false),
    };
    let pairs = read(&path)?;
    let mut loaded = Loaded {
        path,
        set: Vec::new(),
        kept: Vec::new(),
    };
    for (k, v) in pairs {
        if std::env::var_os(&k).is_some() {
            loaded.kept.push(k);
        } else {
            std::env::set_var(&k, v);
            loaded.set.push(k);
        }
    }
    let _ = LOADED.set(loaded);
    Ok(true)
}

/// The file's (name, value) pairs; an error names the file and line number, never a value.
fn read(path: &Path) -> Result<Vec<(String, String)>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("env file {shown}: {e}"))?;
    if !meta.is_file() || meta.len() > MAX_BYTES {
        return Err(format!("env file {shown}: not a file of at most 1 MiB"));
    }
    let iter = dotenvy::from_path_iter(path).map_err(|e| format!("env file {shown}: {e}"))?;
    let mut out = Vec::new();
    for item in iter {
        match item {
            Ok((k, v)) if valid_name(&k) && !v.contains('\0') => out.push((k, v)),
            Ok((k, _)) => return Err(format!("env file {shown}: {k:?} is not a usable variable")),
            Err(dotenvy::Error::LineParse(line, _)) => {
                // the line is found to name its number, never shown: it may hold a key
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let at = text
                    .lines()
                    .position(|l| l.trim() == line.trim())
                    .map_or(0, |i| i + 1);
                return Err(format!(
                    "env file {shown}: line {at} is not KEY=value (# starts a comment)"
                ));
            }
            Err(e) => return Err(format!("env file {shown}: {}", without_values(&e))),
        }
    }
    Ok(out)
}

/// A variable name a shell could set.
fn valid_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// An error's text without the line it quotes (which may hold a key).
fn without_values(e: &dotenvy::Error) -> String {
    match e {
        dotenvy::Error::Io(io) => io.to_string(),
        dotenvy::Error::EnvVar(v) => v.to_string(),
        _ => "cannot read it".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn pairs_comments_and_quotes() {
        let f = file("# keys\nOPENAI_API_KEY=sk-aaaa\nexport PORT=4000\nNAME=\"a b\"\n\n");
        let got = read(f.path()).unwrap();
        assert_eq!(
            got,
            vec![
                ("OPENAI_API_KEY".to_string(), "sk-aaaa".to_string()),
                ("PORT".to_string(), "4000".to_string()),
                ("NAME".to_string(), "a b".to_string())
            ]
        );
    }

    #[test]
    fn a_bad_line_is_an_error_that_never_shows_its_value() {
        let f = file("GOOD=1\nOPENAI_API_KEY sk-secret-value\n");
        let e = read(f.path()).unwrap_err();
        assert!(!e.contains("sk-secret-value"), "{e}");
        assert!(e.contains("env file") && e.contains("line 2"), "{e}");
        assert!(read(Path::new("/nonexistent/.env")).is_err());
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).is_err(), "a directory is refused");
    }
}
