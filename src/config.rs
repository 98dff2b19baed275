//! Configuration pieces shared by every component: the one-line error a user
//! sees, duration and size parsing, and a redacting secret type. Where TLS
//! material comes from lives with its loader in [`crate::tls`].
//!
//! Each component has a raw form (YAML file merged with flags and `FLUIDITY_*`
//! environment, flag > env > file > default) and a validated form built in one
//! step; see `agent::config` and `server::config`.

use std::fmt;
use std::path::Path;
use std::time::Duration;

/// Exit code for a configuration the user must fix.
pub const EXIT_CONFIG: i32 = 2;

/// A configuration mistake: which key, what is wrong, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: `{key}`: {problem} ({fix})")]
pub struct ConfigError {
    /// The YAML key (dotted path) at fault, or the flag for command-line-only values.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl ConfigError {
    /// Builds an error for `key`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { key: key.into(), problem: problem.into(), fix: fix.into() }
    }
}

/// The directory relative paths in the YAML file at `path` are resolved from.
pub fn directory_of(path: &Path) -> std::path::PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    }
}

/// Reads and parses a YAML configuration file; an empty file is all defaults.
pub fn load_yaml<T>(path: &Path) -> Result<T, ConfigError>
where
    T: serde::de::DeserializeOwned + Default,
{
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            "--config",
            format!("cannot read {}: {e}", path.display()),
            "pass the path of a readable YAML file",
        )
    })?;
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_yaml::from_str(&text).map_err(|e| {
        let place = e.location().map(|l| format!(" at line {}", l.line())).unwrap_or_default();
        let message = e.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message).to_string();
        let file = path.display();
        match explain_yaml(&message) {
            Some((key, problem, fix)) => ConfigError::new(key, format!("{problem} ({file}{place})"), fix),
            None => ConfigError::new(
                file.to_string(),
                format!("invalid YAML{place}: {message}"),
                "see the configuration reference in README.md",
            ),
        }
    })
}

/// The key and a plain explanation for the mistakes people make most in a
/// YAML file: a setting that does not exist (with the closest one), and a
/// number or switch written in quotes. `message` is serde_yaml's, without
/// its location: `[path: ]unknown field `x`, expected one of …` or
/// `[path: ]invalid type: string "4", expected u16`.
fn explain_yaml(message: &str) -> Option<(String, String, String)> {
    let (path, rest) = match message.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => (Some(path), rest),
        _ => (None, message),
    };
    let key = |name: &str| path.map_or_else(|| name.to_string(), |p| format!("{p}.{name}"));
    if let Some(rest) = rest.strip_prefix("unknown field `") {
        let (name, expected) = rest.split_once('`')?;
        let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let closest = known.iter().min_by_key(|k| edit_distance(k, name)).filter(|k| edit_distance(k, name) <= 3);
        let fix = match closest {
            Some(near) => format!("did you mean `{}`?", key(near)),
            None => format!("the settings here are: {}", known.join(", ")),
        };
        return Some((key(name), "not a setting".into(), fix));
    }
    let rest = rest.strip_prefix("invalid type: string \"")?;
    let (value, expected) = rest.split_once("\", expected ")?;
    let kind = match expected {
        "a boolean" => "true or false",
        e if e.starts_with('u') || e.starts_with('i') || e.starts_with('f') || e.contains("number") => "a number",
        _ => return None,
    };
    let path = path?;
    Some((
        path.into(),
        format!("\"{value}\" is quoted text where {kind} is expected"),
        format!("write it without quotes: {path}: {value}"),
    ))
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1).min(row[j] + 1).min(previous + usize::from(ca != *cb));
            previous = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Parses `250ms`, `10s`, `5m`, `2h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 500ms, 10s, 5m or 1h"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!("unknown unit `{other}` in `{text}` (use ms, s, m or h)"));
        }
    };
    if !seconds.is_finite() || seconds > 1e9 {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A duration from the flag or environment (`arg`), else the file, else
/// `default_secs`; zero and malformed values are errors naming `key`.
pub fn merged_duration(
    key: &str,
    arg: &Option<String>,
    file: &Option<String>,
    default_secs: u64,
) -> Result<Duration, ConfigError> {
    duration_or(key, arg.as_deref().or(file.as_deref()), Duration::from_secs(default_secs))
}

/// Runtime worker threads, merged like [`merged_duration`]: 1 to 64, default 1.
///
/// One thread by default: a tunnel moves each chunk through several tasks
/// (client connection, HTTP/2 connection, relay), and on one thread each
/// hand-off is a queue push instead of a wake-up of another thread. One
/// thread was as fast as two or faster, with fewer context switches and a
/// lower peak RSS (docs/benchmarks.md, "The data-plane pass"), and the
/// default Fargate task's 0.25 vCPU could not use a second one.
pub fn merged_workers(arg: Option<usize>, file: Option<usize>) -> Result<usize, ConfigError> {
    let workers = arg.or(file).unwrap_or(1);
    if !(1..=64).contains(&workers) {
        return Err(ConfigError::new(
            "worker_threads",
            format!("{workers} is out of range"),
            "use 1 to 64 (1 is enough for a tunnel)",
        ));
    }
    Ok(workers)
}

/// An HTTP/2 window size merged like [`merged_duration`]: 64 KiB to 2 GiB.
pub fn merged_window(key: &str, arg: &Option<String>, file: &Option<String>, default: u64) -> Result<u32, ConfigError> {
    size_or(key, arg.as_deref().or(file.as_deref()), default, 65_535, (1 << 31) - 1).map(|v| v as u32)
}

/// Parses the optional duration at `key`, or returns `default`; zero is refused.
pub fn duration_or(key: &str, value: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let duration = parse_duration(text).map_err(|p| ConfigError::new(key, p, "write a duration such as 10s"))?;
    if duration.is_zero() {
        return Err(ConfigError::new(key, "must be greater than zero", "write a duration such as 10s"));
    }
    Ok(duration)
}

/// Parses a byte size: `65536`, `64KiB`, `8MiB`, `1GiB` (also `KB`/`MB`/`GB` as powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("`{text}` is not a size like 65536, 64KiB or 8MiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown unit `{other}` in `{text}` (use KiB, MiB or GiB)")),
    };
    value.checked_mul(factor).ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses the optional size at `key` within `min..=max`, or returns `default`.
pub fn size_or(key: &str, value: Option<&str>, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    let Some(text) = value else { return Ok(default) };
    let size = parse_size(text).map_err(|p| ConfigError::new(key, p, "write a size such as 8MiB"))?;
    if !(min..=max).contains(&size) {
        return Err(ConfigError::new(
            key,
            format!("{size} bytes is out of range"),
            format!("use {min} to {max} bytes"),
        ));
    }
    Ok(size)
}

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; use only where it is needed.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_mistakes_name_the_key_and_the_fix() {
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Inner {
            #[allow(dead_code)]
            server_port: Option<u16>,
            #[allow(dead_code)]
            rewake: Option<bool>,
        }
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[allow(dead_code)]
            pool_size: Option<usize>,
            #[allow(dead_code)]
            lifecycle: Option<Inner>,
        }
        let dir = tempfile::tempdir().unwrap();
        let load = |text: &str| {
            let path = dir.path().join("agent.yaml");
            std::fs::write(&path, text).unwrap();
            load_yaml::<Raw>(&path).unwrap_err()
        };
        let quoted = load("pool_size: \"4\"\n");
        assert_eq!(quoted.key, "pool_size");
        assert!(quoted.problem.starts_with("\"4\" is quoted text where a number is expected"), "{quoted}");
        assert_eq!(quoted.fix, "write it without quotes: pool_size: 4");
        let nested = load("lifecycle:\n  server_port: \"443\"\n");
        assert_eq!(nested.key, "lifecycle.server_port", "{nested}");
        let switch = load("lifecycle:\n  rewake: \"yes\"\n");
        assert!(switch.problem.contains("where true or false is expected"), "{switch}");
        let unknown = load("poolsize: 4\n");
        assert_eq!(
            (unknown.key.as_str(), unknown.fix.as_str()),
            ("poolsize", "did you mean `pool_size`?"),
            "{unknown}"
        );
        let nested = load("lifecycle:\n  server_prot: 443\n");
        assert_eq!(nested.key, "lifecycle.server_prot", "{nested}");
        assert_eq!(nested.fix, "did you mean `lifecycle.server_port`?");
        let far = load("colour: blue\n");
        assert!(far.fix.starts_with("the settings here are: pool_size, lifecycle"), "{far}");
        assert!(load("pool_size: [\n").problem.starts_with("invalid YAML"), "other mistakes keep the parser's words");
    }

    #[test]
    fn durations() {
        let cases = [
            ("250ms", Some(Duration::from_millis(250))),
            ("10s", Some(Duration::from_secs(10))),
            ("10", Some(Duration::from_secs(10))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("5m", Some(Duration::from_secs(300))),
            ("2h", Some(Duration::from_secs(7200))),
            ("ten", None),
            ("5d", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text).ok(), want, "{text}");
        }
    }

    #[test]
    fn sizes() {
        let cases = [
            ("65536", Some(65536)),
            ("64KiB", Some(65536)),
            ("8MiB", Some(8 << 20)),
            ("1gb", Some(1 << 30)),
            ("8 MiB", Some(8 << 20)),
            ("x", None),
            ("5TB", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text).ok(), want, "{text}");
        }
        assert_eq!(size_or("w", Some("1KiB"), 0, 65535, 1 << 30).unwrap_err().key, "w");
    }

    #[test]
    fn worker_threads_default_to_one_and_flag_beats_file() {
        assert_eq!(merged_workers(None, None).unwrap(), 1);
        assert_eq!(merged_workers(None, Some(4)).unwrap(), 4);
        assert_eq!(merged_workers(Some(2), Some(4)).unwrap(), 2);
        for bad in [0, 65] {
            let error = merged_workers(Some(bad), None).unwrap_err();
            assert_eq!(error.key, "worker_threads");
            assert!(error.to_string().contains("out of range"), "{error}");
        }
    }

    #[test]
    fn secret_is_redacted() {
        let secret = Secret::new("user:hunter2");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(secret.expose(), "user:hunter2");
    }

    #[test]
    fn zero_duration_is_refused_with_key() {
        let err = duration_or("dial_timeout", Some("0s"), Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.key, "dial_timeout");
        assert_eq!(duration_or("x", None, Duration::from_secs(3)).unwrap(), Duration::from_secs(3));
    }
}
