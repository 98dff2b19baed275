//! `fluidity-agent service install|uninstall|status`: the agent as a login
//! service, so it is always there to wake the server on traffic — a systemd
//! **user** unit on Linux, a launchd agent on macOS. Installing writes the
//! unit (or property list) for the configuration given, then enables and
//! starts it; where there is no user manager to talk to (a container, a
//! session without systemd), it prints the exact commands instead.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The service's name: `fluidity-agent.service`, or the launchd label.
pub const UNIT: &str = "fluidity-agent.service";
pub const LABEL: &str = "dev.fluidity.agent";

/// Which service manager runs the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Manager {
    /// A systemd user unit (Linux).
    Systemd,
    /// A launchd agent (macOS).
    Launchd,
}

impl Manager {
    /// This machine's.
    pub fn native() -> Self {
        if cfg!(target_os = "macos") { Self::Launchd } else { Self::Systemd }
    }

    /// Where the unit or property list goes under `home`.
    pub fn path(self, home: &Path) -> PathBuf {
        match self {
            Self::Systemd => home.join(".config/systemd/user").join(UNIT),
            Self::Launchd => home.join("Library/LaunchAgents").join(format!("{LABEL}.plist")),
        }
    }
}

/// The systemd user unit running `binary --config config`. The sandboxing
/// a user unit can take: no new privileges, the system read-only, a private
/// /tmp, home read-only except nothing (the agent writes no file), the
/// configuration's directory readable.
pub fn unit(binary: &Path, config: &Path) -> String {
    let dir = config.parent().unwrap_or(Path::new("/"));
    format!(
        "[Unit]\n\
         Description=Fluidity agent: the local proxy that wakes your Fluidity server and tunnels to it\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=exec\n\
         ExecStart={binary} --config {config}\n\
         Restart=on-failure\n\
         RestartSec=5s\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=read-only\n\
         PrivateTmp=yes\n\
         ReadOnlyPaths={dir}\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        binary = quoted(binary),
        config = quoted(config),
        dir = quoted(dir),
    )
}

/// The launchd agent's property list: started at login, restarted when it
/// exits, logs in `logs`.
pub fn plist(binary: &Path, config: &Path, logs: &Path) -> String {
    let escape = |p: &Path| p.display().to_string().replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n<dict>\n\
         \t<key>Label</key><string>{LABEL}</string>\n\
         \t<key>ProgramArguments</key>\n\t<array>\n\
         \t\t<string>{binary}</string>\n\t\t<string>--config</string>\n\t\t<string>{config}</string>\n\
         \t</array>\n\
         \t<key>RunAtLoad</key><true/>\n\
         \t<key>KeepAlive</key><true/>\n\
         \t<key>ProcessType</key><string>Background</string>\n\
         \t<key>StandardOutPath</key><string>{log}</string>\n\
         \t<key>StandardErrorPath</key><string>{log}</string>\n\
         </dict>\n</plist>\n",
        binary = escape(binary),
        config = escape(config),
        log = escape(&logs.join("fluidity-agent.log")),
    )
}

/// A path for a systemd unit line (quoted when it holds a space).
fn quoted(path: &Path) -> String {
    let text = path.display().to_string();
    if text.contains(char::is_whitespace) { format!("\"{text}\"") } else { text }
}

/// Writes the service for `config` (already validated by the caller) and
/// starts it, or says how. Returns the lines to print.
pub fn install(manager: Manager, home: &Path, binary: &Path, config: &Path) -> anyhow::Result<Vec<String>> {
    let path = manager.path(home);
    let text = match manager {
        Manager::Systemd => unit(binary, config),
        Manager::Launchd => {
            let logs = home.join("Library/Logs");
            std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
            plist(binary, config, &logs)
        }
    };
    let dir = path.parent().context("the service file has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    let mut said = vec![format!("wrote {}", path.display())];
    let commands = start_commands(manager, &path);
    said.extend(run_or_show(&commands, "to start it now and at every login, run"));
    Ok(said)
}

/// Stops and removes the service. Returns the lines to print.
pub fn uninstall(manager: Manager, home: &Path) -> anyhow::Result<Vec<String>> {
    let path = manager.path(home);
    let mut said = run_or_show(&stop_commands(manager), "to stop it, run");
    match std::fs::remove_file(&path) {
        Ok(()) => said.push(format!("removed {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            said.push(format!("{} was not installed", path.display()))
        }
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    Ok(said)
}

/// Whether the service is installed, and what the manager says of it.
pub fn status(manager: Manager, home: &Path) -> Vec<String> {
    let path = manager.path(home);
    if !path.exists() {
        return vec![format!("not installed ({} does not exist); fluidity-agent service install", path.display())];
    }
    let mut said = vec![format!("installed: {}", path.display())];
    let query: Vec<String> = match manager {
        Manager::Systemd => ["systemctl", "--user", "is-active", UNIT].map(String::from).to_vec(),
        Manager::Launchd => vec!["launchctl".into(), "print".into(), format!("gui/{}/{LABEL}", uid())],
    };
    match Command::new(&query[0]).args(&query[1..]).output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            said.push(format!("{}: {}", query.join(" "), text.lines().next().unwrap_or("no answer")));
        }
        Err(e) => said.push(format!("{}: {e}", query.join(" "))),
    }
    said
}

fn start_commands(manager: Manager, path: &Path) -> Vec<Vec<String>> {
    let owned = |parts: &[&str]| parts.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    match manager {
        Manager::Systemd => vec![
            owned(&["systemctl", "--user", "daemon-reload"]),
            owned(&["systemctl", "--user", "enable", "--now", UNIT]),
        ],
        Manager::Launchd => {
            vec![vec!["launchctl".into(), "bootstrap".into(), format!("gui/{}", uid()), path.display().to_string()]]
        }
    }
}

fn stop_commands(manager: Manager) -> Vec<Vec<String>> {
    match manager {
        Manager::Systemd => vec![["systemctl", "--user", "disable", "--now", UNIT].map(String::from).to_vec()],
        Manager::Launchd => vec![vec!["launchctl".into(), "bootout".into(), format!("gui/{}/{LABEL}", uid())]],
    }
}

/// Runs `commands` when a user service manager answers; otherwise (or when
/// one fails) returns `intro` and the commands for the person to run.
fn run_or_show(commands: &[Vec<String>], intro: &str) -> Vec<String> {
    let shown = |c: &Vec<String>| c.join(" ");
    if manager_reachable(&commands[0][0]) {
        let mut said = vec![];
        for command in commands {
            match Command::new(&command[0]).args(&command[1..]).status() {
                Ok(status) if status.success() => said.push(format!("ran: {}", shown(command))),
                _ => {
                    said.push(format!("{} failed; {intro}:", shown(command)));
                    said.extend(commands.iter().map(|c| format!("  {}", shown(c))));
                    return said;
                }
            }
        }
        return said;
    }
    let mut said = vec![format!("no user service manager answers here; {intro}:")];
    said.extend(commands.iter().map(|c| format!("  {}", shown(c))));
    said
}

/// Whether `program`'s user instance can be talked to (a login session).
fn manager_reachable(program: &str) -> bool {
    let probe: &[&str] = if program == "systemctl" { &["--user", "show-environment"] } else { &["print", "system"] };
    Command::new(program)
        .args(probe)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// This user's id (launchd's `gui/UID` domain).
fn uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to this process's user; macOS has no /proc, and a
    // home directory belongs to its user.
    let candidates = [PathBuf::from("/proc/self"), std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default()];
    candidates.iter().find_map(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.uid())
}

/// Refuses a private key others can read (the service would spread it no
/// further, but a key file like that is already a leak).
pub fn check_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!("{} is readable by other users (mode {:o}); chmod 600 it first", path.display(), mode & 0o777);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_the_agent_with_its_configuration_sandboxed() {
        let text = unit(Path::new("/nix/store/x/bin/fluidity-agent"), Path::new("/home/u/fluidity dev/agent.yaml"));
        assert!(
            text.contains("ExecStart=/nix/store/x/bin/fluidity-agent --config \"/home/u/fluidity dev/agent.yaml\"")
        );
        for line in [
            "Restart=on-failure",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "WantedBy=default.target",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        assert!(text.contains("ReadOnlyPaths=\"/home/u/fluidity dev\""), "{text}");
    }

    #[test]
    fn paths_per_manager() {
        let home = Path::new("/home/u");
        assert_eq!(Manager::Systemd.path(home), Path::new("/home/u/.config/systemd/user/fluidity-agent.service"));
        assert_eq!(Manager::Launchd.path(home), Path::new("/home/u/Library/LaunchAgents/dev.fluidity.agent.plist"));
    }
}
