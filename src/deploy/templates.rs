//! The templates, the stack policy and the parameter files, built into the
//! binary from `cloudformation/` (`include_str!`): `fluidity-deploy` alone
//! deploys, from any directory. `--templates DIR` reads the same names from
//! DIR instead (templates of your own, or another checkout's).

use std::path::{Path, PathBuf};

use crate::config::ConfigError;

/// Every file a deploy reads, by name, as built in.
const BUILT_IN: [(&str, &str); 6] = [
    ("fargate.yaml", include_str!("../../cloudformation/fargate.yaml")),
    ("lambda.yaml", include_str!("../../cloudformation/lambda.yaml")),
    ("apigateway-account.yaml", include_str!("../../cloudformation/apigateway-account.yaml")),
    ("stack-policy.json", include_str!("../../cloudformation/stack-policy.json")),
    ("params-dev.json", include_str!("../../cloudformation/params-dev.json")),
    ("params-prod.json", include_str!("../../cloudformation/params-prod.json")),
];

/// One file read: its path (the bare name when built in) and its text.
#[derive(Debug, Clone)]
pub struct File {
    pub path: PathBuf,
    pub text: String,
}

/// Reads `name` from `dir`, or its built-in copy when there is no `dir`.
pub fn read(dir: Option<&Path>, name: &str) -> Result<File, ConfigError> {
    let Some(dir) = dir else {
        let Some((_, text)) = BUILT_IN.iter().find(|(built_in, _)| *built_in == name) else {
            return Err(ConfigError::new(name, "not built into this binary", "pass --templates DIR holding it"));
        };
        return Ok(File { path: PathBuf::from(name), text: (*text).to_owned() });
    };
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ConfigError::new(
            path.display().to_string(),
            format!("cannot read: {e}"),
            "pass a --templates DIR that holds it, or leave --templates out for the built-in copy",
        )
    })?;
    Ok(File { path, text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_files_and_a_directory_of_ones_own() {
        for (name, _) in BUILT_IN {
            let file = read(None, name).unwrap();
            assert_eq!(file.path, Path::new(name));
            assert!(!file.text.is_empty(), "{name}");
        }
        assert!(read(None, "fargate.yaml").unwrap().text.contains("ServerPort"));
        assert!(read(None, "other.yaml").is_err());

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fargate.yaml"), "Parameters: {}\n").unwrap();
        let own = read(Some(dir.path()), "fargate.yaml").unwrap();
        assert_eq!((own.path, own.text.as_str()), (dir.path().join("fargate.yaml"), "Parameters: {}\n"));
        let missing = read(Some(dir.path()), "lambda.yaml").unwrap_err();
        assert!(missing.key.ends_with("lambda.yaml") && missing.fix.contains("--templates"), "{missing}");
    }
}
