//! What a content package's file paths must be, as both ends apply it: the content service
//! when a package is declared, the kiosk when it reads a manifest before writing onto a drive.
//! One rule in one place, so the service never accepts a package every kiosk would refuse.

use std::collections::HashSet;

/// Most bytes of a path inside a package.
pub const MAX_PATH_BYTES: usize = 1024;

/// The directory at a drive's root that belongs to the kiosk (the on-drive manifest lives in
/// it); no package file may be in it or named like it.
pub const RESERVED_DIR: &str = ".sneakernet";

/// Checks one path: relative, "/"-separated, 1 to [`MAX_PATH_BYTES`] bytes, no empty, "." or
/// ".." segment, no backslash or NUL, and not under [`RESERVED_DIR`]. The error says what is
/// wrong. A path that passes stays under any root it is joined to.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES {
        return Err(format!("must be 1 to {MAX_PATH_BYTES} bytes"));
    }
    if path.starts_with('/') {
        return Err("must be relative (no leading \"/\")".into());
    }
    if path.contains(['\\', '\0']) {
        return Err("must not contain a backslash or NUL".into());
    }
    if path
        .split('/')
        .any(|segment| matches!(segment, "" | "." | ".."))
    {
        return Err("must not have an empty, \".\" or \"..\" segment".into());
    }
    if path.split('/').next() == Some(RESERVED_DIR) {
        return Err(format!(
            "must not be in {RESERVED_DIR:?}, which the kiosk keeps for the drive's manifest"
        ));
    }
    Ok(())
}

/// The first path (by index in `paths`) one of whose parent directories is itself a path of
/// the set, with that parent: such a package cannot be written onto a drive.
pub fn file_and_directory_clash<'a>(paths: &[&'a str]) -> Option<(usize, &'a str)> {
    let set: HashSet<&str> = paths.iter().copied().collect();
    paths.iter().enumerate().find_map(|(i, path)| {
        let mut dir = *path;
        while let Some((parent, _)) = dir.rsplit_once('/') {
            if set.contains(parent) {
                return Some((i, parent));
            }
            dir = parent;
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_contract_and_stay_out_of_the_kiosks_directory() {
        for good in [
            "a",
            "films/a.mkv",
            ".hidden",
            "a/.sneakernet",
            "x".repeat(1024).as_str(),
        ] {
            assert_eq!(check_path(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "/abs",
            "a//b",
            "./a",
            "a/..",
            "a\\b",
            "a\0b",
            ".sneakernet",
            ".sneakernet/manifest.json",
            "x".repeat(1025).as_str(),
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_path_that_is_also_a_directory_is_found() {
        assert_eq!(file_and_directory_clash(&["a", "b/c"]), None);
        assert_eq!(file_and_directory_clash(&["b/c/d", "b"]), Some((0, "b")));
        assert_eq!(
            file_and_directory_clash(&["x", "a/b", "a/b/c"]),
            Some((2, "a/b"))
        );
    }
}
