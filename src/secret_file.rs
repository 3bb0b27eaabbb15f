//! Secrets read from files: the `*_FILE` variant of each secret setting, so
//! a Kubernetes Secret can be mounted as a file instead of exposed as an
//! environment variable (which `/proc/PID/environ`, crash dumps and child
//! processes all see).

use secrecy::SecretString;

/// Clap's value parser for a `*_FILE` setting: the file's content, without
/// the trailing newline that `kubectl create secret --from-file` and editors
/// leave (a webhook secret with it would never match GitHub's signature).
pub fn read(path: &str) -> Result<SecretString, String> {
    let content = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the secret file {path}: {e}"))?;
    let secret = content.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(format!("the secret file {path} is empty"));
    }
    Ok(SecretString::from(secret.to_owned()))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    #[test]
    fn a_secret_file_loses_its_trailing_newline_and_an_empty_one_is_refused() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret \r\n").expect("writing");
        let path = path.to_str().expect("UTF-8");
        assert_eq!(super::read(path).expect("read").expose_secret(), "s3cret ");
        std::fs::write(path, "\n").expect("writing");
        assert!(super::read(path).unwrap_err().contains("empty"));
        assert!(
            super::read("/nonexistent/secret")
                .unwrap_err()
                .contains("/nonexistent/secret")
        );
    }
}
